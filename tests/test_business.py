"""The KPI tree and the backtest on hand-computed purchases, and the backtest on the sample."""

import math
from datetime import date, datetime, timedelta

import duckdb
import pytest

from product_affinity.business import backtest, kpi_tree
from product_affinity.consumer_aligned import daily_counts
from product_affinity.consumer_aligned.baskets import LEVELS
from product_affinity.partitions import Days
from product_affinity.publication import open_published
from product_affinity.defs.resources import AffinitySettings

PRODUCTS = [(1, "Rioja Reserva", "Wines"), (2, "Ribeye Steak", "Meats"), (3, "Chocolate Cake", "Sweets")]


def warehouse(orders: list[tuple[int, int, list[int], str]]) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse holding the source-aligned product and purchase tables for (order, customer, products, when)."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA source_aligned; CREATE SCHEMA consumer_aligned")
    conn.execute("CREATE TABLE source_aligned.product (product_id BIGINT, product_name VARCHAR, category VARCHAR)")
    conn.executemany("INSERT INTO source_aligned.product VALUES (?, ?, ?)", PRODUCTS)
    conn.execute("""CREATE TABLE source_aligned.purchase (order_id BIGINT, line_number INTEGER, customer_id BIGINT, product_id BIGINT,
                    quantity INTEGER, unit_price DECIMAL(12,2), purchased_at TIMESTAMP)""")
    conn.executemany("INSERT INTO source_aligned.purchase VALUES (?, ?, ?, ?, 1, 10.00, ?)",
                     [(o, line, c, p, when) for o, c, products, when in orders for line, p in enumerate(products, 1)])
    return conn


# ---- KPI tree -------------------------------------------------------------------------------

KPI_ORDERS = [  # January (first, partial) and April (current) months are left out: February and March are complete
    (1, 1, [1], "2025-01-10 10:00:00"), (2, 2, [2], "2025-01-20 10:00:00"),
    (3, 1, [1, 2], "2025-02-03 10:00:00"),  # c1 returns and adds Meats: expanding
    (4, 3, [3], "2025-02-10 10:00:00"),  # c3's first order: not returning
    (5, 1, [3], "2025-03-01 10:00:00"),  # c1 adds Sweets: expanding again
    (6, 2, [2], "2025-03-05 10:00:00"), (7, 3, [3], "2025-03-09 10:00:00"),  # returning, nothing new
    (8, 1, [1], "2025-04-02 10:00:00"),
]


@pytest.fixture
def kpi_rows():
    conn = warehouse(KPI_ORDERS)
    conn.execute("CREATE TABLE consumer_aligned.customer_metrics AS SELECT 3 AS orders, 0.5 AS cross_sell_opportunity_score")
    conn.execute("""CREATE TABLE consumer_aligned.recommendation_backtest AS
                    SELECT 'category' AS level, 'cross_sell_score' AS recommender, 3 AS k, 0.25 AS hit_rate""")
    return {(r["month"].date() if hasattr(r["month"], "date") else r["month"], r["node_id"]): r for r in kpi_tree.build(conn)}


def test_kpi_tree_counts_each_complete_month_by_hand(kpi_rows):
    feb, mar = date(2025, 2, 1), date(2025, 3, 1)
    assert {month for month, _ in kpi_rows} == {feb, mar}
    values = {(m, n): r["value"] for (m, n), r in kpi_rows.items()}
    assert [values[(feb, n)] for n in ("expanding_customers", "customer_base", "returning_buyers", "headroom_share")] == [1, 2, 1, 1]
    assert [values[(mar, n)] for n in ("expanding_customers", "customer_base", "returning_buyers", "expansion_conversion")] == [1, 3, 3, 1 / 3]
    assert values[(mar, "revenue")] == 30 and values[(mar, "purchase_frequency")] == 1 and values[(feb, "average_order_value")] == 15
    assert values[(mar, "customer_lifetime_value")] == pytest.approx((20 + 30 + 30) / 3) and values[(mar, "category_penetration")] == (3 + 1 + 1) / 9
    assert values[(mar, "backtest_hit_rate")] == 0.25 and values[(feb, "backtest_hit_rate")] is None  # measured on the latest month


