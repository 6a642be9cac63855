-- One row per customer: purchase behaviour and categories bought (the aggregates of customer_aggregates.sql, computed
-- by the run's engine), the cross-sell opportunity (from the category recommendations) and the BG/NBD and Gamma-Gamma
-- predictions (the frame customer_metrics.py registers).
-- Placeholders: the contract's tables, the aggregates' relation, and each measure as metrics.py defines it.
WITH opportunity AS (
    SELECT customer_id, {cross_sell_opportunity_score} AS cross_sell_opportunity_score
    FROM {recommendations} WHERE level = 'category' GROUP BY customer_id
)
SELECT c.customer_id,
       coalesce(b.orders, 0) AS orders,
       coalesce(b.purchase_frequency, 0) AS purchase_frequency,
       coalesce(b.purchase_frequency_per_month, 0) AS purchase_frequency_per_month,
       coalesce(b.total_spend, 0) AS total_spend,
       b.average_order_value, b.recency_days, b.first_purchase_at, b.last_purchase_at,
       coalesce(b.categories_bought, 0) AS categories_bought,
       coalesce(b.customer_lifetime_value, 0) AS customer_lifetime_value,
       {probability_alive} AS probability_alive,
       {expected_orders} AS expected_orders,
       {expected_spend} AS expected_spend,
       {predicted_customer_lifetime_value} AS predicted_customer_lifetime_value,
       coalesce(o.cross_sell_opportunity_score, 0) AS cross_sell_opportunity_score
FROM {customers} AS c
LEFT JOIN {aggregates} AS b USING (customer_id)
LEFT JOIN opportunity AS o USING (customer_id)
LEFT JOIN {predictions} AS p USING (customer_id)
