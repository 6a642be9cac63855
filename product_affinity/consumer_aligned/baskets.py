"""What is in each basket (order), at category or at product level.

Every function reads the accepted purchase lines, `source_aligned.purchase`, unless given another
table or view of the same columns: the backtest mines and recommends from the lines bought before
its cut-off with exactly the code the output ports are built with.
"""

from __future__ import annotations

import duckdb

from product_affinity.contract.odcs import table

LEVELS = ("category", "product")
PURCHASES = table("purchase").physical_name
PRODUCTS = table("product").physical_name

# Item key (in its native type, so 32M lines are never cast to text) and display name at each
# level, valid over lines() and over source_aligned.product AS pr.
ITEM = {"category": "pr.category", "product": "product_id"}
ITEM_TYPE = {"category": "VARCHAR", "product": "BIGINT"}
ITEM_NAME = {"category": "pr.category", "product": "pr.product_name"}


def lines(purchases: str = PURCHASES) -> str:
    """Purchase lines (AS p) with their product (AS pr)."""
    return f"{purchases} AS p JOIN {PRODUCTS} AS pr USING (product_id)"


def item_lines(level: str, purchases: str = PURCHASES) -> str:
    """The least a level's items need: products are on the purchase lines themselves."""
    return lines(purchases) if level == "category" else f"{purchases} AS p"


def basket_count(conn: duckdb.DuckDBPyConnection, purchases: str = PURCHASES) -> int:
    """Baskets (orders with at least one accepted line): the same at every level."""
    return conn.execute(f"SELECT count(DISTINCT order_id) FROM {purchases}").fetchone()[0]


def load_basket_items(
    conn: duckdb.DuckDBPyConnection, level: str, minimum: int = 0, purchases: str = PURCHASES
) -> tuple[str, dict[int, str]]:
    """Create temp table `basket_items_<level>`: (basket, item) with integer items; return its name and item labels.

    Products keep their integer ids; categories are numbered in alphabetical order (temp table
    item_labels_category). Products on fewer than `minimum` lines cannot be in `minimum` baskets,
    so their lines are left out. Category pairs are distinct (many lines of a basket share a
    category, so DISTINCT shrinks the table); product pairs are not made distinct here, since a
    product bought twice in an order is rare and the rules engine counts each basket once per
    itemset anyway, in the sort it needs for counting: a DISTINCT here cost as much again.
    """
    name = f"basket_items_{level}"
    if level == "product":
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE {name} AS
            SELECT order_id AS basket, product_id AS item FROM {purchases}
            SEMI JOIN (SELECT product_id FROM {purchases} GROUP BY product_id HAVING count(*) >= $minimum) USING (product_id)""",
            {"minimum": minimum},
        )
        ids = conn.execute(f"SELECT product_id, product_id::VARCHAR FROM {PRODUCTS}").fetchall()
    else:
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE item_labels_{level} AS
            SELECT (row_number() OVER (ORDER BY category))::INTEGER AS item, category AS label
            FROM (SELECT DISTINCT category FROM {PRODUCTS})"""
        )
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE {name} AS
            SELECT DISTINCT p.order_id AS basket, c.item
            FROM {lines(purchases)} JOIN item_labels_{level} AS c ON c.label = pr.category"""
        )
        ids = conn.execute(f"SELECT item, label FROM item_labels_{level}").fetchall()
    return name, {int(item): label for item, label in ids}
