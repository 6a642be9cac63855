"""The whole Dagster job on a hand-computed fixture: every output port's figures checked by hand.

Baskets by category: 8 {Sweets} 9 {Meats} 10 {Wines, Meats} 11 {Wines} 12 {Sweets} 13 {Wines, Meats};
one product per category, so product-level figures mirror the category ones.
"""

from datetime import datetime

import dagster as dg
import duckdb
import pytest

from product_affinity.consumer_aligned import clv
from product_affinity.contract.odcs import table
from product_affinity.definitions import build_definitions
from product_affinity.defs.partitions import range_tags
from product_affinity.partitions import all_days
from product_affinity.defs.resources import AffinitySettings
from tests.conftest import PRODUCTS, customer, write_sources

PURCHASES = [
    "8,1,5,3,1,5.00,2024-03-01 10:00:00,store,false",
    "9,1,2,2,1,20.00,2024-06-01 10:00:00,web,false",
    "10,1,1,1,2,10.00,2025-01-10 09:00:00,web,false",
    "10,2,1,2,1,20.00,2025-01-10 09:00:00,web,false",
    "11,1,1,1,1,9.00,2025-12-01 00:00:00,web,true",
    "12,1,2,3,4,5.00,2025-12-31 12:00:00,catalog,false",
    "13,1,4,1,1,10.00,2025-11-15 08:00:00,store,false",
    "13,2,4,2,1,20.00,2025-11-15 08:00:00,store,false",
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand")
    sources = write_sources(root / "sources", [customer(i) for i in (1, 2, 3, 4, 5)], PRODUCTS, PURCHASES)
    path = root / "warehouse.duckdb"
    job = build_definitions(sources, path).resolve_job_def("product_affinity")
    # These purchases are dated 2024-2025, so every check runs but freshness (tested in test_quality).
    graph = job.asset_layer.asset_graph
    checks = {key for key in graph.asset_check_keys if key.name != "freshness_purchased_at"}
    result = job.get_subset(asset_selection=graph.materializable_asset_keys, asset_check_selection=checks).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=range_tags(all_days(sources, path))
    )
    assert result.success
    with duckdb.connect(str(path), read_only=True) as conn:
        yield conn


def rows(conn, sql):
    return conn.execute(sql).fetchall()


@pytest.mark.parametrize(
    "name", ["customer_metrics", "association_rules", "product_affinity_matrix", "cross_sell_recommendations"]
)
def test_output_port_has_the_contract_columns_and_types(warehouse, name):
    t = table(name)
    described = rows(warehouse, f"DESCRIBE {t.physical_name}")
    assert [(r[0], r[1]) for r in described] == [(c.name, c.type) for c in t.columns]


def test_customer_metrics(warehouse):
    window_months = 365 / 30.4375
    got = {
        r[0]: r[1:]
        for r in rows(
            warehouse,
            """SELECT customer_id, orders, purchase_frequency, purchase_frequency_per_month, total_spend::DOUBLE,
                      average_order_value::DOUBLE, recency_days, first_purchase_at, last_purchase_at, categories_bought,
                      customer_lifetime_value::DOUBLE, cross_sell_opportunity_score
               FROM consumer_aligned.customer_metrics""",
        )
    }
    expected = {
        1: (2, 2, 2 / window_months, 49.0, 24.5, 30, datetime(2025, 1, 10, 9), datetime(2025, 12, 1), 2, 49.0, 0.0),
        2: (2, 1, 1 / window_months, 40.0, 20.0, 0, datetime(2024, 6, 1, 10), datetime(2025, 12, 31, 12), 2, 40.0, 2 / 3),
        3: (0, 0, 0.0, 0.0, None, None, None, None, 0, 0.0, 0.0),
        4: (1, 1, 1 / window_months, 30.0, 30.0, 46, datetime(2025, 11, 15, 8), datetime(2025, 11, 15, 8), 2, 30.0, 0.0),
        5: (1, 0, 0.0, 5.0, 5.0, 670, datetime(2024, 3, 1, 10), datetime(2024, 3, 1, 10), 1, 5.0, 0.0),
    }
    assert got.keys() == expected.keys()
    for customer_id, values in expected.items():
        assert list(got[customer_id]) == [pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for v in values]


