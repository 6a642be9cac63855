"""quality.slo_results: one row per rule per run, so SLO attainment over time and the error budget left can be computed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import duckdb

from product_affinity import sql
from product_affinity.contract.odcs import Rule, Table, quality_rules

SLO_RESULTS = "quality.slo_results"
COLUMNS = {
    "run_id": "VARCHAR",
    "run_started_at": "TIMESTAMP",  # naive UTC, like every timestamp in the warehouse
    "checked_at": "TIMESTAMP",
    "asset": "VARCHAR",
    "rule_id": "VARCHAR",
    "dimension": "VARCHAR",
    "severity": "VARCHAR",
    "operator": "VARCHAR",
    "target": "DOUBLE",
    "unit": "VARCHAR",
    "observed": "DOUBLE",  # NULL when the rule could not be evaluated
    "passed": "BOOLEAN",
    "rows_checked": "BIGINT",
    "rows_in_table": "BIGINT",
    "detail": "VARCHAR",  # counts and source lines as JSON, never a value
    "observed_unit": "VARCHAR",  # what `observed` counts, e.g. "% of 27,540 rows received from purchase.csv (...)"
    "pipeline_run": "BOOLEAN",  # the run built what it checked; a check-only run does not count in SLO attainment
}


@dataclass(frozen=True)
class Row:
    rule: Rule
    observed: float | None
    passed: bool
    rows_checked: int
    detail: str
    observed_unit: str


@dataclass(frozen=True)
class Run:
    """The run a result belongs to: its id, when it started, and whether it is a pipeline run (it built what it checked)."""

    run_id: str
    started_at: datetime
    pipeline_run: bool


@dataclass(frozen=True)
class Validation:
    """One table's results as a run recorded them: which run, when the checks measured, a row per rule checked."""

    run_id: str
    checked_at: datetime
    rows: list[Row]


def redact(message: str) -> str:
    """An error message as it may be stored and served: every quoted literal (a value) replaced, length bounded."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)[:500]


def _ensure(conn: duckdb.DuckDBPyConnection) -> None:
    """The results table, with the columns added since a warehouse first made it."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS quality")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SLO_RESULTS} ({', '.join(f'{k} {v}' for k, v in COLUMNS.items())})")
    for name, kind in COLUMNS.items():
        conn.execute(f"ALTER TABLE {SLO_RESULTS} ADD COLUMN IF NOT EXISTS {name} {kind}")


def insert(conn: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    _ensure(conn)
    conn.executemany(
        f"INSERT INTO {SLO_RESULTS} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [[row[name] for name in COLUMNS] for row in rows],
    )


def record(conn: duckdb.DuckDBPyConnection, run: Run, checked_at: datetime, t: Table, rows_in_table: int | None,
           rows: list[Row]) -> None:
    insert(conn, [
        {"run_id": run.run_id, "run_started_at": run.started_at, "checked_at": checked_at, "asset": f"{t.schema}/{t.name}",
         "rule_id": r.rule.id, "dimension": r.rule.dimension, "severity": r.rule.severity, "operator": r.rule.operator,
         "target": r.rule.threshold, "unit": r.rule.unit, "observed": r.observed, "passed": r.passed,
         "rows_checked": r.rows_checked, "rows_in_table": rows_in_table, "detail": r.detail,
         "observed_unit": r.observed_unit, "pipeline_run": run.pipeline_run}
        for r in rows
    ])


def latest(conn: duckdb.DuckDBPyConnection, tables: list[Table]) -> dict[str, Validation]:
    """Each table's results from the latest run that checked it, read back as recorded, by table name; a table no run
    checked yet is left out. The Data Docs are drawn from these (data_docs.py): the very results that decided the checks.
    A rule the contract no longer has is dropped; the rows follow the contract's rule order."""
    if not conn.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
                        SLO_RESULTS.split(".")).fetchone()[0]:
        return {}
    found: dict[str, list[tuple]] = {}
    for asset, *row in conn.execute(sql.load(__file__, "latest_results.sql").format(results=SLO_RESULTS)).fetchall():
        found.setdefault(asset, []).append(tuple(row))
    latest = {}
    for t in tables:
        recorded = {rule_id: rest for _, _, rule_id, *rest in found.get(f"{t.schema}/{t.name}", [])}
        rows = [Row(rule, *recorded[rule.id]) for rule in quality_rules(t.name) if rule.id in recorded]
        if rows:
            run_id, checked_at = found[f"{t.schema}/{t.name}"][0][:2]
            latest[t.name] = Validation(run_id, checked_at, rows)
    return latest
