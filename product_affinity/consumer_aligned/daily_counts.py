"""Exact per-day basket counts, summed over the rules' window: association rules without rereading history.

Counts are additive over disjoint sets of baskets, and a basket (an order) lies in one day, so the
counts of a window are the sum of its days' counts. Each day keeps, with no threshold applied:

- `day_baskets`: its baskets (and the largest category itemset counted that day);
- `day_product_items`, `day_product_pairs`: in how many of its baskets each product and each pair of
  products occur (product rules are pairs);
- `day_category_itemsets`: the same for every set of categories up to the configured size.

The window's totals (`total_*`) are kept up to date by difference: a day that is recounted (late
lines, a corrected row) has its old counts subtracted and its new ones added, a day that ages out of a
trailing window is subtracted, and nothing is recounted from the purchase lines but the days loaded. Of those, a
day whose baskets hold what they held when it was counted (its `day_contents`, a sum of hashes of its distinct
(order, product) and (order, category) pairs) is not recounted: a daily run loads a range of days, from the oldest
late line to today, of which few changed, and a corrected price changes no count.
Rules are then thresholded on the totals (`association_rules.rules_from_itemsets`), so an itemset
that becomes frequent with new data is found, exactly as mining all the window's lines would find it.

The counts live in their own DuckDB file next to the warehouse (`counts_database`), attached as
`counts`: the published snapshot is a copy of the warehouse file, and the counts are the pipeline's
working state, not a port. Every change to them is one transaction on that file.

The per-day counting (the map) is a set of SELECTs in DuckDB's dialect over relations named by the
caller (`counting_sql`), so the same text runs here on the warehouse's lines and, translated by
SQLGlot, on Spark over the lines' Parquet files by day (`spark_counts`, the `spark` engine); the days
Spark counted are then read back from their Parquet files (`count_days(counted_in=...)`) and the
totals kept here as for DuckDB's own counts.

Which day folders under a root hold what the warehouse holds is recorded in `counts.day_files`: a
day's rows are recorded when the spark engine counts it (or a day is exported from here), and forgotten
whenever the day is recounted by either engine, or leaves the warehouse. The spark engine's reduce and
customer aggregates read only recorded folders, exporting from here the days they lack (`current_files`):
a day last counted by the duckdb engine, or by a run with another root, is never read stale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from product_affinity.consumer_aligned import day_files, pair_counts
from product_affinity.consumer_aligned.association_rules import RULE_COLUMNS, Thresholds, min_count, rules_from_itemsets
from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES
from product_affinity.partitions import Days
from product_affinity.tracking import watching

SCHEMA = "counts"
FILES = f"{SCHEMA}.day_files"  # (root, name, day): the day folders under a root that hold the warehouse's rows of the day
CONTENTS = f"{SCHEMA}.day_contents"  # (day, products, categories, category_itemset_size): what a day was counted from
# Per-day counted itemsets, by the key columns that name one itemset in it (and in its total).
KEYS = {
    "product_items": ("item",),
    "product_pairs": ("item_a", "item_b"),
    "category_itemsets": ("items",),
}
TYPES = {"item": "BIGINT", "item_a": "BIGINT", "item_b": "BIGINT", "items": "VARCHAR[]"}
PRODUCT_ITEMSET_SIZE = 2  # product rules come from pairs: larger product itemsets are not counted per day


class CountsError(RuntimeError):
    """The counts cannot give what the settings ask (they were counted for smaller itemsets)."""


def counts_database(warehouse: Path) -> Path:
    """The counts' own DuckDB file, beside the warehouse file."""
    warehouse = Path(warehouse)
    return warehouse.with_name(f"{warehouse.stem}.counts.duckdb")


