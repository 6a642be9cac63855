"""The operational database: the sample's three sources as PostgreSQL tables, written, moved and watched.

An online retailer's sources live in its operational database, not in files: `customer_info`, `product` and
`purchase` hold the columns of the CSV sources (typed as the contract declares them) plus `updated_at`, the time the
row was last written, which an incremental load follows as its cursor. Keys are the contract's primary keys, so the
database cannot hold what only a file can: a row without a key, a repeated key, or a value of the wrong type. Those
file defects are left out when the sample is copied in (and counted); every other defect (an unknown customer or
product, a quantity below one) is kept, so the quarantine still has rows to catch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import quote

import duckdb
import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from product_affinity.contract.odcs import Table, source_tables, table
from product_affinity.defaults import SAMPLE_SEED
from product_affinity.sources.files import scan
from product_affinity.sources.sample import Additions, additions, read_sample_text

SOURCES = tuple(t.name for t in source_tables())  # contract names; the database table is the source file's stem
POSTGRES_TYPES = {"BIGINT": "bigint", "INTEGER": "integer", "VARCHAR": "text", "DOUBLE": "double precision",
                  "TIMESTAMP": "timestamp", "BOOLEAN": "boolean", "DATE": "date"}
# The time a row was first written, for rows the sample is created with: a purchase line when it was bought, a
# customer at sign-up, the catalogue when the sample is written. Changes written later carry their own time.
FIRST_WRITTEN = {"purchase": "purchased_at", "customer": "signup_at"}


class DatabaseSourceError(Exception):
    """The operational database cannot be used as a source: unreachable, or without the sample's tables."""


def table_name(name: str) -> str:
    """The database table of a contract source: customer -> customer_info (the CSV file's stem)."""
    return table(name).source_file.removesuffix(".csv")


def postgres_type(physical: str) -> str:
    return POSTGRES_TYPES.get(physical, physical.lower())  # DECIMAL(12,2) is numeric(12,2) in both


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy URL of a libpq DSN (URL or key=value), with the psycopg2 driver dlt's sql_database uses to reflect
    the tables."""
    from sqlalchemy.engine import URL

    parts = conninfo_to_dict(dsn)
    url = URL.create("postgresql+psycopg2", username=parts.get("user"), password=parts.get("password"),
                     host=parts.get("host"), port=int(parts["port"]) if parts.get("port") else None,
                     database=parts.get("dbname"))
    return url.render_as_string(hide_password=False)


def reading_url(dsn: str) -> str:
    """The URL ConnectorX reads the tables with, the only form it parses: where libpq connects for this DSN, as the
    connection reports it (so a DSN naming no host reaches the same socket directory, and PGUSER and the like count),
    a socket directory percent-encoded in the host's place, with libpq's sslmode. ConnectorX encrypts with `require`
    but cannot verify the server's certificate, so a DSN asking for that (verify-ca, verify-full) is refused."""
    with connect(dsn) as conn:
        info = conn.info
        user, password, host, port, dbname = info.user, info.password, info.host, info.port, info.dbname
        sslmode = next((o.val or b"prefer" for o in conn.pgconn.info if o.keyword == b"sslmode"), b"prefer").decode()
    if sslmode not in ("disable", "allow", "prefer", "require"):
        raise DatabaseSourceError(f"{_safe(dsn)}: sslmode={sslmode} asks to verify the server's certificate, which the "
                                  "reader of the source tables (ConnectorX) cannot do; use sslmode=require")
    login = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    sslmode = "prefer" if sslmode == "allow" else sslmode  # ConnectorX knows no `allow`: it tries TLS first
    return f"postgresql://{login}@{quote(host, safe='')}:{port}/{quote(dbname, safe='')}?sslmode={sslmode}"


def keyed_tables(dsn: str) -> set[str]:
    """The source tables whose primary key in the database is the contract's key: the database itself keeps their keys
    unique, so a first load may append them (sources/staging.py). A table keyed otherwise, or not at all, could hold a
    key twice, which only dlt's merge (one row kept per key) keeps out of the staging file."""
    with connect(dsn) as conn:
        declared = dict(conn.execute(
            """SELECT c.table_name, array_agg(k.column_name::text)
            FROM information_schema.table_constraints AS c
            JOIN information_schema.key_column_usage AS k USING (constraint_schema, constraint_name, table_schema, table_name)
            WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema() GROUP BY c.table_name""").fetchall())
    return {table_name(name) for name in SOURCES if set(declared.get(table_name(name), ())) == set(table(name).primary_key)}


def connect(dsn: str) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise DatabaseSourceError(f"cannot connect to the operational database {_safe(dsn)}: {error}".strip()) from None


def _safe(dsn: str) -> str:
    parts = conninfo_to_dict(dsn)
    return f"postgresql://{parts.get('host', '')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"


def create_database(dsn: str) -> None:
    """Create the DSN's database when it does not exist (connecting to the server's `postgres` database)."""
    name = conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise DatabaseSourceError(f"the DSN {_safe(dsn)} names no database (dbname)")
    try:
        server = psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise DatabaseSourceError(f"cannot connect to the operational database's server {_safe(dsn)}: {error}") from None
    with server as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _ddl(t: Table) -> sql.Composed:
    columns = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(postgres_type(c.type))) for c in t.columns]
    return sql.SQL("CREATE TABLE {} ({}, updated_at timestamp NOT NULL, PRIMARY KEY ({}))").format(
        sql.Identifier(table_name(t.name)), sql.SQL(", ").join(columns),
        sql.SQL(", ").join(map(sql.Identifier, t.primary_key)))


@dataclass(frozen=True)
class Written:
    rows: dict[str, int]  # database table -> rows written
    left_out: dict[str, int]  # database table -> file rows a keyed, typed table cannot hold


