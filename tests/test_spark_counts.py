"""The spark engine gives what the DuckDB engine gives: the same partitions through both, row for row.

A small sample is run through the job's counts, rules and customer metrics twice, once per engine (the `engine`
setting, as `run --engine spark` sets it), into two warehouses, the spark engine's counting fanned out as steps per
chunk of days (`fan_out_days`; in one process here, so one JVM); then one day's lines are taken out of the source and
that day and its neighbours are run again with a trailing rules window, the counting in the load step, so the Spark
path replaces day folders, recounts, and reduces a window that no longer holds every day. Every per-day counts table, every total and the
association_rules and customer_metrics ports must hold the same rows (EXCEPT ALL, both ways, empty); on the spark
engine those ports are the reduce and the customer aggregates Spark ran on the Parquet files, which a copy of its
warehouse with DuckDB's totals deleted shows. Spark runs in local mode: it needs pyspark (the spark extra) and Java;
without them the tests skip, unless CI is set.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from product_affinity.consumer_aligned import daily_counts, day_files
from product_affinity.partitions import Days, file_days
from product_affinity.sources.sample import generate_sample
from tests.conftest import assert_same_rows, drop_day, require_spark, rows_apart as differences, run_ports

pytestmark = pytest.mark.slow
END = datetime(2026, 6, 30, 12)
SMALL = dict(customers=300, products=60, orders=3_000, end=END, history_days=14)
ENGINES = ("duckdb", "spark")
PORTS = ("association_rules", "customer_metrics")
WINDOW = {"rules_window_days": 10}  # the second run's trailing window: 4 of the 14 days age out of the rules
FANNED_OUT = {"duckdb": {}, "spark": {"fan_out_days": 5}}  # the first run's counting: one step, or three chunks' steps


@pytest.fixture(scope="module")
def spark():
    require_spark()
    from product_affinity.consumer_aligned.spark_counts import session

    return session()


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    sources = root / "sources"
    generate_sample(sources, **SMALL)
    first, last = file_days(sources)
    warehouses = {engine: root / f"{engine}.duckdb" for engine in ENGINES}
    for engine, warehouse in warehouses.items():  # spark's map as the chunks' steps here, its load step's count below
        run_ports(sources, warehouse, Days(first, last + timedelta(days=1)), engine=engine, **FANNED_OUT[engine])
    dropped = first + timedelta(days=5)
    drop_day(sources, dropped)
    for engine, warehouse in warehouses.items():
        run_ports(sources, warehouse, Days(dropped - timedelta(days=1), dropped + timedelta(days=2)), engine=engine, **WINDOW)
    return warehouses, dropped, sources


@pytest.mark.parametrize("name", [*daily_counts.COUNTED, *(f"total_{kind}" for kind in daily_counts.KEYS)])
def test_spark_counts_equal_duckdb_counts(built, name):
    warehouses, *_ = built
    assert_same_rows(*(daily_counts.counts_database(warehouses[engine]) for engine in ("duckdb", "spark")), f"main.{name}")


def rows(warehouse: Path, name: str) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]


@pytest.mark.parametrize("port", PORTS)
def test_spark_ports_equal_duckdb_ports(built, port):
    warehouses, *_ = built
    assert rows(warehouses["duckdb"], f"consumer_aligned.{port}") > 0
    assert differences(warehouses["duckdb"], warehouses["spark"], f"consumer_aligned.{port}") == (0, 0)


def test_a_recounted_day_replaces_its_files(built):
    warehouses, dropped, _ = built
    root = day_files.default_root(warehouses["spark"])
    recounted = Days(dropped - timedelta(days=1), dropped + timedelta(days=2))
    for name in (day_files.LINES, *daily_counts.COUNTED):
        assert [p.name for p in day_files.held(root, name, recounted)] == [
            f"day={day}" for day in recounted if day != dropped], name
    with duckdb.connect(str(warehouses["spark"]), read_only=True) as conn:
        parquet = conn.execute(f"SELECT count(*) FROM read_parquet('{root}/lines/*/*.parquet')").fetchone()[0]
        assert parquet == conn.execute("SELECT count(*) FROM source_aligned.purchase").fetchone()[0]
    assert not (root / "_staging").exists()  # every writer removed its staging folder


def test_the_spark_ports_come_from_the_files_not_duckdbs_totals(built, tmp_path):
    """A copy of the spark engine's warehouse has a root of its own, with no file in it, and its DuckDB totals deleted;
    its two ports, dropped and rebuilt alone on the spark engine, are the duckdb engine's again: the rules were reduced
    on Spark from per-day count files, and the customer aggregates computed on Spark from the lines' files, all
    exported first from the counts file and the warehouse, since none was current under that root."""
    warehouses, dropped, sources = built
    copy = tmp_path / "copy.duckdb"
    shutil.copy(warehouses["spark"], copy)
    shutil.copy(daily_counts.counts_database(warehouses["spark"]), daily_counts.counts_database(copy))
    with duckdb.connect(str(copy)) as conn:
        for port in PORTS:
            conn.execute(f"DROP TABLE consumer_aligned.{port}")
    with duckdb.connect(str(daily_counts.counts_database(copy))) as conn:
        for kind in daily_counts.KEYS:
            conn.execute(f"DELETE FROM total_{kind}")
    run_ports(sources, copy, Days(dropped, dropped + timedelta(days=1)), upstream=False, engine="spark", **WINDOW)
    for port in PORTS:
        assert differences(warehouses["duckdb"], copy, f"consumer_aligned.{port}") == (0, 0), port
    root = day_files.default_root(copy)
    assert (root / "customer_aggregates").is_dir()
    with duckdb.connect(str(copy)) as conn:
        daily_counts.attach(conn, daily_counts.counts_database(copy))
        recorded = dict(conn.execute(f"SELECT name, count(*) FROM {daily_counts.FILES} WHERE root = ? GROUP BY name",
                                     [str(root.resolve())]).fetchall())
        window = conn.execute("SELECT count(*) FROM counts.window_days").fetchone()[0]
        line_days = conn.execute(f"SELECT count(*) FROM ({daily_counts.line_days_sql()})").fetchone()[0]
    # under the copy's root: every day of the warehouse's lines, every day of the 10-day window but the emptied one
    assert recorded == {day_files.LINES: line_days, **{name: window for name in daily_counts.COUNTED}} and window == 9
