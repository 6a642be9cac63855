"""Sensors that start the product_affinity job when its sources change: one on the source files, one on the
operational database's watermark. Both are registered always; each skips, saying why, when the definitions read the
other source. They are off until turned on (in the UI, or `dg` / the daemon), as a new clone should start no run.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from product_affinity.contract.odcs import table
from product_affinity.defs.partitions import range_tags
from product_affinity.partitions import Days
from product_affinity.sources.database import SOURCES, purchase_days, table_name, watermark

JOB = "product_affinity"
INTERVAL_SECONDS = 60


def files_state(directory: Path) -> dict[str, int]:
    """Each source file present, by name, with its modification time (ns): the files sensor's cursor."""
    paths = [directory / table(name).source_file for name in SOURCES]
    return {path.name: path.stat().st_mtime_ns for path in paths if path.is_file()}


def _changed(before: dict, current: dict) -> list[str]:
    return sorted(name for name in current if before.get(name) != current[name])


def _run_key(kind: str, state: dict) -> str:
    """One run per source state: re-evaluating the same state (a restarted daemon, say) requests nothing new."""
    return f"{kind}:{hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]}"


def _request(kind: str, state: dict, changed: list[str], days: Days | None) -> dg.RunRequest | dg.SkipReason:
    """A run of the job over the days touched (and everything unpartitioned downstream), named after what changed."""
    if days is None:
        return dg.SkipReason(f"{', '.join(changed)} changed, but holds no purchase day inside the partitions")
    return dg.RunRequest(run_key=_run_key(kind, state), tags={"product_affinity/changed": ",".join(changed),
                                                              **range_tags(days)})


def _touched(days: list[date], today: date) -> Days | None:
    """The one range of partitions a run reloads to cover every day touched (days between them are reloaded too)."""
    inside = [d for d in days if table("purchase").first_partition_day <= d <= today]
    return Days(min(inside), max(inside) + timedelta(days=1)) if inside else None


def _today() -> date:
    return datetime.now(UTC).date()


def source_files_sensor(directory: Path, database: bool) -> dg.SensorDefinition:
    """A run when a source file is new or modified, over the purchase days it touched (cursor: each file's
    modification time, and a fingerprint of each day's purchase lines)."""

    @dg.sensor(job_name=JOB, name="source_files_changed", minimum_interval_seconds=INTERVAL_SECONDS,
               description=f"Runs {JOB} when customer_info.csv, product.csv or purchase.csv in {directory} is new or "
               "modified, over the purchase days whose lines changed (late lines included); a changed customer or "
               "product file reloads every day, since any purchase may refer to it.")
    def _sensor(context: dg.SensorEvaluationContext):
        if database:
            return dg.SkipReason("the sources are read from the operational database; the database_watermark sensor "
                                 "watches them")
        current = files_state(directory)
        if not current:
            return dg.SkipReason(f"no source file in {directory} yet")
        before = json.loads(context.cursor) if context.cursor else {}
        changed = _changed(before.get("files", {}), current)
        if not changed:
            return dg.SkipReason("no source file changed since the last run was requested")
        seen, seen_customers = before.get("purchase_days", {}), before.get("customers")
        days = day_fingerprints(directory) if (directory / table("purchase").source_file).is_file() else {}
        customers = customer_keys(directory) if (directory / table("customer").source_file).is_file() else None
        context.update_cursor(json.dumps({"files": current, "purchase_days": days, "customers": customers}, sort_keys=True))
        touched = [date.fromisoformat(d) for d in {*seen, *days} if seen.get(d) != days.get(d)]
        if table("product").source_file in changed or customers != seen_customers:
            # A product's category moves every basket that holds it; a customer added or removed moves the lines
            # quarantined as unknown_customer: any day may change.
            touched = [date.fromisoformat(d) for d in {*seen, *days}]
        return _request("files", current, changed, _touched(touched or _latest(days), _today()))

    return _sensor


def database_watermark_sensor(dsn: str | None) -> dg.SensorDefinition:
    """A run when a table's watermark (its latest updated_at) moved: new rows, updates or late lines were written."""

    @dg.sensor(job_name=JOB, name="database_watermark", minimum_interval_seconds=INTERVAL_SECONDS,
               description=f"Runs {JOB} when max(updated_at) of customer_info, product or purchase in the operational "
               "database moves, over the purchase days of the lines updated since (cursor: each table's watermark).")
    def _sensor(context: dg.SensorEvaluationContext):
        if not dsn:
            return dg.SkipReason("the sources are files (no database source is set); the source_files_changed sensor "
                                 "watches them")
        current = watermark(dsn)  # an unreachable database fails the tick, visibly, rather than skipping quietly
        before = json.loads(context.cursor) if context.cursor else {}
        changed = _changed(before, current)
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            return dg.SkipReason("no table's updated_at moved since the last run was requested")
        # A product's category moves every basket that holds it: every day. Otherwise the days of the purchase lines
        # updated since the last watermark (late lines and corrections included), or, when only customers changed,
        # the latest day, on top of which everything unpartitioned is rebuilt. (A customer added after lines of
        # theirs were quarantined as unknown_customer: those days are accepted when next reloaded, or by a full run.)
        since = before.get(table_name("purchase")) if table_name("product") not in changed else None
        days = purchase_days(dsn, changed_after=since)
        return _request("database", current, changed, _touched(list(days or ()) or _latest_in(dsn), _today()))

    return _sensor


def day_fingerprints(directory: Path) -> dict[str, str]:
    """Per UTC day of the purchase file, a fingerprint of its lines (count and a sum of row hashes): a day whose
    fingerprint moved had a line added, changed or removed. Lines with no readable day are not partitioned."""
    t = table("purchase")
    path = str(directory / t.source_file).replace("'", "''")
    with duckdb.connect() as conn:
        rows = conn.execute(
            f"""SELECT CAST(try_strptime({t.partition_column}, '%Y-%m-%d %H:%M:%S') AS DATE) AS day,
                       count(*) || ':' || sum(hash({', '.join(t.column_names)})::HUGEINT) AS fingerprint
            FROM read_csv('{path}', all_varchar = true, header = true, ignore_errors = true)
            GROUP BY day HAVING day IS NOT NULL"""
        ).fetchall()
    return {day.isoformat(): fingerprint for day, fingerprint in rows}


def customer_keys(directory: Path) -> str:
    """A fingerprint of the customer ids in the customer file: it moves when a customer is added or removed, not when
    one's e-mail is corrected."""
    t = table("customer")
    path = str(directory / t.source_file).replace("'", "''")
    with duckdb.connect() as conn:
        count, total = conn.execute(
            f"""SELECT count(*), sum(hash({t.primary_key[0]})::HUGEINT)
            FROM read_csv('{path}', all_varchar = true, header = true, ignore_errors = true)"""
        ).fetchone()
    return f"{count}:{total}"


def _latest(days: dict[str, str]) -> list[date]:
    """When no purchase day changed, the latest day: the run rebuilds everything unpartitioned on top of it."""
    return [date.fromisoformat(max(days))] if days else []


def _latest_in(dsn: str) -> list[date]:
    found = purchase_days(dsn)
    return [found[1]] if found else []
