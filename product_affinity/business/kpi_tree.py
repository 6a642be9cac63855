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

from product_affinity import sql
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
    return sql.load(__file__, "kpi_tree.sql").format(lines=lines(purchases), products=PRODUCTS)


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
