-- One level's recommendations with the item's name and expected value, from what recommendations.py works out:
-- {ranked} (each customer's items in order, scored by their best rule). Placeholders: the level's item and item name
-- expressions over the purchase lines joined to their product, the baskets each item is in (native, baskets), the
-- product table, and the expected value as metrics.py defines it.
WITH item_value AS (  -- typical spend on the item in an order that contains it: its spend over its baskets
    SELECT s.item, CAST(s.spend AS DOUBLE) / CAST(b.baskets AS DOUBLE) AS typical_spend
    FROM (SELECT {item} AS item, sum(p.quantity * p.unit_price) AS spend FROM {item_lines}
          WHERE {item} IN (SELECT item FROM {ranked}) GROUP BY item) AS s
    JOIN ({item_baskets}) AS b ON b.native = s.item
), item_name AS (
    SELECT DISTINCT {item} AS item, {item_name} AS name FROM {products} AS pr
)
SELECT customer_id, level, rank, CAST(item AS VARCHAR) AS recommended_item,
       name AS recommended_name, score, rule_id, {expected_value} AS expected_value
FROM {ranked} JOIN item_value USING (item) JOIN item_name USING (item)
