"""Sensors that start the product_affinity job when its sources change: one on the source files, one on the
operational database's watermark. Both are registered always; each skips, saying why, when the definitions read the
other source. They are off until turned on (in the UI, or `dg` / the daemon), as a new clone should start no run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg

from product_affinity.contract.odcs import table
from product_affinity.sources.database import SOURCES, watermark

JOB = "product_affinity"
INTERVAL_SECONDS = 60


def files_state(directory: Path) -> dict[str, int]:
    """Each source file present, by name, with its modification time (ns): the files sensor's cursor."""
    paths = [directory / table(name).source_file for name in SOURCES]
    return {path.name: path.stat().st_mtime_ns for path in paths if path.is_file()}


def _changed(previous: str | None, current: dict) -> list[str]:
    before = json.loads(previous) if previous else {}
    return sorted(name for name in current if before.get(name) != current[name])


def _run_key(kind: str, state: dict) -> str:
    """One run per source state: re-evaluating the same state (a restarted daemon, say) requests nothing new."""
    return f"{kind}:{hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]}"


def source_files_sensor(directory: Path, database: bool) -> dg.SensorDefinition:
    """A run when a source file is new or has a new modification time (cursor: file name -> mtime)."""

    @dg.sensor(job_name=JOB, name="source_files_changed", minimum_interval_seconds=INTERVAL_SECONDS,
               description=f"Runs {JOB} when customer_info.csv, product.csv or purchase.csv in {directory} is new or "
               "modified (cursor: each file's modification time).")
    def _sensor(context: dg.SensorEvaluationContext):
        if database:
            return dg.SkipReason("the sources are read from the operational database; the database_watermark sensor "
                                 "watches them")
        current = files_state(directory)
        if not current:
            return dg.SkipReason(f"no source file in {directory} yet")
        return _request_on_change(context, "files", current, "no source file changed since the last run was requested")

    return _sensor


def _request_on_change(context: dg.SensorEvaluationContext, kind: str, current: dict, unchanged: str):
    """A run request naming what changed since the cursor, keyed by the state seen (the same state never starts two
    runs); the cursor moves to the state seen either way."""
    changed = _changed(context.cursor, current)
    context.update_cursor(json.dumps(current, sort_keys=True))
    if not changed:
        return dg.SkipReason(unchanged)
    return dg.RunRequest(run_key=_run_key(kind, current), tags={"product_affinity/changed": ",".join(changed)})


def database_watermark_sensor(dsn: str | None) -> dg.SensorDefinition:
    """A run when a table's watermark (its latest updated_at) moved: new rows, updates or late lines were written."""

    @dg.sensor(job_name=JOB, name="database_watermark", minimum_interval_seconds=INTERVAL_SECONDS,
               description=f"Runs {JOB} when max(updated_at) of customer_info, product or purchase in the operational "
               "database moves (cursor: each table's watermark).")
    def _sensor(context: dg.SensorEvaluationContext):
        if not dsn:
            return dg.SkipReason("the sources are files (no database source is set); the source_files_changed sensor "
                                 "watches them")
        current = watermark(dsn)  # an unreachable database fails the tick, visibly, rather than skipping quietly
        return _request_on_change(context, "database", current, "no table's updated_at moved since the last run was requested")

    return _sensor
