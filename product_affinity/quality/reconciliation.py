"""Figures recomputed from the accepted purchase lines (a recommendation's score from the rules), to reconcile the
output ports with (accuracy).

Each recomputation is a query over the whole warehouse that returns the join columns and one
recomputed column, one row per key; the contract's accuracy rules compare it with the published
figure on every row of the table (measures.py). The recomputations take their own route to the
answer rather than reuse the asset's SQL, so a bug in one does not hide in both: the rules engine
counts itemsets basket by basket in NumPy, the recount here intersects, for each itemset, the sets
of baskets holding each of its items.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import duckdb
import numpy as np

from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES
from product_affinity.contract.odcs import table
from product_affinity.product.descriptor import alignment

# Order ids are used as bit positions when they are this dense (range over orders); sparser ids are numbered first,
# so a bitstring never spans more than a few bits per basket whatever the ids look like.
DENSE_IDS = 4
_TABLES = itertools.count()  # names the temporary tables of the counts, one per recount in a process


@dataclass(frozen=True)
class Recomputation:
    join_on: tuple[str, ...]
    sql: str


def _positions(conn: duckdb.DuckDBPyConnection) -> tuple[str, str, int]:
    """(FROM clause of the purchase lines AS p, the SQL of a line's basket position, the last position).

    A basket's position is its order_id less the smallest one when the ids are dense, else its rank
    among the orders (a join more, about a second on 33M lines). The estimate of the number of orders
    only picks between the two; both are exact.
    """
    low, high, orders = conn.execute(
        f"SELECT min(order_id), max(order_id), approx_count_distinct(order_id) FROM {PURCHASES}"
    ).fetchone()
    if low is None:
        return f"{PURCHASES} AS p", "0", 0
    if high - low < DENSE_IDS * max(orders, 1):
        return f"{PURCHASES} AS p", f"p.order_id - {low}", high - low
    last = conn.execute(f"SELECT count(DISTINCT order_id) - 1 FROM {PURCHASES}").fetchone()[0]
    ranked = f"(SELECT order_id, row_number() OVER () - 1 AS position FROM (SELECT DISTINCT order_id FROM {PURCHASES}))"
    return f"{PURCHASES} AS p JOIN {ranked} AS o USING (order_id)", "o.position", last


def baskets_holding(conn: duckdb.DuckDBPyConnection, itemsets: str) -> str:
    """SQL: for each distinct (level, items) of the query `itemsets`, `baskets`, the number of orders holding every
    one of the items (categories, or product ids as text), counted over all the accepted purchase lines.

    One bitstring per item marks the baskets holding it (DuckDB's bitstring_agg, in one pass over the lines of the
    itemsets' items only); an itemset's count is the number of bits set in the AND of its items' bitstrings (425 kB
    each at 3.4M baskets). The ANDs are NumPy's, over the bitstrings fetched once: joined in SQL, one join per item
    position, every output row copied each item's bitstring, and that took 3.4 s of the 4.2 s of the support
    recount on 1,799 itemsets (DuckDB's bit_and aggregate, four times as long again). An item no basket holds (a
    product id that is no number, a category nobody bought) makes the count 0.

    The counts are bound into a temporary table of the connection, which the returned SQL reads.
    """
    lines, position, last = _positions(conn)
    wanted = conn.execute(f"SELECT DISTINCT level, items FROM ({itemsets})").fetchall()
    held = conn.execute(f"""WITH items AS (SELECT DISTINCT level, unnest(items) AS item FROM ({itemsets}))
        SELECT 'product' AS level, i.item, bitstring_agg({position}, 0, {last})::BLOB
        FROM {lines} JOIN (SELECT item, TRY_CAST(item AS BIGINT) AS product_id FROM items WHERE level = 'product') AS i USING (product_id)
        GROUP BY i.item
        UNION ALL
        SELECT 'category', pr.category, bitstring_agg({position}, 0, {last})::BLOB
        FROM {lines} JOIN {PRODUCTS} AS pr USING (product_id)
        WHERE pr.category IN (SELECT item FROM items WHERE level = 'category') GROUP BY pr.category""").fetchall()
    words = -(-(last + 1) // 64)  # a bitstring as BLOB is its bits, zeros ahead to a whole byte: AND and count as words
    bits = np.zeros((len(held) + 1, words * 8), dtype=np.uint8)  # the last row: no basket, for an item none holds
    for row, (_, _, blob) in enumerate(held):
        bits[row, bits.shape[1] - len(blob):] = np.frombuffer(blob, dtype=np.uint8)
    bits = bits.view(np.uint64)
    index = {(level, item): row for row, (level, item, _) in enumerate(held)}
    counts = []
    for level, items in wanted:
        if not items:  # an itemset that is NULL or empty is held by no basket: an empty AND would be all ones
            counts.append(0)
            continue
        anded = np.bitwise_and.reduce(bits[[index.get((level, item), len(held)) for item in items]], axis=0)
        counts.append(int(np.bitwise_count(anded).sum()))
    if not wanted:  # nothing to bind: DuckDB cannot type an empty list
        return "SELECT NULL::VARCHAR AS level, NULL::VARCHAR[] AS items, NULL::BIGINT AS baskets WHERE false"
    name = f"baskets_holding_{next(_TABLES)}"
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT unnest($levels) AS level, unnest($items) AS items, "
                 "unnest($baskets) AS baskets",
                 {"levels": [level for level, _ in wanted], "items": [list(items) for _, items in wanted], "baskets": counts})
    return f"SELECT level, items, baskets FROM {name}"


def _support(conn: duckdb.DuckDBPyConnection) -> Recomputation:
    items = "list_sort(list_distinct(antecedents || consequents))"
    rules = table("association_rules").physical_name
    return Recomputation(("rule_id",), f"""
        SELECT r.rule_id, b.baskets AS recounted_support_count
        FROM (SELECT rule_id, level, {items} AS items FROM {rules}) AS r
        JOIN ({baskets_holding(conn, f"SELECT level, {items} AS items FROM {rules}")}) AS b USING (level, items)""")


def _baskets_with_both(conn: duckdb.DuckDBPyConnection) -> Recomputation:
    pair, matrix = "'category' AS level, [category_1, category_2] AS items", table("product_affinity_matrix").physical_name
    return Recomputation(("category_1", "category_2"), f"""
        SELECT m.category_1, m.category_2, b.baskets AS recounted_baskets_with_both
        FROM (SELECT category_1, category_2, {pair} FROM {matrix}) AS m
        JOIN ({baskets_holding(conn, f"SELECT {pair} FROM {matrix}")}) AS b USING (level, items)""")


def _total_spend(_: duckdb.DuckDBPyConnection) -> Recomputation:
    metrics = table("customer_metrics").physical_name
    return Recomputation(("customer_id",), f"""
        SELECT c.customer_id, coalesce(p.spend, 0) AS recomputed_total_spend
        FROM (SELECT DISTINCT customer_id FROM {metrics}) AS c
        LEFT JOIN (SELECT customer_id, sum(quantity * unit_price) AS spend FROM {PURCHASES} GROUP BY customer_id) AS p
        USING (customer_id)""")


def _north_star(_: duckdb.DuckDBPyConnection) -> Recomputation:
    """By timestamp: a customer's first purchase in each category, the first of those being their first order (every
    accepted line has a product, and every product a category); counted in the month of a first purchase in a category
    when the first order came before the month began. The 33M lines are grouped by customer and a number for the
    category (its rank among the products' categories), not by its name: a sixth faster, the same groups."""
    tree = table("kpi_tree").physical_name
    return Recomputation(("month", "node_id"), f"""
        WITH categories AS (SELECT product_id, dense_rank() OVER (ORDER BY category) AS category FROM {PRODUCTS}),
        first_in_category AS (
            SELECT p.customer_id, pr.category, min(p.purchased_at) AS first_at
            FROM {PURCHASES} AS p JOIN categories AS pr USING (product_id) GROUP BY ALL
        ), first_order AS (SELECT customer_id, min(first_at) AS first_at FROM first_in_category GROUP BY ALL)
        SELECT m.month, m.node_id, count(DISTINCT f.customer_id) FILTER (WHERE o.first_at < m.month) AS recounted_north_star
        FROM (SELECT DISTINCT month, node_id FROM {tree} WHERE node_id = '{alignment()["northStar"]["id"]}') AS m
        LEFT JOIN first_in_category AS f ON date_trunc('month', f.first_at)::DATE = m.month
        LEFT JOIN first_order AS o USING (customer_id)
        GROUP BY ALL""")


def _confidence(_: duckdb.DuckDBPyConnection) -> Recomputation:
    return Recomputation(("rule_id",), f"SELECT rule_id, confidence AS confidence_of_rule FROM {table('association_rules').physical_name}")


LINES = "the accepted purchase lines"
# The recomputed column an accuracy rule names (its column_B): what it is recomputed from, and how.
RECOMPUTED = {
    "recomputed_total_spend": (LINES, _total_spend),
    "recounted_support_count": (LINES, _support),
    "recounted_baskets_with_both": (LINES, _baskets_with_both),
    "recounted_north_star": (LINES, _north_star),
    "confidence_of_rule": ("the association rules", _confidence),
}


def recomputed_from(column: str) -> str:
    return RECOMPUTED[column][0]


def recomputation(conn: duckdb.DuckDBPyConnection, column: str) -> Recomputation:
    return RECOMPUTED[column][1](conn)
