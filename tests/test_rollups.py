"""Rollups on the published sample: a query a rollup covers gets exactly the detail's answer, policies included;
one it does not cover reads the detail; and a rollup that does not add up to the detail blocks publication."""

import math
import shutil

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from product_affinity.governance.policies import access, principal
from product_affinity.publication import open_published
from product_affinity.semantic.loader import HERE, model
from product_affinity.semantic.model import ModelError
from product_affinity.semantic import compiler
from product_affinity.semantic.compiler import compile_query
from product_affinity.semantic.query import Query
from product_affinity.defs.rollups import rollup_checks

MONTHS = {"dimension": "sales.purchased_at", "granularity": "month", "dateRange": ["2025-01-01", "2026-06-30"]}
COVERED = [
    ("steward", {"measures": ["sales.total_spend", "sales.lines", "sales.units"], "dimensions": ["sales.category"]}),
    ("steward", {"measures": ["sales.total_spend"], "timeDimensions": [MONTHS]}),
    ("ana", {"measures": ["sales.total_spend", "sales.deal_share"], "dimensions": ["sales.channel"]}),
    ("marta", {"measures": ["sales.lines"], "dimensions": ["sales.region"], "timeDimensions": [{**MONTHS, "granularity": "quarter"}],
               "filters": [{"member": "sales.category", "operator": "equals", "values": ["Wines", "Meats"]},
                           {"member": "sales.purchased_at", "operator": "beforeDate", "values": ["2026-03-01"]}]}),
    ("marta", {"measures": ["customer_360.customers", "customer_360.average_income", "customer_360.average_customer_lifetime_value",
                            "customer_360.customer_total_spend"], "dimensions": ["customer_360.region"]}),
    ("ana", {"measures": ["customer_360.customers", "customer_360.average_cross_sell_opportunity_score"],
             "dimensions": ["customer_360.age_group"]}),
    ("jon", {"measures": ["customer_360.average_income", "customer_360.buyers"], "dimensions": ["customer_360.education"],
             "filters": [{"member": "customer_360.customer_total_spend", "operator": "gt", "values": [1000]}]}),
]
GRAINS = [  # the rollup that answers: the first that covers the query, coarsest first
    ({"measures": ["sales.total_spend"], "timeDimensions": [MONTHS]}, "semantic.sales_monthly"),
    ({"measures": ["sales.total_spend"], "timeDimensions": [{**MONTHS, "granularity": "year"}]}, "semantic.sales_monthly"),
    ({"measures": ["sales.total_spend"], "timeDimensions": [{**MONTHS, "granularity": "week"}]}, "semantic.sales_daily"),
    ({"measures": ["sales.total_spend"], "timeDimensions": [{**MONTHS, "dateRange": ["2025-01-01", "2026-06-15"]}]},
     "semantic.sales_daily"),  # the range ends mid-month
    ({"measures": ["sales.lines"], "filters": [{"member": "sales.purchased_at", "operator": "afterDate", "values": ["2025-12-31"]}]},
     "semantic.sales_monthly"),  # after the 31st is from the 1st
]
NOT_COVERED = [
    ("steward", {"measures": ["sales.purchases"], "dimensions": ["sales.category"]}),  # a distinct count
    ("steward", {"measures": ["sales.total_spend"], "dimensions": ["sales.age_group"]}),  # not kept
    ("steward", {"measures": ["sales.total_spend"], "filters": [
        {"member": "sales.purchased_at", "operator": "afterDate", "values": ["2026-01-01T12:00:00"]}]}),  # not on a day boundary
    ("steward", {"measures": ["sales.total_spend"], "filters": [
        {"member": "sales.purchased_at", "operator": "gt", "values": ["2026-01-01"]}]}),  # > midnight keeps the rest of that day
    ("steward", {"measures": ["sales.total_spend"], "timeDimensions": [{"dimension": "sales.purchased_at", "granularity": "week"}],
                 "filters": [{"member": "sales.customer_id", "operator": "equals", "values": [1]}]}),
    ("marta", {"measures": ["customer_360.customers"], "dimensions": ["customer_360.email"]}),  # personal data is never rolled up
]


@pytest.fixture(scope="module")
def conn(published_sample):
    with open_published(published_sample) as connection:
        yield connection


def answer(conn, who: str, query: dict, use_rollups: bool):
    q = Query.model_validate(query)
    compiled = compile_query(q, access(principal(who), q.members()[0].split(".")[0]), "key", rollups=None if use_rollups else ())
    return compiled.rollup, conn.execute(compiled.sql, compiled.params).fetchall()


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x == y or isinstance(x, float) and math.isclose(x, float(y), rel_tol=1e-9) for r, s in zip(a, b) for x, y in zip(r, s))


@pytest.mark.parametrize("who, query", COVERED)
def test_a_covered_query_gets_the_details_answer_from_the_rollup(conn, who, query):
    rollup, fast = answer(conn, who, query, use_rollups=True)
    detail, slow = answer(conn, who, query, use_rollups=False)
    assert rollup and rollup.startswith("semantic.") and detail is None
    assert fast and same(fast, slow)


@pytest.mark.parametrize("who, query", NOT_COVERED)
def test_a_query_no_rollup_covers_reads_the_detail(conn, who, query):
    assert answer(conn, who, query, use_rollups=True)[0] is None


@pytest.mark.parametrize("query, rollup", GRAINS)
def test_the_coarsest_rollup_that_answers_exactly_is_used(conn, query, rollup):
    used, fast = answer(conn, "steward", query, use_rollups=True)
    assert used == rollup and same(fast, answer(conn, "steward", query, use_rollups=False)[1])


