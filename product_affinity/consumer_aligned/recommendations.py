"""Cross-sell recommendations: for each customer, the items they do not buy yet that rules say they would.

A rule applies to a customer when they have bought every antecedent and not the (single)
consequent, and when its lift is above 1. Per customer and item the best applicable rule (highest
confidence, then lift) gives the score; the top items per customer are kept.

The rules and the purchase lines are the output port and the accepted lines unless given other
tables of the same columns (the backtest recommends from rules mined before its cut-off, and only to
the customers it evaluates).
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import numpy as np
import pandas as pd

from product_affinity import sql
from product_affinity.consumer_aligned import metrics
from product_affinity.consumer_aligned.baskets import ITEM, ITEM_NAME, ITEM_TYPE, LEVELS, PRODUCTS, PURCHASES, item_lines
from product_affinity.contract.odcs import table

RULES = table("association_rules").physical_name
CHOSEN = "_chosen"  # (customer_id, rank, choice_order): the frame _choose returns, registered for build's SQL
NONE = np.iinfo(np.int32).max  # no applicable rule: sorts after every rule
BLOCK_CELLS = 1 << 26  # customers are worked out a block at a time, at most this many (customer, item) cells (64 MB)


def _prepare(conn: duckdb.DuckDBPyConnection, level: str, rules: str) -> None:
    """Temp tables for one level: _rules (the rules that can be recommended) and _items (their items, numbered from 0).

    Two orders of the rules: `rule_rank` picks an item's best rule (highest confidence, then lift, then rule id), and
    `choice_order` ranks a customer's items by their best rules (confidence, lift, then the item), as the output's
    `rank` does. An item's rules are in the same order in both, so the best rule by one is the best by the other.
    """
    kind = ITEM_TYPE[level]
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _rules AS
        SELECT *, row_number() OVER (ORDER BY confidence DESC, lift DESC, item, rule_rank) AS choice_order FROM (
            SELECT rule_id, CAST(antecedents AS {kind}[]) AS antecedents, CAST(consequents[1] AS {kind}) AS item,
                   confidence, lift, row_number() OVER (ORDER BY confidence DESC, lift DESC, rule_id DESC) AS rule_rank
            FROM {rules}
            WHERE level = $level AND len(consequents) = 1 AND lift > 1
        )""",
        {"level": level},
    )
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _items AS
        SELECT item, CAST(row_number() OVER (ORDER BY item) - 1 AS INTEGER) AS item_index
        FROM (SELECT item FROM _rules UNION SELECT unnest(antecedents) FROM _rules)"""
    )


def _owned(
    conn: duckdb.DuckDBPyConnection, level: str, purchases: str, customers: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The buyers of the rules' items (their customer ids, ascending) and each purchase line of those items as (the
    buyer's position, the item's number): only items that appear in some rule matter, which at product level leaves
    out most lines; only the customers in `customers` (level, customer_id) count, when it is given. At product level
    a pair bought twice is set twice: fetching the lines (18M at Instacart scale, 0.4 s) is cheaper than asking DuckDB
    for the distinct pairs (7M, 1.7 s); a customer's lines repeat a category thirty times over, so there the distinct
    pairs are cheaper (1.1M). Numbering the buyers here is cheaper than joining them in."""
    chosen = f"AND p.customer_id IN (SELECT customer_id FROM {customers} WHERE level = $level)" if customers else ""
    distinct = "DISTINCT" if level == "category" else ""
    owned = conn.execute(
        f"""SELECT {distinct} p.customer_id, i.item_index
        FROM {item_lines(level, purchases)} JOIN _items AS i ON i.item = {ITEM[level]} WHERE true {chosen}""",
        {"level": level} if customers else None,
    ).fetchnumpy()
    customer = owned["customer_id"]
    if len(customer) and customer.max() - customer.min() < 4 * len(customer):  # ids dense enough to count in an array
        low = customer.min()
        present = np.bincount(customer - low) > 0
        position = np.cumsum(present) - 1
        return np.flatnonzero(present) + low, position[customer - low], owned["item_index"]
    buyers, position = np.unique(customer, return_inverse=True)
    return buyers, position, owned["item_index"]


