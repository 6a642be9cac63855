"""Association rules between categories and between products. A basket is an order.

Frequent itemsets are counted in DuckDB, level by level (Apriori): an itemset of size k is
counted only where its first k-1 items are already frequent, by joining each basket's frequent
(k-1)-itemsets with the basket's larger items. Counting scales to Instacart size, where
mlxtend's dense baskets x items array does not fit in memory. Rules are generated from the
counted itemsets in DuckDB, with arules' convention of one item in the consequent unless told
otherwise, and scored with the formulas mlxtend and arules use (the tests check against mlxtend):

- support(A->C)        = baskets with A and C / baskets
- confidence(A->C)     = support(A->C) / support(A)
- lift(A->C)           = confidence(A->C) / support(C)
- leverage(A->C)       = support(A->C) - support(A) * support(C)
- conviction(A->C)     = (1 - support(C)) / (1 - confidence(A->C)), infinite when confidence is 1

Thresholds are compared as exact integer counts: an itemset is frequent when its basket count is
at least ceil(min_support * baskets), and a rule is kept when support_count >= min_confidence *
antecedent_count, both in exact rational arithmetic, so a rule that sits exactly on a threshold
is never lost to floating point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import duckdb
import pandas as pd

from product_affinity.consumer_aligned.baskets import PURCHASES, basket_count, load_basket_items
from product_affinity.contract.odcs import table

RULE_COLUMNS = table("association_rules").column_names  # the output port, as the contract declares it


@dataclass(frozen=True)
class Thresholds:
    min_support: float
    min_confidence: float
    max_itemset_size: int
    max_consequent_size: int | None = 1  # arules' convention; None: any size that leaves an antecedent


def min_count(min_support: float, baskets: int) -> int:
    """Smallest basket count that reaches min_support, computed exactly (0.1 means 1/10, not 0.1000000000000000055)."""
    return math.ceil(Fraction(str(min_support)) * baskets)


def count_itemsets(
    conn: duckdb.DuckDBPyConnection, basket_items: str, minimum: int, max_size: int
) -> pd.DataFrame:
    """Frequent itemsets of `basket_items` (a table of distinct (basket, item) with integer items).

    Returns one row per frequent itemset: `items` (tuple of item ids, ascending) and `baskets` (its count).
    """
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _occurrences_1 AS
        SELECT basket, item AS i1 FROM {basket_items}
        WHERE item IN (SELECT item FROM {basket_items} GROUP BY item HAVING count(*) >= {minimum})"""
    )
    levels = [conn.execute("SELECT [i1] AS items, count(*) AS baskets FROM _occurrences_1 GROUP BY i1").df()]
    for k in range(2, max_size + 1):
        prefix = ", ".join(f"o.i{j}" for j in range(1, k))
        items = ", ".join(f"i{j}" for j in range(1, k + 1))
        extended = (
            f"SELECT o.basket, {prefix}, n.i1 AS i{k} FROM _occurrences_{k - 1} AS o "
            f"JOIN _occurrences_1 AS n ON n.basket = o.basket AND n.i1 > o.i{k - 1}"
        )
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _frequent_{k} AS
            SELECT {items}, count(*) AS baskets FROM ({extended}) GROUP BY ALL HAVING count(*) >= {minimum}"""
        )
        found = conn.execute(f"SELECT [{items}] AS items, baskets FROM _frequent_{k}").df()
        if found.empty:
            break
        levels.append(found)
        if k < max_size:  # keep only occurrences of frequent k-itemsets, to extend them next
            conn.execute(
                f"""CREATE OR REPLACE TEMP TABLE _occurrences_{k} AS
                SELECT e.* FROM ({extended}) AS e SEMI JOIN _frequent_{k} AS f USING ({items})"""
            )
    for k in range(1, max_size + 1):
        conn.execute(f"DROP TABLE IF EXISTS _occurrences_{k}; DROP TABLE IF EXISTS _frequent_{k}")
    itemsets = pd.concat(levels, ignore_index=True)
    itemsets["items"] = [tuple(int(i) for i in items) for items in itemsets["items"]]
    return itemsets


def rules_from_itemsets(
    itemsets: pd.DataFrame,
    baskets: int,
    min_confidence: float,
    labels: dict[int, str],
    level: str,
    max_consequent_size: int | None = 1,
) -> pd.DataFrame:
    """Rules A->C with A and C partitioning a frequent itemset and confidence at least min_confidence.

    Consequents hold one item by default, arules' convention (the reference implementation), so a
    three-item set {a,b,c} gives a+b->c, a+c->b and b+c->a. `max_consequent_size=None` lets them
    grow up to the itemset less one item. Consequents are grown one item at a time from confident
    ones only: moving an item from A to C can only lower the confidence (support(A) grows as A
    shrinks), so a consequent whose every prefix is unconfident is never tried. Every candidate is
    scored in DuckDB, in one pass per consequent size, not one rule at a time in Python.
    """
    if itemsets.empty or itemsets["items"].map(len).max() < 2:
        return pd.DataFrame(columns=RULE_COLUMNS)
    confidence = Fraction(str(min_confidence))
    largest = int(itemsets["items"].map(len).max()) - 1
    sizes = range(1, largest + 1 if max_consequent_size is None else min(largest, max_consequent_size) + 1)
    with duckdb.connect() as conn:
        conn.register("_counted", itemsets)
        conn.execute("CREATE TEMP TABLE _itemsets AS SELECT CAST(items AS INTEGER[]) AS items, baskets FROM _counted")
        conn.execute(
            """CREATE TEMP TABLE _rules_1 AS
            SELECT items, [c] AS consequent FROM (SELECT items, unnest(items) AS c FROM _itemsets WHERE len(items) >= 2)"""
        )
        found = []
        for size in sizes:
            if size > 1:  # grow each confident consequent by one larger item of its itemset, leaving A non-empty
                conn.execute(
                    f"""CREATE OR REPLACE TEMP TABLE _rules_{size} AS
                    SELECT items, list_append(consequent, c) AS consequent
                    FROM (SELECT items, consequent, unnest(items) AS c FROM _confident_{size - 1}
                          WHERE len(items) > {size})
                    WHERE c > consequent[-1]"""
                )
            # Every subset of a frequent itemset was counted, so the lookups always match; LEFT JOIN keeps
            # the optimiser from pairing two lookups in a cross product when few candidates are left.
            conn.execute(
                f"""CREATE OR REPLACE TEMP TABLE _confident_{size} AS
                SELECT r.items, r.antecedent, r.consequent, s.baskets AS support_count, a.baskets AS antecedent_count,
                       c.baskets AS consequent_count
                FROM (SELECT *, list_filter(items, lambda x: NOT list_contains(consequent, x)) AS antecedent
                      FROM _rules_{size}) AS r
                LEFT JOIN _itemsets AS s ON s.items = r.items
                LEFT JOIN _itemsets AS a ON a.items = r.antecedent
                LEFT JOIN _itemsets AS c ON c.items = r.consequent
                WHERE s.baskets * $den >= a.baskets * $num""",
                {"num": confidence.numerator, "den": confidence.denominator},
            )
            found.append(
                conn.execute(
                    f"""SELECT antecedent AS antecedents, consequent AS consequents,
                           antecedent_count, consequent_count, support_count FROM _confident_{size}"""
                ).df()
            )
    rules = pd.concat(found, ignore_index=True)
    if rules.empty:
        return pd.DataFrame(columns=RULE_COLUMNS)
    n = baskets
    rules["antecedent_support"] = rules["antecedent_count"] / n
    rules["consequent_support"] = rules["consequent_count"] / n
    rules["support"] = rules["support_count"] / n
    rules["confidence"] = rules["support_count"] / rules["antecedent_count"]
    rules["lift"] = rules["confidence"] / rules["consequent_support"]
    rules["leverage"] = rules["support"] - rules["antecedent_support"] * rules["consequent_support"]
    sure = rules["support_count"] == rules["antecedent_count"]  # confidence exactly 1: conviction is infinite
    rules["conviction"] = ((1 - rules["consequent_support"]) / (1 - rules["confidence"].where(~sure))).fillna(math.inf)
    rules["antecedents"] = [[labels[int(i)] for i in a] for a in rules["antecedents"]]
    rules["consequents"] = [[labels[int(i)] for i in c] for c in rules["consequents"]]
    rules["rule_id"] = [
        f"{level}:{'+'.join(a)}->{'+'.join(c)}" for a, c in zip(rules["antecedents"], rules["consequents"])
    ]
    rules["level"] = level
    rules["basket_count"] = baskets
    return rules[RULE_COLUMNS].sort_values(["lift", "rule_id"], ascending=[False, True], ignore_index=True)


def mine_rules(
    conn: duckdb.DuckDBPyConnection,
    basket_items: str,
    labels: dict[int, str],
    level: str,
    thresholds: Thresholds,
    baskets: int | None = None,
) -> pd.DataFrame:
    """Rules at one level from a (basket, item) table; `baskets` defaults to the baskets in that table."""
    if baskets is None:
        baskets = conn.execute(f"SELECT count(DISTINCT basket) FROM {basket_items}").fetchone()[0]
    if baskets == 0:
        return pd.DataFrame(columns=RULE_COLUMNS)
    itemsets = count_itemsets(conn, basket_items, min_count(thresholds.min_support, baskets), thresholds.max_itemset_size)
    return rules_from_itemsets(itemsets, baskets, thresholds.min_confidence, labels, level, thresholds.max_consequent_size)


def mine_all_levels(
    conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], purchases: str = PURCHASES
) -> pd.DataFrame:
    """Rules at every level (category, product) from the accepted purchase lines (or another table of them)."""
    baskets = basket_count(conn, purchases)
    frames = []
    for level, level_thresholds in thresholds.items():
        minimum = min_count(level_thresholds.min_support, baskets)
        basket_items, labels = load_basket_items(conn, level, minimum, purchases)
        frames.append(mine_rules(conn, basket_items, labels, level, level_thresholds, baskets))
    mined = [f for f in frames if not f.empty]
    return pd.concat(mined, ignore_index=True) if mined else pd.DataFrame(columns=RULE_COLUMNS)
