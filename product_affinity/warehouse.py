"""Writing contract tables into DuckDB and describing them for Dagster."""

from __future__ import annotations

import re
from typing import Any

import duckdb

from product_affinity.contract.odcs import Table


class ContractViolation(Exception):
    """A query meant to produce a contract table yields other columns."""


def _params(sql: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Pass only the named parameters the statement uses (DuckDB rejects unused ones)."""
    if not params:
        return None
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)} or None


def execute(conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None):
    return conn.execute(sql, _params(sql, params))


def typed_columns(t: Table) -> str:
    """The select list that gives a query's columns the types and order the contract declares for `t`."""
    return ", ".join(f"CAST({c.name} AS {c.type}) AS {c.name}" for c in t.columns)


def replace_table(
    conn: duckdb.DuckDBPyConnection, t: Table, select_sql: str, params: dict[str, Any] | None = None
) -> int:
    """Create or replace a contract table from a query: exactly the declared columns, in order, with their types.

    Rows are stored in primary-key order, so reading a port a page at a time by key touches only the blocks it needs."""
    produced = [row[0] for row in execute(conn, f"DESCRIBE ({select_sql})", params).fetchall()]
    if sorted(produced) != sorted(t.column_names):
        raise ContractViolation(
            f"{t.physical_name}: query yields {produced}, the contract declares {t.column_names}"
        )
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {t.schema}")
    order = f" ORDER BY {', '.join(t.primary_key)}" if t.primary_key else ""
    execute(conn, f"CREATE OR REPLACE TABLE {t.physical_name} AS SELECT {typed_columns(t)} FROM ({select_sql}){order}", params)
    return conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]




def profile(conn: duckdb.DuckDBPyConnection, t: Table) -> str:
    """Markdown column profile: nulls, distinct values (approximate), min and max, in one scan.

    The distinct count is HyperLogLog's estimate (an exact count(DISTINCT) of every column of a port with tens of
    millions of rows costs a sort or hash per column); the estimate can exceed the values there are, so it is
    capped at the column's non-null count, which it can never truly exceed."""
    scalar = [c for c in t.columns if not c.type.endswith("[]")]
    parts = []
    for c in t.columns:
        parts.append(f"count(*) - count({c.name})")
        if c in scalar:
            parts += [f"least(approx_count_distinct({c.name}), count({c.name}))", f"min({c.name})::VARCHAR", f"max({c.name})::VARCHAR"]
    values = iter(conn.execute(f"SELECT {', '.join(parts)} FROM {t.physical_name}").fetchone())
    lines = ["| column | type | nulls | distinct (approx.) | min | max |", "|---|---|---|---|---|---|"]
    for c in t.columns:
        nulls = next(values)
        distinct, low, high = (next(values), next(values), next(values)) if c in scalar else ("", "", "")
        lines.append(f"| {c.name} | {c.type} | {nulls} | {distinct} | {low} | {high} |")
    return "\n".join(lines)


