"""One row per customer: purchase behaviour, value and cross-sell opportunity (definitions in metrics.py).

The predicted value comes from the BG/NBD and Gamma-Gamma models (clv.py), fitted in Python on every buyer's
summary and joined in as the registered frame PREDICTIONS."""

from __future__ import annotations

from product_affinity.consumer_aligned import metrics
from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES
from product_affinity.contract.odcs import table

PREDICTIONS = "_clv_predictions"


def customer_metrics_sql(window_days: int) -> str:
    return f"""
    WITH as_of AS (
        SELECT max(purchased_at) AS as_of FROM {PURCHASES}
    ), orders AS (
        SELECT customer_id, order_id, min(purchased_at) AS purchased_at, sum(quantity * unit_price) AS amount
        FROM {PURCHASES} GROUP BY customer_id, order_id
    ), by_customer AS (
        SELECT customer_id,
               count(*) AS orders,
               {metrics.purchase_frequency(window_days)} AS purchase_frequency,
               {metrics.purchase_frequency_per_month(window_days)} AS purchase_frequency_per_month,
               {metrics.total_spend()} AS total_spend,
               {metrics.average_order_value()} AS average_order_value,
               {metrics.recency_days()} AS recency_days,
               min(purchased_at) AS first_purchase_at,
               max(purchased_at) AS last_purchase_at,
               {metrics.customer_lifetime_value()} AS customer_lifetime_value
        FROM orders, as_of GROUP BY customer_id
    ), categories AS (
        SELECT p.customer_id, {metrics.categories_bought()} AS categories_bought
        FROM {PURCHASES} AS p JOIN {PRODUCTS} USING (product_id) GROUP BY p.customer_id
    ), opportunity AS (
        SELECT customer_id, {metrics.cross_sell_opportunity_score()} AS cross_sell_opportunity_score
        FROM {table('cross_sell_recommendations').physical_name} WHERE level = 'category' GROUP BY customer_id
    )
    SELECT c.customer_id,
           coalesce(b.orders, 0) AS orders,
           coalesce(b.purchase_frequency, 0) AS purchase_frequency,
           coalesce(b.purchase_frequency_per_month, 0) AS purchase_frequency_per_month,
           coalesce(b.total_spend, 0) AS total_spend,
           b.average_order_value, b.recency_days, b.first_purchase_at, b.last_purchase_at,
           coalesce(k.categories_bought, 0) AS categories_bought,
           coalesce(b.customer_lifetime_value, 0) AS customer_lifetime_value,
           {metrics.probability_alive()} AS probability_alive,
           {metrics.expected_orders()} AS expected_orders,
           {metrics.expected_spend()} AS expected_spend,
           {metrics.predicted_customer_lifetime_value()} AS predicted_customer_lifetime_value,
           coalesce(o.cross_sell_opportunity_score, 0) AS cross_sell_opportunity_score
    FROM {table('customer').physical_name} AS c
    LEFT JOIN by_customer AS b USING (customer_id)
    LEFT JOIN categories AS k USING (customer_id)
    LEFT JOIN opportunity AS o USING (customer_id)
    LEFT JOIN {PREDICTIONS} AS p USING (customer_id)
    """
