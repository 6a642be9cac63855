"""How each source becomes a source-aligned table: normalisation, and the rules that quarantine a row.

Rows are never dropped silently: a row that breaks a rule goes to source_aligned.quarantine with
its line, the rule (reason), the column to blame and the offending value. Every row read is
either accepted or quarantined, which `IngestResult.rows_in` proves by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from product_affinity.contract import Table, table
from product_affinity.reference import COUNTRY_SPELLINGS
from product_affinity.sources.files import scan
from product_affinity.warehouse import execute, replace_table


@dataclass(frozen=True)
class Rule:
    """A row-level rule: `broken` is a SQL condition over the cleaned row, true when it is broken."""

    reason: str
    column: str
    broken: str
    detail: str  # SQL expression explaining the breach


@dataclass(frozen=True)
class ForeignKey:
    column: str
    references: str  # contract table name
    reason: str


# Normalisation beyond trimming text (which applies to every text column).
NORMALISE: dict[str, dict[str, str]] = {
    "customer": {
        "email": "lower(trim(email))",
        "country": "coalesce(country_spelling.canonical, trim(country))",
    },
    "purchase": {"channel": "lower(trim(channel))"},
}

RULES: dict[str, list[Rule]] = {
    "customer": [],
    "product": [
        Rule("invalid_price", "list_price", "list_price < 0", "format('list_price {} is negative', list_price)"),
    ],
    "purchase": [
        Rule("invalid_quantity", "quantity", "quantity <= 0", "format('quantity {} is not above zero', quantity)"),
        Rule("invalid_price", "unit_price", "unit_price < 0", "format('unit_price {} is negative', unit_price)"),
        Rule(
            "future_timestamp",
            "purchased_at",
            "purchased_at > $now",
            "format('purchased_at {} is after the run started ({})', purchased_at, $now)",
        ),
    ],
}

FOREIGN_KEYS: dict[str, list[ForeignKey]] = {
    "purchase": [
        ForeignKey("customer_id", "customer", "unknown_customer"),
        ForeignKey("product_id", "product", "unknown_product"),
    ],
}

READ_ERRORS = {"CAST": "bad_type", "INVALID ENCODING": "invalid_encoding"}  # anything else: malformed_row


@dataclass(frozen=True)
class IngestResult:
    source: str
    accepted: int
    quarantined: dict[str, int]  # reason -> rows
    ignored_columns: tuple[str, ...]

    @property
    def rows_in(self) -> int:
        return self.accepted + sum(self.quarantined.values())


def _cleaned(t: Table, column: str) -> str:
    override = NORMALISE.get(t.name, {}).get(column)
    if override:
        return f"{override} AS {column}"
    if t.column(column).type == "VARCHAR":
        return f"nullif(trim({column}), '') AS {column}"
    return column


def _country_spellings_sql() -> str:
    rows = ", ".join(
        f"('{spelling.lower().replace(chr(39), chr(39) * 2)}', '{canonical}')"
        for canonical, spellings in COUNTRY_SPELLINGS.items()
        for spelling in spellings
    )
    return f"(VALUES {rows}) AS country_spelling(spelling, canonical)"


def _classify_sql(t: Table, source_sql: str) -> str:
    """One pass: clean every row and name the first rule it breaks (NULL when accepted)."""
    cleaned = ", ".join(_cleaned(t, c) for c in t.column_names)
    joins = ""
    if "country" in NORMALISE.get(t.name, {}):
        joins = f" LEFT JOIN {_country_spellings_sql()} ON country_spelling.spelling = lower(trim(src.country))"
    checks: list[tuple[str, str, str, str]] = []  # (condition, reason, column, detail)
    key = t.primary_key
    for c in t.columns:
        if c.required:
            reason = "missing_key" if c.primary_key else "missing_value"
            checks.append((f"{c.name} IS NULL", reason, c.name, f"'{c.name} is empty'"))
    checks += [(r.broken, r.reason, r.column, r.detail) for r in RULES.get(t.name, [])]
    first_broken = " ".join(f"WHEN {cond} THEN '{reason}'" for cond, reason, _, _ in checks)
    blamed = " ".join(f"WHEN {cond} THEN '{col}'" for cond, _, col, _ in checks)
    explained = " ".join(f"WHEN {cond} THEN {detail}" for cond, _, _, detail in checks)
    key_list = ", ".join(key)
    key_text = " || ', ' || ".join(f"'{k}=' || {k}" for k in key)
    fk_joins = "".join(
        f" LEFT JOIN (SELECT {fk.column} AS _known_{fk.column} FROM {table(fk.references).physical_name})"
        f" ON _known_{fk.column} = {fk.column}"
        for fk in FOREIGN_KEYS.get(t.name, [])
    )
    fk_reason = " ".join(
        f"WHEN _known_{fk.column} IS NULL THEN '{fk.reason}'" for fk in FOREIGN_KEYS.get(t.name, [])
    )
    fk_column = " ".join(f"WHEN _known_{fk.column} IS NULL THEN '{fk.column}'" for fk in FOREIGN_KEYS.get(t.name, []))
    fk_detail = " ".join(
        f"WHEN _known_{fk.column} IS NULL THEN format('{fk.column} {{}} is not in {fk.references}', {fk.column})"
        for fk in FOREIGN_KEYS.get(t.name, [])
    )
    columns = ", ".join(t.column_names)
    return f"""
    WITH cleaned AS (
        SELECT _ordinal, {cleaned} FROM ({source_sql}) AS src{joins}
    ), checked AS (
        SELECT *, CASE {first_broken} END AS _reason,
               CASE {blamed} END AS _column, CASE {explained} END AS _detail
        FROM cleaned
    ), deduplicated AS (
        SELECT *, CASE WHEN _reason IS NULL
                   THEN row_number() OVER (PARTITION BY {key_list}, _reason IS NULL ORDER BY _ordinal) END AS _occurrence
        FROM checked
    )
    SELECT _ordinal, {columns},
        coalesce(_reason, CASE WHEN _occurrence > 1 THEN 'duplicate_key' {fk_reason} END) AS _reason,
        coalesce(_column, CASE WHEN _occurrence > 1 THEN '{key_list}' {fk_column} END) AS _column,
        coalesce(_detail, CASE WHEN _occurrence > 1 THEN {key_text} || ' appeared on an earlier line' {fk_detail} END)
            AS _detail
    FROM deduplicated{fk_joins}
    """


def ingest(conn: duckdb.DuckDBPyConnection, sources: Path, name: str, now: datetime) -> IngestResult:
    """Load one source file into its source-aligned table and its rejected rows into quarantine."""
    t = table(name)
    source = scan(sources / t.source_file, t)
    classified = f"_classified_{t.name}"
    execute(conn, f"CREATE OR REPLACE TEMP TABLE {classified} AS {_classify_sql(t, source.select_sql)}", {"now": now})
    accepted = replace_table(conn, t, f"SELECT {', '.join(t.column_names)} FROM {classified} WHERE _reason IS NULL")
    quarantine = table("quarantine")
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quarantine.schema}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {quarantine.physical_name} "
        f"({', '.join(f'{c.name} {c.type}' for c in quarantine.columns)})"
    )
    conn.execute(f"DELETE FROM {quarantine.physical_name} WHERE source = ?", [t.source_file])
    conn.execute(
        f"""
        INSERT INTO {quarantine.physical_name} ({', '.join(quarantine.column_names)})
        WITH unread AS (
            SELECT line, arg_min(error_type, column_idx) AS error_type, arg_min(column_name, column_idx) AS column_name,
                   arg_min(error_message, column_idx) AS detail, any_value(csv_line) AS csv_line
            FROM {source.rejects_table} GROUP BY line
        ), gaps AS (  -- rows parsed before each unreadable line, to turn row positions back into lines
            SELECT line - 1 - row_number() OVER (ORDER BY line) AS parsed_before,
                   row_number() OVER (ORDER BY line) AS unread_before
            FROM unread
        ), rejected AS (
            SELECT c.*, c._ordinal + 1 + coalesce(g.unread_before, 0) AS line
            FROM (SELECT * FROM {classified} WHERE _reason IS NOT NULL) AS c
            ASOF LEFT JOIN (SELECT parsed_before, max(unread_before) AS unread_before FROM gaps GROUP BY 1) AS g
            ON c._ordinal > g.parsed_before
        )
        SELECT $source, line,
               CASE error_type {' '.join(f"WHEN '{k}' THEN '{v}'" for k, v in READ_ERRORS.items())}
                    ELSE 'malformed_row' END,
               column_name, detail, csv_line
        FROM unread
        UNION ALL
        SELECT $source, line, _reason, _column, _detail,
               to_json(struct_pack({', '.join(f'{c} := {c}' for c in t.column_names)}))::VARCHAR
        FROM rejected
        """,
        {"source": t.source_file},
    )
    quarantined = dict(
        conn.execute(
            f"SELECT reason, count(*) FROM {quarantine.physical_name} WHERE source = ? GROUP BY reason ORDER BY reason",
            [t.source_file],
        ).fetchall()
    )
    conn.execute(f"DROP TABLE {classified}")
    return IngestResult(t.source_file, accepted, quarantined, source.ignored_columns)