def _choose(
    conn: duckdb.DuckDBPyConnection, level: str, purchases: str, customers: str | None, per_customer: int
) -> pd.DataFrame:
    """Each buyer's best `per_customer` items: (customer_id, rank, choice_order of the item's best rule).

    The buyers' items are a boolean matrix (buyer x item, a block of buyers at a time); each rule, from the worst to
    the best, writes its choice order in the rows that own its antecedents, so an item's cell ends up holding its best
    rule; owned items are cleared; the least orders of a row are its items, in the output's order. The same choice as
    joining every customer's items to every rule that starts from them (62M pairs at Instacart scale), in arrays of
    the buyers' size. The rows owning some antecedents are found once for all the rules that start from them (328
    antecedents for 1,713 product rules there): masking every row per rule took 0.64 s, these writes 0.25 s.
    """
    rules = conn.execute(
        """SELECT r.choice_order, any_value(c.item_index), list(a.item_index)
        FROM (SELECT choice_order, rule_rank, item, unnest(antecedents) AS antecedent FROM _rules) AS r
        JOIN _items AS c ON c.item = r.item JOIN _items AS a ON a.item = r.antecedent
        GROUP BY r.choice_order, r.rule_rank ORDER BY r.rule_rank DESC"""
    ).fetchall()
    consequents = np.unique(np.array([consequent for _, consequent, _ in rules], dtype=np.int64))
    column = {int(consequent): j for j, consequent in enumerate(consequents)}
    top = min(per_customer, len(consequents))
    buyers, buyer, item = _owned(conn, level, purchases, customers) if top > 0 else (np.zeros(0, np.int64),) * 3
    (n_items,), = conn.execute("SELECT count(*) FROM _items").fetchall()
    block = max(1, BLOCK_CELLS // max(n_items, 1))
    if len(buyers) > block:  # several blocks: each block's lines together
        by_buyer = np.argsort(buyer, kind="stable")
        buyer, item = buyer[by_buyer], item[by_buyer]
    chosen = []
    for first in range(0, len(buyers), block):
        last = min(first + block, len(buyers))
        start, stop = np.searchsorted(buyer, [first, last]) if len(buyers) > block else (0, len(buyer))
        owns = np.zeros((last - first, n_items), dtype=bool)
        owns[buyer[start:stop] - first, item[start:stop]] = True
        owns = np.asfortranarray(owns)  # a column is an item: read whole per rule
        best = np.full((last - first, len(consequents)), NONE, dtype=np.int32, order="F")
        owners = {}  # the rows owning every antecedent, per antecedents: many rules share them
        for order, consequent, antecedents in rules:  # the worst rule first: a better one overwrites it
            key = tuple(antecedents)
            if key not in owners:
                owners[key] = np.flatnonzero(np.logical_and.reduce([owns[:, a] for a in antecedents]))
            best[:, column[consequent]][owners[key]] = order
        best[owns[:, consequents]] = NONE
        best = np.ascontiguousarray(best)  # a row is a buyer: their least orders
        if top < len(consequents):
            best = np.take_along_axis(best, np.argpartition(best, top - 1, axis=1)[:, :top], axis=1)
        best.sort(axis=1)
        row, position = np.nonzero(best[:, :top] < NONE)
        chosen.append(pd.DataFrame({"customer_id": buyers[row + first], "rank": position + 1,
                                    "choice_order": best[row, position]}))
    columns = {"customer_id": np.int64, "rank": np.int64, "choice_order": np.int64}
    if not chosen:
        return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in columns.items()})
    return pd.concat(chosen).astype(columns)


def build(
    conn: duckdb.DuckDBPyConnection, per_customer: int, rules: str = RULES, purchases: str = PURCHASES,
    customers: str | None = None, valued: bool = True, item_baskets: Callable[[str], str] | None = None,
) -> str:
    """Materialize each level's recommendations (to every customer, or to those `customers` lists); return the query
    that unions them. Not `valued`, they lack the item's name and expected value (recommended_item, score and rule_id
    only): the backtest needs only which items, in which order.

    An item's typical spend is its spend over the baskets it is in. Those baskets are counted in the lines (DISTINCT
    orders: 3 of the 3.7 s the typical spend took over Instacart scale's 33M lines), or given by `item_baskets`, a
    level's (native, baskets) query: the output port passes daily_counts.item_baskets_sql, the per-day counts that
    the rules themselves come from."""
    for level in LEVELS:
        _prepare(conn, level, rules)
        conn.register(CHOSEN, _choose(conn, level, purchases, customers, per_customer))
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _ranked_{level} AS
            SELECT c.customer_id, $level AS level, c.rank, r.item, {metrics.recommendation_score()} AS score, r.rule_id
            FROM {CHOSEN} AS c JOIN _rules AS r USING (choice_order)""",
            {"level": level},
        )
        conn.unregister(CHOSEN)
        if valued:
            baskets = item_baskets(level) if item_baskets else f"""
                SELECT {ITEM[level]} AS native, count(DISTINCT p.order_id) AS baskets FROM {item_lines(level, purchases)}
                WHERE {ITEM[level]} IN (SELECT item FROM _ranked_{level}) GROUP BY native"""
            statement = sql.load(__file__, "recommendations.sql").format(
                ranked=f"_ranked_{level}", item=ITEM[level], item_name=ITEM_NAME[level], item_baskets=baskets,
                item_lines=item_lines(level, purchases), products=PRODUCTS, expected_value=metrics.expected_value(),
            )
            conn.execute(f"CREATE OR REPLACE TEMP TABLE _recommended_{level} AS {statement}")
    if valued:
        return " UNION ALL ".join(f"SELECT * FROM _recommended_{level}" for level in LEVELS)
    return " UNION ALL ".join(
        f"SELECT customer_id, level, rank, CAST(item AS VARCHAR) AS recommended_item, score, rule_id FROM _ranked_{level}"
        for level in LEVELS
    )