def attach(conn: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach the counts file as `counts` (creating its tables the first time)."""
    conn.execute(f"ATTACH IF NOT EXISTS '{str(path).replace(chr(39), chr(39) * 2)}' AS {SCHEMA}")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.day_baskets (day DATE, baskets BIGINT, category_itemset_size INTEGER)")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.window_days (day DATE)")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {FILES} (root VARCHAR, name VARCHAR, day DATE)")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {CONTENTS} (day DATE, products HUGEINT, categories HUGEINT, "
                 "category_itemset_size INTEGER)")
    for kind, keys in KEYS.items():
        columns = ", ".join(f"{k} {TYPES[k]}" for k in keys)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.day_{kind} (day DATE, {columns}, baskets BIGINT)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.total_{kind} ({columns}, baskets BIGINT)")


# The map, written once as SELECTs in DuckDB's dialect: DuckDB runs them as they are, Spark runs them as SQLGlot
# translates them (spark_counts). Each reads a relation by name, so the same text serves a temp table, a view over
# Parquet files or a Spark view.

def lines_sql(purchases: str, products: str, days: Days | None = None) -> str:
    """The accepted purchase lines of `days` (or all), with their UTC day and their product's category (NULL when the
    product is unknown): what the counting and the customer aggregates read, and what the Parquet export of the lines
    holds."""
    sql = f"""SELECT CAST(p.purchased_at AS DATE) AS day, p.*, pr.category
        FROM {purchases} AS p LEFT JOIN {products} AS pr USING (product_id)"""
    if days is None:
        return sql
    return f"{sql} WHERE p.purchased_at >= DATE '{days.first}' AND p.purchased_at < DATE '{days.end}'"


def product_lines_sql(lines: str) -> str:
    """Each product once per basket: a product on two lines of an order is in one basket."""
    return f"SELECT DISTINCT day, order_id, product_id FROM {lines}"


def category_lines_sql(lines: str) -> str:
    """Each category once per basket."""
    return f"SELECT DISTINCT day, order_id, category FROM {lines} WHERE category IS NOT NULL"


def day_baskets_sql(product_lines: str, category_itemset_size: int) -> str:
    return f"""SELECT day, count(DISTINCT order_id) AS baskets, CAST({int(category_itemset_size)} AS INTEGER) AS category_itemset_size
        FROM {product_lines} GROUP BY day"""


def product_items_sql(product_lines: str) -> str:
    return f"SELECT day, product_id AS item, count(*) AS baskets FROM {product_lines} GROUP BY day, product_id"


def product_pairs_sql(product_lines: str) -> str:
    """Every pair of distinct products of a basket, the smaller id first (an order lies in one day)."""
    return f"""SELECT a.day, a.product_id AS item_a, b.product_id AS item_b, count(*) AS baskets
        FROM {product_lines} AS a JOIN {product_lines} AS b ON b.order_id = a.order_id AND b.product_id > a.product_id
        GROUP BY a.day, a.product_id, b.product_id"""


def category_itemsets_sql(categories: str, size: int) -> str:
    """Every set of `size` distinct categories of a basket, as a list in ascending order."""
    joins = "".join(
        f" JOIN {categories} AS c{i} ON c{i}.order_id = c0.order_id AND c{i}.category > c{i - 1}.category"
        for i in range(1, size)
    )
    items = ", ".join(f"c{i}.category" for i in range(size))
    # Grouped by the columns, not by the list: DuckDB hashes columns faster than a list (8 s against 13 s for sets
    # of three at 3M lines), and any engine can group by columns.
    return f"SELECT c0.day, [{items}] AS items, count(*) AS baskets FROM {categories} AS c0{joins} GROUP BY c0.day, {items}"


PRODUCT_LINES, CATEGORY_LINES = "_product_lines", "_category_lines"
COUNTED = ["day_baskets", *(f"day_{kind}" for kind in KEYS)]  # the per-day counts tables, in the order they are written


def counting_sql(lines: str, category_itemset_size: int) -> tuple[dict[str, str], dict[str, str]]:
    """The map over a relation of day lines (columns of lines_sql): the distinct lines each engine holds first (temp
    table name -> SELECT over `lines`), then each per-day counts table (name -> SELECT over those)."""
    held = {PRODUCT_LINES: product_lines_sql(lines), CATEGORY_LINES: category_lines_sql(lines)}
    counted = dict(zip(COUNTED, [
        day_baskets_sql(PRODUCT_LINES, category_itemset_size),
        product_items_sql(PRODUCT_LINES),
        product_pairs_sql(PRODUCT_LINES),
        " UNION ALL ".join(category_itemsets_sql(CATEGORY_LINES, size) for size in range(1, category_itemset_size + 1)),
    ]))
    return held, counted


def contents_sql(product_lines: str, category_lines: str) -> str:
    """Per day, what its counts are counted from: the sums of the hashes of its distinct (order, product) and (order,
    category) pairs (relations of product_lines_sql and category_lines_sql). Two days hold the same baskets when
    their sums are equal, but for a collision of 64-bit hashes summed without overflow."""
    return f"""SELECT day, p.products, c.categories
        FROM (SELECT day, sum(hash(order_id, product_id)) AS products FROM {product_lines} GROUP BY day) AS p
        FULL JOIN (SELECT day, sum(hash(order_id, category)) AS categories FROM {category_lines} GROUP BY day) AS c
        USING (day)"""


def parquet_days_sql(root: day_files.Root, name: str, days: Days) -> str | None:
    """The per-day rows of `days` that another engine wrote as Parquet under `root` (day_files), or None if none."""
    folders = day_files.held(root, name, days)
    if not folders:
        return None
    files = ", ".join("'" + str(day_files.join(folder, "*.parquet")).replace("'", "''") + "'" for folder in folders)
    return f"SELECT * FROM read_parquet([{files}], hive_partitioning = true, hive_types = {{'day': DATE}})"


def _export(conn: duckdb.DuckDBPyConnection, root: day_files.Root, name: str, sql: str, days: Days) -> None:
    """Write the rows of `sql` (of `days`, with a day column) as table `name` under `root`, replacing the days' folders."""
    day_files.register(conn, root)
    with day_files.staging(root) as staged:
        target = str(day_files.join(staged, name)).replace("'", "''")
        conn.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, PARTITION_BY (day))")
        day_files.replace_days(staged, root, name, days)


