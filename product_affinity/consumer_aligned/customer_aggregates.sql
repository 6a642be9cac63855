-- Per customer who bought, the aggregates of their purchase lines: orders, spend, first and last purchase, categories.
-- One text in DuckDB's dialect for both engines: DuckDB runs it on the warehouse's lines, Spark runs what SQLGlot makes
-- of it on the lines' Parquet files (spark_counts). Placeholders: the lines, a relation with the columns of
-- daily_counts.lines_sql (each purchase line with its product's category); the purchases, the same lines with or
-- without the category (only the categories read it: the join to the products cost DuckDB 1.5 s of 3.9 at Instacart
-- scale where it was not needed); and each measure as metrics.py defines it.
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
    SELECT customer_id, {categories_bought} AS categories_bought FROM {lines} GROUP BY customer_id
)
SELECT b.*, k.categories_bought FROM by_customer AS b JOIN categories AS k ON k.customer_id = b.customer_id
