-- One level's recommendations (the level and the number per customer are bound parameters), from the temp tables
-- recommendations._prepare builds: _rules (rules that can be recommended), _profile (customer -> profile) and
-- _owned (profile, item). Placeholders: the level's item and item name expressions over the purchase lines joined
-- to their product, the product table, and the score and expected value as metrics.py defines them.
WITH applicable AS (
    SELECT o.profile_id, r.rule_id  -- one antecedent: a plain join
    FROM _owned AS o JOIN _rules AS r ON len(r.antecedents) = 1 AND r.antecedents[1] = o.item
    UNION ALL
    SELECT o.profile_id, a.rule_id  -- several: every antecedent bought
    FROM _owned AS o
    JOIN (SELECT rule_id, unnest(antecedents) AS item, len(antecedents) AS needed FROM _rules
          WHERE len(antecedents) > 1) AS a USING (item)
    GROUP BY o.profile_id, a.rule_id, a.needed HAVING count(*) = a.needed
), best AS (  -- per profile and item not owned, the rank of the best applicable rule
    SELECT ap.profile_id, r.item, {recommendation_score} AS top_rank
    FROM applicable AS ap JOIN _rules AS r USING (rule_id)
    ANTI JOIN _owned AS o ON o.profile_id = ap.profile_id AND o.item = r.item
    GROUP BY ap.profile_id, r.item
), ranked AS (
    SELECT b.profile_id, b.item, r.confidence AS score, r.lift, r.rule_id,
           row_number() OVER (PARTITION BY b.profile_id ORDER BY r.confidence DESC, r.lift DESC, b.item) AS rank
    FROM best AS b JOIN _rules AS r ON r.rule_rank = b.top_rank QUALIFY rank <= $per_customer
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
FROM _profile JOIN ranked USING (profile_id) JOIN item_value USING (item) JOIN item_name USING (item)
