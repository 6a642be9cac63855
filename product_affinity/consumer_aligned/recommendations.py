"""Cross-sell recommendations: for each customer, the items they do not buy yet that rules say they would.

A rule applies to a customer when they have bought every antecedent and not the (single)
consequent, and when its lift is above 1. Per customer and item the best applicable rule (highest
confidence, then lift) gives the score; the top items per customer are kept.

The rules and the purchase lines are the output port and the accepted lines unless given other
tables of the same columns (the backtest recommends from rules mined before its cut-off, and only to
the customers it evaluates).
"""

from __future__ import annotations

import duckdb

from product_affinity.consumer_aligned import metrics
from product_affinity.consumer_aligned.baskets import ITEM, ITEM_NAME, ITEM_TYPE, LEVELS, PRODUCTS, PURCHASES, item_lines
from product_affinity.contract.odcs import table

RULES = table("association_rules").physical_name


def _prepare(conn: duckdb.DuckDBPyConnection, level: str, rules: str, purchases: str, customers: str | None) -> None:
    """Temp tables for one level: _rules (rules that can be recommended), _profile (customer -> profile) and
    _owned (profile, item).

    Only items that appear in some rule matter, which at product level leaves out most lines; only the
    customers in `customers` (level, customer_id) get recommendations, when it is given. What a customer
    is recommended depends only on which of those items they own, their profile, so recommendations are
    worked out once per profile: with twelve categories, a few thousand profiles stand for 206k customers.
    """
    kind = ITEM_TYPE[level]
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _rules AS
        SELECT rule_id, CAST(antecedents AS {kind}[]) AS antecedents, CAST(consequents[1] AS {kind}) AS item,
               confidence, lift
        FROM {rules}
        WHERE level = '{level}' AND len(consequents) = 1 AND lift > 1"""
    )
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _profile AS
        SELECT customer_id, items, dense_rank() OVER (ORDER BY items) AS profile_id FROM (
            SELECT p.customer_id, list_sort(list(DISTINCT {ITEM[level]})) AS items FROM {item_lines(level, purchases)}
            WHERE {ITEM[level]} IN (SELECT item FROM _rules UNION SELECT unnest(antecedents) FROM _rules)
            {f"AND p.customer_id IN (SELECT customer_id FROM {customers} WHERE level = '{level}')" if customers else ""}
            GROUP BY p.customer_id
        )"""
    )
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _owned AS
        SELECT profile_id, unnest(items) AS item FROM (SELECT profile_id, any_value(items) AS items FROM _profile GROUP BY profile_id)"""
    )


def _level_sql(level: str, per_customer: int, purchases: str) -> str:
    return f"""
    WITH applicable AS (
        SELECT o.profile_id, r.rule_id  -- one antecedent: a plain join
        FROM _owned AS o JOIN _rules AS r ON len(r.antecedents) = 1 AND r.antecedents[1] = o.item
        UNION ALL
        SELECT o.profile_id, a.rule_id  -- several: every antecedent bought
        FROM _owned AS o
        JOIN (SELECT rule_id, unnest(antecedents) AS item, len(antecedents) AS needed FROM _rules
              WHERE len(antecedents) > 1) AS a USING (item)
        GROUP BY o.profile_id, a.rule_id, a.needed HAVING count(*) = a.needed
    ), best AS (
        SELECT ap.profile_id, r.item, {metrics.recommendation_score()} AS top
        FROM applicable AS ap JOIN _rules AS r USING (rule_id)
        ANTI JOIN _owned AS o ON o.profile_id = ap.profile_id AND o.item = r.item
        GROUP BY ap.profile_id, r.item
    ), ranked AS (
        SELECT profile_id, item, top.confidence AS score, top.lift, top.rule_id,
               row_number() OVER (PARTITION BY profile_id ORDER BY top.confidence DESC, top.lift DESC, item) AS rank
        FROM best QUALIFY rank <= {per_customer}
    ), item_value AS (  -- typical spend on the item in an order that contains it
        SELECT item, avg(spend) AS typical_spend FROM (
            SELECT p.order_id, {ITEM[level]} AS item, sum(p.quantity * p.unit_price) AS spend
            FROM {item_lines(level, purchases)} WHERE {ITEM[level]} IN (SELECT item FROM _rules) GROUP BY ALL
        ) GROUP BY item
    ), item_name AS (
        SELECT DISTINCT {ITEM[level]} AS item, {ITEM_NAME[level]} AS name FROM {PRODUCTS} AS pr
    )
    SELECT customer_id, '{level}' AS level, rank, CAST(item AS VARCHAR) AS recommended_item,
           name AS recommended_name, score, rule_id, {metrics.expected_value()} AS expected_value
    FROM _profile JOIN ranked USING (profile_id) JOIN item_value USING (item) JOIN item_name USING (item)"""


def build(
    conn: duckdb.DuckDBPyConnection, per_customer: int, rules: str = RULES, purchases: str = PURCHASES, customers: str | None = None
) -> str:
    """Materialize each level's recommendations (to every customer, or to those `customers` lists); return the query that unions them."""
    for level in LEVELS:
        _prepare(conn, level, rules, purchases, customers)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _recommended_{level} AS {_level_sql(level, per_customer, purchases)}")
    return " UNION ALL ".join(f"SELECT * FROM _recommended_{level}" for level in LEVELS)
