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

from collections.abc import Callable
from datetime import timedelta

import duckdb

from product_affinity import sql
from product_affinity.consumer_aligned import recommendations
from product_affinity.consumer_aligned.association_rules import Thresholds, mine_all_levels
from product_affinity.consumer_aligned.baskets import ITEM, LEVELS, PURCHASES, item_lines
from product_affinity.contract.odcs import table
from product_affinity.warehouse import typed_columns

RECOMMENDERS = ("cross_sell_score", "most_popular")
TRAINING, HOLDOUT, TRAINING_RULES, RECOMMENDED = "_backtest_training", "_backtest_holdout", "_backtest_rules", "_backtest_recommended"
OWNED, NEW, EVALUATED, SCORED = "_backtest_owned", "_backtest_new", "_backtest_evaluated", "_backtest_scored"


def _items_sql(purchases: str, level: str) -> str:
    """Distinct (level, customer, item) bought in `purchases` at the level bound as $level, items as text like
    recommended_item. Made distinct on the item's own type first, then cast: distinct text of 30M lines took a third
    longer at Instacart scale."""
    return f"""SELECT $level AS level, customer_id, CAST(native AS VARCHAR) AS item
        FROM (SELECT DISTINCT p.customer_id, {ITEM[level]} AS native FROM {item_lines(level, purchases)})"""


def _most_popular_sql(level: str) -> str:
    """Per evaluated customer, the $per_customer items in most baskets before the cut-off that they had not bought
    ($level bound; recommended by $recommender).

    A customer who owns n items needs at most the n + per_customer most popular ones to find per_customer
    they do not own, so candidates stay linear in the purchases rather than customers x items.
    """
    return f"""
    WITH owned AS (SELECT customer_id, item FROM {OWNED} SEMI JOIN {EVALUATED} USING (level, customer_id) WHERE level = $level),
    ranked AS (
        SELECT CAST(native AS VARCHAR) AS item, row_number() OVER (ORDER BY baskets DESC, native) AS popularity_rank
        FROM (SELECT native, count(*) AS baskets
              FROM (SELECT DISTINCT p.order_id, {ITEM[level]} AS native FROM {item_lines(level, TRAINING)}) GROUP BY native)
    ), buyers AS (SELECT customer_id, count(*) AS owned_items FROM owned GROUP BY customer_id)
    SELECT b.customer_id, $level AS level,
           row_number() OVER (PARTITION BY b.customer_id ORDER BY r.popularity_rank) AS rank,
           r.item AS recommended_item, $recommender AS recommender
    FROM buyers AS b JOIN ranked AS r ON r.popularity_rank <= b.owned_items + $per_customer
    ANTI JOIN owned AS o ON o.customer_id = b.customer_id AND o.item = r.item
    QUALIFY rank <= $per_customer"""


def _per_level(conn: duckdb.DuckDBPyConnection, name: str, select: Callable[[str], str], create: bool, **params) -> None:
    """What `select(level)` gives for each level, with that level bound as $level, into temp table `name` (created
    from the first level when `create`, else appended to)."""
    for i, level in enumerate(LEVELS):
        into = f"CREATE OR REPLACE TEMP TABLE {name} AS" if create and i == 0 else f"INSERT INTO {name}"
        conn.execute(f"{into} {select(level)}", {"level": level, **params})


def backtest_sql(
    conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], per_customer: int, holdout_days: int
) -> str:
    """Mine, recommend and recommend the baseline as of the cut-off, score both (temp tables); return the query that
    reads the scores.

    Only the customers evaluated get recommendations: nobody else's are ever scored.
    """
    as_of = conn.execute(f"SELECT max(purchased_at) FROM {PURCHASES}").fetchone()[0]
    # The cut-off is bound once into a DuckDB variable: the training and holdout views read it (a view cannot hold a
    # bound parameter), and DuckDB folds it into a constant filter on the purchases' scan. backtest.sql reads it too.
    conn.execute("SET VARIABLE backtest_cutoff = CAST($cutoff AS TIMESTAMP)",
                 {"cutoff": as_of - timedelta(days=holdout_days) if as_of else "infinity"})
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {TRAINING} AS FROM {PURCHASES} WHERE purchased_at < getvariable('backtest_cutoff')")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {HOLDOUT} AS FROM {PURCHASES} WHERE purchased_at >= getvariable('backtest_cutoff')")
    _per_level(conn, OWNED, lambda level: _items_sql(TRAINING, level), create=True)
    _per_level(conn, NEW, lambda level: f"FROM ({_items_sql(HOLDOUT, level)}) ANTI JOIN {OWNED} USING (level, customer_id, item)",
               create=True)
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE {EVALUATED} AS  -- bought before the cut-off, and something new after it
        SELECT DISTINCT level, customer_id FROM {NEW} SEMI JOIN {OWNED} USING (level, customer_id)""")

    mined = mine_all_levels(conn, thresholds, TRAINING)
    conn.register("_mined_before_cutoff", mined)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {TRAINING_RULES} AS SELECT {typed_columns(table('association_rules'))} FROM _mined_before_cutoff")
    conn.unregister("_mined_before_cutoff")

    scored = recommendations.build(conn, per_customer, rules=TRAINING_RULES, purchases=TRAINING, customers=EVALUATED)
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE {RECOMMENDED} AS
        SELECT customer_id, level, rank, recommended_item, $recommender AS recommender FROM ({scored})""",
                 {"recommender": RECOMMENDERS[0]})
    _per_level(conn, RECOMMENDED, _most_popular_sql, create=False, per_customer=per_customer, recommender=RECOMMENDERS[1])
    evaluation = sql.load(__file__, "backtest.sql").format(
        evaluated=EVALUATED, recommended=RECOMMENDED, new=NEW, owned=OWNED, holdout=HOLDOUT)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {SCORED} AS {evaluation}",
                 {"recommenders": list(RECOMMENDERS), "per_customer": per_customer})
    return f"FROM {SCORED}"