def write_sample(dsn: str, directory: Path, now: datetime) -> Written:
    """Replace the database's sample tables with the sample files in `directory`, in one transaction."""
    create_database(dsn)
    rows, left_out = {}, {}
    with connect(dsn) as conn, duckdb.connect() as files:
        for name in SOURCES:
            t = table(name)
            scanned = scan(Path(directory) / t.source_file, t)
            frame = files.sql(scanned.select_sql).pl()
            read = len(frame) + files.execute(f"SELECT count(DISTINCT line) FROM {scanned.rejects_table}").fetchall()[0][0]
            kept = frame.drop_nulls(t.primary_key).unique(t.primary_key, keep="first", maintain_order=True)
            first = FIRST_WRITTEN.get(name)
            kept = kept.with_columns(updated_at=pl.coalesce(pl.col(first), pl.lit(now)) if first else pl.lit(now))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table_name(name))))
            conn.execute(_ddl(t))
            _copy_in(conn, table_name(name), kept)
            # What an incremental load asks of the table (rows written after a watermark, the latest write) is an
            # index range scan, not a scan of every row: at Instacart scale, 33M lines. The planner picks the index
            # only knowing how few rows that is, from the table's statistics, which autovacuum may take a minute to
            # gather, or never (it is off on some servers, these machines' among them): without them a day's load
            # scanned all 9.8M lines of a 1M-order sample (1.4 s of a 4.3 s load; 3.5 s with them).
            conn.execute(sql.SQL("CREATE INDEX ON {} (updated_at)").format(sql.Identifier(table_name(name))))
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table_name(name))))
            rows[table_name(name)], left_out[table_name(name)] = len(kept), read - len(kept)
    return Written(rows, left_out)


def _copy_in(conn: psycopg.Connection, name: str, frame: pl.DataFrame) -> None:
    """COPY a frame into a table, columns by name, through CSV (fast, and exact for decimals and timestamps)."""
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, datetime_format="%Y-%m-%d %H:%M:%S%.f", null_value="\\N")
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL '\\N')").format(
        sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, frame.columns)))
    with conn.cursor().copy(statement) as copy:
        copy.write(buffer.getvalue())


def _read_text(conn: psycopg.Connection, name: str) -> pl.DataFrame:
    """A sample table as text, as a CSV file of it would read (booleans as true/false)."""
    t = table(name)
    columns = sql.SQL(", ").join(
        sql.SQL("CASE WHEN {0} THEN 'true' WHEN NOT {0} THEN 'false' END AS {0}").format(sql.Identifier(c.name))
        if c.type == "BOOLEAN" else sql.Identifier(c.name) for c in t.columns)
    statement = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT WITH (FORMAT csv, HEADER)").format(
        columns, sql.Identifier(table_name(name)))
    buffer = io.BytesIO()
    try:
        with conn.cursor().copy(statement) as copy:
            for block in copy:
                buffer.write(block)
    except psycopg.errors.UndefinedTable:
        raise DatabaseSourceError(f"the operational database has no table {table_name(name)}; write the sample "
                                  "into it first with `product-affinity generate --postgres DSN`") from None
    return pl.read_csv(buffer.getvalue(), infer_schema=False)


def add_days(dsn: str, days: int, now: datetime | None = None, seed: int = SAMPLE_SEED) -> Additions:
    """Move the sample in the database: insert the new days' orders and late lines, update the corrected prices and
    e-mails, every written row stamped `updated_at = now`; one transaction, so a load sees all of it or none."""
    now = now or datetime.now(timezone.utc)
    now = (now.astimezone(timezone.utc) if now.tzinfo else now).replace(tzinfo=None, microsecond=0)  # naive UTC
    with connect(dsn) as conn:
        frames = [_read_text(conn, name) for name in ("purchase", "customer", "product")]
        added = additions(*read_sample_text(*frames), days, now, seed)
        _copy_in(conn, table_name("purchase"), added.lines.with_columns(updated_at=pl.lit(now)))
        with conn.cursor() as cursor:
            cursor.executemany("UPDATE purchase SET unit_price = %s::numeric, updated_at = %s "
                               "WHERE order_id = %s AND line_number = %s",
                               [(p, now, o, n) for o, n, p in added.prices.iter_rows()])
            cursor.executemany("UPDATE customer_info SET email = %s, updated_at = %s WHERE customer_id = %s",
                               [(e, now, c) for c, e in added.emails.iter_rows()])
    return added


def watermark(dsn: str) -> dict[str, str | None]:
    """The latest updated_at of each sample table (ISO text, None for an empty table): what changed since a load."""
    latest = {}
    with connect(dsn) as conn:
        for name in map(table_name, SOURCES):
            try:
                value = conn.execute(sql.SQL("SELECT max(updated_at) FROM {}").format(sql.Identifier(name))).fetchone()[0]
            except psycopg.errors.UndefinedTable:
                raise DatabaseSourceError(f"the operational database {_safe(dsn)} has no table {name}") from None
            latest[name] = value.isoformat() if value else None
    return latest


def purchase_days(dsn: str, changed_after: str | None = None) -> tuple[date, date] | None:
    """First and last UTC day of the purchase lines in the database, or of those updated after `changed_after` (an
    updated_at watermark): the daily partitions a load must replace, late lines and corrections included."""
    t = table("purchase")
    query = sql.SQL("SELECT min({c})::date, max({c})::date FROM {t}{w}").format(
        c=sql.Identifier(t.partition_column), t=sql.Identifier(table_name(t.name)),
        w=sql.SQL(" WHERE updated_at > %s") if changed_after else sql.SQL(""))
    with connect(dsn) as conn:
        first, last = conn.execute(query, [changed_after] if changed_after else []).fetchone()
    return None if first is None else (first, last)
