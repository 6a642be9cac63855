-- The category affinity matrix: every ordered pair of distinct categories, from a table of baskets (basket, item)
-- and one of item labels (item, label). Pairs never bought together are kept, with support, confidence and lift 0.
-- Placeholders: the two tables, and the measures as metrics.py defines them.
WITH baskets AS (SELECT count(DISTINCT basket) AS baskets FROM {basket_items}),
per_item AS (SELECT item, count(*) AS with_item FROM {basket_items} GROUP BY item),
pairs AS (
    SELECT a.item AS item_1, b.item AS item_2, count(*) AS together
    FROM {basket_items} AS a JOIN {basket_items} AS b ON a.basket = b.basket AND a.item <> b.item
    GROUP BY ALL
), grid AS (
    SELECT x.item AS item_1, y.item AS item_2, x.with_item AS with_antecedent, y.with_item AS with_consequent,
           coalesce(pairs.together, 0) AS together, baskets
    FROM per_item AS x JOIN per_item AS y ON x.item <> y.item
    LEFT JOIN pairs ON pairs.item_1 = x.item AND pairs.item_2 = y.item, baskets
)
SELECT l1.label AS category_1, l2.label AS category_2,
       {support} AS support, {confidence} AS confidence, {lift} AS lift,
       together AS baskets_with_both
FROM grid JOIN {labels} AS l1 ON l1.item = item_1 JOIN {labels} AS l2 ON l2.item = item_2
