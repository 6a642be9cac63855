"""Association rules between categories and between products. A basket is an order.

Frequent itemsets are counted level by level (Apriori): an itemset of size k is counted only
where its first k-1 items are already frequent, by extending each basket's frequent
(k-1)-itemsets with the basket's larger items. DuckDB filters and sorts the lines; the counting
itself is NumPy array work over the sorted lines (see count_itemsets), which scales to Instacart
size, where mlxtend's dense baskets x items array does not fit in memory, and is faster than
rusket (benchmarks/rules.py, docs/benchmarks.md). Rules are generated from the
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
import numpy as np
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
    """Frequent itemsets of `basket_items` (a table of (basket, item) with integer items; a repeated pair counts once).

    Returns one row per frequent itemset: `items` (tuple of item ids, ascending) and `baskets` (its count).

    DuckDB keeps the items on at least `minimum` lines (a superset of the frequent ones), numbers
    them 0..n-1 and hands over their lines sorted by (basket, item). The counting is then array
    work in NumPy: the self-join DuckDB needs to pair a basket's items (each against every other,
    then a filter on order) was most of the engine's time. An occurrence of a k-itemset is the
    position of its last item in the sorted lines, so its extensions are the next positions of the
    same basket; (itemset, extending item) is one integer key, and keys are counted with bincount
    (or a sort, when there are too many possible keys for an array of counters).
    """
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _line_items AS
        SELECT item, (row_number() OVER (ORDER BY item) - 1)::BIGINT AS n FROM {basket_items}
        GROUP BY item HAVING count(*) >= $minimum""",
        {"minimum": minimum},
    )
    items = conn.execute("SELECT item FROM _line_items ORDER BY n").fetchnumpy()["item"]
    width = max(len(items), 1)
    starts, item = _sorted_lines(conn, basket_items)
    conn.execute("DROP TABLE _line_items")
    singles = np.bincount(item, minlength=len(items))
    is_frequent = singles >= minimum
    frequent = np.flatnonzero(is_frequent)
    levels = [(frequent[:, None], singles[frequent])]
    # Occurrences of the frequent k-itemsets: the itemset's row in `members` and the position of its last item.
    members = np.arange(len(items))[:, None]
    occurrences = _Occurrences(starts, item, width, np.flatnonzero(is_frequent[item]), item)
    for k in range(2, max_size + 1):
        counted, counts = occurrences.count_extensions(len(members) * width)
        found = counts >= minimum
        counted, counts = counted[found], counts[found]
        if len(counted) == 0:
            break
        members = np.column_stack([members[counted // width], counted % width])
        levels.append((members, counts))
        if k < max_size:  # keep only occurrences of frequent k-itemsets, to extend them next
            occurrences = occurrences.extended_to(counted)
    return pd.DataFrame(
        {
            "items": [tuple(row) for sets, _ in levels for row in items[sets].tolist()],
            "baskets": np.concatenate([counts for _, counts in levels]).astype(np.int64),
        }
    )


def _sorted_lines(conn: duckdb.DuckDBPyConnection, basket_items: str) -> tuple[np.ndarray, np.ndarray]:
    """The distinct lines of the items in _line_items, sorted by (basket, item): where each basket starts, and the item numbers.

    DuckDB sorts; NumPy drops repeated lines (a product bought twice in a basket counts once).
    Items come as 32-bit integers: half the memory to touch, which is what the counting costs.
    """
    lines = conn.execute(
        f"""SELECT b.basket, i.n::INTEGER AS n FROM {basket_items} AS b JOIN _line_items AS i USING (item)
        ORDER BY b.basket, i.n"""
    ).fetchnumpy()
    basket, item = lines["basket"], lines["n"]
    if len(item) >= 2**31:
        raise ValueError(f"{basket_items}: {len(item):,} lines of frequent items; the counting indexes lines with 32-bit integers")
    new_basket = np.empty(len(basket), dtype=bool)
    new_basket[:1] = True
    np.not_equal(basket[1:], basket[:-1], out=new_basket[1:])
    repeated = ~new_basket[1:] & (item[1:] == item[:-1])
    if repeated.any():
        kept = np.concatenate([[True], ~repeated])
        new_basket, item = new_basket[kept], item[kept]
    return np.flatnonzero(new_basket), np.ascontiguousarray(item, dtype=np.int32)


class _Occurrences:
    """Occurrences of k-itemsets in the sorted lines, and their extensions by one later item of the same basket.

    An occurrence is (itemset number, position of its last item); its extensions are the next
    positions of its basket, keyed itemset * width + item. Pass d extends every occurrence that
    has d or more items after it, so the work is the number of extensions, not baskets x items;
    the occurrences still extending shrink from pass to pass and stay in position order, so every
    gather reads memory forwards.
    """

    def __init__(self, starts: np.ndarray, item: np.ndarray, width: int, end: np.ndarray, ids: np.ndarray):
        self.starts, self.item, self.width = starts, item, width
        sizes = np.diff(np.append(starts, len(item)))
        last = np.repeat((starts + sizes - 1).astype(np.int32), sizes)  # position of the last item of each line's basket
        left = last[end] - end.astype(np.int32)
        extending = left > 0
        self.left, self.end = left[extending], end[extending].astype(np.int32)
        self.keys = ids[extending].astype(np.int64 if (int(ids.max()) + 1) * width >= 2**31 else np.int32) * width if len(ids) else ids

    def _extensions(self):
        """For d = 1, 2, ...: the keys and the positions of the occurrences extended d positions on."""
        left, end, keys, d = self.left, self.end, self.keys, 1
        while len(end):
            positions = end + d
            yield keys + self.item[positions], positions
            more = left > d
            left, end, keys, d = left[more], end[more], keys[more], d + 1

    def count_extensions(self, space: int) -> tuple[np.ndarray, np.ndarray]:
        """The distinct extension keys (ascending) and how often each occurs."""
        if space <= 1 << 24:  # small key space: one bincount per pass, added up
            counts = np.zeros(space, dtype=np.int64)
            for keys, _ in self._extensions():
                counts += np.bincount(keys, minlength=space)
            counted = np.flatnonzero(counts)
            return counted, counts[counted]
        return np.unique(np.concatenate([keys.astype(np.int64) for keys, _ in self._extensions()]), return_counts=True)

    def extended_to(self, frequent: np.ndarray) -> _Occurrences:
        """The extensions whose key is in `frequent` (ascending), each numbered by its key's rank there."""
        ids, ends = [], []
        for keys, positions in self._extensions():
            rank = np.searchsorted(frequent, keys)
            kept = frequent[np.minimum(rank, len(frequent) - 1)] == keys
            ids.append(rank[kept])
            ends.append(positions[kept])
        ends = np.concatenate(ends)  # not empty: called with the keys of counted extensions
        order = np.argsort(ends, kind="stable")  # back in position order
        return _Occurrences(self.starts, self.item, self.width, ends[order], np.concatenate(ids)[order])


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
