"""The spark engine gives what the DuckDB engine gives: the same partitions through both, row for row.

A small sample is run through the job's counts and rules twice, once per engine (the `engine` setting, as
`run --engine spark` sets it), into two warehouses; then one day's lines are taken out of the source and
that day and its neighbours are run again, so the Spark path replaces day folders and recounts. Every
per-day counts table, every total and the association_rules port must hold the same rows (EXCEPT ALL,
both ways, empty), and so must the rules Spark reduces from its own Parquet counts. Spark runs in local
mode: it needs pyspark (the spark extra) and Java; without them the tests skip, unless CI is set.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from product_affinity.consumer_aligned import daily_counts, day_files
from product_affinity.consumer_aligned.baskets import LEVELS
from product_affinity.definitions import build_definitions
from product_affinity.defs.metadata import table_key
from product_affinity.defs.partitions import range_tags
from product_affinity.defs.resources import AffinitySettings
from product_affinity.partitions import Days, file_days
from product_affinity.sources.sample import generate_sample

pytestmark = pytest.mark.slow
END = datetime(2026, 6, 30, 12)
SMALL = dict(customers=300, products=60, orders=3_000, end=END, history_days=14)
ENGINES = ("duckdb", "spark")


def spark_unavailable() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "needs pyspark: pip install -c constraints.txt -e '.[spark]'"
    from product_affinity.consumer_aligned.spark_counts import java_missing

    return java_missing()


@pytest.fixture(scope="module")
def spark():
    if reason := spark_unavailable():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI is set and Spark cannot run: {reason}")
        pytest.skip(f"{reason}; runs, and fails without it, under CI=true")
    from product_affinity.consumer_aligned.spark_counts import session

    return session()


def run(sources: Path, warehouse: Path, days: Days, engine: str) -> None:
    """The job's counts and rules, with what they read, over `days`, counted by `engine`."""
    job = build_definitions(sources, warehouse).resolve_job_def("product_affinity")
    graph = job.asset_layer.asset_graph
    rules = dg.AssetSelection.assets(table_key("association_rules")).upstream().resolve(graph)
    result = job.get_subset(asset_selection=rules & graph.materializable_asset_keys, asset_check_selection=set()).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=range_tags(days), raise_on_error=False,
        run_config={"resources": {"settings": {"config": {"engine": engine}}}})
    assert result.success


def drop_day(sources: Path, day) -> None:
    """Take every line of `day` out of the purchase file, as if its orders had been withdrawn."""
    path = sources / "purchase.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if f",{day} " not in line))


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    sources = root / "sources"
    generate_sample(sources, **SMALL)
    first, last = file_days(sources)
    warehouses = {engine: root / f"{engine}.duckdb" for engine in ENGINES}
    for engine, warehouse in warehouses.items():
        run(sources, warehouse, Days(first, last + timedelta(days=1)), engine)
    dropped = first + timedelta(days=5)
    drop_day(sources, dropped)
    for engine, warehouse in warehouses.items():
        run(sources, warehouse, Days(dropped - timedelta(days=1), dropped + timedelta(days=2)), engine)
    return warehouses, dropped


def differences(a: Path, b: Path, name: str) -> tuple[int, int]:
    """Rows of table `name` only in database `a`, and only in `b`."""
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        conn.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        return tuple(conn.execute(f"SELECT count(*) FROM (FROM {x}.{name} EXCEPT ALL FROM {y}.{name})").fetchone()[0]
                     for x, y in (("a", "b"), ("b", "a")))


@pytest.mark.parametrize("name", [*daily_counts.COUNTED, *(f"total_{kind}" for kind in daily_counts.KEYS)])
def test_spark_counts_equal_duckdb_counts(built, name):
    warehouses, _ = built
    counts = {engine: daily_counts.counts_database(w) for engine, w in warehouses.items()}
    with duckdb.connect(str(counts["duckdb"]), read_only=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] > 0
    assert differences(counts["duckdb"], counts["spark"], f"main.{name}") == (0, 0)


def test_spark_rules_equal_duckdb_rules(built):
    warehouses, _ = built
    assert differences(warehouses["duckdb"], warehouses["spark"], "consumer_aligned.association_rules") == (0, 0)


def test_a_recounted_day_replaces_its_files(built):
    warehouses, dropped = built
    root = day_files.default_root(warehouses["spark"])
    recounted = Days(dropped - timedelta(days=1), dropped + timedelta(days=2))
    for name in (day_files.LINES, *daily_counts.COUNTED):
        assert [p.name for p in day_files.held(root, name, recounted)] == [
            f"day={day}" for day in recounted if day != dropped], name
    with duckdb.connect(str(warehouses["spark"]), read_only=True) as conn:
        parquet = conn.execute(f"SELECT count(*) FROM read_parquet('{root}/lines/*/*.parquet')").fetchone()[0]
        assert parquet == conn.execute("SELECT count(*) FROM source_aligned.purchase").fetchone()[0]
    assert not (root / "_staging").exists()  # every writer removed its staging folder


def test_the_reduce_on_spark_gives_the_same_rules(built, spark):
    from product_affinity.consumer_aligned.spark_counts import rules

    warehouses, _ = built
    settings = AffinitySettings()
    with duckdb.connect(str(warehouses["spark"]), read_only=True) as conn:
        reduced = rules(spark, day_files.default_root(warehouses["spark"]), {level: settings.thresholds(level) for level in LEVELS}, conn)
        conn.register("reduced", reduced)
        published = conn.execute("SELECT count(*) FROM consumer_aligned.association_rules").fetchone()[0]
        only = [conn.execute(f"SELECT count(*) FROM (FROM {x} EXCEPT ALL FROM {y})").fetchone()[0]
                for x, y in (("reduced", "consumer_aligned.association_rules"), ("consumer_aligned.association_rules", "reduced"))]
    assert published > 0 and only == [0, 0]
