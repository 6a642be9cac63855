"""The Postgres port: Copying the published snapshot's tables from DuckDB into PostgreSQL staging schemas, typed as the contract says."""

from __future__ import annotations

import io

import duckdb
import psycopg
import pyarrow.csv as arrow_csv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from product_affinity.contract.odcs import Column, Table, table
from product_affinity.semantic.loader import model
from product_affinity.delivery.postgres_common import APPLICATION, PublishError, STAGING, safe_dsn


BATCH_ROWS = 100_000


TYPES = {"DOUBLE": "double precision", "VARCHAR": "text", "VARCHAR[]": "text[]"}  # the contract's other types are Postgres's too


def published_tables() -> list[Table]:
    """The tables the semantic views read, each once, in the model's order."""
    names = dict.fromkeys(model().cubes[cube].contract_table for view in model().views.values() for cube in view.paths)
    return [table(name) for name in names]


def _copied(column: Column) -> str:
    """A column as COPY's CSV format reads it: a list spelled as a Postgres array literal, its elements quoted."""
    name = f'"{column.name}"'
    if not column.type.endswith("[]"):
        return name
    element = r"""coalesce('"' || replace(replace(x, '\', '\\'), '"', '\"') || '"', 'NULL')"""
    return f"'{{' || array_to_string(list_transform({name}, lambda x: {element}), ',') || '}}'"


def _load(pg: psycopg.Connection, duck: duckdb.DuckDBPyConnection, tables: list[Table], owner: str) -> dict[str, int]:
    """Create the staging schemas, and in them, as the owner, each table: filled, keyed and analyzed. Rows are
    streamed from DuckDB in batches (Arrow, written as CSV for COPY), so memory stays flat whatever the size."""
    for schema in sorted({t.schema for t in tables}):
        pg.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema + STAGING), sql.Identifier(owner)))
    pg.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
    rows, options = {}, arrow_csv.WriteOptions(include_header=False)
    for t in tables:
        target = sql.Identifier(t.schema + STAGING, t.physical_name.split(".")[-1])
        columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in t.columns)
        typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(TYPES.get(c.type, c.type))) for c in t.columns)
        pg.execute(sql.SQL("CREATE TABLE {} ({})").format(target, typed))
        reader = duck.sql(f"SELECT {', '.join(_copied(c) for c in t.columns)} FROM {t.physical_name}").to_arrow_reader(BATCH_ROWS)
        rows[t.name] = 0
        # FREEZE: the table is new in this transaction, so its rows can be written frozen (no hint-bit rewrite on first read).
        with pg.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, FREEZE)").format(target, columns)) as copy:
            for batch in reader:
                buffer = io.BytesIO()
                arrow_csv.write_csv(batch, buffer, options)
                copy.write(buffer.getbuffer())
                rows[t.name] += batch.num_rows
        if t.primary_key:
            pg.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(target, sql.SQL(", ").join(map(sql.Identifier, t.primary_key))))
        pg.execute(sql.SQL("ANALYZE {}").format(target))
    pg.execute("RESET ROLE")
    return rows


def _create_database(dsn: str) -> str:
    name = conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise PublishError(f"the DSN {safe_dsn(dsn)!r} names no database")
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, application_name=APPLICATION) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # created meanwhile by another publisher
    return name

