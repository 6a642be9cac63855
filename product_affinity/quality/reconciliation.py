"""Figures recomputed straight from the accepted purchase lines, to reconcile the output ports with (accuracy).

Each is a query over the rows being checked (the temp table `checked_rows`) that returns the join
columns and one recomputed column; the contract's accuracy rules compare it with the published
figure. The recomputations take their own route to the answer rather than reuse the asset's SQL,
so a bug in one does not hide in both.
"""

from __future__ import annotations

from dataclasses import dataclass

from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES
from product_affinity.contract.odcs import table
from product_affinity.product.descriptor import alignment

CHECKED = "checked_rows"
# Product rules recounted per run: a reproducible sample, because recounting thousands of product
# pairs over tens of millions of lines costs as much as mining them. Category rules are all recounted.
PRODUCT_RULES_RECOUNTED = 100

# Orders grouped by the set of categories they hold, as a bit mask: at most 2^categories groups,
# so testing every category rule or pair against them costs nothing whatever the number of orders.
_CATEGORY_SETS = f"""
category_bit AS (
    SELECT category, (row_number() OVER (ORDER BY category) - 1)::UTINYINT AS bit
    FROM (SELECT DISTINCT category FROM {PRODUCTS})
), category_sets AS (
    SELECT mask, count(*) AS baskets FROM (
        SELECT bit_or(1::UHUGEINT << c.bit) AS mask
        FROM {PURCHASES} AS p JOIN {PRODUCTS} AS pr USING (product_id)
        JOIN category_bit AS c USING (category)
        GROUP BY p.order_id
    ) GROUP BY mask
)"""


@dataclass(frozen=True)
class Recomputation:
    join_on: tuple[str, ...]
    sql: str


RECOMPUTED: dict[str, Recomputation] = {
    "recomputed_total_spend": Recomputation(
        ("customer_id",),
        f"""SELECT c.customer_id, coalesce(sum(p.quantity * p.unit_price), 0) AS recomputed_total_spend
        FROM (SELECT DISTINCT customer_id FROM {CHECKED}) AS c
        LEFT JOIN source_aligned.purchase AS p USING (customer_id) GROUP BY c.customer_id""",
    ),
    "recounted_support_count": Recomputation(
        ("rule_id",),
        f"""WITH {_CATEGORY_SETS}, category_rules AS (
            SELECT rule_id, bit_or(1::UHUGEINT << c.bit) AS mask, count(c.bit) = count(*) AS known
            FROM (SELECT DISTINCT rule_id, unnest(antecedents || consequents) AS category FROM {CHECKED} WHERE level = 'category')
            LEFT JOIN category_bit AS c USING (category) GROUP BY rule_id
        ), product_rules AS (
            SELECT rule_id, TRY_CAST(unnest(items) AS BIGINT) AS product_id, len(items) AS size
            FROM (SELECT rule_id, list_distinct(antecedents || consequents) AS items
                  FROM (SELECT DISTINCT rule_id, antecedents, consequents FROM {CHECKED} WHERE level = 'product')
                  USING SAMPLE reservoir({PRODUCT_RULES_RECOUNTED} ROWS) REPEATABLE (7))
        ), product_lines AS (
            SELECT DISTINCT order_id, product_id FROM {PURCHASES}
            WHERE product_id IN (SELECT product_id FROM product_rules)
        ), product_baskets AS (
            SELECT r.rule_id FROM product_rules AS r JOIN product_lines AS l USING (product_id)
            GROUP BY r.rule_id, l.order_id, r.size HAVING count(*) = r.size
        )
        SELECT r.rule_id, coalesce(sum(s.baskets), 0) AS recounted_support_count
        FROM category_rules AS r LEFT JOIN category_sets AS s ON s.mask & r.mask = r.mask
        WHERE r.known GROUP BY r.rule_id
        UNION ALL
        SELECT r.rule_id, count(b.rule_id) FROM (SELECT DISTINCT rule_id FROM product_rules) AS r
        LEFT JOIN product_baskets AS b USING (rule_id) GROUP BY r.rule_id""",
    ),
    "recounted_baskets_with_both": Recomputation(
        ("category_1", "category_2"),
        f"""WITH {_CATEGORY_SETS}
        SELECT pair.category_1, pair.category_2, coalesce(sum(s.baskets), 0) AS recounted_baskets_with_both
        FROM (SELECT DISTINCT category_1, category_2 FROM {CHECKED}) AS pair
        JOIN category_bit AS a ON a.category = pair.category_1 JOIN category_bit AS b ON b.category = pair.category_2
        LEFT JOIN category_sets AS s ON s.mask & ((1::UHUGEINT << a.bit) | (1::UHUGEINT << b.bit)) = (1::UHUGEINT << a.bit) | (1::UHUGEINT << b.bit)
        GROUP BY ALL""",
    ),
    "recounted_north_star": Recomputation(
        ("month", "node_id"),
        f"""WITH first_in_category AS (
            SELECT p.customer_id, pr.category, min(p.purchased_at) AS first_at
            FROM {PURCHASES} AS p JOIN {PRODUCTS} AS pr USING (product_id) GROUP BY ALL
        ), first_order AS (SELECT customer_id, min(purchased_at) AS first_at FROM {PURCHASES} GROUP BY ALL)
        SELECT m.month, m.node_id, count(DISTINCT f.customer_id) FILTER (WHERE o.first_at < m.month) AS recounted_north_star
        FROM (SELECT DISTINCT month, node_id FROM {CHECKED} WHERE node_id = '{alignment()["northStar"]["id"]}') AS m
        LEFT JOIN first_in_category AS f ON f.first_at >= m.month AND f.first_at < m.month + INTERVAL 1 MONTH
        LEFT JOIN first_order AS o USING (customer_id)
        GROUP BY ALL""",
    ),
    "confidence_of_rule": Recomputation(
        ("rule_id",),
        f"""SELECT rule_id, confidence AS confidence_of_rule FROM {table("association_rules").physical_name}
        WHERE rule_id IN (SELECT rule_id FROM {CHECKED})""",
    ),
}
