-- One level's recommendations (the level is a bound parameter), from what recommendations.py works out: _rules
-- (rules that can be recommended) and {chosen} (each customer's items: rank and the choice order of the item's best
-- rule). Placeholders: the level's item and item name expressions over the purchase lines joined to their product,
-- the product table, and the score and expected value as metrics.py defines them.
WITH ranked AS (
    SELECT c.customer_id, c.rank, r.item, {recommendation_score} AS score, r.rule_id
    FROM {chosen} AS c JOIN _rules AS r USING (choice_order)
), item_value AS (  -- typical spend on the item in an order that contains it
    SELECT item, avg(spend) AS typical_spend FROM (
        SELECT p.order_id, {item} AS item, sum(p.quantity * p.unit_price) AS spend
        FROM {item_lines} WHERE {item} IN (SELECT item FROM _rules) GROUP BY ALL
    ) GROUP BY item
), item_name AS (
    SELECT DISTINCT {item} AS item, {item_name} AS name FROM {products} AS pr
)
SELECT customer_id, $level AS level, rank, CAST(item AS VARCHAR) AS recommended_item,
       name AS recommended_name, score, rule_id, {expected_value} AS expected_value
FROM ranked JOIN item_value USING (item) JOIN item_name USING (item)
