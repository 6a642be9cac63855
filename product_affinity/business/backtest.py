"""Does the cross-sell score predict purchases? A backtest of the recommendations against a popularity baseline.

The history is cut at the start (Monday, 00:00 UTC) of the week holding the moment `holdout_days` before the
latest purchase, so the holdout is `holdout_days` to `holdout_days` + 7 days long. Rules are mined from the lines
bought before the cut-off, and recommendations made from them, by the very code that builds the output ports
(association_rules.mine_all_levels, recommendations.build). The baseline recommends to the same customers the most
popular items (most baskets before the cut-off) they had not bought yet. Both are judged on what customers bought
after the cut-off that they had never bought before it:

- customers evaluated: bought before the cut-off, and after it bought at least one item (category
  or product) new to them; the same customers for both recommenders
- hit rate at k: share of those customers for whom at least one of the top k recommendations is
  among the new items they bought
- precision at k: recommended items bought / (k x customers evaluated), so a customer the score
  has fewer than k recommendations for (or none) counts the empty places as misses
- hit rate over all customers: hits / every customer who bought before the cut-off, whether or not they
  bought anything (new) after it: what a campaign sent to the whole active base would convert, where
  the hit rate above is conditional on the customer buying something new

Why a weekly cut-off: everything before the cut-off (the items each customer owned, the rules mined, the popularity
ranking, a customer's recommendations of either kind) depends only on the lines before it, the products' categories
and the settings. That training side is kept (`keep_in`: the counts file, the pipeline's working state) with a key
of those inputs (the cut-off, the settings, and a count and hash sum of the lines before the cut-off and of the
products), and reused while the key holds: a daily run computes only the holdout's new items, recommends only to
customers evaluated for the first time, and scores. A cut-off that moved every day would change the training side
every day. A late line, a corrected row before the cut-off or a recategorised product changes the key, and the
training side is rebuilt; the result always equals a backtest from nothing (tests/test_business.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb

from product_affinity import sql
from product_affinity.consumer_aligned import association_rules, baskets, daily_counts, metrics, recommendations
from product_affinity.consumer_aligned.association_rules import Thresholds, mine_all_levels
from product_affinity.consumer_aligned.baskets import ITEM, LEVELS, PRODUCTS, PURCHASES, item_lines
from product_affinity.contract.odcs import table
from product_affinity.warehouse import typed_columns

RECOMMENDERS = ("cross_sell_score", "most_popular")
TRAINING, HOLDOUT, NEW, EVALUATED, FIRST_TIME = (
    "_backtest_training", "_backtest_holdout", "_backtest_new", "_backtest_evaluated", "_backtest_first_time")
# The training side, kept in `keep_in` between runs: its key, and what was computed from the lines before the cut-off.
KEY, OWNED, ACTIVE, RULES, POPULAR, RECOMMENDED, RECOMMENDED_TO = (
    "backtest_key", "backtest_owned", "backtest_active", "backtest_rules", "backtest_popular", "backtest_recommended",
    "backtest_recommended_to")


def cutoff(as_of: datetime | None, holdout_days: int) -> datetime | None:
    """Monday 00:00 of the week holding `as_of` less `holdout_days` (None with no purchases)."""
    if as_of is None:
        return None
    moment = as_of - timedelta(days=holdout_days)
    return datetime.combine(moment.date() - timedelta(days=moment.weekday()), time())


def _items_sql(purchases: str, level: str) -> str:
    """Distinct (level, customer, item) bought in `purchases` at the level bound as $level, items as text like
    recommended_item. Made distinct on the item's own type first, then cast: distinct text of 30M lines took a third
    longer at Instacart scale."""
    return f"""SELECT $level AS level, customer_id, CAST(native AS VARCHAR) AS item
        FROM (SELECT DISTINCT p.customer_id, {ITEM[level]} AS native FROM {item_lines(level, purchases)})"""


def _popular_sql(level: str, counted: bool = False) -> str:
    """Each item's rank by baskets before the cut-off, most first ($level bound): its baskets counted in the lines, or
    summed from the daily counts of the days before it (`counted`; the same numbers, daily_counts.item_baskets_sql)."""
    baskets = daily_counts.item_baskets_sql(level, "CAST(getvariable('backtest_cutoff') AS DATE)") if counted else f"""
        SELECT native, count(*) AS baskets
        FROM (SELECT DISTINCT p.order_id, {ITEM[level]} AS native FROM {item_lines(level, TRAINING)}) GROUP BY native"""
    return f"""SELECT $level AS level, CAST(native AS VARCHAR) AS item,
                      row_number() OVER (ORDER BY baskets DESC, native) AS popularity_rank
        FROM ({baskets})"""


def _most_popular_sql(keep_in: str) -> str:
    """Per customer recommended to for the first time, the $per_customer items in most baskets before the cut-off
    that they had not bought ($level bound; recommended by $recommender).

    A customer who owns n items needs at most the n + per_customer most popular ones to find per_customer
    they do not own, so candidates stay linear in the purchases rather than customers x items.
    """
    return f"""
    WITH owned AS (SELECT customer_id, item FROM {keep_in}.{OWNED} SEMI JOIN {FIRST_TIME} USING (level, customer_id)
                   WHERE level = $level),
    ranked AS (SELECT item, popularity_rank FROM {keep_in}.{POPULAR} WHERE level = $level),
    buyers AS (SELECT customer_id, count(*) AS owned_items FROM owned GROUP BY customer_id)
    SELECT b.customer_id, $level AS level,
           row_number() OVER (PARTITION BY b.customer_id ORDER BY r.popularity_rank) AS rank,
           r.item AS recommended_item, $recommender AS recommender
    FROM buyers AS b JOIN ranked AS r ON r.popularity_rank <= b.owned_items + $per_customer
    ANTI JOIN owned AS o ON o.customer_id = b.customer_id AND o.item = r.item
    QUALIFY rank <= $per_customer"""


def _per_level(conn: duckdb.DuckDBPyConnection, name: str, select: Callable[[str], str], create: bool, **params) -> None:
    """What `select(level)` gives for each level, with that level bound as $level, into table `name` (created
    from the first level when `create`, else appended to). A name qualified by its database (the kept training side)
    is created there; any other as a temp table, since the warehouse's own file is published as it is."""
    table_kind = "TABLE" if "." in name else "TEMP TABLE"
    for i, level in enumerate(LEVELS):
        into = f"CREATE OR REPLACE {table_kind} {name} AS" if create and i == 0 else f"INSERT INTO {name}"
        conn.execute(f"{into} {select(level)}", {"level": level, **params})


