"""The semantic model on the published sample: its answers equal SQL written by hand, joins never fan out a measure,
and nothing a request says is ever executed as SQL."""

import math
import textwrap

import pytest
from pydantic import ValidationError

from product_affinity.contract.odcs import table
from product_affinity.delivery.service import DeliveryService
from product_affinity.governance.policies import principal
from product_affinity.governance.credentials import Caller
from product_affinity.publication import open_published
from product_affinity.semantic.model import ModelError, semantic_type
from product_affinity.semantic.loader import model
from product_affinity.semantic.compiler import QueryError
from product_affinity.semantic.query import Query


@pytest.fixture(scope="module")
def service(published_sample):
    return DeliveryService(published_sample)


@pytest.fixture(scope="module")
def sql(published_sample):
    with open_published(published_sample) as conn:
        yield lambda text, params=None: conn.execute(text, params).fetchall()


def ask(service, query: dict, who: str = "steward") -> list[tuple]:
    """The rows the delivery service returns to `who`, as tuples in column order."""
    result = service.load(Caller(principal(who), "test"), Query.model_validate(query), "test")
    return [tuple(row[c.name] for c in result.columns) for row in result.rows]


def close(a, b) -> bool:
    return all(x == y if not isinstance(x, float) else math.isclose(x, float(y), rel_tol=1e-9) for x, y in zip(a, b))


def test_types_and_personal_data_come_from_the_contract():
    for cube in model().cubes.values():
        t = next(t for t in [table(cube.contract_table)])
        for d in cube.dimensions.values():
            column = d.sql.removeprefix("{CUBE}.")
            if column in t.column_names:
                assert d.type == semantic_type(t.column(column).type)
                assert d.pii == t.column(column).pii
                assert not d.pii or d.mask is not None


def test_a_personal_column_without_a_mask_is_refused(tmp_path):
    (tmp_path / "cubes").mkdir()
    (tmp_path / "views").mkdir()
    (tmp_path / "cubes" / "people.yaml").write_text(textwrap.dedent("""
        name: people
        table: customer
        primary_key: [customer_id]
        dimensions: [{name: email, column: email}]
    """))
    with pytest.raises(ModelError, match="pii, so declare its mask"):
        model(tmp_path)


def _people(tmp_path, dimensions: str, measures: str = "[]"):
    """A one-cube model on the contract's customer table, loaded from `tmp_path`."""
    (tmp_path / "cubes").mkdir(exist_ok=True)
    (tmp_path / "views").mkdir(exist_ok=True)
    (tmp_path / "cubes" / "people.yaml").write_text(
        f"name: people\ntable: customer\nprimary_key: [customer_id]\ndimensions: {dimensions}\nmeasures: {measures}\n")
    return model(tmp_path).cubes["people"]


def test_lineage_is_parsed_from_the_sql_and_classification_follows_it(tmp_path):
    people = _people(tmp_path, """
      - {name: band, type: string, sql: "CASE WHEN {CUBE}.income > 1 THEN 'income' ELSE {CUBE}.country END"}
      - {name: initial, type: string, sql: "left({CUBE}.first_name, 1)", mask: redact}
      - {name: decade, type: number, sql: "{CUBE}.birth_year // 10", generalises: [birth_year]}""",
                     "[{name: rich, type: count, filter: '{CUBE}.income > 100'}, {name: n, type: count},"
                     " {name: share, type: ratio, numerator: rich, denominator: n}]")
    assert people.dimensions["band"].reads == {"income", "country"} and not people.dimensions["band"].pii  # 'income' is a literal
    assert people.dimensions["initial"].pii and people.dimensions["initial"].personal == {"first_name"}
    assert not people.dimensions["decade"].pii and people.dimensions["decade"].reads == {"birth_year"}
    assert people.measures["rich"].reads == people.measures["share"].reads == {"income"}


@pytest.mark.parametrize("dimensions, error", [
    ("[{name: x, type: number, sql: 'income * 2'}]", r"write columns as \{CUBE\}.<column>.*income"),
    ("[{name: x, type: number, sql: '{CUBE}.salary'}]", "has no columns .'salary'."),
    ("[{name: x, type: string, sql: 'upper({CUBE}.last_name)'}]", "which the contract classifies as pii, so declare its mask"),
    ("[{name: x, type: string, sql: '{CUBE}.country', generalises: [country]}]", "generalises .'country'., which it does not read as pii"),
])
def test_a_member_whose_lineage_is_unknown_or_unmasked_is_refused(tmp_path, dimensions, error):
    with pytest.raises(ModelError, match=error):
        _people(tmp_path, dimensions)


