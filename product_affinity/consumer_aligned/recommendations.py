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

from product_affinity import sql
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
               confidence, lift, row_number() OVER (ORDER BY confidence DESC, lift DESC, rule_id DESC) AS rule_rank
        FROM {rules}
        WHERE level = $level AND len(consequents) = 1 AND lift > 1""",
        {"level": level},
    )
    chosen = f"AND p.customer_id IN (SELECT customer_id FROM {customers} WHERE level = $level)" if customers else ""
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _profile AS
        SELECT customer_id, items, dense_rank() OVER (ORDER BY items) AS profile_id FROM (
            SELECT p.customer_id, list_sort(list(DISTINCT {ITEM[level]})) AS items FROM {item_lines(level, purchases)}
            WHERE {ITEM[level]} IN (SELECT item FROM _rules UNION SELECT unnest(antecedents) FROM _rules) {chosen}
            GROUP BY p.customer_id
        )""",
        {"level": level} if customers else None,
    )
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _owned AS
        SELECT profile_id, unnest(items) AS item FROM (SELECT profile_id, any_value(items) AS items FROM _profile GROUP BY profile_id)"""
    )


def build(
    conn: duckdb.DuckDBPyConnection, per_customer: int, rules: str = RULES, purchases: str = PURCHASES, customers: str | None = None
) -> str:
    """Materialize each level's recommendations (to every customer, or to those `customers` lists); return the query that unions them."""
    for level in LEVELS:
        _prepare(conn, level, rules, purchases, customers)
        statement = sql.load(__file__, "recommendations.sql").format(
            item=ITEM[level], item_name=ITEM_NAME[level], item_lines=item_lines(level, purchases), products=PRODUCTS,
            recommendation_score=metrics.recommendation_score(), expected_value=metrics.expected_value(),
        )
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _recommended_{level} AS {statement}", {"level": level, "per_customer": per_customer})
    return " UNION ALL ".join(f"SELECT * FROM _recommended_{level}" for level in LEVELS)
