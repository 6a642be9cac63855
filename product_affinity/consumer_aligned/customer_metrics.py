"""One row per customer: purchase behaviour, value and cross-sell opportunity (definitions in metrics.py).

The predicted value comes from the BG/NBD and Gamma-Gamma models (clv.py), fitted in Python on every buyer's
summary and joined in as the registered frame PREDICTIONS."""

from __future__ import annotations

from product_affinity import sql
from product_affinity.consumer_aligned import metrics
from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES
from product_affinity.contract.odcs import table

PREDICTIONS = "_clv_predictions"


def customer_metrics_sql(window_days: int) -> str:
    """customer_metrics.sql with the contract's tables and metrics.py's definitions (the trailing window of
    `window_days` days for the frequencies)."""
    measures = (metrics.total_spend, metrics.average_order_value, metrics.recency_days, metrics.customer_lifetime_value,
                metrics.categories_bought, metrics.cross_sell_opportunity_score, metrics.probability_alive,
                metrics.expected_orders, metrics.expected_spend, metrics.predicted_customer_lifetime_value)
    return sql.load(__file__, "customer_metrics.sql").format(
        purchases=PURCHASES, products=PRODUCTS, customers=table("customer").physical_name,
        recommendations=table("cross_sell_recommendations").physical_name, predictions=PREDICTIONS,
        purchase_frequency=metrics.purchase_frequency(window_days),
        purchase_frequency_per_month=metrics.purchase_frequency_per_month(window_days),
        **{measure.__name__: measure() for measure in measures},
    )
