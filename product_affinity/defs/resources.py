"""Resources, declared once and shared by every asset."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from product_affinity.consumer_aligned import day_files
from product_affinity.consumer_aligned.association_rules import Thresholds
from product_affinity.defaults import DEFAULT_SOURCES, DEFAULT_WAREHOUSE
from product_affinity.run_lock import WarehouseBusy, run_lock



class SourceFiles(dg.ConfigurableResource):
    """Where the operational sources land as files (customer_info.csv, product.csv, purchase.csv)."""

    directory: str = str(DEFAULT_SOURCES)

    @property
    def path(self) -> Path:
        return Path(self.directory)


# The op tag of every step that opens the working warehouse. The job's executor (definitions.py) runs at most one step
# so tagged at a time when it runs steps in processes of their own: the warehouse's lock and DuckDB's single writer
# would refuse a second one. tests/test_definitions.py holds every such step to it.
WAREHOUSE_STEP = {"product-affinity/writes": "warehouse"}


class Warehouse(DuckDBResource):
    """The working warehouse: the staging area every step writes and the checks audit.

    A run holds `<warehouse>.lock` from its start to its end (run_lock; the command line takes it before it plans
    the run's days), so a second run fails at once, naming the lock, and never writes between this run's steps.
    """

    _lock: ExitStack | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._lock = ExitStack()
        self._lock.enter_context(run_lock(self.database))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._lock.close()

    @contextmanager
    def get_connection(self):
        """Connect without DuckDBResource's ~100 s of retries: with other runs locked out, a process holding
        DuckDB's file lock is a stray session on the working warehouse, and waiting only delays the failure."""
        try:
            conn = duckdb.connect(self.database, config={"custom_user_agent": "dagster", **self.connection_config})
        except duckdb.IOException as error:
            if "Could not set lock" not in str(error):
                raise
            raise WarehouseBusy(
                f"another process has {self.database} open, so this run cannot write it. {error}\n"
                "Only the pipeline opens the working warehouse: consumers read the published snapshot (published/CURRENT)."
            ) from None
        try:
            yield conn
        finally:
            conn.close()


class AffinitySettings(dg.ConfigurableResource):
    """Business parameters of the rules, metrics and recommendations."""

    category_min_support: float = 0.01
    category_min_confidence: float = 0.10
    category_max_itemset_size: int = 3
    product_min_support: float = 0.002
    product_min_confidence: float = 0.10
    product_max_itemset_size: int = 2
    multi_item_consequents: bool = False  # arules' convention by default: a rule's consequent is one item
    rules_window_days: int | None = None  # the rules' window: all history, or the trailing N days up to the latest purchase
    recommendations_per_customer: int = 3
    frequency_window_days: int = 365
    discount_rate: float = 0.10  # yearly, for the predicted customer lifetime value
    clv_horizon_months: int = 12  # how far ahead the predicted orders, spend and lifetime value look
    clv_holdout_days: int = 182  # the CLV backtest's cut-off: this many days before the latest purchase day
    backtest_holdout_days: int = 90  # the backtest's cut-off: the Monday of the week this many days before the latest purchase
    # Where the per-day counts, the rules' reduce and the customer aggregates are computed: in the warehouse's DuckDB,
    # or by Spark from Parquet files by day (the `spark` extra and Java; docs/operations/scale-out.md). Chosen per run:
    # resources.settings.config.engine.
    engine: Literal["duckdb", "spark"] = "duckdb"
    # The Parquet files by day (the spark engine, a fanned-out count): a folder, or object storage as a URL (s3://bucket/
    # prefix, with s3fs and the credentials in the environment; day_files); empty: <warehouse>.partitions/ beside it.
    partitions_root: str = ""
    # Count the run's days in chunks of this many days, each a step of its own that holds no lock and reads and writes
    # Parquet files under partitions_root, so that an executor running steps in parallel (multiprocess, Kubernetes,
    # Celery) counts chunks at once; None counts them in one step, in the warehouse on the duckdb engine.
    fan_out_days: int | None = None

    def thresholds(self, level: str) -> Thresholds:
        return Thresholds(
            min_support=getattr(self, f"{level}_min_support"),
            min_confidence=getattr(self, f"{level}_min_confidence"),
            max_itemset_size=getattr(self, f"{level}_max_itemset_size"),
            max_consequent_size=None if self.multi_item_consequents else 1,
        )

    def partitions(self, warehouse: str) -> day_files.Root:
        return day_files.root_of(self.partitions_root) if self.partitions_root else day_files.default_root(warehouse)


def resources(sources: Path = DEFAULT_SOURCES, warehouse: Path = DEFAULT_WAREHOUSE) -> dict:
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    return {
        "warehouse": Warehouse(database=str(warehouse)),
        "source_files": SourceFiles(directory=str(sources)),
        "settings": AffinitySettings(),
    }
