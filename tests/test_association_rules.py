"""The rules engine on baskets small enough to check by hand."""

import math
import os
from pathlib import Path

import pytest

from product_affinity.consumer_aligned.association_rules import Thresholds, count_itemsets, min_count, mine_rules

# Baskets: 1 {a,b,c}  2 {a,b}  3 {a,c}  4 {b}  5 {a,b,c}
BASKETS = {1: "abc", 2: "ab", 3: "ac", 4: "b", 5: "abc"}
LABELS = {1: "a", 2: "b", 3: "c"}


def load(conn, baskets: dict[int, str]) -> str:
    ids = {label: item for item, label in LABELS.items()}
    conn.execute("CREATE OR REPLACE TABLE baskets (basket INTEGER, item INTEGER)")
    rows = [(b, ids[i]) for b, items in baskets.items() for i in items]
    if rows:
        conn.executemany("INSERT INTO baskets VALUES (?, ?)", rows)
    return "baskets"


def test_itemset_counts(conn):
    itemsets = count_itemsets(conn, load(conn, BASKETS), minimum=2, max_size=3)
    counts = dict(zip(itemsets["items"], itemsets["baskets"]))
    assert counts == {(1,): 4, (2,): 4, (3,): 3, (1, 2): 3, (1, 3): 3, (2, 3): 2, (1, 2, 3): 2}


def test_a_product_on_two_lines_of_a_basket_counts_once(conn):
    """Purchase lines are keyed by (order, line number), so a basket can hold a product twice; product
    baskets are no longer made distinct before counting, so the counting itself must count the basket once."""
    load(conn, BASKETS)
    conn.execute("INSERT INTO baskets SELECT * FROM baskets WHERE basket IN (1, 3)")  # a, b, c bought again in 1; a, c in 3
    itemsets = count_itemsets(conn, "baskets", minimum=2, max_size=3)
    counts = dict(zip(itemsets["items"], itemsets["baskets"]))
    assert counts == {(1,): 4, (2,): 4, (3,): 3, (1, 2): 3, (1, 3): 3, (2, 3): 2, (1, 2, 3): 2}


def test_counts_with_more_possible_keys_than_counters(conn):
    """Over 4,096 items, pairs no longer fit an array of counters (2^24) and are counted by sorting: same counts."""
    from collections import Counter
    from itertools import combinations

    baskets = {b: (b, b + 1, b + 2, 9_000) for b in range(1, 4_200)}
    conn.execute(
        "CREATE OR REPLACE TABLE baskets AS SELECT b::INTEGER AS basket, unnest([b, b + 1, b + 2, 9000])::INTEGER AS item FROM range(1, 4200) AS t(b)"
    )
    itemsets = count_itemsets(conn, "baskets", minimum=2, max_size=3)
    expected = Counter(c for items in baskets.values() for k in (1, 2, 3) for c in combinations(sorted(items), k))
    assert dict(zip(itemsets["items"], itemsets["baskets"])) == {c: n for c, n in expected.items() if n >= 2}


def test_itemsets_below_the_minimum_are_not_extended(conn):
    itemsets = count_itemsets(conn, load(conn, BASKETS), minimum=3, max_size=3)
    assert set(itemsets["items"]) == {(1,), (2,), (3,), (1, 2), (1, 3)}


def test_rule_metrics_by_hand(conn):
    rules = mine_rules(conn, load(conn, BASKETS), LABELS, "category", Thresholds(0.4, 0.5, 2)).set_index("rule_id")
    a_b = rules.loc["category:a->b"]
    # a in 4 of 5 baskets, b in 4, both in 3
    assert a_b["antecedents"] == ["a"] and a_b["consequents"] == ["b"]
    assert (a_b["antecedent_count"], a_b["consequent_count"], a_b["support_count"], a_b["basket_count"]) == (4, 4, 3, 5)
    assert a_b["support"] == pytest.approx(3 / 5)
    assert a_b["confidence"] == pytest.approx(3 / 4)
    assert a_b["lift"] == pytest.approx((3 / 4) / (4 / 5))
    assert a_b["leverage"] == pytest.approx(3 / 5 - (4 / 5) * (4 / 5))
    assert a_b["conviction"] == pytest.approx((1 - 4 / 5) / (1 - 3 / 4))
    # b->c: confidence 2/4 sits exactly on the 0.5 threshold and is kept
    assert rules.loc["category:b->c", "confidence"] == 0.5
    assert sorted(rules.index) == sorted(
        f"category:{x}->{y}" for x, y in ["ab", "ba", "ac", "ca", "bc", "cb"]
    )


def test_multi_item_antecedents_up_to_the_itemset_size(conn):
    rules = mine_rules(conn, load(conn, BASKETS), LABELS, "category", Thresholds(0.4, 0.6, 3)).set_index("rule_id")
    assert rules.loc["category:b+c->a", "confidence"] == 1.0
    assert math.isinf(rules.loc["category:b+c->a", "conviction"])
    assert "category:a->b+c" not in rules.index  # 2/4 < 0.6
    assert max(len(a) + len(c) for a, c in zip(rules["antecedents"], rules["consequents"])) == 3


