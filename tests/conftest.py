from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import redirect_stdout
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import duckdb
import pytest


def _memory_folder(needed_bytes: int = 4 << 30) -> str | None:
    """Linux's /dev/shm when it can hold a session's temporary files (about 1 GB; a container's is often 64 MB)."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) and stat.f_bavail * stat.f_frsize >= needed_bytes else None


# Temporary folders in memory where the machine has room, unless TMPDIR says otherwise: a whole run records a Dagster
# event per day and asset in SQLite, a transaction each, and syncing each to disk cost about a fifth of a run's time.
# Set before pytest creates its base folder; child processes inherit it through TMPDIR.
if "TMPDIR" not in os.environ and (memory := _memory_folder()):
    os.environ["TMPDIR"] = tempfile.tempdir = memory

# As `make test` and the CLI set it: a run over many days plans them in one event per asset, not one per day.
os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")

CUSTOMER_HEADER = "customer_id,first_name,last_name,email,phone,birth_year,education,marital_status,income,country,signup_at"
PRODUCT_HEADER = "product_id,product_name,category,subcategory,list_price"
PURCHASE_HEADER = "order_id,line_number,customer_id,product_id,quantity,unit_price,purchased_at,channel,deal"


def rows_apart(a: Path, b: Path, table: str) -> tuple[int, int]:
    """Rows of `table` only in the database file `a`, and only in `b` (EXCEPT ALL, both ways): (0, 0) when both hold
    the same rows, repeats included."""
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        conn.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        return tuple(conn.execute(f"SELECT count(*) FROM (FROM {x}.{table} EXCEPT ALL FROM {y}.{table})").fetchone()[0]
                     for x, y in (("a", "b"), ("b", "a")))


def assert_same_rows(a: Path, b: Path, table: str) -> None:
    """`a` holds rows of `table` (an empty table would make the comparison pass for nothing), and `b` the same rows."""
    with duckdb.connect(str(a), read_only=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, f"{a}: {table} is empty"
    assert rows_apart(a, b, table) == (0, 0), table


def undeclared_tables(snapshot: Path) -> set[str]:
    """Tables of a published snapshot that neither the contract, the semantic model's rollups nor the SLO results
    declare. The snapshot is a copy of the warehouse file, so a step's working table written there (not as a temp
    table, nor in the counts or staging file) would be published."""
    from product_affinity.contract.odcs import tables
    from product_affinity.quality.results import SLO_RESULTS
    from product_affinity.semantic.loader import model

    declared = {t.physical_name for t in tables().values()} | {SLO_RESULTS}
    declared |= {rollup.table for view in model().views.values() for rollup in view.rollups}
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        held = {name for (name,) in conn.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall()}
    return held - declared


def drop_day(sources: Path, day) -> None:
    """Take every line of `day` out of the purchase file, as if its orders had been withdrawn."""
    path = sources / "purchase.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if f",{day} " not in line))


def spark_unavailable() -> str | None:
    """Why Spark cannot run here (no pyspark, no Java), or None."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        return "needs pyspark: pip install -c constraints.txt -e '.[spark]'"
    from product_affinity.consumer_aligned.spark_counts import java_missing

    return java_missing()


def require_spark() -> None:
    """Skip, naming the cause, where Spark cannot run; under CI=true fail instead (.ci/run installs Java)."""
    if reason := spark_unavailable():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI is set and Spark cannot run: {reason}")
        pytest.skip(f"{reason}; runs, and fails without it, under CI=true")


def write_sources(directory: Path, customers: list[str], products: list[str], purchases: list[str]) -> Path:
    """Write the three source files from CSV lines (headers added)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, header, lines in (
        ("customer_info.csv", CUSTOMER_HEADER, customers),
        ("product.csv", PRODUCT_HEADER, products),
        ("purchase.csv", PURCHASE_HEADER, purchases),
    ):
        (directory / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return directory


def customer(customer_id: int | str, country: str = "Spain", email: str | None = None) -> str:
    email = email or f"c{customer_id}@example.com"
    return f"{customer_id},Ann,Lee,{email},+34-555-0100,1980,Master,Married,50000.00,{country},2023-01-01 10:00:00"


# Wines, Meats and Sweets: three products whose figures are easy to compute by hand.
PRODUCTS = [
    "1,Rioja Reserva,Wines,Red,10.00",
    "2,Ribeye Steak,Meats,Beef,20.00",
    "3,Chocolate Cake,Sweets,Cakes,5.00",
]


def pytest_collection_modifyitems(items):
    """A test that needs the sample pipeline run (directly or through a fixture) is slow: `pytest -m "not slow"` leaves it out."""
    for item in items:
        if "sample_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def conn():
    with duckdb.connect() as connection:
        yield connection


@pytest.fixture(scope="session", autouse=True)
def dagster_home(tmp_path_factory) -> Path:
    """A Dagster instance of the session's own: runs the tests start are recorded there, never in the project's
    dagster_home/ (make exports DAGSTER_HOME), configured as the project's is."""
    from product_affinity.defs.run_history import configured_like_the_project

    home = configured_like_the_project(tmp_path_factory.mktemp("dagster_home"))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


SAMPLE_HOME = "dagster_home"  # where the sample run is recorded, beside its warehouse