def code_version() -> str:
    """A digest of the code that computes the training side (this module, the rules engine, the baskets, the
    recommendations and the metrics they use): a new release trains again rather than keep what older code computed."""
    digest = hashlib.sha256()
    for module in (sys.modules[__name__], association_rules, baskets, daily_counts, metrics, recommendations):
        path = Path(module.__file__)
        for source in (path, *sorted(path.parent.glob(f"{path.stem}*.sql"))):
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def training_key(conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], per_customer: int) -> str:
    """What the training side depends on: the cut-off, the settings, the code, and a count and hash sum of the lines
    before the cut-off (their customer, order and product) and of the products (their category)."""
    lines = conn.execute(f"SELECT count(*), sum(hash(customer_id, order_id, product_id)) FROM {TRAINING}").fetchone()
    products = conn.execute(f"SELECT count(*), sum(hash(product_id, category)) FROM {PRODUCTS}").fetchone()
    return json.dumps({
        "cutoff": str(conn.execute("SELECT getvariable('backtest_cutoff')").fetchone()[0]),
        "thresholds": {level: asdict(t) for level, t in sorted(thresholds.items())}, "per_customer": per_customer,
        "lines": [lines[0], str(lines[1])], "products": [products[0], str(products[1])], "code": code_version(),
    })


def _kept_key(conn: duckdb.DuckDBPyConnection, keep_in: str) -> str | None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {keep_in}.{KEY} (key VARCHAR)")
    row = conn.execute(f"SELECT any_value(key) FROM {keep_in}.{KEY}").fetchone()
    return row[0]


def _train(conn: duckdb.DuckDBPyConnection, keep_in: str, thresholds: dict[str, Thresholds], key: str,
           counted_before: date | None) -> None:
    """The training side from the lines before the cut-off: owned items (and how many customers own any), rules,
    popularity; nobody recommended yet.
    The rules and the popularity come from the daily counts of the days before `counted_before` (the cut-off's day)
    when it is given and they can give them (daily_counts.rules_before: the same rules, without mining the lines
    again, 9 s at Instacart scale; the popularity 4 s), else from the lines. The key is removed first and written
    last, so a run stopped midway leaves no key, and the next run trains again."""
    conn.execute(f"DELETE FROM {keep_in}.{KEY}")
    _per_level(conn, f"{keep_in}.{OWNED}", lambda level: _items_sql(TRAINING, level), create=True)
    conn.execute(f"""CREATE OR REPLACE TABLE {keep_in}.{ACTIVE} AS  -- customers who bought before the cut-off, per level
        SELECT level, count(DISTINCT customer_id) AS customers FROM {keep_in}.{OWNED} GROUP BY level""")
    mined = None if counted_before is None else daily_counts.rules_before(conn, thresholds, counted_before, TRAINING)
    counted = mined is not None  # the counts hold the lines before the cut-off: the popularity comes from them too
    _per_level(conn, f"{keep_in}.{POPULAR}", lambda level: _popular_sql(level, counted), create=True)
    if mined is None:
        mined = mine_all_levels(conn, thresholds, TRAINING)
    conn.register("_mined_before_cutoff", mined)
    conn.execute(f"""CREATE OR REPLACE TABLE {keep_in}.{RULES} AS
        SELECT {typed_columns(table('association_rules'))} FROM _mined_before_cutoff""")
    conn.unregister("_mined_before_cutoff")
    conn.execute(f"""CREATE OR REPLACE TABLE {keep_in}.{RECOMMENDED} (
        customer_id BIGINT, level VARCHAR, rank BIGINT, recommended_item VARCHAR, recommender VARCHAR)""")
    conn.execute(f"CREATE OR REPLACE TABLE {keep_in}.{RECOMMENDED_TO} (level VARCHAR, customer_id BIGINT)")
    conn.execute(f"INSERT INTO {keep_in}.{KEY} VALUES ($key)", {"key": key})


