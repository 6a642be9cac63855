-- Both recommenders scored at every k up to the number recommended per customer (bound), on the customers evaluated:
-- hit rate and precision at k, and the hit rate over every customer who bought before the cut-off (the DuckDB
-- variable backtest.py sets). Placeholders: the temp tables backtest.py builds and the training side it keeps (the
-- lists recommended, and how many customers bought before the cut-off, counted once when trained).
WITH hits AS (  -- the new items that were recommended: only these can be hits (4.3M new items, 0.6M recommended)
    FROM {new} SEMI JOIN (SELECT level, customer_id, recommended_item AS item FROM {recommended}) USING (level, customer_id, item)
), grid AS (
    SELECT e.level, e.customer_id, m.recommender, k.k
    FROM {evaluated} AS e, (SELECT unnest($recommenders) AS recommender) AS m,
         (SELECT unnest(range(1, $per_customer + 1)) AS k) AS k
), per_customer AS (
    SELECT g.level, g.recommender, g.k, g.customer_id, count(r.recommended_item) AS recommended, count(n.item) AS bought
    FROM grid AS g
    LEFT JOIN {recommended} AS r
      ON r.level = g.level AND r.customer_id = g.customer_id AND r.recommender = g.recommender AND r.rank <= g.k
    LEFT JOIN hits AS n ON n.level = r.level AND n.customer_id = r.customer_id AND n.item = r.recommended_item
    GROUP BY ALL
), active AS (FROM {active})
SELECT level, recommender, k,
       getvariable('backtest_cutoff') AS cutoff_at, (SELECT max(purchased_at) FROM {holdout}) AS evaluated_until,
       count(*) AS customers_evaluated,
       count(*) FILTER (WHERE recommended > 0) AS customers_recommended,
       count(*) FILTER (WHERE bought > 0) AS hits,
       sum(bought) AS recommendations_bought,
       count(*) FILTER (WHERE bought > 0) / count(*) AS hit_rate,
       sum(bought) / (k * count(*)) AS precision_at_k,
       any_value(a.customers) AS customers_before_cutoff,
       count(*) FILTER (WHERE bought > 0) / any_value(a.customers) AS hit_rate_all_customers
FROM per_customer JOIN active AS a USING (level) GROUP BY level, recommender, k