@pytest.mark.parametrize(
    ("min_support", "baskets", "expected"),
    [(0.7, 10, 7), (0.1, 30, 3), (0.35, 20, 7), (0.001, 3_421_083, 3422), (0.5, 5, 3)],
)
def test_min_count_is_exact(min_support, baskets, expected):
    # 0.7 * 10 == 7.000000000000001 in floating point, whose ceiling would wrongly demand 8 baskets
    assert min_count(min_support, baskets) == expected


def test_an_item_exactly_on_the_support_threshold_is_frequent(conn):
    baskets = {i: ("ab" if i <= 7 else "c") for i in range(1, 11)}  # a and b in 7 of 10 baskets
    rules = mine_rules(conn, load(conn, baskets), LABELS, "category", Thresholds(0.7, 1.0, 2))
    assert sorted(rules["rule_id"]) == ["category:a->b", "category:b->a"]


def test_no_baskets_no_rules(conn):
    assert mine_rules(conn, load(conn, {}), LABELS, "category", Thresholds(0.1, 0.1, 2)).empty


def test_consequents_hold_one_item_by_default(conn):
    """arules' convention: {a,b,c} gives a+b->c, a+c->b and b+c->a, never a->b+c."""
    rules = mine_rules(conn, load(conn, BASKETS), LABELS, "category", Thresholds(0.4, 0.0, 3)).set_index("rule_id")
    assert set(rules["consequents"].map(len)) == {1}
    assert {"category:a+b->c", "category:a+c->b", "category:b+c->a"} <= set(rules.index)
    with_pairs = mine_rules(conn, load(conn, BASKETS), LABELS, "category", Thresholds(0.4, 0.0, 3, max_consequent_size=None))
    assert "category:a->b+c" in set(with_pairs["rule_id"])


@pytest.mark.parametrize("max_consequent_size", [1, None])
def test_rules_equal_mlxtends_on_random_baskets(conn, max_consequent_size):
    """mlxtend (fpgrowth and association_rules on a dense one-hot array) is the oracle for every rule and metric."""
    import numpy as np
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    rng = np.random.default_rng(7)
    items = 12
    popularity = rng.uniform(0.05, 0.6, items)
    onehot = rng.uniform(size=(400, items)) < popularity
    onehot[:, 1] |= onehot[:, 0] & (rng.uniform(size=400) < 0.7)  # a dependent pair, so some rules are strong
    labels = {i + 1: f"i{i + 1:02d}" for i in range(items)}
    conn.execute("CREATE OR REPLACE TABLE baskets (basket INTEGER, item INTEGER)")
    conn.executemany("INSERT INTO baskets VALUES (?, ?)", [(int(b), int(i) + 1) for b, i in zip(*np.nonzero(onehot))])
    ours = mine_rules(conn, "baskets", labels, "product", Thresholds(0.05, 0.3, 4, max_consequent_size), baskets=len(onehot))

    frequent = fpgrowth(pd.DataFrame(onehot, columns=list(labels.values())), min_support=0.05, use_colnames=True, max_len=4)
    theirs = association_rules(frequent, num_itemsets=len(onehot), metric="confidence", min_threshold=0.3)
    if max_consequent_size == 1:
        theirs = theirs[theirs["consequents"].map(len) == 1]
    theirs = theirs.assign(rule_id=[f"product:{'+'.join(sorted(a))}->{'+'.join(sorted(c))}" for a, c in zip(theirs["antecedents"], theirs["consequents"])])
    assert len(ours) > 50 and sorted(ours["rule_id"]) == sorted(theirs["rule_id"])
    merged = ours.merge(theirs, on="rule_id", suffixes=("", "_mlxtend"))
    for metric in ("support", "confidence", "lift", "leverage", "conviction"):
        assert merged[metric].to_numpy() == pytest.approx(merged[f"{metric}_mlxtend"].to_numpy(), rel=1e-9), metric


GROCERIES = Path(os.environ.get("GROCERIES_CSV", Path(__file__).resolve().parents[2] / "shared" / "data" / "groceries.csv"))


@pytest.mark.skipif(not GROCERIES.exists(), reason=f"the public Groceries data (arules; 9,835 baskets) is not at {GROCERIES}")
@pytest.mark.parametrize(("min_support", "min_confidence", "expected"), [(0.001, 0.8, 410), (0.006, 0.25, 463)])
def test_groceries_rules_equal_arules_published_counts(conn, min_support, min_confidence, expected):
    """arules' apriori (maxlen 10, one-item consequents, rules of two items or more) on Groceries gives 410 and 463 rules."""
    import csv

    baskets = list(csv.reader(GROCERIES.open(encoding="utf-8")))
    ids = {name: n + 1 for n, name in enumerate(sorted({i for b in baskets for i in b}))}
    conn.execute("CREATE OR REPLACE TABLE baskets (basket INTEGER, item INTEGER)")
    conn.executemany("INSERT INTO baskets VALUES (?, ?)", [(n, ids[i]) for n, b in enumerate(baskets) for i in set(b)])
    rules = mine_rules(conn, "baskets", {v: k for k, v in ids.items()}, "product", Thresholds(min_support, min_confidence, 10))
    assert len(rules) == expected
