"""Does the predicted customer lifetime value predict? A backtest of BG/NBD + Gamma-Gamma against a naive baseline.

The history is cut `holdout_days` before the latest purchase day. The models are fitted, by the very code that
builds customer_metrics (consumer_aligned/clv.py), on the purchases up to and including the calibration's last
day, and predict each of those customers' purchase days and spend over the holdout (the days after it, up to the
latest purchase day). The naive baseline has each customer repeat their calibration rate: x / T repeat purchases
a week for the holdout's weeks, each worth the average value of their calibration purchases (none for a customer
whose first purchase is on the calibration's last day). Both are judged on the same customers, those who bought
during the calibration; customers whose first purchase falls in the holdout are outside what either predicts.

- orders: purchase days (a customer's orders on one day count once, as in the models); spend: their value
- total error: (sum predicted - sum actual) / sum actual, in percent; negative when the prediction falls short
- mean absolute error and root mean squared error per customer, in purchase days or money
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from product_affinity.consumer_aligned import clv

PREDICTORS = ("bg_nbd_gamma_gamma", "naive_calibration_rate")
MEASURES = ("orders", "spend")

HOLDOUT_SQL = """
    SELECT customer_id, count(*) AS orders, sum(amount) AS spend FROM (
        SELECT customer_id, CAST(purchased_at AS DATE) AS day, sum(quantity * unit_price)::DOUBLE AS amount
        FROM {purchases} WHERE CAST(purchased_at AS DATE) > $calibration_end GROUP BY ALL
    ) GROUP BY customer_id"""


def _predicted(summary: pd.DataFrame, fitted: clv.Fit, holdout_weeks: float) -> dict[str, dict[str, np.ndarray | None]]:
    """Per predictor and measure, each calibration customer's prediction for the holdout (None: model not fitted)."""
    x, T = summary["x"].to_numpy(dtype=float), summary["T"].to_numpy(dtype=float)
    naive_orders = np.divide(x, T, out=np.zeros_like(x), where=T > 0) * holdout_weeks
    model = clv.predictions(summary, fitted, holdout_weeks, annual_discount_rate=0.0)
    return {
        "bg_nbd_gamma_gamma": {
            "orders": None if fitted.purchases is None else model["expected_orders"].to_numpy(),
            "spend": None if fitted.values is None else model["expected_spend"].to_numpy(),
        },
        "naive_calibration_rate": {
            "orders": naive_orders,
            "spend": naive_orders * summary["average_purchase_value"].to_numpy(dtype=float),
        },
    }


def backtest(conn: duckdb.DuckDBPyConnection, purchases: str, holdout_days: int) -> tuple[pd.DataFrame, clv.Fit]:
    """One row per predictor and measure (the clv_backtest output port's columns), and the models fitted on the
    calibration. `purchases` holds lines with customer_id, purchased_at, quantity and unit_price."""
    if holdout_days < 1:
        raise ValueError(f"clv_holdout_days must be at least 1, not {holdout_days}")
    evaluated_until = conn.execute(f"SELECT max(purchased_at) FROM {purchases}").fetchone()[0]
    if evaluated_until is None:
        raise ValueError(f"{purchases} has no purchase: there is nothing to backtest")
    calibration_end = evaluated_until.date() - timedelta(days=holdout_days)
    summary = clv.summarise(conn, purchases, calibration_end)
    actual = conn.execute(HOLDOUT_SQL.format(purchases=purchases), {"calibration_end": calibration_end}).df()
    actual = summary[["customer_id"]].merge(actual, on="customer_id", how="left").fillna({"orders": 0, "spend": 0.0})
    fitted = clv.fit(summary)
    holdout_weeks = holdout_days / clv.DAYS_PER_WEEK
    rows = []
    for predictor, by_measure in _predicted(summary, fitted, holdout_weeks).items():
        for measure, predicted in by_measure.items():
            truth = actual[measure].to_numpy(dtype=float)
            error = None if predicted is None else predicted - truth
            rows.append({
                "predictor": predictor,
                "measure": measure,
                "cutoff_at": datetime.combine(calibration_end + timedelta(days=1), datetime.min.time()),
                "evaluated_until": evaluated_until,
                "holdout_weeks": holdout_weeks,
                "customers": len(summary),
                "actual": float(truth.sum()),
                "predicted": None if predicted is None else float(predicted.sum()),
                "total_error_percent": None if predicted is None or not truth.sum()
                else float(100 * (predicted.sum() - truth.sum()) / truth.sum()),
                "mean_absolute_error": None if error is None or not len(error) else float(np.mean(np.abs(error))),
                "root_mean_squared_error": None if error is None or not len(error) else float(np.sqrt(np.mean(error ** 2))),
            })
    return pd.DataFrame(rows), fitted