def export_lines(conn: duckdb.DuckDBPyConnection, root: day_files.Root, days: Days, purchases: str = PURCHASES,
                 products: str = PRODUCTS) -> None:
    """Write the accepted lines of `days` as Parquet under `root`, one folder per day, replacing the days' folders."""
    _export(conn, root, day_files.LINES, lines_sql(purchases, products, days), days)


def export_counts(conn: duckdb.DuckDBPyConnection, root: day_files.Root, days: Days) -> None:
    """Write the per-day counts of `days` held here as Parquet under `root`, as the spark engine's map writes them."""
    for name in COUNTED:
        _export(conn, root, name, f"FROM {SCHEMA}.{name} WHERE day >= DATE '{days.first}' AND day < DATE '{days.end}'", days)


def count_files(root: day_files.Root, days: Days, category_itemset_size: int) -> None:
    """The map on DuckDB from files: the per-day counts of `days` from the lines' Parquet files under `root`, written
    beside them as Parquet as the spark engine's map writes them (spark_counts.count_lines), by an in-memory DuckDB that
    opens neither the warehouse nor the counts file: chunks of days can be counted at once, by any worker that sees
    `root`, and loaded afterwards (`count_days(counted_in=root)`). A day with no lines left loses its counts' folders."""
    lines = parquet_days_sql(root, day_files.LINES, days)
    if lines is None:  # no day of the chunk has lines left: none has counts either
        with day_files.staging(root) as empty:
            for name in COUNTED:
                day_files.replace_days(empty, root, name, days)
        return
    with duckdb.connect() as conn:
        day_files.register(conn, root)
        conn.execute(f"CREATE TEMP VIEW _day_lines AS {lines}")
        held, counted = counting_sql("_day_lines", category_itemset_size)
        for name, sql in held.items():
            conn.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        for name, sql in counted.items():
            _export(conn, root, name, sql, days)


def line_days_sql(purchases: str = PURCHASES) -> str:
    """The days the warehouse has accepted lines of, and how many (a SELECT of day, lines)."""
    return f"SELECT CAST(purchased_at AS DATE) AS day, count(*) AS lines FROM {purchases} GROUP BY day"


WINDOW_DAYS = f"SELECT day FROM {SCHEMA}.window_days"  # the days in the rules' totals


def record_files(conn: duckdb.DuckDBPyConnection, root: day_files.Root, names: list[str], days: Days, held: str) -> None:
    """Record that the folders under `root` of tables `names` hold the rows of the days in `days` that `held` (a SELECT
    of day) lists, and nothing else of that range."""
    params = {"root": day_files.recorded(root), "names": names, "first": days.first, "end": days.end}
    conn.execute(f"DELETE FROM {FILES} WHERE root = $root AND list_contains($names, name) AND day >= $first AND day < $end",
                 params)
    conn.execute(f"""INSERT INTO {FILES} SELECT $root, unnest($names), day FROM ({held})
        WHERE day >= $first AND day < $end""", params)


def current_files(
    conn: duckdb.DuckDBPyConnection, root: day_files.Root, names: list[str], days: str,
    export: Callable[[duckdb.DuckDBPyConnection, day_files.Root, Days], None],
) -> dict[str, list[day_files.Root]]:
    """Per table of `names`, the folders under `root` of the days `days` lists (a SELECT of day), each holding what the
    warehouse holds for its day. The days not recorded as such are written first by `export` (over the range from the
    first to the last of them, which rewrites any recorded day in between with the same rows)."""
    params = {"root": day_files.recorded(root), "names": names}
    first, last = conn.execute(
        f"""SELECT min(day), max(day) FROM ({days}) AS d WHERE EXISTS (
            SELECT 1 FROM unnest($names) AS n(name)
            WHERE NOT EXISTS (SELECT 1 FROM {FILES} AS f WHERE f.root = $root AND f.name = n.name AND f.day = d.day))""",
        params,
    ).fetchone()
    if first is not None:
        missing = Days(first, last + timedelta(days=1))
        export(conn, root, missing)
        record_files(conn, root, names, missing, days)
    held = conn.execute(
        f"""SELECT name, day FROM {FILES} SEMI JOIN ({days}) AS d USING (day)
        WHERE root = $root AND list_contains($names, name) ORDER BY day""",
        params,
    ).fetchall()
    return {name: [day_files.day_folder(root, name, day) for n, day in held if n == name] for name in names}


LOADED_DAYS = "_loaded_days"  # the days with accepted lines, and how many: one scan of the lines per run, kept by days_to_count