def test_customer_metrics_predictions_use_the_customers_purchase_days_by_hand(warehouse):
    """BG/NBD is fitted on each buyer's (x, t_x, T) in weeks up to the latest purchase day (2025-12-31), counted here
    by hand; Gamma-Gamma needs three repeat buyers and this history has two, so spend and value stay empty."""
    x, t_x, T = [1, 1, 0, 0], [325 / 7, 578 / 7, 0, 0], [355 / 7, 578 / 7, 46 / 7, 670 / 7]  # customers 1, 2, 4, 5
    model = clv.BgNbd.fit(x, t_x, T)
    horizon = AffinitySettings().clv_horizon_months * clv.WEEKS_PER_MONTH
    got = rows(warehouse, """SELECT probability_alive, expected_orders, expected_spend, predicted_customer_lifetime_value
                             FROM consumer_aligned.customer_metrics ORDER BY customer_id""")
    alive, expected = model.probability_alive(x, t_x, T), model.expected_purchases(horizon, x, t_x, T)
    buyers = [got[0], got[1], got[3], got[4]]
    assert [r[0] for r in buyers] == pytest.approx(list(alive), rel=1e-6)
    assert [r[1] for r in buyers] == pytest.approx(list(expected), rel=1e-6)
    assert alive[2] == alive[3] == 1.0 and alive[0] < 1  # no repeat purchase: BG/NBD cannot have seen them drop out
    assert all(r[2] is None and r[3] is None for r in got)
    assert got[2] == (None, None, None, None)  # customer 3 never ordered


def test_product_affinity_matrix(warehouse):
    got = {
        (r[0], r[1]): r[2:]
        for r in rows(warehouse, "SELECT category_1, category_2, support, confidence, lift, baskets_with_both FROM consumer_aligned.product_affinity_matrix")
    }
    assert len(got) == 6  # every ordered pair of the three categories
    assert got[("Wines", "Meats")] == pytest.approx((2 / 6, 2 / 3, (2 / 3) / (3 / 6), 2))
    assert got[("Meats", "Wines")] == pytest.approx((2 / 6, 2 / 3, (2 / 3) / (3 / 6), 2))
    assert got[("Sweets", "Wines")] == (0.0, 0.0, 0.0, 0)


def test_association_rules(warehouse):
    got = rows(
        warehouse,
        """SELECT rule_id, level, antecedents, consequents, support, confidence, lift, support_count, basket_count
           FROM consumer_aligned.association_rules ORDER BY rule_id""",
    )
    lift = (2 / 3) / (3 / 6)
    assert got == [
        ("category:Meats->Wines", "category", ["Meats"], ["Wines"], pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(lift), 2, 6),
        ("category:Wines->Meats", "category", ["Wines"], ["Meats"], pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(lift), 2, 6),
        ("product:1->2", "product", ["1"], ["2"], pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(lift), 2, 6),
        ("product:2->1", "product", ["2"], ["1"], pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(lift), 2, 6),
    ]


def test_cross_sell_recommendations(warehouse):
    # Only customer 2 (Meats and Sweets, no Wines) has an applicable rule; Wines sell for 13.00 on
    # average in the orders that hold them (20 + 9 + 10) / 3.
    got = rows(warehouse, "SELECT * FROM consumer_aligned.cross_sell_recommendations ORDER BY level")
    assert got == [
        (2, "category", 1, "Wines", "Wines", pytest.approx(2 / 3), "category:Meats->Wines", pytest.approx(2 / 3 * 13)),
        (2, "product", 1, "1", "Rioja Reserva", pytest.approx(2 / 3), "product:2->1", pytest.approx(2 / 3 * 13)),
    ]


def test_an_item_is_scored_by_its_best_rule_and_items_ranked_by_confidence_then_lift():
    """Customer 1 owns products 1 and 4. Item 2 has two rules of equal confidence: the one of higher lift is its score
    (whatever the rule ids); item 5's higher confidence ranks it first despite its lower lift; between items 2 and 3,
    of equal confidence, the higher lift ranks first."""
    from product_affinity.consumer_aligned import recommendations

    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA source_aligned; CREATE SCHEMA consumer_aligned")
    conn.execute("CREATE TABLE source_aligned.product AS SELECT range AS product_id, 'p' || range AS product_name, "
                 "'c' || range AS category FROM range(1, 6)")
    conn.execute("""CREATE TABLE source_aligned.purchase AS SELECT * FROM (VALUES
        (1, 1, 1, 1, 1, 10.00, TIMESTAMP '2025-01-01'), (1, 2, 1, 4, 1, 10.00, TIMESTAMP '2025-01-01'),
        (2, 1, 2, 2, 1, 10.00, TIMESTAMP '2025-01-01'), (2, 2, 2, 3, 1, 10.00, TIMESTAMP '2025-01-01'),
        (2, 3, 2, 5, 1, 10.00, TIMESTAMP '2025-01-01'))
        AS t(order_id, line_number, customer_id, product_id, quantity, unit_price, purchased_at)""")
    conn.execute("""CREATE TABLE consumer_aligned.association_rules AS SELECT * FROM (VALUES
        ('r9', 'product', ['1'], ['2'], 0.5::DOUBLE, 2.0::DOUBLE), ('r1', 'product', ['4'], ['2'], 0.5, 3.0),
        ('r5', 'product', ['1'], ['3'], 0.5, 2.5), ('r3', 'product', ['4'], ['5'], 0.6, 1.5))
        AS t(rule_id, level, antecedents, consequents, confidence, lift)""")
    got = conn.execute(f"""SELECT rank, recommended_item, score, rule_id FROM ({recommendations.build(conn, 3)})
                           WHERE customer_id = 1 ORDER BY rank""").fetchall()
    assert got == [(1, "5", 0.6, "r3"), (2, "2", 0.5, "r1"), (3, "3", 0.5, "r5")]


