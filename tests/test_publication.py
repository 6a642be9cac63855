"""Write-audit-publish: consumers read a published snapshot that no run, failed, concurrent or killed, can damage.

The runs here are real `product-affinity run` processes on a copy of the session's sample run (its sources and
its published warehouse), long enough that readers, a second run and kill -9 can meet a run in the middle of its
writes (each kill waits for the log line of the step it is meant to interrupt, so the sample's size decides how long
the steps take, not whether the kill lands inside them). The tests that run the pipeline are marked slow.
"""

import hashlib
import os
import subprocess
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from product_affinity.cli import main, run_job
from product_affinity.partitions import all_days, file_days
from product_affinity.contract.odcs import table, tables
from product_affinity.semantic.loader import model
from product_affinity.definitions import build_definitions, defs
from product_affinity.publication import KEEP_SNAPSHOTS, NothingPublished, open_published, publish, published_dir, published_snapshot
from product_affinity.defs.publication import SNAPSHOT_KEY
from tests.conftest import copy_of_sample_run

TABLES = [t.physical_name for t in tables().values()]
PORTS = [t.physical_name for t in tables().values() if t.schema == "consumer_aligned"]


def row_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0] for name in TABLES}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_run(sources: Path, warehouse: Path, **streams) -> subprocess.Popen:
    """The daily `product-affinity run` (the sources' latest day, as the schedule asks for) in its own process, as a
    scheduler starts it, with Dagster's log (the kills wait for its lines). It ingests, rebuilds every output port,
    checks and publishes as a run over all history does, without recounting two years of days."""
    latest = file_days(sources)[1]
    command = [sys.executable, "-m", "product_affinity.cli", "run", "--verbose", "--sources", str(sources), "--warehouse", str(warehouse),
               "--days", str(latest)]
    return subprocess.Popen(command, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"}, **streams)


@pytest.fixture(scope="module")
def product(sample_run, tmp_path_factory):
    """The session's sample (20,000 orders: a run takes several seconds), built and published: a copy of the sample run."""
    return copy_of_sample_run(sample_run, tmp_path_factory.mktemp("publication"))


def published_state(warehouse: Path) -> tuple[Path, str, dict[str, int]]:
    """The published snapshot, its bytes' hash and its tables' row counts."""
    snapshot = published_snapshot(warehouse)
    with open_published(warehouse) as conn:
        return snapshot, digest(snapshot), row_counts(conn)


def assert_still_published(warehouse: Path, before: tuple[Path, str, dict[str, int]]) -> None:
    snapshot, hashed, counts = before
    assert published_snapshot(warehouse) == snapshot
    assert digest(snapshot) == hashed
    with open_published(warehouse) as conn:
        assert row_counts(conn) == counts


def test_publication_waits_for_every_table_and_is_part_of_the_job():
    graph = defs.resolve_asset_graph()
    rollups = {dg.AssetKey(["semantic", f"{v.name}_{r.name}"]) for v in model().views.values() for r in v.rollups}
    assert graph.get(SNAPSHOT_KEY).parent_keys == {
        dg.AssetKey([t.schema, t.name]) for t in tables().values() if t.name != "quarantine"
    } | rollups
    assert SNAPSHOT_KEY in defs.resolve_job_def("product_affinity").asset_layer.executable_asset_keys


@pytest.mark.slow
def test_a_run_publishes_every_table_in_a_read_only_snapshot(product):
    _, warehouse = product
    snapshot = published_snapshot(warehouse)
    assert (published_dir(warehouse) / "CURRENT").read_text().strip() == snapshot.name
    assert snapshot.stat().st_mode & 0o222 == 0
    with open_published(warehouse) as conn:
        conn.execute(f"ATTACH '{warehouse}' AS staging (READ_ONLY)")
        for name in PORTS:
            differ = conn.execute(
                f"SELECT count(*) FROM ((FROM {name} EXCEPT ALL FROM staging.{name}) UNION ALL (FROM staging.{name} EXCEPT ALL FROM {name}))"
            ).fetchall()[0][0]
            assert differ == 0, name
        staged = {name: conn.execute(f"SELECT count(*) FROM staging.{name}").fetchall()[0][0] for name in TABLES}
        assert row_counts(conn) == staged and all(staged.values())


def test_publication_keeps_the_last_snapshots_and_removes_what_a_killed_run_left(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with pytest.raises(NothingPublished, match="nothing has been published"):
        open_published(warehouse)
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("CREATE TABLE t AS SELECT range AS i FROM range(1000)")
        names = [publish(conn, warehouse, f"run{n:05d}").path.name for n in range(KEEP_SNAPSHOTS + 1)]
        directory = published_dir(warehouse)
        assert sorted(p.name for p in directory.glob("*.duckdb")) == names[-KEEP_SNAPSHOTS:]
        # what a run killed mid-copy, or between renaming its snapshot and moving CURRENT, leaves behind
        (directory / f"{names[-1]}.partial").write_bytes(b"half a copy")
        (directory / "99991231T235959.999999Z-killed00.duckdb").write_bytes(b"never published")
        (directory / "CURRENT.partial").write_text("99991231T235959.999999Z-killed00.duckdb")
        assert published_snapshot(warehouse).name == names[-1]
        latest = publish(conn, warehouse, "run99999")
    assert sorted(p.name for p in directory.iterdir()) == sorted([*names[-KEEP_SNAPSHOTS + 1 :], latest.path.name, "CURRENT"])
    assert latest.tables == {"main.t": 1000} and latest.previous == names[-1]
    with open_published(warehouse) as conn:
        assert conn.execute("SELECT sum(i) FROM t").fetchall() == [(499500,)]


@pytest.mark.slow
def test_a_session_left_open_on_the_working_warehouse_fails_the_run_at_once_naming_it(product, capsys):
    sources, warehouse = product
    before = published_state(warehouse)
    session = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; conn = duckdb.connect({str(warehouse)!r}, read_only=True); print('open', flush=True); time.sleep(3600)"],  # killed below
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert session.stdout.readline() == "open\n"
        assert main(["run", "--sources", str(sources), "--warehouse", str(warehouse)]) == 1
    finally:
        session.kill()
        session.wait()
    err = capsys.readouterr().err
    assert f"another process has {warehouse} open, so this run cannot write it" in err
    assert f'Could not set lock on file "{warehouse}": Conflicting lock is held in' in err and f"(PID {session.pid})" in err
    assert_still_published(warehouse, before)


# Where to kill a run: a line of its log, read as it runs (None: as soon as the process exists).
KILL_POINTS = {
    "at start": None,
    "mid-ingestion": "source_aligned__product - product.csv",  # the purchase lines are loading next
    "mid-output ports": "association_rules (",  # the rules are being written, the other ports come next
    "mid-publication": "publishing ",  # checkpoint, copy, rename, pointer
}


def recover_while_reading(sources: Path, warehouse: Path, before: tuple[Path, str, dict[str, int]], capsys) -> Path:
    """A complete run, and while it writes: a second run is refused, and readers read the published snapshot, unblocked,
    as often as they can until it ends. Returns the snapshot it published."""
    run = start_run(sources, warehouse, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = Path(f"{warehouse}.lock")
        while run.poll() is None and not (lock.exists() and lock.read_text().strip() == str(run.pid)):
            time.sleep(0.05)
        assert run.poll() is None, "the run ended before it was seen holding its lock"

        assert main(["run", "--sources", str(sources), "--warehouse", str(warehouse)]) == 1
        err = capsys.readouterr().err
        assert f"{warehouse} is being written by another pipeline run (PID {run.pid} holds the lock {lock})" in err
        assert f"Nothing from this run was published; consumers still read {before[0]}, unchanged." in err

        seen = []
        while run.poll() is None:
            with open_published(warehouse) as conn:
                seen.append(Path(conn.execute("SELECT path FROM duckdb_databases() WHERE NOT internal").fetchall()[0][0]).name)
                assert row_counts(conn) == before[2]
            time.sleep(0.05)  # leave the run its CPU
    finally:
        if run.poll() is None:  # an assertion failed while it ran: do not leave it running after the test
            run.kill()
        run.wait()
    assert run.returncode == 0
    after = published_snapshot(warehouse)
    assert after != before[0] and digest(before[0]) == before[1]  # a new snapshot; the old one untouched
    assert len(seen) > 1 and set(seen) <= {before[0].name, after.name}
    return after


@pytest.mark.slow
def test_a_run_killed_at_any_point_leaves_the_published_data_intact_and_the_next_run_recovers_unblocking_readers(product, capsys):
    """Killed at each point, then the next run: it recovers with no manual cleanup, and while it writes, readers are
    never blocked and a second run is refused (one complete run shows both: what these tests cost is whole runs)."""
    sources, warehouse = product
    before = published_state(warehouse)
    for point, line in KILL_POINTS.items():
        run = start_run(sources, warehouse, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if line is not None:
            assert any(line in logged for logged in run.stderr), f"{point}: the run ended without logging {line!r}"
        run.kill()  # SIGKILL
        run.wait()
        run.stderr.close()
        moved = published_snapshot(warehouse)
        if point == "mid-publication" and moved != before[0]:  # killed after CURRENT moved: the new one must be whole
            assert digest(before[0]) == before[1]
            before = (moved, digest(moved), before[2])
        assert_still_published(warehouse, before)

    recover_while_reading(sources, warehouse, before, capsys)  # no manual cleanup in between
    directory = published_dir(warehouse)
    assert not list(directory.glob("*.partial"))
    assert len(list(directory.glob("*.duckdb"))) <= KEEP_SNAPSHOTS
    with open_published(warehouse) as conn:
        assert row_counts(conn) == before[2]


@pytest.mark.slow
def test_a_failing_blocking_check_blocks_publication_and_the_run_says_what(product, capsys):
    sources, warehouse = product
    before = published_state(warehouse)

    @dg.asset_check(asset=dg.AssetKey(["source_aligned", "product"]), blocking=True, description="a catalogue of at most 100 products")
    def at_most_100_products(warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as conn:
            products = conn.execute("SELECT count(*) FROM source_aligned.product").fetchall()[0][0]
        return dg.AssetCheckResult(passed=products <= 100, metadata={"observed_value": products, "max": 100})

    with_check = dg.Definitions.merge(build_definitions(sources, warehouse), dg.Definitions(asset_checks=[at_most_100_products]))
    with redirect_stdout(StringIO()):
        assert run_job(with_check, warehouse, all_days(sources, warehouse)) == 1

    err = capsys.readouterr().err
    products = before[2][table("product").physical_name]
    assert f"FAILED check source_aligned/product:at_most_100_products (ERROR, blocking): observed_value={products}, max=100" in err
    not_materialized = next(line for line in err.splitlines() if line.startswith("Not materialized: ")).split(": ")[1].split(", ")
    graph = with_check.resolve_asset_graph()  # everything built from the checked table, whatever assets there are
    downstream = dg.AssetSelection.assets(dg.AssetKey(["source_aligned", "product"])).downstream(include_self=False).resolve(graph)
    runnable = [key for key in downstream if graph.get(key).is_executable]  # not the tables written alongside (quarantine, slo_results)
    assert not_materialized == sorted(key.to_user_string() for key in runnable)
    assert {"publication/snapshot", "consumer_aligned/customer_metrics", "source_aligned/purchase"} <= set(not_materialized)
    assert f"Nothing from this run was published; consumers still read {before[0]}, unchanged." in err
    assert_still_published(warehouse, before)
