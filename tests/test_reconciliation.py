"""The reconciliations (accuracy) are exact: one wrong row in a large table fails its rule and is named by its key.

The tables are synthetic, built in DuckDB under the contract's names with the columns the
reconciliations read, larger than the 250,000-row sample Great Expectations used to validate, and
with more rules than the 100 product rules whose support used to be recounted. The supports and the
baskets holding both categories are counted here by another route than the recount's (a self-join
of the order lines), so a clean table reconciling is itself a test of the recount; the other
figures are built with the recomputation's own formula, these tests being about the wrong row.
"""

import duckdb
import pytest

from product_affinity.contract.odcs import quality_rules, table
from product_affinity.defs.quality_checks import _measured, _where
from product_affinity.product.descriptor import alignment
from product_affinity.quality.measures import reconcile, reconciled
from product_affinity.quality.reconciliation import recomputation

ORDERS = 300_000  # one customer per order, three lines each: 300k customers and recommendations, 900k lines
PRODUCTS = 1_000
CATEGORIES = ["Bakery", "Beverages", "Dairy", "Fish", "Fruits", "Gold", "Household", "Meats", "Snacks", "Sweets", "Vegetables", "Wines"]
PRODUCT_RULES = 500


def rule(name: str):
    (found,) = [r for r in quality_rules(name) if reconciled(r)]
    return found


