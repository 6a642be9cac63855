-- One row per customer: purchase behaviour, categories bought, the cross-sell opportunity (from the category
-- recommendations) and the BG/NBD and Gamma-Gamma predictions (the frame customer_metrics.py registers).
-- Placeholders: the contract's tables, and each measure as metrics.py defines it.
WITH as_of AS (
    SELECT max(purchased_at) AS as_of FROM {purchases}
), orders AS (
    SELECT customer_id, order_id, min(purchased_at) AS purchased_at, sum(quantity * unit_price) AS amount
    FROM {purchases} GROUP BY customer_id, order_id
), by_customer AS (
    SELECT customer_id,
           count(*) AS orders,
           {purchase_frequency} AS purchase_frequency,
           {purchase_frequency_per_month} AS purchase_frequency_per_month,
           {total_spend} AS total_spend,
           {average_order_value} AS average_order_value,
           {recency_days} AS recency_days,
           min(purchased_at) AS first_purchase_at,
           max(purchased_at) AS last_purchase_at,
           {customer_lifetime_value} AS customer_lifetime_value
    FROM orders, as_of GROUP BY customer_id
), categories AS (
    SELECT p.customer_id, {categories_bought} AS categories_bought
    FROM {purchases} AS p JOIN {products} USING (product_id) GROUP BY p.customer_id
), opportunity AS (
    SELECT customer_id, {cross_sell_opportunity_score} AS cross_sell_opportunity_score
    FROM {recommendations} WHERE level = 'category' GROUP BY customer_id
)
SELECT c.customer_id,
       coalesce(b.orders, 0) AS orders,
       coalesce(b.purchase_frequency, 0) AS purchase_frequency,
       coalesce(b.purchase_frequency_per_month, 0) AS purchase_frequency_per_month,
       coalesce(b.total_spend, 0) AS total_spend,
       b.average_order_value, b.recency_days, b.first_purchase_at, b.last_purchase_at,
       coalesce(k.categories_bought, 0) AS categories_bought,
       coalesce(b.customer_lifetime_value, 0) AS customer_lifetime_value,
       {probability_alive} AS probability_alive,
       {expected_orders} AS expected_orders,
       {expected_spend} AS expected_spend,
       {predicted_customer_lifetime_value} AS predicted_customer_lifetime_value,
       coalesce(o.cross_sell_opportunity_score, 0) AS cross_sell_opportunity_score
FROM {customers} AS c
LEFT JOIN by_customer AS b USING (customer_id)
LEFT JOIN categories AS k USING (customer_id)
LEFT JOIN opportunity AS o USING (customer_id)
LEFT JOIN {predictions} AS p USING (customer_id)
