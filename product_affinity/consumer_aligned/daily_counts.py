"""Exact per-day basket counts, summed over the rules' window: association rules without rereading history.

Counts are additive over disjoint sets of baskets, and a basket (an order) lies in one day, so the
counts of a window are the sum of its days' counts. Each day keeps, with no threshold applied:

- `day_baskets`: its baskets (and the largest category itemset counted that day);
- `day_product_items`, `day_product_pairs`: in how many of its baskets each product and each pair of
  products occur (product rules are pairs);
- `day_category_itemsets`: the same for every set of categories up to the configured size.

The window's totals (`total_*`) are kept up to date by difference: a day that is recounted (late
lines, a corrected row) has its old counts subtracted and its new ones added, a day that ages out of a
trailing window is subtracted, and nothing is recounted from the purchase lines but the days loaded.
Rules are then thresholded on the totals (`association_rules.rules_from_itemsets`), so an itemset
that becomes frequent with new data is found, exactly as mining all the window's lines would find it.

The counts live in their own DuckDB file next to the warehouse (`counts_database`), attached as
`counts`: the published snapshot is a copy of the warehouse file, and the counts are the pipeline's
working state, not a port. Every change to them is one transaction on that file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from product_affinity.consumer_aligned.association_rules import RULE_COLUMNS, Thresholds, min_count, rules_from_itemsets
from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES
from product_affinity.partitions import Days

SCHEMA = "counts"
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
    for kind, keys in KEYS.items():
        columns = ", ".join(f"{k} {TYPES[k]}" for k in keys)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.day_{kind} (day DATE, {columns}, baskets BIGINT)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.total_{kind} ({columns}, baskets BIGINT)")


def _itemsets_of_size(size: int) -> str:
    """Every set of `size` distinct categories of one basket, ascending, from temp table _categories."""
    joins = "".join(
        f" JOIN _categories AS c{i} ON c{i}.order_id = c0.order_id AND c{i}.category > c{i - 1}.category"
        for i in range(1, size)
    )
    items = ", ".join(f"c{i}.category" for i in range(size))
    return f"SELECT c0.day, [{items}] AS items, count(*) AS baskets FROM _categories AS c0{joins} GROUP BY ALL"


@dataclass(frozen=True)
class Counted:
    days: int  # days with at least one basket
    baskets: int
    itemsets: dict[str, int]  # per-day rows written, by kind


def count_days(
    conn: duckdb.DuckDBPyConnection,
    days: Days,
    category_itemset_size: int,
    window_days: int | None,
    purchases: str = PURCHASES,
    products: str = PRODUCTS,
) -> Counted:
    """Recount `days` from the accepted purchase lines and bring the window's totals up to date, in one transaction.

    The days' previous counts are taken out of the totals before they are replaced; then the window is
    synchronised (`sync_window`), which adds the new counts of the days inside it."""
    params = {"first": days.first, "end": days.end}
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _lines AS
        SELECT DISTINCT CAST(purchased_at AS DATE) AS day, order_id, product_id FROM {purchases}
        WHERE purchased_at >= $first AND purchased_at < $end""",
        params,
    )
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _categories AS
        SELECT DISTINCT l.day, l.order_id, pr.category FROM _lines AS l JOIN {products} AS pr USING (product_id)"""
    )
    conn.execute("BEGIN TRANSACTION")
    try:
        # The days recounted, and any day counted before that no longer has a line in the warehouse (a warehouse
        # rebuilt from nothing beside old counts): their counts leave the totals and are replaced or dropped.
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _recounted AS
            SELECT day FROM {SCHEMA}.day_baskets WHERE day >= $first AND day < $end
            UNION SELECT day FROM {SCHEMA}.day_baskets
                  WHERE day NOT IN (SELECT DISTINCT CAST(purchased_at AS DATE) FROM {purchases})""",
            params,
        )
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _leaving AS FROM _recounted SEMI JOIN {SCHEMA}.window_days USING (day)")
        _apply(conn, entering=None, leaving="_leaving")
        conn.execute(f"DELETE FROM {SCHEMA}.window_days WHERE day IN (SELECT day FROM _recounted)")
        for name in ["baskets", *KEYS]:
            conn.execute(f"DELETE FROM {SCHEMA}.day_{name} WHERE day IN (SELECT day FROM _recounted)")
        conn.execute(
            f"""INSERT INTO {SCHEMA}.day_baskets
            SELECT day, count(DISTINCT order_id), $size FROM _lines GROUP BY day""",
            {"size": category_itemset_size},
        )
        written = {
            "product_items": conn.execute(
                f"INSERT INTO {SCHEMA}.day_product_items SELECT day, product_id, count(*) FROM _lines GROUP BY ALL"
            ).fetchone()[0],
            "product_pairs": conn.execute(
                f"""INSERT INTO {SCHEMA}.day_product_pairs
                SELECT a.day, a.product_id, b.product_id, count(*)
                FROM _lines AS a JOIN _lines AS b ON b.order_id = a.order_id AND b.product_id > a.product_id
                GROUP BY ALL"""
            ).fetchone()[0],
            "category_itemsets": sum(
                conn.execute(f"INSERT INTO {SCHEMA}.day_category_itemsets {_itemsets_of_size(size)}").fetchone()[0]
                for size in range(1, category_itemset_size + 1)
            ),
        }
        sync_window(conn, window_days)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        for temp in ("_lines", "_categories", "_recounted", "_leaving"):
            conn.execute(f"DROP TABLE IF EXISTS {temp}")
    counted_days, baskets = conn.execute(
        f"SELECT count(*), coalesce(sum(baskets), 0) FROM {SCHEMA}.day_baskets WHERE day >= $first AND day < $end", params
    ).fetchone()
    return Counted(counted_days, int(baskets), written)


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


