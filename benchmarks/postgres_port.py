"""Benchmark: publishing into the Postgres port, and reading through its views, at a given scale.

Publishes the snapshot a warehouse published (by default the Instacart-scale one `make bench` leaves in
benchmarks/out/scale/, built here if there is none) into a throwaway database with its own roles, dropped at
the end, and prints, against baselines measured in the same run:

- the publication's wall time, rows per second and the publishing process's peak memory, against
  PostgreSQL's own bulk path for the same rows (DuckDB writes CSV files, the server COPYs them in: no
  keys, no statistics, no policies, no atomic swap);
- the median time of a few reads through the views as principals (row-level security, masks) against
  the same read on the tables as a superuser;
- the worst read a login can send (every sales line against every other), and when the server cancelled
  it: the logins' statement timeout (`--statement-timeout`) bounds what one BI query costs.

    python benchmarks/postgres_port.py                                  # Instacart scale (3.4M orders, about 32M lines)
    python benchmarks/postgres_port.py --warehouse data/warehouse.duckdb   # the sample
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pipeline import OUT, generate, isolated, pipeline

from product_affinity.defaults import POSTGRES_STATEMENT_TIMEOUT
from product_affinity.delivery import postgres, postgres_common, postgres_load
from product_affinity.publication import NothingPublished, published_snapshot

SPEND = "SELECT sum(quantity * unit_price) FROM product_affinity.sales"
EMAILS = "SELECT customer_id, email FROM product_affinity.customer_360"
EMAILS_TABLE = "SELECT customer_id, email FROM consumer_aligned.customer_metrics LEFT JOIN source_aligned.customer USING (customer_id)"
READS = [  # what is read, by whom through the views, and the same read on the tables as a superuser
    ("spend, every line", "steward", SPEND, "SELECT sum(quantity * unit_price) FROM source_aligned.purchase"),
    ("spend, Spain's customers (row filter)", "ana", SPEND,
     "SELECT sum(quantity * unit_price) FROM source_aligned.purchase JOIN source_aligned.customer USING (customer_id) WHERE country = 'Spain'"),
    ("spend by category, Canada (row filter)", "jon", "SELECT category, sum(quantity * unit_price) FROM product_affinity.sales GROUP BY 1",
     "SELECT category, sum(quantity * unit_price) FROM source_aligned.purchase JOIN source_aligned.customer USING (customer_id) "
     "JOIN source_aligned.product USING (product_id) WHERE country = 'Canada' GROUP BY 1"),
    ("every e-mail, in clear", "steward", EMAILS, EMAILS_TABLE),
    ("every e-mail, partly masked", "marta", EMAILS, EMAILS_TABLE),
    ("every e-mail, hashed", "li", EMAILS, EMAILS_TABLE),
]


WORST = "SELECT count(*) FROM product_affinity.sales a, product_affinity.sales b WHERE a.quantity + b.quantity < 0"


def publish(warehouse: Path, dsn: str, prefix: str, statement_timeout: float) -> dict:
    try:
        done = postgres.publish(warehouse, dsn, prefix, statement_timeout=statement_timeout)
    except Exception as error:  # noqa: BLE001 (a child that raises would leave the parent waiting for its result)
        return {"error": f"{type(error).__name__}: {error}"}
    return {"rows": sum(done.rows.values()), "load_seconds": done.load_seconds, "attempts": done.attempts}


def raw_copy(warehouse: Path, dsn: str) -> int:
    """The baseline: DuckDB writes each table as CSV, the server COPYs the files into plain tables."""
    import duckdb
    import psycopg

    rows = 0
    with tempfile.TemporaryDirectory() as folder, duckdb.connect(str(published_snapshot(warehouse)), read_only=True) as duck, \
            psycopg.connect(dsn, autocommit=True) as pg:
        Path(folder).chmod(0o755)  # the server process reads the files
        duck.execute("SET enable_progress_bar = false")
        pg.execute("CREATE SCHEMA baseline")
        for t in postgres_load.published_tables():
            path = Path(folder) / f"{t.name}.csv"
            duck.execute(f"COPY (SELECT {', '.join(postgres_load._copied(c) for c in t.columns)} FROM {t.physical_name}) TO '{path}' (HEADER false)")
            path.chmod(0o644)
            types = ", ".join(f'"{c.name}" {postgres_load.TYPES.get(c.type, c.type)}' for c in t.columns)
            pg.execute(f"CREATE TABLE baseline.{t.name} ({types})")
            rows += pg.execute(f"COPY baseline.{t.name} FROM '{path}' (FORMAT csv)").rowcount
        pg.execute("DROP SCHEMA baseline CASCADE")
    return rows


def median_seconds(dsn: str, statement: str, runs: int = 3) -> float:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement).fetchall()  # warm the cache: every read below is measured warm
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(statement).fetchall()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def cancelled_after(dsn: str, statement: str) -> float | None:
    """Seconds until the server cancelled `statement` for the statement timeout; None if it finished."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        try:
            conn.execute(statement).fetchall()
        except psycopg.errors.QueryCanceled:
            return time.perf_counter() - started
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=3_400_000)
    parser.add_argument("--customers", type=int, default=206_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--warehouse", type=Path, default=OUT / "scale" / "warehouse.duckdb",
                        help="a warehouse that has published a snapshot; built at the scale above if it has not (default: the one "
                             "`make bench` publishes, %(default)s)")
    parser.add_argument("--dsn", default=postgres_common.default_dsn(), help="server to publish into; a throwaway database is used (default: %(default)s)")
    parser.add_argument("--statement-timeout", type=float, default=POSTGRES_STATEMENT_TIMEOUT,
                        help="the logins' statement timeout, in seconds (default: %(default)s)")
    args = parser.parse_args()

    from psycopg.conninfo import make_conninfo

    warehouse = args.warehouse
    try:
        published_snapshot(warehouse)
    except NothingPublished:
        print(f"Building {warehouse} ({args.orders:,} orders, {args.customers:,} customers, {args.products:,} products)", flush=True)
        isolated(generate, warehouse.parent / "sources", args.customers, args.products, args.orders)
        isolated(pipeline, warehouse.parent / "sources", warehouse)

    suffix = secrets.token_hex(3)
    database, prefix = f"product_affinity_bench_{suffix}", f"pa_b{suffix}_"
    dsn, admin = make_conninfo(args.dsn, dbname=database), make_conninfo(args.dsn, dbname="postgres")
    try:
        ours = isolated(publish, warehouse, dsn, prefix, args.statement_timeout)
        if "error" in ours["result"]:
            sys.exit(f"publish-postgres failed: {ours['result']['error']}")
        baseline = isolated(raw_copy, warehouse, dsn)
        rows = ours["result"]["rows"]
        print(f"Published {published_snapshot(warehouse).name}: {rows:,} rows")
        print(f"{'publish-postgres (load, keys, statistics, policies, swap)':<60} {ours['seconds']:7.1f} s  {rows / ours['seconds']:>10,.0f} rows/s  "
              f"{ours['peak_gb']:.2f} GB peak (publishing process)")
        print(f"{'  of which loading the tables (COPY, keys, statistics)':<60} {ours['result']['load_seconds']:7.1f} s")
        print(f"{'baseline: DuckDB CSV export + server-side COPY, plain tables':<60} {baseline['seconds']:7.1f} s  "
              f"{baseline['result'] / baseline['seconds']:>10,.0f} rows/s")
        print(f"{'ratio publish-postgres / baseline':<60} {ours['seconds'] / baseline['seconds']:7.2f}x\n")
        print(f"{'read (median of 3, warm)':<42} {'principal':<10} {'view':>10} {'table':>10}  ratio")
        for label, who, through_view, on_table in READS:
            took, base = median_seconds(make_conninfo(dsn, user=f"{prefix}{who}"), through_view), median_seconds(dsn, on_table)
            print(f"{label:<42} {who:<10} {took * 1000:7.1f} ms {base * 1000:7.1f} ms  {took / base:5.2f}x")
        worst = cancelled_after(make_conninfo(dsn, user=f"{prefix}marta"), WORST)
        print(f"\nworst read (every sales line against every other), as marta: "
              + (f"cancelled after {worst:.1f} s (statement timeout {args.statement_timeout:g} s)" if worst is not None
                 else f"finished within the statement timeout of {args.statement_timeout:g} s"))
    finally:
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for (role,) in conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [prefix]).fetchall():
                conn.execute(f'DROP ROLE "{role}"')


if __name__ == "__main__":
    main()