def days_to_count(conn: duckdb.DuckDBPyConnection, days: Days, purchases: str = PURCHASES) -> Days:
    """The run's days, widened to any day that has accepted lines but no counts: loaded by a run whose counting was
    blocked (a failed check) or never ran, it would otherwise be missing from the window's totals for good."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {LOADED_DAYS} AS {line_days_sql(purchases)}")
    first, last = conn.execute(
        f"SELECT min(day), max(day) FROM {LOADED_DAYS} WHERE day NOT IN (SELECT day FROM {SCHEMA}.day_baskets)"
    ).fetchone()
    if first is None:
        return days
    return Days(min(days.first, first), max(days.end, last + timedelta(days=1)))


@dataclass(frozen=True)
class Counted:
    days: int  # days with at least one basket
    baskets: int
    itemsets: dict[str, int]  # per-day rows written, by kind
    recounted: int  # days recounted: the rest held what they were counted from


CHUNK_LINES = 3_000_000  # purchase lines per transaction of count_days (two months of Instacart's)


def count_days(
    conn: duckdb.DuckDBPyConnection,
    days: Days,
    category_itemset_size: int,
    window_days: int | None,
    purchases: str = PURCHASES,
    products: str = PRODUCTS,
    counted_in: day_files.Root | None = None,
) -> Counted:
    """Recount `days` from the accepted purchase lines and bring the window's totals up to date, a chunk of days at a
    time (`CHUNK_LINES` lines or so, a day never split), each chunk one transaction (`_count_chunk`).

    A chunk's transaction replaces its days' per-day rows. Days counted for the first time enter the totals at the
    end, all chunks' at once (`sync_window`, one aggregate where a MERGE per chunk took four times as long). Days
    recounted while in the window change the totals in their chunk, by the difference of their new and old counts
    (`_count_chunk`). The totals are the sum of the counts of the days in `window_days` after every commit,
    so a run stopped between chunks leaves counts that are right for the lines they counted, and the next run of
    these days (or any run: its sync_window adds the days counted since) finishes the job. One transaction for two
    years at Instacart scale held 182 million uncommitted per-day pair rows: 7 GB more at its peak.

    Counted here, a day of `days` whose baskets hold what they held when it was last counted here (`_changed_days`)
    keeps its counts: a daily run over a month of days, for three late lines and a few corrected prices, recounts the
    days of the late lines and today. Its Parquet files (the spark engine's) are forgotten all the same: a corrected
    price changes a day's lines, not its counts.

    With `counted_in`, the days were counted elsewhere (spark_counts, or a fanned-out count): their per-day counts are
    read from the Parquet files under that root."""
    # The days with lines are the ones days_to_count found, if it ran just before (the job's step), else found now.
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {LOADED_DAYS} AS {line_days_sql(purchases)}")
    if counted_in is not None:
        day_files.register(conn, counted_in)
    written: dict[str, int] = {}
    try:
        changed = _all_days(days) if counted_in is not None else _changed_days(
            conn, days, category_itemset_size, purchases, products)
        if len(changed) < (days.end - days.first).days:  # the files of the days kept may hold stale lines
            conn.execute(f"DELETE FROM {FILES} WHERE day >= $first AND day < $end", {"first": days.first, "end": days.end})
        for chunk in _chunks(conn, changed):
            for kind, rows in _count_chunk(conn, chunk, category_itemset_size, window_days, purchases, products,
                                           counted_in).items():
                written[kind] = written.get(kind, 0) + rows
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {LOADED_DAYS}")
    conn.execute("BEGIN TRANSACTION")  # the new counts of the window's days into the totals, in one aggregate
    sync_window(conn, window_days)
    conn.execute("COMMIT")
    counted_days, baskets = conn.execute(
        f"SELECT count(*), coalesce(sum(baskets), 0) FROM {SCHEMA}.day_baskets WHERE day >= $first AND day < $end",
        {"first": days.first, "end": days.end},
    ).fetchone()
    return Counted(counted_days, int(baskets), written, len(changed))


def _all_days(days: Days) -> list[date]:
    return [days.first + timedelta(days=i) for i in range((days.end - days.first).days)]


def _changed_days(conn: duckdb.DuckDBPyConnection, days: Days, category_itemset_size: int, purchases: str,
                  products: str) -> list[date]:
    """The days of `days` to recount: those whose baskets differ from what they were counted from (`contents_sql`),
    or were counted for another itemset size, or never. Every day, when none of them has its contents recorded at
    this size (a first build, counts written before day_contents, or another size: nothing to compare) or some
    counted day has no line left (a rebuilt warehouse: `_count_chunk` drops it).
    Comparing costs a read of the days' lines (0.2 to 0.7 s for four weeks at Instacart scale) where recounting them
    took 6 s."""
    params = {"first": days.first, "end": days.end, "size": category_itemset_size}
    kept, orphans = conn.execute(
        f"""SELECT (SELECT count(*) FROM {CONTENTS} WHERE day >= $first AND day < $end AND category_itemset_size = $size),
                  (SELECT count(*) FROM {SCHEMA}.day_baskets ANTI JOIN {LOADED_DAYS} USING (day))""", params).fetchone()
    if not kept or orphans:
        return _all_days(days)
    lines = lines_sql(purchases, products, days)
    found = contents_sql(f"({product_lines_sql(f'({lines})')})", f"({category_lines_sql(f'({lines})')})")
    return [day for (day,) in conn.execute(
        f"""SELECT day FROM ({found}) AS now
        FULL JOIN (SELECT * FROM {CONTENTS} WHERE day >= $first AND day < $end AND category_itemset_size = $size) AS counted
        USING (day)
        WHERE now.products IS DISTINCT FROM counted.products OR now.categories IS DISTINCT FROM counted.categories
        ORDER BY day""", params).fetchall()]


def _chunks(conn: duckdb.DuckDBPyConnection, days: list[date]) -> list[Days]:
    """`days` (ascending) cut into ranges of consecutive days of about CHUNK_LINES lines each; a day never split."""
    lines_of = dict(conn.execute(f"SELECT day, lines FROM {LOADED_DAYS}").fetchall())
    chunks, first, lines = [], None, 0
    for before, day in zip([None, *days], days):
        count = lines_of.get(day, 0)
        if first is not None and (day != before + timedelta(days=1) or (lines and lines + count > CHUNK_LINES)):
            chunks.append(Days(first, before + timedelta(days=1)))
            first, lines = None, 0
        if first is None:
            first = day
        lines += count
    return [*chunks, Days(first, days[-1] + timedelta(days=1))] if days else chunks


def _count_chunk(
    conn: duckdb.DuckDBPyConnection, days: Days, category_itemset_size: int, window_days: int | None, purchases: str,
    products: str, counted_in: day_files.Root | None,
) -> dict[str, int]:
    """count_days for one range of days, in one transaction: the days' per-day rows are replaced. When some of them
    were in the window's totals, the totals change by new minus old counts, netted per itemset, and the chunk's days
    stay in the window: a recount of a day that changed little (late lines) changes few totals, where taking every
    old count out and putting every new one in rewrote millions (4.3 + 2.9 s for 26 days at Instacart scale). Days
    not in the totals yet enter them with the window's next sync. Returns the per-day rows written, by kind."""
    params = {"first": days.first, "end": days.end}
    if counted_in is None:
        held, counted = counting_sql("_day_lines", category_itemset_size)
        counted["day_product_pairs"] = pair_counts.insert_day_pairs  # the same rows as its SELECT, in less memory and time
        conn.execute(f"CREATE OR REPLACE TEMP VIEW _day_lines AS {lines_sql(purchases, products, days)}")
        for name, sql in held.items():
            with watching(conn, f"counting {days}: gathering {name.strip('_').replace('_', ' ')}"):
                conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
    else:
        counted = {name: parquet_days_sql(counted_in, name, days) for name in COUNTED}
    conn.execute("BEGIN TRANSACTION")
    try:
        # The days recounted, and any day counted before that no longer has a line in the warehouse (a warehouse
        # rebuilt from nothing beside old counts): their counts leave the totals and are replaced or dropped.
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _recounted AS
            SELECT day FROM {SCHEMA}.day_baskets WHERE day >= $first AND day < $end
            UNION SELECT day FROM {SCHEMA}.day_baskets WHERE day NOT IN (SELECT day FROM {LOADED_DAYS})""",
            params,
        )
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _leaving AS FROM _recounted SEMI JOIN {SCHEMA}.window_days USING (day)")
        netted = conn.execute("SELECT count(*) FROM _leaving").fetchone()[0] > 0
        if netted:  # the old counts the totals hold, kept until the new ones are written
            for kind, keys in KEYS.items():
                conn.execute(f"""CREATE OR REPLACE TEMP TABLE _old_{kind} AS
                    SELECT {', '.join(keys)}, baskets FROM {SCHEMA}.day_{kind} SEMI JOIN _leaving USING (day)""")
        # Any root's files of these days may be stale now: only the files this run writes are recorded again.
        conn.execute(f"DELETE FROM {FILES} WHERE day IN (SELECT day FROM _recounted) OR (day >= $first AND day < $end)",
                     params)
        conn.execute(f"DELETE FROM {SCHEMA}.window_days WHERE day IN (SELECT day FROM _recounted)")
        for name in COUNTED:
            conn.execute(f"DELETE FROM {SCHEMA}.{name} WHERE day IN (SELECT day FROM _recounted)")
        conn.execute(f"DELETE FROM {CONTENTS} WHERE day IN (SELECT day FROM _recounted) OR (day >= $first AND day < $end)",
                     params)
        if counted_in is None:  # what the days were counted from (counted elsewhere: unknown, so recounted next time here)
            conn.execute(f"INSERT INTO {CONTENTS} SELECT day, products, categories, $size FROM "
                         f"({contents_sql(PRODUCT_LINES, CATEGORY_LINES)})", {"size": category_itemset_size})
        written = {}
        for name, sql in counted.items():
            with watching(conn, f"counting {days}: {name.removeprefix('day_').replace('_', ' ')} per day"):
                if callable(sql):
                    written[name.removeprefix("day_")] = sql(conn, PRODUCT_LINES, f"{SCHEMA}.{name}")
                else:
                    written[name.removeprefix("day_")] = conn.execute(f"INSERT INTO {SCHEMA}.{name} BY NAME {sql}").fetchone()[0] if sql else 0
        if netted:
            _net(conn, days, window_days)
        if counted_in is not None:
            record_files(conn, counted_in, [day_files.LINES, *COUNTED], days, f"SELECT day FROM {SCHEMA}.day_baskets")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        for temp in (PRODUCT_LINES, CATEGORY_LINES, "_recounted", "_leaving", "_entering", *(f"_old_{kind}" for kind in KEYS)):
            conn.execute(f"DROP TABLE IF EXISTS {temp}")
        conn.execute("DROP VIEW IF EXISTS _day_lines")
    written.pop("baskets")
    return written


def _net(conn: duckdb.DuckDBPyConnection, days: Days, window_days: int | None) -> None:
    """The totals from the old counts of the days in `_leaving` (kept in `_old_<kind>`) to the new counts of `days`
    inside the window: one MERGE per kind of the itemsets whose sum changed; those days are then in the window."""
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _entering AS SELECT day FROM {SCHEMA}.day_baskets
        WHERE day >= $first AND day < $end AND day >= $start""",
        {"first": days.first, "end": days.end, "start": window_start(conn, window_days) or date.min},
    )
    for kind, keys in KEYS.items():
        key_list = ", ".join(keys)
        _merge(conn, kind, f"""SELECT {key_list}, sum(baskets) AS baskets FROM (
                SELECT {key_list}, baskets FROM {SCHEMA}.day_{kind} SEMI JOIN _entering USING (day)
                UNION ALL SELECT {key_list}, -baskets FROM _old_{kind}
            ) GROUP BY {key_list} HAVING sum(baskets) <> 0""")
    conn.execute(f"INSERT INTO {SCHEMA}.window_days SELECT day FROM _entering")


