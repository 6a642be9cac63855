"""One row per customer: purchase behaviour, value and cross-sell opportunity (definitions in metrics.py).

The aggregates of each customer's purchase lines (orders, spend, first and last purchase, categories) are one query,
customer_aggregates.sql, in DuckDB's dialect over a relation of lines: DuckDB runs it inside the port's query on the
duckdb engine; the spark engine runs it on Spark over the lines' Parquet files (spark_counts.customer_aggregates) and
the port's query reads Spark's output instead. The predicted value comes from the BG/NBD and Gamma-Gamma models
(clv.py), fitted in Python on every buyer's summary and joined in as the registered frame PREDICTIONS."""

from __future__ import annotations

from product_affinity import sql
from product_affinity.consumer_aligned import metrics
from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES
from product_affinity.consumer_aligned.daily_counts import lines_sql
from product_affinity.contract.odcs import table

PREDICTIONS = "_clv_predictions"


def aggregates_sql(lines: str, window_days: int, purchases: str | None = None) -> str:
    """customer_aggregates.sql over the relation `lines` (columns of daily_counts.lines_sql) and `purchases` (the same
    lines, the category not needed: `lines` when not given), with metrics.py's definitions (the trailing window of
    `window_days` days for the frequencies): one text for both engines."""
    measures = (metrics.total_spend, metrics.average_order_value, metrics.recency_days, metrics.customer_lifetime_value,
                metrics.categories_bought)
    return sql.load(__file__, "customer_aggregates.sql").format(
        lines=lines, purchases=purchases or lines,
        purchase_frequency=metrics.purchase_frequency(window_days),
        purchase_frequency_per_month=metrics.purchase_frequency_per_month(window_days),
        **{measure.__name__: measure() for measure in measures},
    )


def customer_metrics_sql(window_days: int, aggregates: str | None = None) -> str:
    """customer_metrics.sql with the contract's tables and metrics.py's definitions, joining the customer aggregates
    from `aggregates` (a relation: the spark engine's files), or computed here by DuckDB from the warehouse's lines."""
    if aggregates is None:
        aggregates = f"({aggregates_sql(f'({lines_sql(PURCHASES, PRODUCTS)})', window_days, PURCHASES)})"
    measures = (metrics.cross_sell_opportunity_score, metrics.probability_alive, metrics.expected_orders,
                metrics.expected_spend, metrics.predicted_customer_lifetime_value)
    return sql.load(__file__, "customer_metrics.sql").format(
        customers=table("customer").physical_name, aggregates=aggregates,
        recommendations=table("cross_sell_recommendations").physical_name, predictions=PREDICTIONS,
        **{measure.__name__: measure() for measure in measures},
    )
