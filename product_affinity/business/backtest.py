"""Does the cross-sell score predict purchases? A backtest of the recommendations against a popularity baseline.

The history is cut `holdout_days` before the latest purchase. Rules are mined from the lines bought
before the cut-off, and recommendations made from them, by the very code that builds the output
ports (association_rules.mine_all_levels, recommendations.build). The baseline recommends to the
same customers the most popular items (most baskets before the cut-off) they had not bought yet.
Both are judged on what customers bought after the cut-off that they had never bought before it:

- customers evaluated: bought before the cut-off, and after it bought at least one item (category
  or product) new to them; the same customers for both recommenders
- hit rate at k: share of those customers for whom at least one of the top k recommendations is
  among the new items they bought
- precision at k: recommended items bought / (k x customers evaluated), so a customer the score
  has fewer than k recommendations for (or none) counts the empty places as misses
- hit rate over all customers: hits / every customer who bought before the cut-off, whether or not they
  bought anything (new) after it: what a campaign sent to the whole active base would convert, where
  the hit rate above is conditional on the customer buying something new
"""

from __future__ import annotations

from datetime import timedelta

import duckdb

from product_affinity.consumer_aligned import recommendations
from product_affinity.consumer_aligned.association_rules import Thresholds, mine_all_levels
from product_affinity.consumer_aligned.baskets import ITEM, LEVELS, PURCHASES, item_lines
from product_affinity.contract.odcs import table
from product_affinity.warehouse import typed_columns

RECOMMENDERS = ("cross_sell_score", "most_popular")
TRAINING, HOLDOUT, TRAINING_RULES, RECOMMENDED = "_backtest_training", "_backtest_holdout", "_backtest_rules", "_backtest_recommended"
OWNED, NEW, EVALUATED = "_backtest_owned", "_backtest_new", "_backtest_evaluated"


def _items_sql(purchases: str) -> str:
    """Distinct (level, customer, item) bought in `purchases`, items as text like recommended_item."""
    return " UNION ALL ".join(
        f"SELECT DISTINCT '{level}' AS level, p.customer_id, CAST({ITEM[level]} AS VARCHAR) AS item FROM {item_lines(level, purchases)}"
        for level in LEVELS
    )


def _most_popular_sql(level: str, per_customer: int) -> str:
    """Per evaluated customer, the `per_customer` items in most baskets before the cut-off that they had not bought.

    A customer who owns n items needs at most the n + per_customer most popular ones to find per_customer
    they do not own, so candidates stay linear in the purchases rather than customers x items.
    """
    return f"""
    WITH owned AS (SELECT customer_id, item FROM {OWNED} SEMI JOIN {EVALUATED} USING (level, customer_id) WHERE level = '{level}'),
    ranked AS (
        SELECT CAST(native AS VARCHAR) AS item, row_number() OVER (ORDER BY baskets DESC, native) AS popularity_rank
        FROM (SELECT {ITEM[level]} AS native, count(DISTINCT p.order_id) AS baskets FROM {item_lines(level, TRAINING)} GROUP BY ALL)
    ), buyers AS (SELECT customer_id, count(*) AS owned_items FROM owned GROUP BY customer_id)
    SELECT b.customer_id, '{level}' AS level,
           row_number() OVER (PARTITION BY b.customer_id ORDER BY r.popularity_rank) AS rank,
           r.item AS recommended_item, 'most_popular' AS recommender
    FROM buyers AS b JOIN ranked AS r ON r.popularity_rank <= b.owned_items + {per_customer}
    ANTI JOIN owned AS o ON o.customer_id = b.customer_id AND o.item = r.item
    QUALIFY rank <= {per_customer}"""


def _evaluation_sql(per_customer: int, cutoff: str) -> str:
    recommenders = ", ".join(f"('{r}')" for r in RECOMMENDERS)
    return f"""
    WITH grid AS (
        SELECT e.level, e.customer_id, m.recommender, k.k
        FROM {EVALUATED} AS e, (VALUES {recommenders}) AS m(recommender), (SELECT unnest(range(1, {per_customer} + 1)) AS k) AS k
    ), per_customer AS (
        SELECT g.level, g.recommender, g.k, g.customer_id, count(r.recommended_item) AS recommended, count(n.item) AS bought
        FROM grid AS g
        LEFT JOIN {RECOMMENDED} AS r
          ON r.level = g.level AND r.customer_id = g.customer_id AND r.recommender = g.recommender AND r.rank <= g.k
        LEFT JOIN {NEW} AS n ON n.level = r.level AND n.customer_id = r.customer_id AND n.item = r.recommended_item
        GROUP BY ALL
    ), active AS (SELECT level, count(DISTINCT customer_id) AS customers FROM {OWNED} GROUP BY level)
    SELECT level, recommender, k,
           TIMESTAMP '{cutoff}' AS cutoff_at, (SELECT max(purchased_at) FROM {HOLDOUT}) AS evaluated_until,
           count(*) AS customers_evaluated,
           count(*) FILTER (WHERE recommended > 0) AS customers_recommended,
           count(*) FILTER (WHERE bought > 0) AS hits,
           sum(bought) AS recommendations_bought,
           count(*) FILTER (WHERE bought > 0) / count(*) AS hit_rate,
           sum(bought) / (k * count(*)) AS precision_at_k,
           any_value(a.customers) AS customers_before_cutoff,
           count(*) FILTER (WHERE bought > 0) / any_value(a.customers) AS hit_rate_all_customers
    FROM per_customer JOIN active AS a USING (level) GROUP BY level, recommender, k"""


def backtest_sql(
    conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], per_customer: int, holdout_days: int
) -> str:
    """Mine, recommend and recommend the baseline as of the cut-off (temp tables); return the query scoring both.

    Only the customers evaluated get recommendations: nobody else's are ever scored.
    """
    as_of = conn.execute(f"SELECT max(purchased_at) FROM {PURCHASES}").fetchone()[0]
    cutoff = (as_of - timedelta(days=holdout_days)).isoformat(sep=" ") if as_of else "infinity"
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {TRAINING} AS FROM {PURCHASES} WHERE purchased_at < TIMESTAMP '{cutoff}'")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {HOLDOUT} AS FROM {PURCHASES} WHERE purchased_at >= TIMESTAMP '{cutoff}'")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {OWNED} AS {_items_sql(TRAINING)}")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {NEW} AS FROM ({_items_sql(HOLDOUT)}) ANTI JOIN {OWNED} USING (level, customer_id, item)")
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE {EVALUATED} AS  -- bought before the cut-off, and something new after it
        SELECT DISTINCT level, customer_id FROM {NEW} SEMI JOIN {OWNED} USING (level, customer_id)""")

    mined = mine_all_levels(conn, thresholds, TRAINING)
    conn.register("_mined_before_cutoff", mined)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {TRAINING_RULES} AS SELECT {typed_columns(table('association_rules'))} FROM _mined_before_cutoff")
    conn.unregister("_mined_before_cutoff")

    scored = recommendations.build(conn, per_customer, rules=TRAINING_RULES, purchases=TRAINING, customers=EVALUATED)
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE {RECOMMENDED} AS
        SELECT customer_id, level, rank, recommended_item, '{RECOMMENDERS[0]}' AS recommender FROM ({scored})
        UNION ALL {" UNION ALL ".join(f"FROM ({_most_popular_sql(level, per_customer)})" for level in LEVELS)}"""
    )
    return _evaluation_sql(per_customer, cutoff)
