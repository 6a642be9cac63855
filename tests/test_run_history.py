"""The run history written in batches (run_history.py) is the history Dagster's own SQLite storage writes, readable by
Dagster's own classes: every partition's materialization, the assets' partition status, the check results."""

import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import deserialize_value

from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

from product_affinity.defs.run_history import (
    PROJECT_CONFIG,
    RUN_FILES_OPEN,
    BatchedSqliteEventLogStorage,
    RunHistoryInstance,
    configured_like_the_project,
)

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-02-10")  # 40 days


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def lines(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[lines])
def counts(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"first": context.partition_keys[0]})


@dg.asset_check(asset=lines)
def lines_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _history(home: Path, instance_class: bool) -> dict:
    """Run both assets over every day in one run, in a Dagster instance at `home` configured as the project's (with
    its instance class) or as Dagster's default, and read back what any Dagster instance reads."""
    home.mkdir()
    text = PROJECT_CONFIG.read_text()
    if not instance_class:
        text = text.split("instance_class:")[0]
    (home / "dagster.yaml").write_text(text)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance, RunHistoryInstance) == instance_class
        keys = DAYS.get_partition_keys()
        result = dg.materialize([lines, counts, lines_check], instance=instance, tags={
            "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
        assert result.success
    (home / "dagster.yaml").write_text(text.split("instance_class:")[0])  # read back by Dagster's own classes
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance) is dg.DagsterInstance and not isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        run_id = instance.get_runs(limit=1)[0].run_id
        records = instance.get_records_for_run(run_id, limit=10_000).records
        return {
            "events": sorted((r.event_log_entry.dagster_event_type.value, str(r.event_log_entry.dagster_event.asset_key),
                              r.event_log_entry.dagster_event.partition) for r in records
                             if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.asset_key),
            "partitions": {key.to_user_string(): instance.get_materialized_partitions(key) for key in (lines.key, counts.key)},
            "latest": {key.to_user_string(): instance.get_latest_materialization_event(key).dagster_event.partition
                       for key in (lines.key, counts.key)},
            "assets": {(r.asset_entry.asset_key.to_user_string(), r.asset_entry.last_run_id == run_id,
                        r.asset_entry.last_materialization.dagster_event.partition)
                       for r in instance.get_asset_records([lines.key, counts.key])},
            "tags": sorted(sorted(tags) for tags in instance.get_event_tags_for_asset(counts.key)),  # values: ids
            "asset_keys": {  # the index's row per asset (what the UI's catalogue reads first), as Dagster writes it
                (key, last_run_id == run_id, last and deserialize_value(last).event_log_entry.dagster_event.partition)
                for key, last_run_id, last in sqlite3.connect(home / "history" / "runs" / "index.db").execute(
                    "SELECT asset_key, last_run_id, last_materialization FROM asset_keys")},
            "check": instance.event_log_storage.get_asset_check_execution_history(lines_check.check_key, limit=5)[0].status.value,
        }


@pytest.mark.parametrize("batch", ["1000", "7"])  # one batch per asset; batches of 7 and a last one of 5
def test_the_batched_history_is_dagsters_own(tmp_path, monkeypatch, batch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch)
    batched, dagsters = _history(tmp_path / "batched", True), _history(tmp_path / "dagster", False)
    assert batched == dagsters
    assert len([e for e in batched["events"] if e[0] == "ASSET_MATERIALIZATION"]) == 2 * 40
    assert batched["partitions"] == {key: set(DAYS.get_partition_keys()) for key in ("lines", "counts")}
    assert batched["latest"] == {"lines": "2026-02-09", "counts": "2026-02-09"}
    assert batched["assets"] == {("lines", True, "2026-02-09"), ("counts", True, "2026-02-09")}
    assert batched["asset_keys"] == {('["lines"]', True, "2026-02-09"), ('["counts"]', True, "2026-02-09")}
    assert batched["check"] == "SUCCEEDED"


def test_a_failed_batch_falls_back_and_loses_nothing(tmp_path, monkeypatch):
    """A batch that cannot be written at once (here: the index refuses it) is stored event by event, as Dagster does."""
    calls = []

    def refuse(self, conn, events, event_ids):
        calls.append(len(events))
        if len(events) > 1:
            raise RuntimeError("refused")
        return original(self, conn, events, event_ids)

    original = BatchedSqliteEventLogStorage._store_asset_event_tags
    monkeypatch.setattr(BatchedSqliteEventLogStorage, "_store_asset_event_tags", refuse)
    history = _history(tmp_path / "batched", True)
    assert max(calls) == 40  # a batch was tried
    assert history["partitions"] == {key: set(DAYS.get_partition_keys()) for key in ("lines", "counts")}
    assert len([e for e in history["events"] if e[0] == "ASSET_MATERIALIZATION"]) == 2 * 40


def test_kept_connections_are_read_by_others_at_once_and_bounded(tmp_path):
    """The files' connections stay open between runs (the run's and the index's, RUN_FILES_OPEN runs' at most), and
    what they commit is read at once by another instance on the same folder, as `make dev`'s webserver reads a run
    the command line is still recording."""
    home = configured_like_the_project(tmp_path / "home")
    keys = DAYS.get_partition_keys()
    with dg.DagsterInstance.from_config(str(home)) as writer:
        storage = writer.event_log_storage
        assert isinstance(storage, BatchedSqliteEventLogStorage)
        for run in range(RUN_FILES_OPEN + 2):
            day = keys[run]
            assert dg.materialize([lines], instance=writer, partition_key=day).success
            with dg.DagsterInstance.from_config(str(home)) as reader:  # the writer's connections still open
                assert day in reader.get_materialized_partitions(lines.key)
                assert len(reader.get_runs()) == run + 1
            runs_open = [shard for shard in storage._engines if shard != INDEX_SHARD_NAME]
            assert len(runs_open) == min(run + 1, RUN_FILES_OPEN)
            assert writer.get_runs(limit=1)[0].run_id in runs_open  # the latest run's file is one kept
        with storage.index_connection() as conn:  # commits go to the WAL without waiting for the disk
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert not storage._engines  # closed with the instance


def test_a_run_is_followed_live_while_its_writer_keeps_its_file_open(tmp_path):
    """A second process's instance (make dev's webserver following a run's log) is told of each event as it is
    written, though the writer keeps the run's file open: Dagster's watch of a SQLite run file wakes on changes to
    the file, which a commit in WAL mode leaves alone until a checkpoint (that closing the last connection did)."""
    import logging
    import threading
    import time
    import uuid

    from dagster._core.events.log import EventLogEntry

    home = configured_like_the_project(tmp_path / "home")
    run_id, seen, arrived = str(uuid.uuid4()), [], threading.Event()

    def entry(message: str) -> EventLogEntry:
        return EventLogEntry(error_info=None, level=logging.INFO, user_message=message, run_id=run_id,
                             timestamp=time.time())

    def heard(event, cursor):
        seen.append(event.user_message)
        arrived.set()

    with dg.DagsterInstance.from_config(str(home)) as writer, dg.DagsterInstance.from_config(str(home)) as follower:
        writer.event_log_storage.store_event(entry("first"))  # the run's file exists, in WAL mode, its connection kept
        follower.event_log_storage.watch(run_id, None, heard)
        for message in ("second", "third"):
            arrived.clear()
            writer.event_log_storage.store_event(entry(message))
            assert arrived.wait(10), f"not told of {message!r} within 10 s: {seen}"
        assert seen[-1] == "third" and "second" in seen
        follower.event_log_storage.end_watch(run_id, heard)