def test_row_filters_hold_on_the_rollup(conn):
    _, spain = answer(conn, "ana", {"measures": ["sales.total_spend"]}, use_rollups=True)
    expected = conn.execute("""SELECT sum(quantity * unit_price) FROM source_aligned.purchase
                               JOIN source_aligned.customer USING (customer_id) WHERE country = 'Spain'""").fetchall()
    assert spain == expected


def sales_with_rollups(directory, rollups: str):
    """The model's cubes, and a sales view of purchases and their product's category with these rollups (YAML)."""
    shutil.copytree(HERE / "cubes", directory / "cubes", dirs_exist_ok=True)
    (directory / "views").mkdir()
    (directory / "views" / "sales.yaml").write_text(f"""
name: sales
cubes:
  - {{path: purchases, includes: "*"}}
  - {{path: purchases.products, includes: [category]}}
rollups:
{rollups}
""")
    return model(directory)


def test_a_rollup_only_keeps_what_adds_up(tmp_path):
    with pytest.raises(ModelError, match="distinct count does not add up"):
        sales_with_rollups(tmp_path, "  - {name: daily, dimensions: [category], measures: [purchases]}")


@pytest.mark.parametrize("rollup", ["sales_daily", "sales_monthly"])  # the monthly one is summed from the daily one
def test_a_rollup_that_does_not_add_up_blocks_publication(published_sample, tmp_path, rollup):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(published_sample, warehouse)
    check = next(c for c in rollup_checks if any(k.asset_key.path[-1] == rollup for k in c.check_keys))
    assert all(spec.blocking for spec in check.check_specs)
    assert check(warehouse=DuckDBResource(database=str(warehouse))).passed
    with duckdb.connect(str(warehouse)) as tampered:
        tampered.execute(f"UPDATE semantic.{rollup} SET total_spend = total_spend + 1 WHERE rowid = 0")
    result = check(warehouse=DuckDBResource(database=str(warehouse)))
    assert not result.passed
    assert set(result.metadata["differences"].value) == {"total_spend"}


def test_a_snapshot_published_before_a_rollup_existed_is_answered_from_the_detail(published_sample, tmp_path):
    from product_affinity.delivery.service import DeliveryService
    from product_affinity.governance.credentials import Caller
    from product_affinity.publication import publish

    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(published_sample, warehouse)
    with duckdb.connect(str(warehouse)) as older:
        older.execute("DROP TABLE semantic.sales_monthly")
        publish(older, warehouse, "before-the-monthly-rollup")
    query = Query.model_validate({"measures": ["sales.total_spend"], "timeDimensions": [MONTHS]})
    result = DeliveryService(warehouse).load(Caller(principal("steward"), "test"), query, "test")
    assert result.rollup == "semantic.sales_daily" and result.rows


def test_a_rollup_summed_from_a_finer_one_holds_what_the_detail_gives(published_sample):
    """The monthly sales are summed from the daily rollup's rows: the same rows and column types as from the lines."""
    monthly = next(r for r in model().views["sales"].rollups if r.name == "monthly")
    assert compiler.finer_rollup(monthly).name == "daily"
    summed, from_detail = compiler.rollup_sql(monthly), compiler.rollup_sql(monthly, from_detail=True)
    assert "semantic.sales_daily" in summed and "semantic.sales_daily" not in from_detail
    with duckdb.connect(str(published_sample), read_only=True) as conn:
        conn.execute(f"CREATE TEMP TABLE summed AS {summed}")
        conn.execute(f"CREATE TEMP TABLE from_detail AS {from_detail}")
        assert conn.execute("SELECT count(*) FROM from_detail").fetchone()[0] > 100
        assert conn.execute("DESCRIBE summed").fetchall() == conn.execute("DESCRIBE from_detail").fetchall()
        assert conn.execute("""SELECT (SELECT count(*) FROM (FROM summed EXCEPT ALL FROM from_detail)),
            (SELECT count(*) FROM (FROM from_detail EXCEPT ALL FROM summed))""").fetchone() == (0, 0)


def test_a_rollup_is_summed_only_from_one_that_holds_more_detail(tmp_path, monkeypatch):
    """Every dimension and part kept, a grain that truncates to its own, strictly more detail: never two rollups built
    from each other, never a weekly rollup for months."""
    custom = sales_with_rollups(tmp_path, """\
  - {name: by_channel_month, time_dimension: purchased_at, granularity: month, dimensions: [channel], measures: [total_spend]}
  - {name: by_week, time_dimension: purchased_at, granularity: week, dimensions: [channel, category], measures: [total_spend, lines]}
  - {name: by_day, time_dimension: purchased_at, granularity: day, dimensions: [channel, category], measures: [total_spend, lines]}
  - {name: twin_of_by_day, time_dimension: purchased_at, granularity: day, dimensions: [category, channel], measures: [lines]}
  - {name: by_channel, dimensions: [channel], measures: [total_spend]}
  - {name: average_by_category, dimensions: [category], measures: [deal_share]}
""")
    monkeypatch.setattr(compiler, "model", lambda: custom)
    finer = {r.name: getattr(compiler.finer_rollup(r), "name", None) for r in custom.views["sales"].rollups}
    assert finer == {
        "by_channel_month": "by_day",  # not by_week: weeks straddle months
        "by_week": "by_day",
        "by_day": None,  # its twin holds no more detail (and not total_spend)
        "twin_of_by_day": None,  # by_day holds its parts, but in no more detail
        "by_channel": "by_channel_month",
        "average_by_category": None,  # deal_share's parts are in no other rollup
    }