@pytest.mark.parametrize("customer_step", [1, 10**12], ids=["dense-ids", "sparse-ids"])
def test_each_customer_gets_the_best_applicable_rules_items_block_by_block(monkeypatch, customer_step):
    """Random baskets and rules with one or two antecedents, checked against the definition worked out customer by
    customer in Python: a rule applies when every antecedent is owned and the consequent is not; an item's best
    rule is its highest (confidence, lift, rule id); items rank by their best rule's (confidence, lift), then item.
    Customers are worked out in blocks of a few (as past 64 MB of a matrix), with ids close together and far apart,
    and only the customers asked for get recommendations."""
    import random

    from product_affinity.consumer_aligned import recommendations

    rng = random.Random(7)
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA source_aligned")
    conn.execute("CREATE TABLE source_aligned.product AS SELECT range AS product_id, 'p' || range AS product_name, "
                 "'c' || (range % 4) AS category FROM range(1, 13)")
    owned = {c * customer_step: set(rng.sample(range(1, 13), rng.randint(0, 6))) for c in range(1, 41)}
    lines = [(order, c, p) for order, (c, items) in enumerate(owned.items()) for p in sorted(items)]
    lines += [(100 + order, c, p) for order, c, p in lines[::3]]  # some products bought twice
    conn.execute("CREATE TABLE lines (order_id BIGINT, customer_id BIGINT, product_id BIGINT)")
    conn.executemany("INSERT INTO lines VALUES (?, ?, ?)", lines)
    conn.execute("""CREATE TABLE purchase AS SELECT order_id, row_number() OVER (PARTITION BY order_id) AS line_number,
                    customer_id, product_id, 1 AS quantity, 2.50::DECIMAL(12, 2) AS unit_price FROM lines""")
    rules = []
    for n in range(60):
        antecedents = rng.sample(range(1, 13), rng.choice([1, 1, 2]))
        consequent = rng.choice([p for p in range(1, 13) if p not in antecedents])
        rules.append((f"r{n:02d}", antecedents, consequent, rng.choice([0.2, 0.4, 0.6]), rng.choice([0.9, 1.5, 2.0])))
    conn.execute("CREATE TABLE rules (rule_id VARCHAR, level VARCHAR, antecedents VARCHAR[], consequents VARCHAR[], "
                 "confidence DOUBLE, lift DOUBLE)")
    conn.executemany("INSERT INTO rules VALUES (?, 'product', ?, ?, ?, ?)",
                     [(r, [str(a) for a in ants], [str(c)], conf, lift) for r, ants, c, conf, lift in rules])
    asked = sorted(rng.sample(sorted(owned), 30))
    conn.execute("CREATE TABLE asked (level VARCHAR, customer_id BIGINT)")
    conn.executemany("INSERT INTO asked VALUES ('product', ?)", [(c,) for c in asked])
    monkeypatch.setattr(recommendations, "BLOCK_CELLS", 7 * 12)  # seven customers a block

    expected = []
    for c in asked:
        best = {}
        for r, ants, item, conf, lift in rules:
            if lift > 1 and set(ants) <= owned[c] and item not in owned[c]:
                best[item] = max(best.get(item, (conf, lift, r)), (conf, lift, r))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:4]
        expected += [(c, rank, str(item), conf, r) for rank, (item, (conf, lift, r)) in enumerate(ranked, 1)]
    got = conn.execute(f"""SELECT customer_id, rank, recommended_item, score, rule_id
                           FROM ({recommendations.build(conn, 4, rules="rules", purchases="purchase", customers="asked")})
                           WHERE level = 'product' ORDER BY customer_id, rank""").fetchall()
    assert got == expected
    assert len({c for c, *_ in expected}) > 20