def purchases(conn: duckdb.DuckDBPyConnection, order_ids: str = "o") -> None:
    """Products, categories and order lines: line l of order o is product (7o + 13l^2) mod 1000 (the same product twice in
    an order now and then); the lines span 2025, so the North Star has months. `order_ids` maps o to the stored id."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS source_aligned; CREATE SCHEMA IF NOT EXISTS consumer_aligned")
    conn.execute(f"""CREATE OR REPLACE TABLE {table('product').physical_name} AS
        SELECT i::BIGINT AS product_id, {CATEGORIES}[1 + i % 12] AS category FROM range({PRODUCTS}) AS t(i)""")
    conn.execute(f"""CREATE OR REPLACE TABLE {table('purchase').physical_name} AS
        SELECT ({order_ids})::BIGINT AS order_id, l::INTEGER AS line_number, o::BIGINT AS customer_id,
               ((7 * o + 13 * l * l) % {PRODUCTS})::BIGINT AS product_id, (1 + l % 3)::INTEGER AS quantity,
               ((o % 50) + 0.99)::DECIMAL(12,2) AS unit_price, TIMESTAMP '2025-01-01' + to_minutes((o * 1.7)::BIGINT) AS purchased_at
        FROM range(1, {ORDERS} + 1) AS t(o), range(1, 4) AS u(l)""")


def pair_counts(item: str) -> str:
    """Orders holding both items of each pair (product_id or category), by a self-join of the distinct order items."""
    return f"""WITH items AS (SELECT DISTINCT p.order_id, {item} AS item FROM source_aligned.purchase AS p
                             JOIN source_aligned.product AS pr USING (product_id))
        SELECT a.item AS a, b.item AS b, count(*) AS baskets FROM items AS a JOIN items AS b USING (order_id)
        WHERE a.item < b.item GROUP BY ALL"""


@pytest.fixture(scope="module")
def warehouse():
    conn = duckdb.connect()
    purchases(conn)
    conn.execute(f"""CREATE TABLE {table('customer_metrics').physical_name} AS
        SELECT customer_id, sum(quantity * unit_price)::DECIMAL(18,2) AS total_spend FROM source_aligned.purchase GROUP BY ALL""")
    # the 500 most frequent product pairs, one rule each way, then every category pair and triple held by some basket
    conn.execute(f"CREATE TEMP TABLE categories AS {pair_counts('pr.category')}")
    conn.execute(f"""CREATE TABLE {table('association_rules').physical_name} AS
        WITH pairs AS (SELECT * FROM ({pair_counts('p.product_id')}) ORDER BY baskets DESC, a, b LIMIT {PRODUCT_RULES // 2}),
        rules AS (
            SELECT 'product' AS level, [a::VARCHAR] AS antecedents, [b::VARCHAR] AS consequents, baskets FROM pairs
            UNION ALL SELECT 'product', [b::VARCHAR], [a::VARCHAR], baskets FROM pairs
            UNION ALL SELECT 'category', [a], [b], baskets FROM categories
        )
        SELECT printf('R%05d', row_number() OVER (ORDER BY level DESC, antecedents, consequents)) AS rule_id, level, antecedents,
               consequents, baskets AS support_count, baskets / 1000 AS confidence
        FROM rules""")
    conn.execute(f"""CREATE TABLE {table('product_affinity_matrix').physical_name} AS
        SELECT a AS category_1, b AS category_2, baskets AS baskets_with_both FROM categories
        UNION ALL SELECT b, a, baskets FROM categories""")
    conn.execute(f"""CREATE TABLE {table('cross_sell_recommendations').physical_name} AS
        SELECT c.customer_id, 'product' AS level, 1 AS rank, r.rule_id, r.confidence AS score
        FROM consumer_aligned.customer_metrics AS c
        JOIN (SELECT rule_id, confidence, row_number() OVER (ORDER BY rule_id) - 1 AS i FROM consumer_aligned.association_rules) AS r
          ON r.i = c.customer_id % (SELECT count(*) FROM consumer_aligned.association_rules)""")
    north_star = recomputation(conn, "recounted_north_star").sql.replace(table("kpi_tree").physical_name, "months")
    conn.execute(f"""CREATE TABLE {table('kpi_tree').physical_name} AS
        WITH months AS (SELECT DISTINCT date_trunc('month', purchased_at)::DATE AS month, '{alignment()["northStar"]["id"]}' AS node_id
                        FROM source_aligned.purchase)
        SELECT month, node_id, recounted_north_star::DOUBLE AS value FROM ({north_star})""")
    yield conn
    conn.close()


def test_clean_tables_reconcile_on_every_row(warehouse):
    sizes = {name: warehouse.execute(f"SELECT count(*) FROM {table(name).physical_name}").fetchone()[0]
             for name in ("customer_metrics", "association_rules", "product_affinity_matrix", "cross_sell_recommendations", "kpi_tree")}
    assert sizes["customer_metrics"] > 250_000 and sizes["cross_sell_recommendations"] > 250_000
    assert warehouse.execute("SELECT count(*) FROM consumer_aligned.association_rules WHERE level = 'product'").fetchone()[0] == PRODUCT_RULES
    for name, rows in sizes.items():
        measured = reconcile(warehouse, table(name), rule(name))
        assert (measured.passed, measured.observed, measured.rows_checked, measured.detail) == (True, 100, rows, {"bad_rows": 0}), name
    assert sizes["kpi_tree"] >= 12 and warehouse.execute("SELECT min(value) FROM consumer_aligned.kpi_tree").fetchone()[0] >= 0


@pytest.mark.parametrize("name, wrong, key", [
    ("customer_metrics", "UPDATE {t} SET total_spend = total_spend + 0.01 WHERE customer_id = 299999", ["299999"]),
    ("cross_sell_recommendations", "UPDATE {t} SET score = score + 1e-9 WHERE customer_id = 287654", ["287654", "product", "1"]),
    ("product_affinity_matrix", "UPDATE {t} SET baskets_with_both = baskets_with_both - 1 WHERE category_1 = 'Wines' AND category_2 = 'Fish'",
     ["Wines", "Fish"]),
    ("kpi_tree", "UPDATE {t} SET value = value + 1 WHERE month = DATE '2025-06-01'", ["2025-06-01", alignment()["northStar"]["id"]]),
])
def test_one_wrong_row_in_a_large_table_fails_and_is_named(warehouse, name, wrong, key):
    t = table(name)
    warehouse.execute("BEGIN")
    try:
        warehouse.execute(wrong.format(t=t.physical_name))
        measured = reconcile(warehouse, t, rule(name))
    finally:
        warehouse.execute("ROLLBACK")
    assert not measured.passed and measured.detail["bad_rows"] == 1 and measured.observed < 100
    assert measured.detail["first_keys"] == [key] and measured.detail["key"] == t.primary_key
    assert " ".join(key) in _where(_measured(rule(name), measured))["where"]


def test_every_rules_support_is_recounted_so_a_wrong_one_past_the_first_hundred_is_caught(warehouse):
    t, rules = table("association_rules"), table("association_rules").physical_name
    late = warehouse.execute(f"SELECT rule_id FROM {rules} WHERE level = 'product' ORDER BY rule_id LIMIT 1 OFFSET 400").fetchone()[0]
    warehouse.execute("BEGIN")
    try:
        warehouse.execute(f"UPDATE {rules} SET support_count = support_count + 1 WHERE rule_id = ?", [late])
        measured = reconcile(warehouse, t, rule("association_rules"))
    finally:
        warehouse.execute("ROLLBACK")
    assert not measured.passed and measured.detail["first_keys"] == [[late]] and measured.detail["bad_rows"] == 1
    assert measured.rows_checked == warehouse.execute(f"SELECT count(*) FROM {rules}").fetchone()[0]  # every rule, both levels


def test_a_rule_naming_an_item_no_basket_holds_does_not_reconcile(warehouse):
    """A category nobody bought, or a product id that is no number: support 0, so a stored support does not reconcile
    (the sampled recount left such a rule out as if it had no figure to compare)."""
    rules = table("association_rules").physical_name
    warehouse.execute("BEGIN")
    try:
        warehouse.execute(f"""INSERT INTO {rules} VALUES ('Z1', 'category', ['Wines'], ['Toys'], 3, 0.1),
                                                     ('Z2', 'product', ['1'], ['not-a-product'], 2, 0.1)""")
        measured = reconcile(warehouse, table("association_rules"), rule("association_rules"))
        recounted = dict(warehouse.execute(
            f"SELECT rule_id, recounted_support_count FROM ({recomputation(warehouse, 'recounted_support_count').sql}) "
            "WHERE rule_id IN ('Z1', 'Z2')").fetchall())
    finally:
        warehouse.execute("ROLLBACK")
    assert recounted == {"Z1": 0, "Z2": 0}
    assert measured.detail["first_keys"] == [["Z1"], ["Z2"]] and not measured.passed


def test_the_recount_is_the_same_whatever_the_order_ids_look_like():
    """Sparse order ids (a trillion apart) are numbered before they become bit positions; dense ones are used as they
    are. Both give the self-join's counts."""
    counts = []
    for ids in ("o + 41", "o * 1000000000000"):
        with duckdb.connect() as conn:
            purchases(conn, ids)
            conn.execute("DELETE FROM source_aligned.purchase WHERE customer_id > 20000")
            pairs = f"SELECT 'product' AS level, [a::VARCHAR, b::VARCHAR] AS items, baskets FROM ({pair_counts('p.product_id')})"
            conn.execute(f"CREATE TABLE consumer_aligned.association_rules AS SELECT printf('R%05d', row_number() OVER ()) AS rule_id, "
                         f"level, [items[1]] AS antecedents, [items[2]] AS consequents, baskets AS support_count FROM ({pairs})")
            recounted = conn.execute(f"""SELECT count(*), count(*) FILTER (r.support_count = c.recounted_support_count)
                FROM consumer_aligned.association_rules AS r
                JOIN ({recomputation(conn, 'recounted_support_count').sql}) AS c USING (rule_id)""").fetchone()
            counts.append(recounted)
    assert counts[0] == counts[1] and counts[0][0] == counts[0][1] > 1000
