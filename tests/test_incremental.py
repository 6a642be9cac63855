"""The incremental path equals a full recompute.

One warehouse is built a few days at a time, the way the product runs: the history in two runs, then the
days the files sensor finds touched after `generate --add-days` (new orders, late lines of older orders,
corrected prices, changed e-mails). Another is built from scratch on the final files. Every output port,
and every source-aligned table, must hold the same rows (EXCEPT ALL, both ways, empty).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from product_affinity.consumer_aligned import daily_counts
from product_affinity.contract.odcs import tables
from product_affinity.definitions import build_definitions
from product_affinity.defs.partitions import range_tags
from product_affinity.defs.sensors import source_files_sensor
from product_affinity.partitions import Days, all_days
from product_affinity.sources.sample import add_days_to_files, generate_sample
from tests.conftest import rows_apart as differences

pytestmark = pytest.mark.slow
SMALL = dict(customers=300, products=60, orders=3_000, history_days=90)
COMPARED = [t for t in tables().values() if t.layer in ("consumer_aligned", "source_aligned")]


def run(sources: Path, warehouse: Path, tags: dict[str, str]) -> None:
    """The job over the days in `tags`, every check but freshness: the sample must end a day before now for
    `generate --add-days` to add one, which the 24-hour latency SLA would rightly refuse to publish."""
    job = build_definitions(sources, warehouse).resolve_job_def("product_affinity")
    graph = job.asset_layer.asset_graph
    checks = {key for key in graph.asset_check_keys if key.name != "freshness_purchased_at"}
    result = job.get_subset(asset_selection=graph.materializable_asset_keys, asset_check_selection=checks).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=tags, raise_on_error=False)
    assert result.success




@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    sources = root / "sources"
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    generate_sample(sources, end=now - timedelta(days=2, hours=12), **SMALL)
    incremental = root / "incremental.duckdb"
    history = all_days(sources, incremental)
    middle = history.end - timedelta(days=10)
    run(sources, incremental, range_tags(Days(middle, history.end)))  # the latest days (fresh enough to publish)
    run(sources, incremental, range_tags(Days(history.first, middle)))  # then a backfill of the older ones

    sensor = source_files_sensor(sources, database=False)
    seen = sensor.evaluate_tick(dg.build_sensor_context(cursor=None))
    added = add_days_to_files(sources, 2, now=now)
    moved = sensor.evaluate_tick(dg.build_sensor_context(cursor=seen.cursor))
    assert len(moved.run_requests) == 1
    tags = moved.run_requests[0].tags
    run(sources, incremental, tags)  # only the days the sensor found touched

    full = root / "full.duckdb"
    run(sources, full, range_tags(all_days(sources, full)))
    return incremental, full, tags, added, history


def test_the_sensor_asks_only_for_the_days_touched(built):
    _, _, tags, added, history = built
    first = datetime.fromisoformat(tags["dagster/asset_partition_range_start"]).date()
    last = datetime.fromisoformat(tags["dagster/asset_partition_range_end"]).date()
    assert first > history.first  # not the whole history: changed e-mails move no purchase
    assert last >= (added.first_new + timedelta(days=added.days - 1)).date()  # the new days
    assert first <= history.last - timedelta(days=2)  # and the late lines of older orders


@pytest.mark.parametrize("t", COMPARED, ids=lambda t: t.name)
def test_incremental_equals_full(built, t):
    incremental, full, *_ = built
    assert differences(incremental, full, t.physical_name) == (0, 0)


def test_the_window_totals_equal_the_full_counts(built):
    incremental, full, *_ = built
    for kind in daily_counts.KEYS:
        name = f"total_{kind}"
        assert differences(daily_counts.counts_database(incremental), daily_counts.counts_database(full),
                           f"main.{name}") == (0, 0), name
