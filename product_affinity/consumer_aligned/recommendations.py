"""Cross-sell recommendations: for each customer, the items they do not buy yet that rules say they would."""

from __future__ import annotations

from product_affinity.consumer_aligned import metrics
from product_affinity.consumer_aligned.baskets import ITEM, ITEM_NAME, LEVELS, LINES


def _level_sql(level: str, per_customer: int) -> str:
    """A rule applies to a customer when they have bought every antecedent and not the (single) consequent."""
    return f"""
    SELECT * FROM (
        WITH rules AS (
            SELECT rule_id, antecedents, consequents[1] AS item, confidence, lift
            FROM consumer_aligned.association_rules
            WHERE level = '{level}' AND len(consequents) = 1 AND lift > 1
        ), antecedent AS (
            SELECT rule_id, unnest(antecedents) AS item, len(antecedents) AS needed FROM rules
        ), owned AS (
            SELECT DISTINCT p.customer_id, {ITEM[level]} AS item FROM {LINES}
        ), applicable AS (
            SELECT o.customer_id, a.rule_id
            FROM owned AS o JOIN antecedent AS a USING (item)
            GROUP BY o.customer_id, a.rule_id, a.needed HAVING count(*) = a.needed
        ), candidates AS (
            SELECT ap.customer_id, r.item, r.rule_id, {metrics.recommendation_score()} AS score, r.lift
            FROM applicable AS ap JOIN rules AS r USING (rule_id)
            ANTI JOIN owned AS o ON o.customer_id = ap.customer_id AND o.item = r.item
            QUALIFY row_number() OVER (PARTITION BY ap.customer_id, r.item ORDER BY score DESC, r.lift DESC, r.rule_id) = 1
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY score DESC, lift DESC, item) AS rank
            FROM candidates QUALIFY rank <= {per_customer}
        ), item_value AS (  -- typical spend on the item in an order that contains it
            SELECT item, any_value(name) AS name, avg(spend) AS typical_spend FROM (
                SELECT p.order_id, {ITEM[level]} AS item, any_value({ITEM_NAME[level]}) AS name,
                       sum(p.quantity * p.unit_price) AS spend
                FROM {LINES} WHERE {ITEM[level]} IN (SELECT item FROM rules) GROUP BY ALL
            ) GROUP BY item
        )
        SELECT customer_id, '{level}' AS level, rank, item AS recommended_item, name AS recommended_name,
               score, rule_id, {metrics.expected_value()} AS expected_value
        FROM ranked JOIN item_value USING (item)
    )"""


def recommendations_sql(per_customer: int) -> str:
    return " UNION ALL ".join(_level_sql(level, per_customer) for level in LEVELS)