def _recommend_first_time(conn: duckdb.DuckDBPyConnection, keep_in: str, per_customer: int) -> None:
    """Both recommenders' lists for the customers evaluated who have none kept yet, added to the kept ones in one
    transaction with the record of whom they are for."""
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE {FIRST_TIME} AS
        FROM {EVALUATED} ANTI JOIN {keep_in}.{RECOMMENDED_TO} USING (level, customer_id)""")
    if not conn.execute(f"SELECT count(*) FROM {FIRST_TIME}").fetchone()[0]:
        return
    scored = recommendations.build(conn, per_customer, rules=f"{keep_in}.{RULES}", purchases=TRAINING,
                                    customers=FIRST_TIME, valued=False)
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE _backtest_new_lists AS
        SELECT customer_id, level, rank, recommended_item, $recommender AS recommender FROM ({scored})""",
                 {"recommender": RECOMMENDERS[0]})
    _per_level(conn, "_backtest_new_lists", lambda level: _most_popular_sql(keep_in), create=False,
               per_customer=per_customer, recommender=RECOMMENDERS[1])
    conn.execute("BEGIN TRANSACTION")
    conn.execute(f"INSERT INTO {keep_in}.{RECOMMENDED} FROM _backtest_new_lists")
    conn.execute(f"INSERT INTO {keep_in}.{RECOMMENDED_TO} SELECT level, customer_id FROM {FIRST_TIME}")
    conn.execute("COMMIT")


def backtest_sql(
    conn: duckdb.DuckDBPyConnection, thresholds: dict[str, Thresholds], per_customer: int, holdout_days: int,
    keep_in: str | None = None, counted: bool = False,
) -> str:
    """Train as of the cut-off unless the training side kept in `keep_in` (an attached database; by default one in
    memory, for this connection only) is still the one these inputs give; recommend to the customers evaluated for
    the first time; score both recommenders (temp table). Return the query that reads the scores. `counted`: the
    daily counts are attached (daily_counts.attach) and hold the lines' days: training takes its rules and
    popularity from them.

    Only the customers evaluated get recommendations: nobody else's are ever scored.
    """
    if keep_in is None:
        keep_in = "_backtest_kept"
        conn.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {keep_in}")
    as_of = conn.execute(f"SELECT max(purchased_at) FROM {PURCHASES}").fetchone()[0]
    # The cut-off is bound once into a DuckDB variable: the training and holdout views read it (a view cannot hold a
    # bound parameter), and DuckDB folds it into a constant filter on the purchases' scan. backtest.sql reads it too.
    cut = cutoff(as_of, holdout_days)
    conn.execute("SET VARIABLE backtest_cutoff = CAST($cutoff AS TIMESTAMP)", {"cutoff": cut or "infinity"})
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {TRAINING} AS FROM {PURCHASES} WHERE purchased_at < getvariable('backtest_cutoff')")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {HOLDOUT} AS FROM {PURCHASES} WHERE purchased_at >= getvariable('backtest_cutoff')")
    key = training_key(conn, thresholds, per_customer)
    if _kept_key(conn, keep_in) != key:
        _train(conn, keep_in, thresholds, key, cut.date() if counted and cut else None)
    _per_level(conn, NEW, lambda level: f"FROM ({_items_sql(HOLDOUT, level)}) ANTI JOIN {keep_in}.{OWNED} USING (level, customer_id, item)",
               create=True)
    # Bought before the cut-off, and something new after it. The new items' customers are made distinct before they
    # are looked for among the owned items' 17M rows, not after: 0.76 -> 0.25 s at Instacart scale.
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE {EVALUATED} AS
        FROM (SELECT DISTINCT level, customer_id FROM {NEW}) SEMI JOIN {keep_in}.{OWNED} USING (level, customer_id)""")
    _recommend_first_time(conn, keep_in, per_customer)
    evaluation = sql.load(__file__, "backtest.sql").format(
        evaluated=EVALUATED, recommended=f"{keep_in}.{RECOMMENDED}", new=NEW, active=f"{keep_in}.{ACTIVE}", holdout=HOLDOUT)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _backtest_scored AS {evaluation}",
                 {"recommenders": list(RECOMMENDERS), "per_customer": per_customer})
    return "FROM _backtest_scored"
