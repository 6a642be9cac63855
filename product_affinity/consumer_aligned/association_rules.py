"""Association rules between categories and between products. A basket is an order.

Frequent itemsets are counted in DuckDB, level by level (Apriori): an itemset of size k is
counted only where its first k-1 items are already frequent, by joining each basket's frequent
(k-1)-itemsets with the basket's larger items. Counting scales to Instacart size, where
mlxtend's dense baskets x items array does not fit in memory. Rule generation and metrics come
from mlxtend's `association_rules`, fed the counted itemsets, so the formulas are mlxtend's:

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
from mlxtend.frequent_patterns import association_rules as mlxtend_rules

from product_affinity.consumer_aligned.baskets import PURCHASES, basket_count, load_basket_items
from product_affinity.contract import table

RULE_COLUMNS = table("association_rules").column_names  # the output port, as the contract declares it


@dataclass(frozen=True)
class Thresholds:
    min_support: float
    min_confidence: float
    max_itemset_size: int


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
    itemsets: pd.DataFrame, baskets: int, min_confidence: float, labels: dict[int, str], level: str
) -> pd.DataFrame:
    """All rules A->C with A and C partitioning a frequent itemset, scored by mlxtend, filtered exactly."""
    if itemsets.empty or itemsets["items"].map(len).max() < 2:
        return pd.DataFrame(columns=RULE_COLUMNS)
    counts = {frozenset(items): int(n) for items, n in zip(itemsets["items"], itemsets["baskets"])}
    frequent = pd.DataFrame({"support": itemsets["baskets"] / baskets, "itemsets": list(map(frozenset, itemsets["items"]))})
    rules = mlxtend_rules(frequent, num_itemsets=baskets, metric="support", min_threshold=0)
    rules["antecedent_count"] = [counts[a] for a in rules["antecedents"]]
    rules["consequent_count"] = [counts[c] for c in rules["consequents"]]
    rules["support_count"] = [counts[a | c] for a, c in zip(rules["antecedents"], rules["consequents"])]
    confidence = Fraction(str(min_confidence))
    keep = rules["support_count"] * confidence.denominator >= rules["antecedent_count"] * confidence.numerator
    rules = rules[keep].copy()
    rules["antecedents"] = [[labels[i] for i in sorted(a)] for a in rules["antecedents"]]
    rules["consequents"] = [[labels[i] for i in sorted(c)] for c in rules["consequents"]]
    rules["rule_id"] = [
        f"{level}:{'+'.join(a)}->{'+'.join(c)}" for a, c in zip(rules["antecedents"], rules["consequents"])
    ]
    rules["level"] = level
    rules["basket_count"] = baskets
    rules = rules.rename(columns={"antecedent support": "antecedent_support", "consequent support": "consequent_support"})
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
    return rules_from_itemsets(itemsets, baskets, thresholds.min_confidence, labels, level)


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