def test_measures_by_dimension_equal_hand_written_sql(service, sql):
    got = ask(service, {"measures": ["sales.total_spend", "sales.purchases", "sales.average_spend_per_purchase"],
                        "dimensions": ["sales.channel"]})
    expected = sql("""SELECT channel, sum(quantity * unit_price), count(DISTINCT order_id),
                             sum(quantity * unit_price) / count(DISTINCT order_id)
                      FROM source_aligned.purchase GROUP BY channel ORDER BY channel""")
    assert len(got) == len(expected) == 3
    assert all(close(g, e) for g, e in zip(got, expected))


def test_a_customer_measure_is_not_multiplied_by_their_order_lines(service, sql):
    # Average income of the customers who bought each category: through purchases (one customer, many lines),
    # each customer must count once per category, not once per line. Customers who bought nothing form the
    # empty category (joins keep every row of the cube the measure counts).
    got = ask(service, {"measures": ["sales.customers", "sales.average_income"], "dimensions": ["sales.category"]})
    expected = sql("""
        SELECT category, count(*), avg(income) FROM source_aligned.customer LEFT JOIN (
            SELECT DISTINCT p.customer_id, pr.category FROM source_aligned.purchase AS p JOIN source_aligned.product AS pr USING (product_id)
        ) USING (customer_id) GROUP BY category ORDER BY category NULLS LAST""")
    naive = sql("""SELECT pr.category, avg(c.income) FROM source_aligned.purchase AS p
                   JOIN source_aligned.product AS pr USING (product_id) JOIN source_aligned.customer AS c USING (customer_id)
                   GROUP BY 1 ORDER BY 1""")
    assert len(got) == len(expected) == 13 and got[-1][0] is None
    assert all(close(g, e) for g, e in zip(got, expected))
    assert not all(math.isclose(g[2], float(n[1]), rel_tol=1e-9) for g, n in zip(got, naive))  # the naive join differs


def test_measures_of_two_cubes_are_aggregated_separately_then_combined(service, sql):
    # Spend comes from the purchase lines, customers from the customer list (buyers or not): neither multiplies the other.
    got = ask(service, {"measures": ["sales.total_spend", "sales.customers", "sales.spend_per_customer"],
                        "dimensions": ["sales.region"]})
    expected = sql("""
        WITH region AS (
            SELECT customer_id, CASE WHEN country IN ('Spain', 'Germany', 'Montenegro') THEN 'Europe'
                WHEN country IN ('United States', 'Canada') THEN 'North America' WHEN country = 'Saudi Arabia' THEN 'Middle East'
                WHEN country = 'India' THEN 'Asia' WHEN country = 'Australia' THEN 'Oceania' ELSE 'Other' END AS region
            FROM source_aligned.customer),
        spend AS (SELECT region, sum(quantity * unit_price) AS spend FROM source_aligned.purchase JOIN region USING (customer_id) GROUP BY 1),
        customers AS (SELECT region, count(*) AS customers FROM region GROUP BY 1)
        SELECT region, spend, customers, spend / customers FROM spend JOIN customers USING (region) ORDER BY region""")
    assert len(got) == len(expected) >= 5
    assert all(close(g, e) for g, e in zip(got, expected))


def test_time_grain_and_date_range(service, sql):
    (first, last), = sql("SELECT date_trunc('month', min(purchased_at))::DATE, max(purchased_at)::DATE FROM source_aligned.purchase")
    got = ask(service, {"measures": ["sales.lines"], "timeDimensions": [
        {"dimension": "sales.purchased_at", "granularity": "month", "dateRange": [str(first), str(last)]}]})
    expected = sql("SELECT date_trunc('month', purchased_at), count(*) FROM source_aligned.purchase GROUP BY 1 ORDER BY 1")
    assert [(g[0][:10], g[1]) for g in got] == [(str(e[0])[:10], e[1]) for e in expected]
    assert sum(g[1] for g in got) == sql("SELECT count(*) FROM source_aligned.purchase")[0][0]  # the last day is included


@pytest.mark.parametrize("operator, values, where", [
    ("equals", ["Spain", "Canada"], "country IN ('Spain', 'Canada')"),
    ("notEquals", ["Spain"], "(country <> 'Spain' OR country IS NULL)"),
    ("contains", ["an"], "lower(country) LIKE '%an%'"),
    ("startsWith", ["S"], "country LIKE 'S%'"),
    ("endsWith", ["ia"], "country LIKE '%ia'"),
    ("set", [], "country IS NOT NULL"),
    ("notSet", [], "country IS NULL"),
])
def test_filters(service, sql, operator, values, where):
    got = ask(service, {"measures": ["customer_360.customers"],
                        "filters": [{"member": "customer_360.country", "operator": operator, "values": values}]})
    assert got == sql(f"SELECT count(*) FROM source_aligned.customer WHERE {where}")


