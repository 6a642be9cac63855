-- Per complete calendar month (the first and the current, partial, months left out), the counts the KPI tree's
-- nodes are measured from (kpi_tree.MEASURES). Placeholders: the purchase lines joined to their product, and the
-- product table, as the contract names them.
WITH line AS (
    SELECT p.customer_id, p.order_id, date_trunc('month', p.purchased_at)::DATE AS month, pr.category,
           p.quantity * p.unit_price AS amount
    FROM {lines}
), calendar AS (
    SELECT unnest(generate_series(min(month), max(month), INTERVAL 1 MONTH))::DATE AS month FROM line
), first_in_category AS (
    SELECT customer_id, category, min(month) AS month FROM line GROUP BY customer_id, category
), first_order AS (  -- the least of the first months by category: 1.1M rows read, not 33M
    SELECT customer_id, min(month) AS month FROM first_in_category GROUP BY customer_id
), active AS (  -- orders counted as groups, not as a distinct aggregate beside the sum: one pass, not two
    SELECT month, customer_id, count(*) AS orders, sum(spend) AS spend
    FROM (SELECT month, customer_id, order_id, sum(amount) AS spend FROM line GROUP BY ALL) GROUP BY ALL
), buyers AS (  -- each active customer: categories bought before the month, and first bought in it
    SELECT a.month, a.customer_id, any_value(a.orders) AS orders, any_value(a.spend) AS spend,
           count(*) FILTER (WHERE c.month < a.month) AS tried_before,
           count(*) FILTER (WHERE c.month = a.month) AS tried_now
    FROM active AS a JOIN first_in_category AS c ON c.customer_id = a.customer_id AND c.month <= a.month
    GROUP BY ALL
), per_month AS (
    SELECT month,
           count(*) FILTER (WHERE tried_before > 0) AS returning_buyers,
           count(*) FILTER (WHERE tried_before > 0 AND tried_before < (SELECT count(DISTINCT category) FROM {products})) AS with_headroom,
           count(*) FILTER (WHERE tried_before > 0 AND tried_now > 0) AS expanding_customers,
           count(*) AS active_customers, sum(orders) AS orders, sum(spend) AS revenue
    FROM buyers GROUP BY month
), cumulative AS (
    SELECT c.month,
           sum(coalesce(n.customers, 0)) OVER (ORDER BY c.month) AS customers_to_date,
           sum(coalesce(k.pairs, 0)) OVER (ORDER BY c.month) AS customer_categories_to_date,
           sum(coalesce(p.revenue, 0)) OVER (ORDER BY c.month) AS revenue_to_date
    FROM calendar AS c
    LEFT JOIN (SELECT month, count(*) AS customers FROM first_order GROUP BY month) AS n USING (month)
    LEFT JOIN (SELECT month, count(*) AS pairs FROM first_in_category GROUP BY month) AS k USING (month)
    LEFT JOIN per_month AS p USING (month)
)
SELECT c.month,
       c.customers_to_date - coalesce(n.customers, 0) AS customer_base,
       coalesce(p.returning_buyers, 0) AS returning_buyers, coalesce(p.with_headroom, 0) AS with_headroom,
       coalesce(p.expanding_customers, 0) AS expanding_customers, coalesce(p.active_customers, 0) AS active_customers,
       coalesce(p.orders, 0) AS orders, coalesce(p.revenue, 0)::DOUBLE AS revenue,
       c.customers_to_date, c.customer_categories_to_date, c.revenue_to_date::DOUBLE AS revenue_to_date,
       (SELECT count(DISTINCT category) FROM {products}) AS categories
FROM cumulative AS c
LEFT JOIN (SELECT month, count(*) AS customers FROM first_order GROUP BY month) AS n USING (month)
LEFT JOIN per_month AS p USING (month)
WHERE c.month > (SELECT min(month) FROM calendar) AND c.month < (SELECT max(month) FROM calendar)
ORDER BY c.month
