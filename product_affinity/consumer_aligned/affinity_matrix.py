"""The category affinity matrix: every ordered pair of distinct categories, from the per-day basket counts.

The counts step already holds, for every day, how many baskets hold each category and each pair of categories
(daily_counts, with no threshold), so the matrix over all history is their sum: a few hundred thousand rows at
Instacart scale, where the 33M purchase lines took 3.0 s. The counts are exact and every accepted line has a product
with a category (the contract requires it; a line of an unknown product is quarantined), so the sums are the baskets
the lines hold: the matrix's accuracy check recounts them from the lines independently (quality.reconciliation).
"""

from __future__ import annotations

import duckdb

from product_affinity import sql
from product_affinity.consumer_aligned import daily_counts, metrics


def affinity_matrix_sql(conn: duckdb.DuckDBPyConnection) -> str:
    """The matrix over every day counted in the attached counts file (affinity_matrix.sql); refused when some day was
    counted without pairs of categories (a category_max_itemset_size below 2), which it could not hold."""
    short = daily_counts.counted_below(conn, 2)
    if short is not None:
        raise daily_counts.CountsError(f"the affinity matrix needs pairs of categories, but the days {short[0]} to "
                                       f"{short[1]} were counted without them: recount them with category_max_itemset_size "
                                       "2 or more (a backfill of those partitions)")
    return sql.load(__file__, "affinity_matrix.sql").format(
        day_baskets=f"{daily_counts.SCHEMA}.day_baskets", day_category_itemsets=f"{daily_counts.SCHEMA}.day_category_itemsets",
        support=metrics.support(), confidence=metrics.confidence(), lift=metrics.lift(),
    )