def _apply(conn: duckdb.DuckDBPyConnection, entering: str | None, leaving: str | None) -> None:
    """Add to the totals the per-day counts of the days in temp table `entering`, subtract those of `leaving`."""
    signed = " UNION ALL ".join(
        f"SELECT day, {sign} AS sign FROM {days}" for days, sign in ((entering, 1), (leaving, -1)) if days
    )
    for kind, keys in KEYS.items():
        key_list = ", ".join(keys)
        conn.execute(
            f"""MERGE INTO {SCHEMA}.total_{kind} AS t
            USING (SELECT {key_list}, sum(d.baskets * s.sign) AS baskets
                   FROM {SCHEMA}.day_{kind} AS d JOIN ({signed}) AS s USING (day) GROUP BY ALL) AS d
            ON {' AND '.join(f't.{k} = d.{k}' for k in keys)}
            WHEN MATCHED THEN UPDATE SET baskets = t.baskets + d.baskets
            WHEN NOT MATCHED THEN INSERT ({key_list}, baskets) VALUES ({', '.join(f'd.{k}' for k in keys)}, d.baskets)"""
        )
        conn.execute(f"DELETE FROM {SCHEMA}.total_{kind} WHERE baskets = 0")


def window_baskets(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(
        f"SELECT coalesce(sum(baskets), 0) FROM {SCHEMA}.day_baskets SEMI JOIN {SCHEMA}.window_days USING (day)"
    ).fetchone()[0]


def _check_counted(conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds]) -> None:
    if thresholds["product"].max_itemset_size > PRODUCT_ITEMSET_SIZE:
        raise CountsError(f"product rules come from the daily pair counts: product_max_itemset_size can be at most "
                          f"{PRODUCT_ITEMSET_SIZE}, not {thresholds['product'].max_itemset_size}")
    wanted = thresholds["category"].max_itemset_size
    short = conn.execute(
        f"""SELECT min(day), max(day), min(category_itemset_size) FROM {SCHEMA}.day_baskets
        SEMI JOIN {SCHEMA}.window_days USING (day) WHERE category_itemset_size < $wanted""",
        {"wanted": wanted},
    ).fetchone()
    if short[0] is not None:
        raise CountsError(f"category itemsets of up to {wanted} categories are asked for, but the days {short[0]} to "
                          f"{short[1]} were counted up to {short[2]}: recount them (a backfill of those partitions)")


def rules_from_counts(
    conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], products: str = PRODUCTS
) -> pd.DataFrame:
    """Rules at every level from the window's totals: the itemsets whose count reaches each level's minimum support.

    Every subset of a frequent itemset is at least as frequent, and every itemset of the counted sizes has its
    exact total, so this is the set of frequent itemsets mining the window's lines would find."""
    _check_counted(conn, thresholds)
    baskets = window_baskets(conn)
    if baskets == 0:
        return pd.DataFrame(columns=RULE_COLUMNS)
    frames = []
    for level, t in thresholds.items():
        minimum = {"minimum": min_count(t.min_support, baskets), "size": t.max_itemset_size}
        if level == "product":
            itemsets = conn.execute(
                f"""SELECT [item] AS items, baskets FROM {SCHEMA}.total_product_items WHERE baskets >= $minimum
                UNION ALL
                SELECT [item_a, item_b], baskets FROM {SCHEMA}.total_product_pairs WHERE baskets >= $minimum AND $size >= 2""",
                minimum,
            ).df()
            labels = dict(conn.execute(f"SELECT product_id, product_id::VARCHAR FROM {products}").fetchall())
        else:
            # Categories are numbered in alphabetical order, as the rules engine numbers them (baskets.load_basket_items).
            numbers = {c: i for i, (c,) in enumerate(conn.execute(f"SELECT DISTINCT category FROM {products} ORDER BY 1").fetchall(), 1)}
            itemsets = conn.execute(
                f"""SELECT items, baskets FROM {SCHEMA}.total_category_itemsets
                WHERE baskets >= $minimum AND len(items) <= $size""",
                minimum,
            ).df()
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