def test_kpi_contributions_are_lmdi_and_add_up_to_the_north_stars_change(kpi_rows):
    mar = date(2025, 3, 1)
    contribution = {n: r["contribution_to_north_star"] for (m, n), r in kpi_rows.items() if m == mar}
    # The North Star stays at 1 (L(1, 1) = 1): the base grew x1.5, repeat share x2, conversion x1/3.
    assert contribution["customer_base"] == pytest.approx(math.log(1.5))
    assert contribution["repeat_customer_share"] == pytest.approx(math.log(2))
    assert contribution["expansion_conversion"] == pytest.approx(math.log(1 / 3))
    assert contribution["headroom_share"] == 0
    leaves = ("customer_base", "repeat_customer_share", "headroom_share", "expansion_conversion")
    assert sum(contribution[n] for n in leaves) == pytest.approx(kpi_rows[(mar, "expanding_customers")]["change"]) == pytest.approx(0)
    assert contribution["returning_buyers"] == pytest.approx(contribution["customer_base"] + contribution["repeat_customer_share"])
    assert contribution["revenue"] is None and contribution["category_penetration"] is None  # outside the identity
    assert all(r["contribution_to_north_star"] is None for (m, _), r in kpi_rows.items() if m != mar)  # no month before


def test_log_mean_weights_make_contributions_exact():
    assert kpi_tree.log_mean(5, 5) == 5
    before, after = (2, 0.5, 4), (3, 0.25, 10)
    weight = kpi_tree.log_mean(math.prod(after), math.prod(before))
    assert sum(weight * math.log(a / b) for a, b in zip(after, before)) == pytest.approx(math.prod(after) - math.prod(before))


def test_a_kpi_tree_whose_factors_do_not_multiply_to_the_parent_is_refused():
    nodes = [{"id": "n"}, {"id": "a", "parent": "n", "link": "factor"}, {"id": "b", "parent": "n", "link": "factor"}]
    kpi_tree._check_identity(date(2025, 1, 1), nodes, {"n": 6, "a": 2, "b": 3})
    with pytest.raises(kpi_tree.NotAnIdentity, match="n = 7 but its factors"):
        kpi_tree._check_identity(date(2025, 1, 1), nodes, {"n": 7, "a": 2, "b": 3})


# ---- backtest -------------------------------------------------------------------------------

def _affinity_orders() -> list[tuple[int, int, list[int], str]]:
    """Before the cut-off: 10 baskets of Wines + Meats, 15 of Sweets (the most popular), and customers 1-5 with Wines
    alone. After it, customers 1-5 buy Meats: what the rule Wines -> Meats predicts and popularity does not."""
    orders = [(100 + i, 100 + i, [1, 2], f"2025-01-{1 + i:02d} 10:00:00") for i in range(10)]
    orders += [(200 + i, 200 + i, [3], f"2025-01-{1 + i:02d} 12:00:00") for i in range(15)]
    orders += [(c, c, [1], "2025-02-01 10:00:00") for c in range(1, 6)]
    orders += [(50 + c, c, [2], f"2025-03-0{c} 10:00:00") for c in range(1, 6)]
    return orders


def test_backtest_scores_both_recommenders_on_what_customers_bought_after_the_cutoff():
    conn = warehouse(_affinity_orders())
    settings = AffinitySettings()
    sql = backtest.backtest_sql(conn, {level: settings.thresholds(level) for level in LEVELS}, 2, holdout_days=10)
    got = {(r[0], r[1], r[2]): r[3:] for r in conn.execute(
        f"""SELECT level, recommender, k, customers_evaluated, customers_recommended, hits, hit_rate, precision_at_k,
                   customers_before_cutoff, hit_rate_all_customers FROM ({sql})""").fetchall()}
    # 30 customers bought before the cut-off (10 Wines + Meats, 15 Sweets, customers 1-5); only 1-5 bought after it.
    for level in LEVELS:
        assert got[(level, "cross_sell_score", 1)] == (5, 5, 5, 1.0, 1.0, 30, 5 / 30)  # Meats, from the rule
        assert got[(level, "most_popular", 1)] == (5, 5, 0, 0.0, 0.0, 30, 0.0)  # Sweets, the most popular they lack
        assert got[(level, "cross_sell_score", 2)] == (5, 5, 5, 1.0, 0.5, 30, 5 / 30)  # one rule: the second place stays empty
        assert got[(level, "most_popular", 2)] == (5, 5, 5, 1.0, 0.5, 30, 5 / 30)
    # The latest purchase is Wednesday 2025-03-05 10:00; ten days before is Sunday 2025-02-23: its week's Monday.
    assert conn.execute(f"SELECT DISTINCT cutoff_at, evaluated_until FROM ({sql})").fetchall() == [
        (datetime(2025, 2, 17), datetime(2025, 3, 5, 10))]


