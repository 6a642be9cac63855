"""Predicted customer lifetime value: BG/NBD for how many purchases, Gamma-Gamma for how much each is worth.

Both models are written here from their published likelihoods and fitted by maximum likelihood with scipy,
because the maintained implementation (pymc-marketing) needs pymc and pytensor, too heavy for this product, and
the light one (lifetimes) is unmaintained and breaks with today's numpy and pandas.

BG/NBD: Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "'Counting Your Customers' the Easy Way: An
Alternative to the Pareto/NBD Model", Marketing Science 24(2), 275-284; the closed forms below are those of
the paper and of Hardie's note "Implementing the BG/NBD Model for Customer Base Analysis in Excel" (2005).
While alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each purchase
they drop out for good with probability p ~ Beta(a, b); lambda and p are independent across customers.
A customer is summarised by x (repeat purchases: purchases after the first), t_x (time from the first
purchase to the last) and T (time from the first purchase to the end of the observed period).

Gamma-Gamma: Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "RFM and CLV: Using Iso-Value Curves for
Customer Base Analysis", Journal of Marketing Research 42(4), 415-430, and Hardie's note "The Gamma-Gamma
Model of Monetary Value" (2013). A customer's purchase values are Gamma(p, nu) around their own mean, with
nu ~ Gamma(q, gamma) across customers; the model is fitted on the x repeat purchases' average value m, for
customers with x > 0, and assumes spend is independent of how often the customer buys.

No Dagster here: the output ports (customer_metrics, clv_backtest) call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

DAYS_PER_WEEK = 7.0
WEEKS_PER_MONTH = 365.25 / 12 / DAYS_PER_WEEK
LOG_BOUND = 12.0  # the fits search log-parameters in [-12, 12]: wide enough for any real data, never overflowing


class ClvFitError(ValueError):
    """The data cannot identify the model (too few customers or repeat purchases), or the fit did not converge."""


def _check(name: str, values: np.ndarray, *, positive: bool = False) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite: row {int(np.flatnonzero(~np.isfinite(values))[0])} is {values[~np.isfinite(values)][0]}")
    bad = values <= 0 if positive else values < 0
    if np.any(bad):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}: row {int(np.flatnonzero(bad)[0])} is {values[bad][0]}")
    return values


def _rfm(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = _check("x", x), _check("t_x", t_x), _check("T", T)
    if np.any(t_x > T):
        raise ValueError(f"t_x must not exceed T: row {int(np.flatnonzero(t_x > T)[0])}")
    if np.any((x > 0) & (t_x <= 0)):
        raise ValueError(f"a customer with repeat purchases needs t_x > 0: row {int(np.flatnonzero((x > 0) & (t_x <= 0))[0])}")
    return x, t_x, T


def _maximise(log_likelihood, start: np.ndarray, model: str) -> np.ndarray:
    """Maximise a summed log-likelihood over log-parameters; L-BFGS-B first, Nelder-Mead if it stops short."""
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)

    def objective(theta):
        value = -log_likelihood(np.exp(theta))
        return value if np.isfinite(value) else 1e300

    result = minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    if not result.success:
        result = minimize(objective, result.x, method="Nelder-Mead", bounds=bounds,
                          options={"maxiter": 20_000, "xatol": 1e-10, "fatol": 1e-10})
    if not result.success or result.fun >= 1e300:
        raise ClvFitError(f"{model}: the maximum-likelihood fit did not converge ({result.message})")
    return np.exp(result.x)


@dataclass(frozen=True)
class BgNbd:
    """A fitted BG/NBD model; time is in whatever unit x, t_x and T were given (this product uses weeks)."""

    r: float
    alpha: float
    a: float
    b: float

    @staticmethod
    def log_likelihood_terms(params, x, t_x, T, distinct_x=None) -> np.ndarray:
        """Each customer's log-likelihood, in the stable form ln A1 + ln A2 + ln(exp A3 + delta exp A4) (FHL 2005, eq. 6).

        The gamma and beta functions depend on x alone, so they are evaluated once per distinct x (a few hundred
        values at most; `distinct_x` = np.unique(x, return_inverse=True), computed once per fit): that is most of
        the work at 200,000 customers."""
        r, alpha, a, b = params
        distinct, which = np.unique(x, return_inverse=True) if distinct_x is None else distinct_x
        a1 = (gammaln(r + distinct) - gammaln(r))[which] + r * np.log(alpha)
        a2 = (betaln(a, b + distinct) - betaln(a, b))[which]
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf)
        return a1 + a2 + np.logaddexp(a3, a4)

    @classmethod
    def fit(cls, x, t_x, T) -> BgNbd:
        """Maximum likelihood on (x, t_x, T) per customer; customers sharing a summary are counted once, weighted."""
        x, t_x, T = _rfm(x, t_x, T)
        if len(x) < 4 or not np.any(x > 0):
            raise ClvFitError(f"BG/NBD needs at least 4 customers and one repeat purchase; got {len(x)} customers, "
                              f"{int(np.sum(x > 0))} with repeat purchases")
        summary, weight = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
        sx, st, sT = summary.T
        distinct_x = np.unique(sx, return_inverse=True)
        start = np.log([1.0, max(float(np.mean(T)), 1e-3), 1.0, 1.0])
        params = _maximise(lambda p: float(np.sum(weight * cls.log_likelihood_terms(p, sx, st, sT, distinct_x))), start,
                           "BG/NBD")
        return cls(*map(float, params))

    def log_likelihood(self, x, t_x, T) -> float:
        return float(np.sum(self.log_likelihood_terms((self.r, self.alpha, self.a, self.b), *_rfm(x, t_x, T))))

    def _dropout_odds(self, x, t_x, T) -> np.ndarray:
        """delta_{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x), in logs for large x."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (np.log(self.a) - np.log(np.maximum(self.b + x - 1, 1e-300))
                        + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)))
        return np.where(x > 0, np.exp(np.minimum(log_odds, 700)), 0.0)

    def probability_alive(self, x, t_x, T) -> np.ndarray:
        """P(alive at T | x, t_x, T) = 1 / (1 + delta_{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)) (FHL 2005, eq. 11)."""
        x, t_x, T = _rfm(x, t_x, T)
        return 1.0 / (1.0 + self._dropout_odds(x, t_x, T))

    def expected_purchases(self, t: float, x, t_x, T) -> np.ndarray:
        """E[purchases in (T, T+t] | x, t_x, T] (FHL 2005, eq. 10):

        (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))] / (1 + dropout odds)
        """
        x, t_x, T = _rfm(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyper = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        bracket = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyper
        expected = (a + b + x - 1) / (a - 1) * bracket / (1.0 + self._dropout_odds(x, t_x, T))
        if not np.all(np.isfinite(expected)):
            raise ClvFitError(f"BG/NBD expected purchases are not finite for {self} at t = {t}")
        return np.maximum(expected, 0.0)


@dataclass(frozen=True)
class GammaGamma:
    """A fitted Gamma-Gamma model of the value of a purchase."""

    p: float
    q: float
    gamma: float

    @staticmethod
    def log_likelihood_terms(params, x, m, distinct_x=None) -> np.ndarray:
        """Each customer's log density of their average value m over x purchases (Hardie 2013, eq. 3):
        ln G(px+q) - ln G(px) - ln G(q) + q ln gamma + (px-1) ln m + px ln x - (px+q) ln(gamma + m x)."""
        p, q, gamma = params
        distinct, which = np.unique(x, return_inverse=True) if distinct_x is None else distinct_x  # once per distinct x
        return ((gammaln(p * distinct + q) - gammaln(p * distinct))[which] - gammaln(q) + q * np.log(gamma)
                + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(gamma + m * x))

    @classmethod
    def fit(cls, x, m) -> GammaGamma:
        """Maximum likelihood on customers with x >= 1 repeat purchases of average value m > 0."""
        x, m = _check("x", x, positive=True), _check("m", m, positive=True)
        if len(x) < 3:
            raise ClvFitError(f"Gamma-Gamma needs at least 3 customers with repeat purchases; got {len(x)}")
        start = np.log([1.0, 2.0, float(np.mean(m))])
        distinct_x = np.unique(x, return_inverse=True)
        params = _maximise(lambda p: float(np.sum(cls.log_likelihood_terms(p, x, m, distinct_x))), start, "Gamma-Gamma")
        return cls(*map(float, params))

    @property
    def mean_value(self) -> float:
        """E[value of a purchase] across customers, gamma p / (q - 1); infinite when q <= 1."""
        return self.gamma * self.p / (self.q - 1) if self.q > 1 else float("inf")

    def expected_value(self, x, m) -> np.ndarray:
        """E[value of the customer's next purchase | x, m] = (gamma + m x) p / (p x + q - 1) (Hardie 2013, eq. 5);
        the population mean for customers with no repeat purchase (x = 0)."""
        x, m = _check("x", x), _check("m", np.nan_to_num(np.asarray(m, dtype=float), nan=0.0))
        if self.q <= 1:
            raise ClvFitError(f"Gamma-Gamma q = {self.q:.3f} <= 1: the mean purchase value is unbounded")
        return np.where(x > 0, (self.gamma + m * x) * self.p / (self.p * x + self.q - 1), self.mean_value)


@dataclass(frozen=True)
class Prediction:
    """Per-customer predictions over the horizon, arrays in the order of the customers given."""

    probability_alive: np.ndarray
    expected_purchases: np.ndarray
    expected_spend: np.ndarray
    discounted_value: np.ndarray


def predict(purchases: BgNbd, values: GammaGamma, x, t_x, T, m, horizon_weeks: float, annual_discount_rate: float,
            steps_per_year: int = 12) -> Prediction:
    """Probability alive, purchases and spend expected over the next `horizon_weeks`, and their discounted value.

    The discounted value adds up, month by month (steps_per_year steps a year), the purchases expected in that
    month times the expected value of a purchase, discounted to today at annual_discount_rate compounded per
    step: sum_i (E[Y(t_i)] - E[Y(t_i-1)]) x E[value] / (1 + d)^(t_i in years). The expected spend is the same
    without discounting."""
    if horizon_weeks <= 0 or not np.isfinite(horizon_weeks):
        raise ValueError(f"horizon_weeks must be a positive number, not {horizon_weeks}")
    if not 0 <= annual_discount_rate < 10:
        raise ValueError(f"annual_discount_rate must be in [0, 10), not {annual_discount_rate}")
    step = WEEKS_PER_MONTH * 12 / steps_per_year  # weeks in one step
    ends = np.append(np.arange(step, horizon_weeks, step), horizon_weeks)
    cumulative = np.stack([purchases.expected_purchases(t, x, t_x, T) for t in ends])
    per_step = np.diff(cumulative, axis=0, prepend=0.0)
    discount = (1 + annual_discount_rate) ** -(ends / (step * steps_per_year))
    value = values.expected_value(x, m)
    return Prediction(
        probability_alive=purchases.probability_alive(x, t_x, T),
        expected_purchases=cumulative[-1],
        expected_spend=cumulative[-1] * value,
        discounted_value=(per_step * discount[:, None]).sum(axis=0) * value,
    )


def summary_sql(purchases: str) -> str:
    """Per customer, from purchase lines (customer_id, purchased_at, quantity, unit_price) up to the last day `$last_day`
    (a bound DATE parameter): x, t_x and T in weeks ($days_per_week), and m, the average value of the repeat purchases.

    A purchase is a customer's buying on one calendar day: orders on the same day count once, with their values
    added, as in the CDNOW analyses these models were published on (and since the time unit is a day, two purchases
    on one day would give t_x = 0 for a repeat buyer). T runs to the end of `$last_day`'s day count, i.e. from the
    first purchase day to the last day observed."""
    return f"""
    WITH days AS (
        SELECT customer_id, CAST(purchased_at AS DATE) AS day, sum(quantity * unit_price)::DOUBLE AS amount
        FROM {purchases} WHERE CAST(purchased_at AS DATE) <= $last_day GROUP BY ALL
    ), numbered AS (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY day) AS n FROM days)
    SELECT customer_id, count(*) - 1 AS x,
           date_diff('day', min(day), max(day)) / $days_per_week AS t_x,
           date_diff('day', min(day), $last_day) / $days_per_week AS T,
           avg(amount) FILTER (WHERE n > 1) AS m,
           avg(amount) AS average_purchase_value
    FROM numbered GROUP BY customer_id ORDER BY customer_id"""


def summarise(conn: duckdb.DuckDBPyConnection, purchases: str, last_day) -> pd.DataFrame:
    """summary_sql run on `purchases` up to `last_day` (a date): one row per customer who bought by then."""
    return conn.execute(summary_sql(purchases), {"last_day": last_day, "days_per_week": DAYS_PER_WEEK}).df()


@dataclass(frozen=True)
class Fit:
    """The two fitted models, or why one could not be fitted (then its predictions are missing)."""

    purchases: BgNbd | None
    values: GammaGamma | None
    problems: tuple[str, ...]


def fit(summary: pd.DataFrame) -> Fit:
    """Fit BG/NBD on every customer's (x, t_x, T), Gamma-Gamma on the repeat buyers with a positive average value."""
    problems, purchases, values = [], None, None
    try:
        purchases = BgNbd.fit(summary["x"], summary["t_x"], summary["T"])
    except ClvFitError as error:
        problems.append(str(error))
    repeat = summary[(summary["x"] > 0) & (summary["m"] > 0)]
    try:
        values = GammaGamma.fit(repeat["x"], repeat["m"])
        if values.q <= 1:
            raise ClvFitError(f"Gamma-Gamma q = {values.q:.3f} <= 1: the mean purchase value is unbounded")
    except ClvFitError as error:
        problems.append(str(error))
        values = None
    return Fit(purchases, values, tuple(problems))


def fit_metadata(fitted: Fit) -> dict[str, float | str]:
    """The fitted parameters (and why a model is missing), for the asset's materialization metadata."""
    params = {}
    if fitted.purchases is not None:
        params |= {f"bg_nbd_{k}": round(v, 6) for k, v in vars(fitted.purchases).items()}
    if fitted.values is not None:
        params |= {f"gamma_gamma_{k}": round(v, 6) for k, v in vars(fitted.values).items()}
    if fitted.problems:
        params["clv_fit_problems"] = "; ".join(fitted.problems)
    return params


def predictions(summary: pd.DataFrame, fitted: Fit, horizon_weeks: float, annual_discount_rate: float) -> pd.DataFrame:
    """customer_id, probability_alive, expected_orders, expected_spend, predicted_customer_lifetime_value per customer
    in `summary`; missing where the model they need could not be fitted."""
    out = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy()})
    for column in ("probability_alive", "expected_orders", "expected_spend", "predicted_customer_lifetime_value"):
        out[column] = np.nan
    if fitted.purchases is None or summary.empty:
        return out
    x, t_x, T = (summary[c].to_numpy(dtype=float) for c in ("x", "t_x", "T"))
    if fitted.values is None:
        out["probability_alive"] = fitted.purchases.probability_alive(x, t_x, T)
        out["expected_orders"] = fitted.purchases.expected_purchases(horizon_weeks, x, t_x, T)
        return out
    predicted = predict(fitted.purchases, fitted.values, x, t_x, T, summary["m"].to_numpy(dtype=float),
                        horizon_weeks, annual_discount_rate)
    out["probability_alive"] = predicted.probability_alive
    out["expected_orders"] = predicted.expected_purchases
    out["expected_spend"] = predicted.expected_spend
    out["predicted_customer_lifetime_value"] = predicted.discounted_value
    return out