def window_start(conn: duckdb.DuckDBPyConnection, window_days: int | None) -> date | None:
    """The first day of the rules' window: all history (None), or the trailing `window_days` up to the latest day counted."""
    if window_days is None:
        return None
    latest = conn.execute(f"SELECT max(day) FROM {SCHEMA}.day_baskets").fetchone()[0]
    return None if latest is None else latest - timedelta(days=window_days - 1)


def sync_window(conn: duckdb.DuckDBPyConnection, window_days: int | None) -> None:
    """Make the totals the sum of the window's days: add the days counted inside it that are not in the totals yet,
    subtract the days in the totals that aged out of it. Runs inside the caller's transaction, if any."""
    start = window_start(conn, window_days)
    since = {"start": start or date.min}
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _entering AS
        SELECT day FROM {SCHEMA}.day_baskets WHERE day >= $start AND day NOT IN (SELECT day FROM {SCHEMA}.window_days)""",
        since,
    )
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _leaving AS SELECT day FROM {SCHEMA}.window_days WHERE day < $start", since
    )
    _apply(conn, entering="_entering", leaving="_leaving")
    conn.execute(f"DELETE FROM {SCHEMA}.window_days WHERE day IN (SELECT day FROM _leaving)")
    conn.execute(f"INSERT INTO {SCHEMA}.window_days SELECT day FROM _entering")
    conn.execute("DROP TABLE _entering")
    conn.execute("DROP TABLE _leaving")


def totals_sql(kind: str, day_counts: str, signed_days: str) -> str:
    """The reduce as one SELECT: per itemset, the sum of its per-day counts over the days of `signed_days` (day, sign),
    each counted with its sign (1 to add a day, -1 to take it away)."""
    keys = ", ".join(KEYS[kind])
    return f"""SELECT {keys}, sum(d.baskets * s.sign) AS baskets
        FROM {day_counts} AS d JOIN {signed_days} AS s USING (day) GROUP BY {keys}"""


def _apply(conn: duckdb.DuckDBPyConnection, entering: str | None, leaving: str | None) -> None:
    """Add to the totals the per-day counts of the days in temp table `entering`, subtract those of `leaving`."""
    signed = " UNION ALL ".join(
        f"SELECT day, {sign} AS sign FROM {days}" for days, sign in ((entering, 1), (leaving, -1)) if days
    )
    for kind in KEYS:
        _merge(conn, kind, totals_sql(kind, f"{SCHEMA}.day_{kind}", f"({signed})"))


def _merge(conn: duckdb.DuckDBPyConnection, kind: str, changes: str) -> None:
    """Add the (keys, baskets) of `changes` to the totals of `kind`; an itemset whose total falls to 0 is dropped."""
    keys = KEYS[kind]
    with watching(conn, f"the window's totals: {kind.replace('_', ' ')}"):
        if conn.execute(f"SELECT count(*) FROM (FROM {SCHEMA}.total_{kind} LIMIT 1)").fetchone()[0]:
            conn.execute(
                f"""MERGE INTO {SCHEMA}.total_{kind} AS t USING ({changes}) AS d
                ON {' AND '.join(f't.{k} = d.{k}' for k in keys)}
                WHEN MATCHED THEN UPDATE SET baskets = t.baskets + d.baskets
                WHEN NOT MATCHED THEN INSERT ({', '.join(keys)}, baskets) VALUES ({', '.join(f'd.{k}' for k in keys)}, d.baskets)"""
            )
        else:  # no totals to match (a first build): inserted, 2.5 s sooner than merged for 48.7M pairs at Instacart scale
            conn.execute(f"INSERT INTO {SCHEMA}.total_{kind} ({', '.join(keys)}, baskets) SELECT {', '.join(keys)}, baskets FROM ({changes})")
        conn.execute(f"DELETE FROM {SCHEMA}.total_{kind} WHERE baskets = 0")


def window_baskets(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(
        f"SELECT coalesce(sum(baskets), 0) FROM {SCHEMA}.day_baskets SEMI JOIN {SCHEMA}.window_days USING (day)"
    ).fetchone()[0]


def check_counted(conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds]) -> None:
    if thresholds["product"].max_itemset_size > PRODUCT_ITEMSET_SIZE:
        raise CountsError(f"product rules come from the daily pair counts: product_max_itemset_size can be at most "
                          f"{PRODUCT_ITEMSET_SIZE}, not {thresholds['product'].max_itemset_size}")
    wanted = thresholds["category"].max_itemset_size
    short = counted_below(conn, wanted, f"{SCHEMA}.window_days")
    if short is not None:
        raise CountsError(f"category itemsets of up to {wanted} categories are asked for, but the days {short[0]} to "
                          f"{short[1]} were counted up to {short[2]}: recount them (a backfill of those partitions)")


def counted_below(conn: duckdb.DuckDBPyConnection, size: int, among: str | None = None) -> tuple[date, date, int] | None:
    """The first and last day (of those in the relation `among`, or of all) whose category itemsets were counted up to
    fewer than `size` categories, and the fewest; None when every such day was counted up to `size` or more."""
    within = f"SEMI JOIN {among} USING (day)" if among else ""
    short = conn.execute(
        f"""SELECT min(day), max(day), min(category_itemset_size) FROM {SCHEMA}.day_baskets {within}
        WHERE category_itemset_size < $size""",
        {"size": size},
    ).fetchone()
    return None if short[0] is None else short


def frequent_itemsets_sql(level: str, minimum: int, max_itemset_size: int, totals: str = f"{SCHEMA}.total_") -> str:
    """The itemsets of a level whose total count reaches `minimum`, as (items list, baskets), from the totals tables
    named `<totals><kind>`."""
    if level == "product":
        sql = f"SELECT [item] AS items, baskets FROM {totals}product_items WHERE baskets >= {int(minimum)}"
        if max_itemset_size >= 2:
            sql += f" UNION ALL SELECT [item_a, item_b] AS items, baskets FROM {totals}product_pairs WHERE baskets >= {int(minimum)}"
        return sql
    return f"""SELECT items, baskets FROM {totals}category_itemsets
        WHERE baskets >= {int(minimum)} AND array_length(items) <= {int(max_itemset_size)}"""


def rules_from_counts(
    conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], products: str = PRODUCTS
) -> pd.DataFrame:
    """Rules at every level from the window's totals: the itemsets whose count reaches each level's minimum support.

    Every subset of a frequent itemset is at least as frequent, and every itemset of the counted sizes has its
    exact total, so this is the set of frequent itemsets mining the window's lines would find."""
    check_counted(conn, thresholds)
    return rules_from_totals(lambda sql: conn.execute(sql).df(), window_baskets(conn), thresholds, conn, products)