def _scores(conn: duckdb.DuckDBPyConnection, keep_in: str | None = None) -> list[tuple]:
    settings = AffinitySettings()
    sql = backtest.backtest_sql(conn, {level: settings.thresholds(level) for level in LEVELS}, 2, holdout_days=12,
                                keep_in=keep_in)
    return sorted(conn.execute(sql).fetchall())


def _from_nothing(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """The same backtest on a copy of the warehouse's lines and products, with nothing kept."""
    fresh = duckdb.connect()
    fresh.execute("CREATE SCHEMA source_aligned")
    for name in ("product", "purchase"):
        fresh.register("_copied", conn.execute(f"FROM source_aligned.{name}").df())
        fresh.execute(f"CREATE TABLE source_aligned.{name} AS FROM _copied")
    return _scores(fresh)


def _kept(conn: duckdb.DuckDBPyConnection) -> tuple[str, int]:
    return (conn.execute("SELECT key FROM kept.backtest_key").fetchone()[0],
            conn.execute("SELECT count(*) FROM kept.backtest_recommended_to").fetchone()[0])


def test_a_backtest_that_reuses_its_training_side_equals_one_from_nothing(monkeypatch):
    """Day after day in one week the cut-off stays and the training side is reused; a late line before the cut-off,
    a product moved to another category, another release of the code or a new week trains again. After each step the scores equal a backtest
    from nothing on the same lines."""
    conn = warehouse(_affinity_orders())  # latest Wednesday 2025-03-05 10:00; 12 days before: Friday 2025-02-21
    conn.execute("ATTACH ':memory:' AS kept")
    first = _scores(conn, "kept")
    assert first == _from_nothing(conn) and {row[3] for row in first} == {datetime(2025, 2, 17)}
    key, recommended_to = _kept(conn)
    assert recommended_to == 10  # customers 1-5, at both levels

    # Thursday: Sweets buyers 200-204 buy Wines, new to them; the cut-off stays, so only they are recommended to.
    conn.executemany("INSERT INTO source_aligned.purchase VALUES (?, 1, ?, 1, 1, 10.00, '2025-03-06 09:00:00')",
                     [(400 + c, c) for c in range(200, 205)])
    assert _scores(conn, "kept") == _from_nothing(conn) != first
    assert _kept(conn) == (key, 20)

    # A late line before the cut-off: customer 1 had bought Meats on 2 February, so Meats is not new to them.
    conn.execute("INSERT INTO source_aligned.purchase VALUES (300, 1, 1, 2, 1, 10.00, '2025-02-02 10:00:00')")
    late = _scores(conn, "kept")
    assert late == _from_nothing(conn) and _kept(conn)[0] != key
    assert [row[5] for row in late if row[:3] == ("category", "cross_sell_score", 1)] == [9]  # customers evaluated: not 1

    # A product moved to another category changes what was owned by category.
    key = _kept(conn)[0]
    conn.execute("UPDATE source_aligned.product SET category = 'Wines' WHERE product_id = 3")
    assert _scores(conn, "kept") == _from_nothing(conn) and _kept(conn)[0] != key

    # Another release of the code that trains: trained again, though no line changed.
    key = _kept(conn)[0]
    monkeypatch.setattr(backtest, "code_version", lambda: "another release")
    assert _scores(conn, "kept") == _from_nothing(conn) and _kept(conn)[0] != key
    monkeypatch.undo()

    # The next week: the cut-off moves to Monday 2025-02-24 and the lines of 17-23 February join the training side.
    key = _kept(conn)[0]
    conn.execute("INSERT INTO source_aligned.purchase VALUES (500, 1, 3, 1, 1, 10.00, '2025-03-09 10:00:00')")
    week = _scores(conn, "kept")
    assert week == _from_nothing(conn) and {row[3] for row in week} == {datetime(2025, 2, 24)} and _kept(conn)[0] != key


def test_a_backtest_trained_on_the_daily_counts_equals_one_mined_from_the_lines(monkeypatch, tmp_path):
    """In the job the backtest's rules and popularity before the cut-off come from the daily counts (counted first),
    not from the lines again: the same scores, and the same training side kept (rules, popularity, owned items)."""
    conn = warehouse(_affinity_orders())
    expected = _from_nothing(conn)
    conn.execute("ATTACH ':memory:' AS from_lines")
    assert _scores(conn, "from_lines") == expected
    daily_counts.attach(conn, tmp_path / "w.counts.duckdb")
    first, last = conn.execute("SELECT min(purchased_at)::DATE, max(purchased_at)::DATE FROM source_aligned.purchase").fetchone()
    daily_counts.count_days(conn, Days(first, last + timedelta(days=1)), 3, None)

    def mined(*args, **kwargs):
        raise AssertionError("the lines were mined: the counts should have given the rules")

    monkeypatch.setattr(backtest, "mine_all_levels", mined)
    settings = AffinitySettings()
    sql = backtest.backtest_sql(conn, {level: settings.thresholds(level) for level in LEVELS}, 2, holdout_days=12,
                                keep_in=daily_counts.SCHEMA, counted=True)
    assert sorted(conn.execute(sql).fetchall()) == expected
    for kept in (backtest.RULES, backtest.POPULAR, backtest.OWNED):
        rows = [sorted(conn.execute(f"FROM {where}.{kept}").fetchall()) for where in (daily_counts.SCHEMA, "from_lines")]
        assert rows[0] == rows[1] and len(rows[0]) > 0, kept


def test_a_backtest_stopped_while_training_trains_again_next_time(monkeypatch):
    """The key is removed before the training side is rewritten and written after it: a run that fails in between
    leaves no key, so the next run cannot reuse half a training side."""
    conn = warehouse(_affinity_orders())
    conn.execute("ATTACH ':memory:' AS kept")
    _scores(conn, "kept")
    conn.execute("INSERT INTO source_aligned.purchase VALUES (300, 1, 1, 2, 1, 10.00, '2025-02-02 10:00:00')")

    def stopped(*args, **kwargs):
        raise RuntimeError("stopped while mining")

    with monkeypatch.context() as patched:
        patched.setattr(backtest, "mine_all_levels", stopped)
        with pytest.raises(RuntimeError, match="stopped while mining"):
            _scores(conn, "kept")
    assert conn.execute("SELECT count(*) FROM kept.backtest_key").fetchone()[0] == 0
    assert _scores(conn, "kept") == _from_nothing(conn)


def test_backtest_on_the_sample_judges_both_recommenders_on_the_same_customers(sample_run):
    warehouse_path, _, printed = sample_run
    with open_published(warehouse_path) as conn:
        rows = conn.execute("SELECT * FROM consumer_aligned.recommendation_backtest").df()
    assert set(rows["level"]) == set(LEVELS) and set(rows["k"]) == set(range(1, AffinitySettings().recommendations_per_customer + 1))
    evaluated = rows.groupby(["level", "k"])["customers_evaluated"].nunique()
    assert (evaluated == 1).all() and (rows["customers_evaluated"] > 100).all()
    assert (rows["hit_rate"] == rows["hits"] / rows["customers_evaluated"]).all()
    assert (rows["precision_at_k"] <= rows["hit_rate"]).all()
    assert "Data product page:" in printed


def test_on_the_sample_the_cross_sell_score_beats_popularity_by_more_than_chance(sample_run):
    """The sample's planted affinities hold across customers' histories, so at both levels and at k = 1 and 3 the
    score's hit rate must exceed the baseline's by more than three standard errors of the difference (a one-sided
    two-proportion z-test at p < 0.0015, on the customers both are judged on): a margin set by how many customers
    were evaluated, not a figure copied from one run."""
    warehouse_path, _, _ = sample_run
    with open_published(warehouse_path) as conn:
        rows = conn.execute("""SELECT level, k, recommender, customers_evaluated, hits
                               FROM consumer_aligned.recommendation_backtest WHERE k IN (1, 3)""").fetchall()
    judged = {(level, k, recommender): (customers, hits) for level, k, recommender, customers, hits in rows}
    for level in LEVELS:
        for k in (1, 3):
            (customers, score), (_, baseline) = judged[(level, k, "cross_sell_score")], judged[(level, k, "most_popular")]
            pooled = (score + baseline) / (2 * customers)
            standard_error = math.sqrt(pooled * (1 - pooled) * 2 / customers)
            assert (score - baseline) / customers > 3 * standard_error, (level, k, score, baseline, customers)