def _run_sample(root: Path) -> None:
    """The default sample through `product-affinity run` into `root`, recorded in a Dagster instance of its own there;
    what it printed is kept in `root/printed.txt`, written last: its presence says the run is complete."""
    from product_affinity.cli import main
    from product_affinity.defs.run_history import configured_like_the_project
    from product_affinity.sources.sample import generate_sample

    home = configured_like_the_project(root / SAMPLE_HOME)
    generate_sample(root / "sources", end=datetime.now(UTC).replace(tzinfo=None))  # fresh: freshness is real
    session_home = os.environ["DAGSTER_HOME"]
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with redirect_stdout(StringIO()) as printed:
            assert main(["run", "--sources", str(root / "sources"), "--warehouse", str(root / "warehouse.duckdb")]) == 0
    finally:
        os.environ["DAGSTER_HOME"] = session_home
    (root / "printed.txt").write_text(printed.getvalue())


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, worker_id):
    """The default sample through `product-affinity run`, once per session: (warehouse, ground truth, printed summary).

    Under pytest-xdist the first worker to need it runs it, in the session's shared temporary folder, while the others
    wait on a lock; each worker then reads a copy of its own (sources, warehouse, counts, published snapshots, the
    Dagster instance it was recorded in under `dagster_home/`), so what one worker's tests write beside the warehouse
    (API keys, the audit log) never meets another's. One run instead of one per worker: a run of the default two
    years is the most expensive fixture of the suite."""
    root = tmp_path_factory.mktemp("sample")
    if worker_id == "master":  # no xdist: this process is the session
        _run_sample(root)
    else:
        shared = tmp_path_factory.getbasetemp().parent / "sample_run"  # the xdist session's folder, above each worker's
        with open(f"{shared}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (shared / "printed.txt").exists():
                shutil.rmtree(shared, ignore_errors=True)  # a worker that failed half-way left it
                _run_sample(shared)
        shutil.copytree(shared, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock"))
    sources = root / "sources"
    truth = json.loads((sources / "ground_truth.json").read_text()) | {"directory": sources}
    printed = (root / "printed.txt").read_text()
    if worker_id != "master":
        printed = printed.replace(str(shared), str(root))
    return root / "warehouse.duckdb", truth, printed


def copy_of_sample_run(sample_run, directory: Path) -> tuple[Path, Path]:
    """The session's sample run in a folder of its own: (sources, warehouse), the warehouse with what the run published.

    For a test that needs a product already built and published to run against (a refused run, a killed one): a copy
    instead of one more run of the whole pipeline. The copy holds the per-day counts too, so a daily run on it counts
    only its days, as it would on the original."""
    from product_affinity.consumer_aligned.daily_counts import counts_database
    from product_affinity.publication import published_dir

    warehouse, truth, _ = sample_run
    sources = Path(shutil.copytree(truth["directory"], directory / "sources"))
    copied = directory / "warehouse" / warehouse.name
    copied.parent.mkdir(parents=True)
    shutil.copy2(warehouse, copied)
    shutil.copy2(counts_database(warehouse), counts_database(copied))  # the per-day counts: a daily run adds to them
    shutil.copytree(published_dir(warehouse), published_dir(copied))
    return sources, copied


def source_aligned_run(sources: Path, warehouse: Path, instance):
    """The product_affinity job on `warehouse`, only its source-aligned assets and their checks (the same job,
    a subset of its assets): for a test about what ingestion accepts and quarantines, where the rest adds nothing."""
    from product_affinity.definitions import build_definitions
    from product_affinity.defs.partitions import range_tags
    from product_affinity.defs.source_aligned import source_aligned_assets
    from product_affinity.partitions import all_days

    job = build_definitions(sources, warehouse).resolve_job_def("product_affinity")
    return job.execute_in_process(instance=instance, asset_selection=[a.key for a in source_aligned_assets], raise_on_error=False,
                                  tags=range_tags(all_days(sources, warehouse)))


def port_assets(job, ports, upstream: bool = True) -> set:
    """The keys of the job's output `ports`, with every materializable asset they read when `upstream`."""
    import dagster as dg

    from product_affinity.defs.metadata import table_key

    graph = job.asset_layer.asset_graph
    selection = dg.AssetSelection.assets(*(table_key(port) for port in ports))
    return (selection.upstream() if upstream else selection).resolve(graph) & graph.materializable_asset_keys


def run_ports(sources: Path, warehouse: Path, days, ports=("association_rules", "customer_metrics"), upstream: bool = True,
              **settings):
    """The job's output `ports`, with every asset they read (or alone), over `days` (a partitions.Days), in this
    process and with no checks (they add nothing to a comparison of engines or ways of counting), the `settings` given
    as run config (`engine`, `fan_out_days`, `rules_window_days`...): the successful result."""
    import dagster as dg

    from product_affinity.definitions import build_definitions
    from product_affinity.defs.partitions import range_tags

    job = build_definitions(sources, warehouse).resolve_job_def("product_affinity")
    result = job.get_subset(asset_selection=port_assets(job, ports, upstream), asset_check_selection=set()).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=range_tags(days), raise_on_error=False,
        run_config={"resources": {"settings": {"config": settings}}})
    assert result.success, [event.step_failure_data.error.message for event in result.all_events if event.is_step_failure]
    return result


@pytest.fixture(scope="session")
def published_sample(sample_run) -> Path:
    """The working warehouse of the session's sample run: consumers' tests (APIs, policies, the BI port) read what it published."""
    return sample_run[0]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session. Skips without Chromium, unless CI is set: there it must run."""
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium); runs and fails under CI=true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's maintenance database; skip (fail when CI is set) when no server answers."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from product_affinity.delivery.postgres_common import default_dsn, safe_dsn

    dsn = make_conninfo(default_dsn(), dbname="postgres")
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI is set and PostgreSQL does not answer at {safe_dsn(dsn)}: {error}")
        pytest.skip(f"PostgreSQL does not answer at {safe_dsn(dsn)} ({error}); with CI=true this fails instead")
    return dsn

