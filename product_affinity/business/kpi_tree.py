"""The KPI tree of the business alignment, computed for each complete calendar month.

alignment.yaml declares the nodes; this module says how each is measured (MEASURES) and computes,
per month, every node's value, its change against the month before and its contribution to the
North Star's change. A parent with `factor` children must equal their product every month; the
asset refuses a tree where it does not, so the tree stays an identity and contributions add up.

Contributions are the additive log-mean Divisia index (LMDI-I). The North Star N is the product of
the factors on its path, so ln N changes by the sum of their log changes; weighting each by the
log mean L(N_t, N_t-1) = (N_t - N_t-1) / (ln N_t - ln N_t-1) turns them into customers that add up
exactly to N's change. An inner factor's contribution is the sum of its own factors'. Nodes linked
as outcome or leading_indicator are shown with their value and change but have no contribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date

import duckdb

from product_affinity.consumer_aligned.baskets import PRODUCTS, PURCHASES, lines
from product_affinity.contract.odcs import table
from product_affinity.product.descriptor import alignment

Monthly = dict[str, float]  # one month's aggregates (monthly_sql's columns)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


# How each node is measured from a month's aggregates; nodes measured on the latest month only are in LATEST.
MEASURES: dict[str, Callable[[Monthly], float | None]] = {
    "expanding_customers": lambda m: m["expanding_customers"],
    "returning_buyers": lambda m: m["returning_buyers"],
    "customer_base": lambda m: m["customer_base"],
    "repeat_customer_share": lambda m: _ratio(m["returning_buyers"], m["customer_base"]),
    "category_expansion_rate": lambda m: _ratio(m["expanding_customers"], m["returning_buyers"]),
    "headroom_share": lambda m: _ratio(m["with_headroom"], m["returning_buyers"]),
    "expansion_conversion": lambda m: _ratio(m["expanding_customers"], m["with_headroom"]),
    "category_penetration": lambda m: _ratio(m["customer_categories_to_date"], m["customers_to_date"] * m["categories"]),
    "revenue": lambda m: m["revenue"],
    "active_customers": lambda m: m["active_customers"],
    "purchase_frequency": lambda m: _ratio(m["orders"], m["active_customers"]),
    "average_order_value": lambda m: _ratio(m["revenue"], m["orders"]),
    "customer_lifetime_value": lambda m: _ratio(m["revenue_to_date"], m["customers_to_date"]),
}
LATEST = {
    "cross_sell_opportunity_score": f"""SELECT avg(cross_sell_opportunity_score) FROM {table('customer_metrics').physical_name}
        WHERE orders > 0""",
    "backtest_hit_rate": f"""SELECT hit_rate FROM {table('recommendation_backtest').physical_name}
        WHERE level = 'category' AND recommender = 'cross_sell_score' ORDER BY k DESC LIMIT 1""",
}


def monthly_sql(purchases: str = PURCHASES) -> str:
    """Per complete calendar month (the first and the current, partial, months left out), the counts the nodes need."""
    return f"""
    WITH line AS (
        SELECT p.customer_id, p.order_id, date_trunc('month', p.purchased_at)::DATE AS month, pr.category,
               p.quantity * p.unit_price AS amount
        FROM {lines(purchases)}
    ), calendar AS (
        SELECT unnest(generate_series(min(month), max(month), INTERVAL 1 MONTH))::DATE AS month FROM line
    ), first_order AS (
        SELECT customer_id, min(month) AS month FROM line GROUP BY customer_id
    ), first_in_category AS (
        SELECT customer_id, category, min(month) AS month FROM line GROUP BY customer_id, category
    ), active AS (
        SELECT month, customer_id, count(DISTINCT order_id) AS orders, sum(amount) AS spend FROM line GROUP BY ALL
    ), buyers AS (  -- each active customer: categories bought before the month, and first bought in it
        SELECT a.month, a.customer_id, any_value(a.orders) AS orders, any_value(a.spend) AS spend,
               count(*) FILTER (WHERE c.month < a.month) AS tried_before,
               count(*) FILTER (WHERE c.month = a.month) AS tried_now
        FROM active AS a JOIN first_in_category AS c ON c.customer_id = a.customer_id AND c.month <= a.month
        GROUP BY ALL
    ), per_month AS (
        SELECT month,
               count(*) FILTER (WHERE tried_before > 0) AS returning_buyers,
               count(*) FILTER (WHERE tried_before > 0 AND tried_before < (SELECT count(DISTINCT category) FROM {PRODUCTS})) AS with_headroom,
               count(*) FILTER (WHERE tried_before > 0 AND tried_now > 0) AS expanding_customers,
               count(*) AS active_customers, sum(orders) AS orders, sum(spend) AS revenue
        FROM buyers GROUP BY month
    ), cumulative AS (
        SELECT c.month,
               sum(coalesce(n.customers, 0)) OVER (ORDER BY c.month) AS customers_to_date,
               sum(coalesce(k.pairs, 0)) OVER (ORDER BY c.month) AS customer_categories_to_date,
               sum(coalesce(p.revenue, 0)) OVER (ORDER BY c.month) AS revenue_to_date
        FROM calendar AS c
        LEFT JOIN (SELECT month, count(*) AS customers FROM first_order GROUP BY month) AS n USING (month)
        LEFT JOIN (SELECT month, count(*) AS pairs FROM first_in_category GROUP BY month) AS k USING (month)
        LEFT JOIN per_month AS p USING (month)
    )
    SELECT c.month,
           c.customers_to_date - coalesce(n.customers, 0) AS customer_base,
           coalesce(p.returning_buyers, 0) AS returning_buyers, coalesce(p.with_headroom, 0) AS with_headroom,
           coalesce(p.expanding_customers, 0) AS expanding_customers, coalesce(p.active_customers, 0) AS active_customers,
           coalesce(p.orders, 0) AS orders, coalesce(p.revenue, 0)::DOUBLE AS revenue,
           c.customers_to_date, c.customer_categories_to_date, c.revenue_to_date::DOUBLE AS revenue_to_date,
           (SELECT count(DISTINCT category) FROM {PRODUCTS}) AS categories
    FROM cumulative AS c
    LEFT JOIN (SELECT month, count(*) AS customers FROM first_order GROUP BY month) AS n USING (month)
    LEFT JOIN per_month AS p USING (month)
    WHERE c.month > (SELECT min(month) FROM calendar) AND c.month < (SELECT max(month) FROM calendar)
    ORDER BY c.month"""


def log_mean(a: float, b: float) -> float:
    """L(a, b) = (a - b) / (ln a - ln b), and a when a = b: the weight that makes LMDI contributions add up exactly."""
    return a if math.isclose(a, b, rel_tol=1e-12) else (a - b) / (math.log(a) - math.log(b))


class NotAnIdentity(ValueError):
    """A node with factor children does not equal their product: the declared tree is not an identity."""


def _check_identity(month: date, nodes: list[dict], values: dict[str, float | None]) -> None:
    for node in nodes:
        factors = [n["id"] for n in nodes if n.get("parent") == node["id"] and n.get("link") == "factor"]
        parts = [values[f] for f in factors]
        if factors and values[node["id"]] is not None and all(p is not None for p in parts):
            if not math.isclose(math.prod(parts), values[node["id"]], rel_tol=1e-9, abs_tol=1e-9):
                raise NotAnIdentity(f"{month}: {node['id']} = {values[node['id']]} but its factors {factors} multiply to {math.prod(parts)}")


def attributed(nodes: list[dict]) -> set[str]:
    """Nodes whose links up to the North Star are all factors: the ones that get a contribution."""
    by_id = {n["id"]: n for n in nodes}

    def chain(node: dict) -> bool:
        return "parent" not in node or (node["link"] == "factor" and chain(by_id[node["parent"]]))

    return {n["id"] for n in nodes if chain(n)}


def rows(monthly: list[Monthly], latest: dict[str, float | None]) -> list[dict]:
    """The kpi_tree output port's rows: one per complete month and node."""
    nodes = alignment()["kpiTree"]
    root = alignment()["northStar"]["id"]
    with_contribution = attributed(nodes)
    out, previous = [], None
    for i, month in enumerate(monthly):
        values = {n["id"]: MEASURES[n["id"]](month) if n["id"] in MEASURES else None for n in nodes}
        if i == len(monthly) - 1:
            values.update(latest)
        _check_identity(month["month"], nodes, values)
        for node in nodes:
            value, before = values[node["id"]], previous[node["id"]] if previous else None
            contribution = None
            if node["id"] in with_contribution and previous and all(
                (values[n] or 0) > 0 and (previous[n] or 0) > 0 for n in with_contribution
            ):
                weight = log_mean(values[root], previous[root])
                contribution = weight * math.log(value / before)
            out.append({
                "month": month["month"], "node_id": node["id"], "node_name": node["name"], "parent_id": node.get("parent"),
                "metric_type": node["type"], "link": node.get("link"), "unit": node["unit"], "value": value,
                "previous_value": before, "change": None if value is None or before is None else value - before,
                "contribution_to_north_star": contribution,
            })
        previous = values
    return out


def build(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    monthly = conn.execute(monthly_sql()).df().to_dict("records")
    missing = [n["id"] for n in alignment()["kpiTree"] if n["id"] not in MEASURES and n["id"] not in LATEST]
    if missing:
        raise ValueError(f"KPI nodes declared in alignment.yaml that nothing measures: {missing}")
    latest = {node: conn.execute(sql).fetchall() for node, sql in LATEST.items()}
    return rows(monthly, {node: (found[0][0] if found else None) for node, found in latest.items()})