def test_measure_filters_and_or_groups(service, sql):
    got = ask(service, {
        "measures": ["sales.total_spend"], "dimensions": ["sales.category"],
        "filters": [{"or": [{"member": "sales.channel", "operator": "equals", "values": ["web"]},
                            {"member": "sales.deal", "operator": "equals", "values": [True]}]},
                    {"member": "sales.total_spend", "operator": "gt", "values": [40000]}]})
    expected = sql("""SELECT category, sum(quantity * unit_price) AS spend FROM source_aligned.purchase
                      JOIN source_aligned.product USING (product_id) WHERE channel = 'web' OR deal
                      GROUP BY category HAVING spend > 40000 ORDER BY category""")
    assert 0 < len(got) < 12 and all(close(g, e) for g, e in zip(got, expected))


def test_ungrouped_rows_page_in_key_order(service, sql):
    query = {"dimensions": ["cross_sell.customer_id", "cross_sell.level", "cross_sell.rank", "cross_sell.score"],
             "ungrouped": True, "order": [["cross_sell.customer_id", "asc"], ["cross_sell.level", "asc"], ["cross_sell.rank", "asc"]]}
    pages = [ask(service, query | {"limit": 500, "offset": offset}) for offset in (0, 500)]
    expected = sql("""SELECT customer_id, level, rank, score FROM consumer_aligned.cross_sell_recommendations
                      ORDER BY customer_id, level, rank LIMIT 1000""")
    assert pages[0] + pages[1] == expected


@pytest.mark.parametrize("query, message", [
    ({"measures": ["sales.total_spend; DROP TABLE source_aligned.purchase"]}, "no member"),
    ({"measures": ["sales.total_spend"], "dimensions": ['sales.country" FROM source_aligned.customer --']}, "no member"),
    ({"measures": ["sales.total_spend"], "order": [["sales.region", "desc"]]}, "only members the query selects"),
    ({"measures": ["sales.total_spend", "customer_360.customers"]}, "one view"),
    ({"measures": ["sales.total_spend"], "ungrouped": True}, "ungrouped"),
    ({"measures": ["sales.country"]}, "measures must name measures"),
    ({"timeDimensions": [{"dimension": "sales.purchased_at", "dateRange": ["2026-01-01", "2026-01-31"]}]}, "nothing to return"),
    ({"measures": ["sales.lines"], "filters": [{"member": "sales.quantity", "operator": "gt", "values": ["1 OR 1=1"]}]}, "not a number"),
    ({"measures": ["sales.lines"], "filters": [{"member": "sales.purchased_at", "operator": "beforeDate", "values": ["now()"]}]}, "ISO date"),
    ({"measures": ["sales.lines"], "filters": [{"member": "sales.deal", "operator": "gt", "values": [True]}]}, "numbers, times and text"),
])
def test_identifiers_are_checked_against_the_model(service, query, message):
    with pytest.raises(QueryError, match=message):
        ask(service, query)


def test_filter_values_are_bound_never_executed(service, sql):
    attack = "Spain' OR '1'='1"
    got = ask(service, {"measures": ["customer_360.customers"],
                        "filters": [{"member": "customer_360.country", "operator": "equals", "values": [attack]}]})
    assert got == [(0,)]  # compared as a value: no customer lives in that "country"
    got = ask(service, {"measures": ["customer_360.customers"],
                        "filters": [{"member": "customer_360.email", "operator": "contains", "values": ["%"]}]})
    assert got == [(0,)]  # not a LIKE wildcard either
    assert sql("SELECT count(*) FROM source_aligned.purchase")[0][0] > 0


@pytest.mark.parametrize("query", [
    {"measures": ["sales.lines"], "order": [["sales.lines", "desc; DROP TABLE x"]]},
    {"measures": ["sales.lines"], "limit": "10; DROP TABLE x"},
    {"measures": ["sales.lines"], "limit": 10 ** 9},
    {"measures": ["sales.lines"], "filters": [{"member": "sales.channel", "operator": "equals) OR (1=1", "values": ["web"]}]},
    {"measures": ["sales.lines"], "select": "*"},
    {},
])
def test_malformed_queries_are_refused_before_compiling(query):
    with pytest.raises(ValidationError):
        Query.model_validate(query)
