"""The per-day counting fanned out as Dagster steps gives what one step gives, and runs in parallel without the
warehouse's steps ever overlapping.

A short sample is run twice, upstream of the association_rules port: once as `make run` does (in process, the
counting in the warehouse), once with `fan_out_days` on the multiprocess executor, where each chunk of days is a step
of its own, in a process of its own, reading and writing Parquet files under the run's root. Then one day's lines are
taken out of the source and that day and its neighbours are run again, with a trailing rules window, both ways (the
fanned-out one in process this time: each step's process costs seconds of imports, and the first run showed them). Every
per-day counts table, every total and the port must hold the same rows (EXCEPT ALL, both ways, empty). Dagster's
event log must show the chunks' steps in more than one process, and the steps holding the warehouse one after another.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from product_affinity.consumer_aligned import daily_counts, day_files
from product_affinity.definitions import build_definitions, defs
from product_affinity.defs.partitions import range_tags
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.partitions import Days, file_days
from product_affinity.sources.sample import generate_sample
from tests.conftest import assert_same_rows, drop_day, port_assets, run_ports

pytestmark = pytest.mark.slow
END = datetime(2026, 6, 30, 12)
SMALL = dict(customers=300, products=60, orders=3_000, end=END, history_days=14)
WINDOW = {"rules_window_days": 10}  # the second run's trailing window: 4 of the 14 days age out of the rules
CHUNK_STEP = "counts__daily_counts.count_chunk["
PORTS = ("association_rules",)


def run_fanned_out(sources: Path, warehouse: Path, days: Days, fan_out_days: int, **settings) -> str:
    """The same assets with the counting in chunks of `fan_out_days` days, each step in a process of its own (the
    instance is the test session's, under DAGSTER_HOME): the run's id."""
    selected = port_assets(build_definitions(sources, warehouse).resolve_job_def("product_affinity"), PORTS)
    job = dg.build_reconstructable_job("product_affinity.definitions", "product_affinity_job",
                                       reconstructable_args=(str(sources), str(warehouse)))
    result = dg.execute_job(
        job.get_subset(asset_selection=selected, asset_check_selection=set()), instance=dg.DagsterInstance.get(),
        tags=range_tags(days),
        run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 3}}},
                    "resources": {"settings": {"config": {"fan_out_days": fan_out_days, **settings}}}})
    assert result.success, [event.step_failure_data.error.message for event in result.all_events if event.is_step_failure]
    return result.run_id


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("fan_out")
    sources = root / "sources"
    generate_sample(sources, **SMALL)
    first, last = file_days(sources)
    everything = Days(first, last + timedelta(days=1))
    default, fanned = root / "default.duckdb", root / "fanned.duckdb"
    unfanned = run_ports(sources, default, everything, PORTS)
    run_id = run_fanned_out(sources, fanned, everything, fan_out_days=5)  # 3 chunks of 5 days at most
    dropped = first + timedelta(days=5)
    drop_day(sources, dropped)
    around = Days(dropped - timedelta(days=1), dropped + timedelta(days=2))
    run_ports(sources, default, around, PORTS, **WINDOW)
    run_ports(sources, fanned, around, PORTS, fan_out_days=1, **WINDOW)  # in process: the steps' processes shown above
    return {"default": default, "fanned": fanned}, run_id, dropped, unfanned.get_asset_materialization_events()


@pytest.mark.parametrize("name", [*daily_counts.COUNTED, *(f"total_{kind}" for kind in daily_counts.KEYS), "window_days"])
def test_fanned_out_counts_equal_the_default_runs(built, name):
    warehouses, *_ = built
    assert_same_rows(*(daily_counts.counts_database(warehouses[way]) for way in ("default", "fanned")), f"main.{name}")


def test_fanned_out_rules_equal_the_default_runs(built):
    warehouses, *_ = built
    assert_same_rows(warehouses["default"], warehouses["fanned"], "consumer_aligned.association_rules")


def test_the_counts_are_described_as_before(built):
    """Each day's materialization of the counts carries what the one-step asset gave (engine, baskets, rows), fanned
    out or not, and says how many chunk steps counted it."""
    _, run_id, _, unfanned = built
    fanned = [record.event_log_entry.dagster_event for record in dg.DagsterInstance.get().get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records]
    for events, steps in ((unfanned, 0), (fanned, 3)):
        counts = [e.materialization.metadata for e in events if e.asset_key == dg.AssetKey(["counts", "daily_counts"])]
        assert len(counts) > 1  # one per day of the run
        for metadata in counts:
            assert metadata["engine"].value == "duckdb" and metadata["fanned_out_steps"].value == steps
            assert metadata["baskets"].value > 0 and metadata["days_with_baskets"].value == len(counts)
            assert metadata["rows_held"].value["day_product_pairs"] > 0 and "product_pairs" in metadata["itemset_rows_written"].value


def test_the_emptied_day_has_no_folder_left(built):
    warehouses, _, dropped, _ = built
    root = day_files.default_root(warehouses["fanned"])
    for name in (day_files.LINES, *daily_counts.COUNTED):
        assert not day_files.day_folder(root, name, dropped).exists(), name
        assert day_files.day_folder(root, name, dropped - timedelta(days=1)).is_dir(), name
    assert not (root / "_staging").exists()  # every writer removed its staging folder


def steps(run_id: str) -> dict[str, dict]:
    """Per step of the run, from the events its own process logged (not the run's process, which plans each step and
    starts its process): the processes they came from, and the first and last of their places in the event log (the
    order in which the instance stored them)."""
    records = dg.DagsterInstance.get().get_records_for_run(run_id, limit=100_000).records
    events = [(record.storage_id, record.event_log_entry.dagster_event) for record in records
              if record.event_log_entry.dagster_event is not None]
    (run,) = {event.pid for _, event in events if event.event_type == dg.DagsterEventType.RUN_START}
    found: dict[str, dict] = {}
    for stored, event in events:
        if event.step_key is None or event.pid in (None, run):  # planned at the start, or started by the run
            continue
        step = found.setdefault(event.step_key, {"pids": set(), "first": stored, "last": stored})
        step["pids"].add(event.pid)
        step["last"] = stored
    return found


def test_the_chunks_ran_as_steps_in_several_processes(built):
    _, run_id, *_ = built
    found = steps(run_id)
    counted = {key: step for key, step in found.items() if key.startswith(CHUNK_STEP)}
    assert len(counted) == 3, sorted(found)  # 14 days by 5
    assert all(len(step["pids"]) == 1 for step in found.values())  # each step in one process of its own
    assert len(set().union(*(step["pids"] for step in counted.values()))) == 3


def test_the_warehouse_steps_never_overlap(built):
    """Each step that holds the warehouse has all its events stored before the next one's first: never two at once
    (the lock would have failed the second); and the load starts only after every chunk's step has ended."""
    _, run_id, *_ = built
    warehouse_steps = {op.name for op in defs.resolve_job_def("product_affinity").graph.iterate_op_defs()
                       if WAREHOUSE_STEP.items() <= op.tags.items()}
    assert "count_chunk" not in warehouse_steps and {"plan_counting", "load_counts"} <= warehouse_steps
    found = steps(run_id)
    held = sorted((step["first"], step["last"], key) for key, step in found.items()
                  if key.split(".")[-1].split("[")[0] in warehouse_steps)
    assert len(held) >= 4, held  # the two sources' loads, the plan, the load, the rules
    for (_, end, before), (start, _, after) in zip(held, held[1:]):
        assert end < start, f"{before} and {after} ran at once"
    load = found["counts__daily_counts.load_counts"]["first"]
    assert all(step["last"] < load for key, step in found.items() if key.startswith(CHUNK_STEP))


def test_concurrent_writers_under_one_root_keep_their_folders(tmp_path):
    """Attack: chunks of adjacent days counted at once under one root, by as many threads as it takes to make their
    staging folders come and go together: every day's counts are the warehouse's, whatever the interleaving."""
    lines = tmp_path / "lines.duckdb"
    root = tmp_path / "root"
    sources = tmp_path / "sources"
    generate_sample(sources, **SMALL)
    first, last = file_days(sources)
    days = Days(first, last + timedelta(days=1))
    with duckdb.connect(str(lines)) as conn:
        conn.execute("CREATE SCHEMA source_aligned")
        conn.execute(f"""CREATE TABLE source_aligned.purchase AS SELECT CAST(order_id AS BIGINT) AS order_id,
            CAST(product_id AS BIGINT) AS product_id, CAST(purchased_at AS TIMESTAMP) AS purchased_at
            FROM read_csv('{sources / "purchase.csv"}', all_varchar = true) WHERE try_cast(purchased_at AS TIMESTAMP)
            IS NOT NULL AND try_cast(product_id AS BIGINT) IS NOT NULL AND try_cast(order_id AS BIGINT) IS NOT NULL""")
        conn.execute(f"""CREATE TABLE source_aligned.product AS SELECT CAST(product_id AS BIGINT) AS product_id, category
            FROM read_csv('{sources / "product.csv"}', all_varchar = true) WHERE try_cast(product_id AS BIGINT) IS NOT NULL""")
        daily_counts.export_lines(conn, root, days)
    failures = []

    def count(chunk: Days) -> None:
        try:
            for _ in range(3):  # again and again: each time a staging folder of its own, removed at the end
                daily_counts.count_files(root, chunk, 3)
        except Exception as error:  # noqa: BLE001 - collected for the assertion below
            failures.append(error)

    threads = [threading.Thread(target=count, args=(chunk,)) for chunk in days.chunks(1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    with duckdb.connect(str(lines)) as conn:
        daily_counts.attach(conn, tmp_path / "counts.duckdb")
        daily_counts.count_days(conn, days, 3, None)
        for name in daily_counts.COUNTED:
            assert conn.execute(f"SELECT count(*) FROM counts.{name}").fetchone()[0] > 0
            columns = ", ".join(c for c, *_ in conn.execute(f"DESCRIBE counts.{name}").fetchall())
            files = f"SELECT {columns} FROM ({daily_counts.parquet_days_sql(root, name, days)})"
            for x, y in ((f"counts.{name}", f"({files})"), (f"({files})", f"counts.{name}")):
                assert conn.execute(f"SELECT count(*) FROM (FROM {x} EXCEPT ALL FROM {y})").fetchone()[0] == 0, name
    assert not (root / "_staging").exists()


def test_staging_folders_come_and_go_at_once(tmp_path):
    """Attack: writers entering and leaving their staging folders under one root at once. The last to leave removes
    `_staging`, which another may have just made to create its own folder in: it must get its folder all the same."""
    failures = []

    def write() -> None:
        for _ in range(2_000):
            try:
                with day_files.staging(tmp_path) as folder:
                    (folder / "day_baskets").mkdir()
            except OSError as error:
                failures.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert not (tmp_path / "_staging").exists()
