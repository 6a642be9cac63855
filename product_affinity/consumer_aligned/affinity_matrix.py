"""The category affinity matrix: every ordered pair of distinct categories, computed from baskets."""

from __future__ import annotations

from product_affinity import sql
from product_affinity.consumer_aligned import metrics


def affinity_matrix_sql(basket_items: str, labels: str) -> str:
    """Pairs never bought together are kept, with support, confidence and lift 0 (affinity_matrix.sql)."""
    return sql.load(__file__, "affinity_matrix.sql").format(
        basket_items=basket_items, labels=labels, support=metrics.support(), confidence=metrics.confidence(), lift=metrics.lift()
    )