def rules_before(
    conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], cutoff: date, purchases: str,
    products: str = PRODUCTS,
) -> pd.DataFrame | None:
    """Rules at every level from the counts of the days before `cutoff` alone: the rules mining the lines of
    `purchases` before it would give (the backtest's training side). None when the counts cannot give them: the
    window's totals leave out a counted day (a trailing window, or days not summed yet), a day before the cut-off was
    counted for smaller itemsets than asked, or the counts' baskets before it are not the lines' (counts behind the
    lines).

    A day's counts are whole, so the counts before a day boundary are the window's totals less the window's days
    from the cut-off on. Only itemsets whose total reaches a level's minimum can reach it before the cut-off, so only
    theirs are netted: a few thousand itemsets, where summing every day before the cut-off would aggregate most
    of the 182.6M per-day pair rows (Instacart scale: 0.4 s; filtering the days by the window's too took 4 s)."""
    params = {"cutoff": cutoff}
    outside, short, baskets = conn.execute(
        f"""SELECT count(*) FILTER (WHERE w.day IS NULL),
                   count(*) FILTER (WHERE d.day < $cutoff AND d.category_itemset_size < $size),
                   coalesce(sum(d.baskets) FILTER (WHERE d.day < $cutoff), 0)
        FROM {SCHEMA}.day_baskets AS d LEFT JOIN {SCHEMA}.window_days AS w ON w.day = d.day""",
        params | {"size": thresholds["category"].max_itemset_size},
    ).fetchone()
    if outside or short or not baskets or thresholds["product"].max_itemset_size > PRODUCT_ITEMSET_SIZE:
        return None
    lines = conn.execute(f"SELECT count(DISTINCT order_id) FROM {purchases} WHERE purchased_at < $cutoff", params).fetchone()[0]
    if lines != baskets:
        return None
    levels = {"product_items": "product", "product_pairs": "product", "category_itemsets": "category"}
    for kind, keys in KEYS.items():
        key_list = ", ".join(keys)
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _before_{kind} AS
            WITH frequent AS (SELECT {key_list}, baskets FROM {SCHEMA}.total_{kind} WHERE baskets >= $minimum),
            recent AS (SELECT {key_list}, sum(baskets) AS baskets FROM {SCHEMA}.day_{kind} SEMI JOIN frequent USING ({key_list})
                       WHERE day >= $cutoff GROUP BY {key_list})
            SELECT {key_list}, CAST(f.baskets - coalesce(r.baskets, 0) AS BIGINT) AS baskets FROM frequent AS f LEFT JOIN recent AS r USING ({key_list})""",
            params | {"minimum": min_count(thresholds[levels[kind]].min_support, baskets)},
        )
    try:
        return rules_from_totals(lambda sql: conn.execute(sql).df(), baskets, thresholds, conn, products, totals="_before_")
    finally:
        for kind in KEYS:
            conn.execute(f"DROP TABLE _before_{kind}")


def item_baskets_sql(level: str, before: str | None = None) -> str:
    """Per item of a level, in how many baskets of the days before `before` (a SQL date; every counted day when not
    given) it is, as (native, baskets): the item in its own type, as the lines give it."""
    before = before or "CAST('infinity' AS DATE)"
    if level == "product":
        return f"SELECT item AS native, sum(baskets) AS baskets FROM {SCHEMA}.day_product_items WHERE day < {before} GROUP BY item"
    return f"""SELECT items[1] AS native, sum(baskets) AS baskets FROM {SCHEMA}.day_category_itemsets
        WHERE day < {before} AND len(items) = 1 GROUP BY native"""


def rules_from_totals(
    query, baskets: int, thresholds: dict[str, Thresholds], conn: duckdb.DuckDBPyConnection, products: str = PRODUCTS,
    totals: str = f"{SCHEMA}.total_",
) -> pd.DataFrame:
    """Rules at every level from totals held wherever `query` (SELECT text in DuckDB's dialect -> DataFrame) runs:
    only the frequent itemsets come back to this process. Labels come from the products on `conn`."""
    if baskets == 0:
        return pd.DataFrame(columns=RULE_COLUMNS)
    frames = []
    for level, t in thresholds.items():
        itemsets = query(frequent_itemsets_sql(level, min_count(t.min_support, baskets), t.max_itemset_size, totals))
        if level == "product":
            labels = dict(conn.execute(f"SELECT product_id, product_id::VARCHAR FROM {products}").fetchall())
        else:
            # Categories are numbered in alphabetical order, as the rules engine numbers them (baskets.load_basket_items).
            numbers = {c: i for i, (c,) in enumerate(conn.execute(f"SELECT DISTINCT category FROM {products} ORDER BY 1").fetchall(), 1)}
            itemsets["items"] = [[numbers[c] for c in items] for items in itemsets["items"]]
            labels = {i: c for c, i in numbers.items()}
        itemsets["items"] = [tuple(int(i) for i in items) for items in itemsets["items"]]
        rules = rules_from_itemsets(itemsets, baskets, t.min_confidence, labels, level, t.max_consequent_size)
        if not rules.empty:
            frames.append(rules)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RULE_COLUMNS)


def size(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows held per counts table: what the daily counts cost to keep."""
    names = ["day_baskets", *(f"{prefix}_{kind}" for kind in KEYS for prefix in ("day", "total"))]
    return {name: conn.execute(f"SELECT count(*) FROM {SCHEMA}.{name}").fetchone()[0] for name in names}
