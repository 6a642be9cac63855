"""quality.slo_results: one row per rule per run, so SLO attainment over time and the error budget left can be computed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from product_affinity.contract import Rule, Table

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
    "detail": "VARCHAR",
}


@dataclass(frozen=True)
class Row:
    rule: Rule
    observed: float | None
    passed: bool
    rows_checked: int
    detail: str


def record(conn: duckdb.DuckDBPyConnection, run_id: str, run_started_at: datetime, checked_at: datetime, t: Table,
           rows_in_table: int | None, rows: list[Row]) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS quality")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SLO_RESULTS} ({', '.join(f'{k} {v}' for k, v in COLUMNS.items())})")
    conn.executemany(
        f"INSERT INTO {SLO_RESULTS} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [
            [run_id, run_started_at, checked_at, f"{t.schema}/{t.name}", r.rule.id, r.rule.dimension, r.rule.severity,
             r.rule.operator, r.rule.threshold, r.rule.unit, r.observed, r.passed, r.rows_checked, rows_in_table, r.detail]
            for r in rows
        ],
    )
