-- The category affinity matrix: every ordered pair of distinct categories bought, from the per-day counts of every
-- day counted (all history, whatever the rules' window). Pairs never bought together are kept, with support,
-- confidence and lift 0. Placeholders: the per-day baskets and category itemsets, and the measures as metrics.py
-- defines them.
WITH baskets AS (SELECT sum(baskets)::BIGINT AS baskets FROM {day_baskets}),
itemsets AS (  -- singletons and pairs of categories, each as a sorted list, over every day
    SELECT items, sum(baskets)::BIGINT AS baskets FROM {day_category_itemsets} WHERE len(items) <= 2 GROUP BY items
), per_item AS (SELECT items[1] AS item, baskets AS with_item FROM itemsets WHERE len(items) = 1),
pairs AS (  -- both orders of each pair
    SELECT items[1] AS item_1, items[2] AS item_2, baskets AS together FROM itemsets WHERE len(items) = 2
    UNION ALL SELECT items[2], items[1], baskets FROM itemsets WHERE len(items) = 2
), grid AS (
    SELECT x.item AS item_1, y.item AS item_2, x.with_item AS with_antecedent, y.with_item AS with_consequent,
           coalesce(pairs.together, 0) AS together, baskets
    FROM per_item AS x JOIN per_item AS y ON x.item <> y.item
    LEFT JOIN pairs ON pairs.item_1 = x.item AND pairs.item_2 = y.item, baskets
)
SELECT item_1 AS category_1, item_2 AS category_2,
       {support} AS support, {confidence} AS confidence, {lift} AS lift,
       together AS baskets_with_both
FROM grid
