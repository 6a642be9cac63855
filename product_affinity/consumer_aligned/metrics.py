"""The product's metrics, each defined once: its docstring states grain, window and formula
(the README table is generated from these), and the function returns the SQL that computes it.

Shared names in the SQL: `orders` has one row per order (customer_id, order_id, purchased_at,
amount = sum of quantity x unit_price over its lines); `as_of` is the latest purchase in the data,
so re-running on the same data gives the same figures; `window_days` is the trailing window.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

METRICS: list[Callable[..., str]] = []


def metric(fn: Callable[..., str]) -> Callable[..., str]:
    METRICS.append(fn)
    return fn


def in_window(window_days: int, windows_back: int = 0) -> str:
    """True for orders inside the trailing window (`windows_back` whole windows earlier).

    The window is written into the SQL, not bound: the customer_metrics port's statement is run without parameters
    by its asset. int() makes sure nothing but a whole number of days can get there."""
    days = int(window_days)
    end = f"as_of - INTERVAL {days * int(windows_back)} DAY"
    return f"purchased_at > {end} - INTERVAL {days} DAY AND purchased_at <= {end}"


@metric
def purchase_frequency(window_days: int) -> str:
    """Grain: customer. Window: trailing 365 days (configurable) ending at the latest purchase.
    Formula: count of distinct orders placed in the window."""
    return f"count(*) FILTER (WHERE {in_window(window_days)})"


@metric
def purchase_frequency_per_month(window_days: int) -> str:
    """Grain: customer. Window: as purchase_frequency.
    Formula: purchase_frequency / (window days / 30.4375), orders per average month."""
    # In DOUBLE, as DuckDB computes it anyway: Spark would divide in DECIMAL and round otherwise (spark_counts).
    return f"({purchase_frequency(window_days)}) / (CAST({int(window_days)} AS DOUBLE) / 30.4375)"


@metric
def total_spend() -> str:
    """Grain: customer. Window: all history.
    Formula: sum of quantity x unit_price over the customer's accepted purchase lines."""
    return "sum(amount)"


@metric
def average_order_value() -> str:
    """Grain: customer. Window: all history.
    Formula: total_spend / number of orders (empty when the customer has no order)."""
    return "CAST(sum(amount) AS DOUBLE) / count(*)"  # DuckDB's DOUBLE, which Spark's DECIMAL division would round apart


@metric
def recency_days() -> str:
    """Grain: customer. Window: all history.
    Formula: whole days from the customer's last purchase to the latest purchase in the data."""
    # Between dates: Spark's DATEDIFF(DAY, ...) on timestamps counts whole 24-hour days, DuckDB's date_diff midnights.
    return "date_diff('day', CAST(max(purchased_at) AS DATE), CAST(any_value(as_of) AS DATE))"


@metric
def categories_bought() -> str:
    """Grain: customer. Window: all history.
    Formula: count of distinct product categories in the customer's purchase lines."""
    return "count(DISTINCT category)"


@metric
def customer_lifetime_value() -> str:
    """Grain: customer. Window: all history.
    Formula: historic value, the revenue the customer has brought so far (= total_spend)."""
    return total_spend()


@metric
def probability_alive() -> str:
    """Grain: customer. Window: all history, as of the latest purchase. Formula: BG/NBD (Fader, Hardie and Lee 2005)
    P(alive) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)), from the customer's repeat purchase days x,
    weeks t_x from first to last and T from first to the latest purchase day; r, alpha, a, b fitted on all buyers
    (consumer_aligned/clv.py). Empty for customers with no order."""
    return "p.probability_alive"


@metric
def expected_orders() -> str:
    """Grain: customer. Window: the next clv_horizon_months (12 by default) after the latest purchase. Formula: BG/NBD
    expected purchase days in (T, T + horizon] given x, t_x, T (FHL 2005, eq. 10); orders on one day count once.
    Empty for customers with no order."""
    return "p.expected_orders"


@metric
def expected_spend() -> str:
    """Grain: customer. Window: as expected_orders. Formula: expected_orders x Gamma-Gamma expected value of a
    purchase, (gamma + m x) p / (p x + q - 1) with m the average value of the customer's repeat purchase days, the
    population mean gamma p / (q - 1) for one-time buyers (Fader, Hardie and Lee 2005, "RFM and CLV"). Undiscounted."""
    return "p.expected_spend"


@metric
def predicted_customer_lifetime_value() -> str:
    """Grain: customer. Window: as expected_orders. Formula: discounted CLV, the sum over the horizon's months of the
    BG/NBD purchases expected in that month x the Gamma-Gamma expected value of a purchase / (1 + d)^(months / 12),
    d = discount_rate (10% a year by default). Empty for customers with no order."""
    return "p.predicted_customer_lifetime_value"


@metric
def cross_sell_opportunity_score() -> str:
    """Grain: customer. Window: all history. Formula: the highest confidence among category rules
    (lift > 1) whose antecedents the customer already buys and whose consequent they do not,
    i.e. the score of their first category recommendation; 0 when no rule applies. In [0, 1]."""
    return "coalesce(max(score), 0)"


@metric
def recommendation_score() -> str:
    """Grain: customer x recommended category or product. Window: all history. Formula: the
    highest confidence among applicable rules (lift > 1, antecedents all bought, consequent
    not yet bought) that recommend the item; ties go to the higher lift. In [0, 1]."""
    # `r` is the item's best applicable rule: recommendations._choose keeps, per customer and item, the rule of least
    # `rule_rank` (the rules numbered by confidence, lift and rule id, highest first) among those that apply.
    return "r.confidence"


@metric
def expected_value() -> str:
    """Grain: customer x recommended item. Window: all history. Formula: recommendation score x
    the item's typical spend (average spend on it per order that contains it)."""
    return "score * typical_spend"


@metric
def support() -> str:
    """Grain: itemset or rule. Window: all history. Formula: baskets (orders) containing all its
    items / all baskets."""
    return "together / baskets"


@metric
def confidence() -> str:
    """Grain: rule A->C. Window: all history. Formula: support(A and C) / support(A), the share
    of baskets with A that also hold C."""
    return "together / with_antecedent"


@metric
def lift() -> str:
    """Grain: rule A->C. Window: all history. Formula: confidence(A->C) / support(C); above 1 when
    A makes C more likely than it is on average."""
    return f"({confidence()}) / (with_consequent / baskets)"


def definitions() -> list[dict[str, str]]:
    """Grain, window and formula of every metric, parsed from the docstrings."""
    rows = []
    for fn in METRICS:
        text = " ".join(inspect.getdoc(fn).split())
        parts = dict(re.findall(r"(Grain|Window|Formula): (.*?)(?= (?:Grain|Window|Formula):|$)", text))
        rows.append({"metric": fn.__name__, "grain": parts["Grain"].rstrip("."), "window": parts["Window"].rstrip("."),
                     "formula": parts["Formula"]})
    return rows


def markdown_table() -> str:
    lines = ["| metric | grain | window | formula |", "|---|---|---|---|"]
    lines += [f"| `{d['metric']}` | {d['grain']} | {d['window']} | {d['formula']} |" for d in definitions()]
    return "\n".join(lines)
