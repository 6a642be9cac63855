"""The rules engine on baskets small enough to check by hand."""

import math

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
