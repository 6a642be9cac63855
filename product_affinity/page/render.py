"""The data product page: one self-contained HTML file built from the published snapshot, the descriptor and the alignment.

It reads only the published snapshot (audited data), inlines every figure as SVG and loads
nothing from anywhere, so it opens offline from the file system and needs no server.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
from jinja2 import Environment, PackageLoader, StrictUndefined

from product_affinity.consumer_aligned.baskets import LEVELS
from product_affinity.consumer_aligned.metrics import definitions
from product_affinity.contract.odcs import contract, table
from product_affinity.defaults import SLO_RUNS
from product_affinity.page import charts
from product_affinity.product.descriptor import alignment, custom, owners
from product_affinity.product.descriptor import descriptor
from product_affinity.quality import report

TOP_RULES = 8
TOP_OPPORTUNITIES = 8
# Where the product's other pages are when they run with their defaults (`product-affinity serve`, `make dev`).
API_ADDRESS = "http://127.0.0.1:8000"
DAGSTER_UI = "http://127.0.0.1:3000"


def number(value: float | None, unit: str) -> str:
    """A figure as the page shows it, by unit: counts whole, shares in percent, money with cents."""
    if value is None or value != value:  # None or NaN
        return "–"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "money":
        return f"{value:,.2f}"
    if unit == "score":
        return f"{value:.3f}"
    if unit == "customers":
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def signed(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "–"
    if unit == "share":
        return f"{value * 100:+.1f} pts"
    return ("+" if value >= 0 else "-") + number(abs(value), unit)


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    result = conn.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def _kpi(conn: duckdb.DuckDBPyConnection) -> tuple[str, list[dict], dict, list[dict]]:
    month_rows = _rows(conn, f"""SELECT * FROM {table('kpi_tree').physical_name}
        WHERE month = (SELECT max(month) FROM {table('kpi_tree').physical_name})""")
    by_id = {r["node_id"]: r for r in month_rows}
    nodes = []
    for node in alignment()["kpiTree"]:
        row = by_id.get(node["id"], {})
        nodes.append({**node, "link": node.get("link", ""), "value": number(row.get("value"), node["unit"]),
                      "change": signed(row.get("change"), node["unit"]),
                      "contribution": "–" if row.get("contribution_to_north_star") is None else f"{row['contribution_to_north_star']:+.1f}",
                      "raw_contribution": row.get("contribution_to_north_star")})
    month = str(month_rows[0]["month"])[:7] if month_rows else "no complete month yet"
    root = alignment()["northStar"]["id"]
    trend = _rows(conn, f"""SELECT strftime(month, '%Y-%m') AS month, value FROM {table('kpi_tree').physical_name}
        WHERE node_id = ? ORDER BY month""", [root])
    return month, nodes, next((n for n in nodes if n["id"] == root), {}), trend


def _backtest(conn: duckdb.DuckDBPyConnection) -> tuple[list[dict], list[dict], str]:
    rows = _rows(conn, f"SELECT * FROM {table('recommendation_backtest').physical_name} ORDER BY level, k, recommender")
    headline, verdicts = [], []
    for level in dict.fromkeys(r["level"] for r in rows):
        k = max(r["k"] for r in rows if r["level"] == level)
        score, baseline = (next(r for r in rows if (r["level"], r["k"], r["recommender"]) == (level, k, who))
                           for who in ("cross_sell_score", "most_popular"))
        headline.append({"level": level, "k": k, "score": number(score["hit_rate"], "share"), "baseline": number(baseline["hit_rate"], "share")})
        ratio = score["hit_rate"] / baseline["hit_rate"] if baseline["hit_rate"] else float("inf")
        verdicts.append(f"at {level} level the score's hit rate at top {k} is {ratio:.2f}x the baseline's "
                        f"({'better' if ratio > 1 else 'not better'})")
    verdict = ("On this data, " + "; ".join(verdicts) + ".") if verdicts else "No customer could be evaluated yet."
    return rows, headline, verdict


def _opportunities(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    """What a marketer acts on first: the categories most worth recommending, by the value expected from the customers
    whose first recommendation they are (cross_sell_recommendations, category level, rank 1)."""
    rows = _rows(conn, f"""SELECT recommended_name AS item, count(*) AS customers, sum(expected_value) AS expected_value,
               avg(score) AS score FROM {table('cross_sell_recommendations').physical_name}
        WHERE level = 'category' AND rank = 1 GROUP BY recommended_name
        ORDER BY expected_value DESC NULLS LAST, customers DESC, item LIMIT ?""", [TOP_OPPORTUNITIES])
    return [{**r, "customers": f"{r['customers']:,}", "expected_value": number(r["expected_value"], "money"),
             "score": number(r["score"], "score")} for r in rows]


def context(snapshot: Path, warehouse: Path, lineage: list[dict], docs: Path | None = None, out_dir: Path | None = None) -> dict:
    """Everything the template shows, read from the snapshot and the product's declarations.

    `lineage` is each asset with its upstream assets, from the running asset graph (the page step's
    context): the page reads, it does not load the definitions it is part of. `warehouse` is the
    working warehouse the snapshot was published from, whose API audit log the latency SLO reads.
    """
    product = descriptor()
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        month, kpi_nodes, north_star, trend = _kpi(conn)
        backtest, headline, verdict = _backtest(conn)
        opportunities = _opportunities(conn)
        matrix = _rows(conn, f"SELECT category_1, category_2, lift FROM {table('product_affinity_matrix').physical_name}")
        top_rules = {
            level: _rows(conn, f"""SELECT array_to_string(antecedents, ' + ') AS antecedents, array_to_string(consequents, ' + ') AS consequents,
                   support, confidence, lift FROM {table('association_rules').physical_name} WHERE level = ?
                   ORDER BY lift DESC, rule_id LIMIT ?""", [level, TOP_RULES])
            for level in LEVELS
        }
        if top_rules["product"]:  # product rules name products, not ids
            names = dict(conn.execute(f"SELECT product_id::VARCHAR, product_name FROM {table('product').physical_name}").fetchall())
            for r in top_rules["product"]:
                r["antecedents"], r["consequents"] = (" + ".join(names.get(i, i) for i in r[side].split(" + ")) for side in ("antecedents", "consequents"))
        rows_in = {p["name"]: conn.execute(f"SELECT count(*) FROM {custom(p)['table']}").fetchall()[0][0] for p in product["outputPorts"]}
    slo = report.build(warehouse, SLO_RUNS, read_from=snapshot)
    categories = sorted({r["category_1"] for r in matrix})
    slos = sorted(slo.slos, key=lambda s: s.status != report.FAIL)  # failures first, otherwise the report's order
    return {
        "opportunities": opportunities,
        "links": {
            "data_docs": os.path.relpath(docs / "index.html", out_dir) if docs and out_dir else None,
            "api_docs": f"{API_ADDRESS}/docs", "graphiql": f"{API_ADDRESS}/graphql", "dagster": DAGSTER_UI,
        },
        "product": product, "owners": owners(), "snapshot": snapshot.name, "alignment": alignment(), "month": month,
        "use_cases": custom(product)["useCases"],
        "north_star": north_star, "kpi_nodes": kpi_nodes,
        "kpi_svg": charts.kpi_tree(alignment()["kpiTree"], {n["id"]: [n["value"], f"Δ {n['change']}"] + ([f"Δ NS {n['contribution']}"] if n["raw_contribution"] is not None else []) for n in kpi_nodes}),
        "trend_svg": charts.trend([r["month"] for r in trend], [r["value"] for r in trend], "customers"),
        "backtest": [{**r, "hit_rate": number(r["hit_rate"], "share"), "precision_at_k": number(r["precision_at_k"], "share"),
                      "customers_evaluated": f"{r['customers_evaluated']:,}", "customers_recommended": f"{r['customers_recommended']:,}",
                      "hits": f"{r['hits']:,}"} for r in backtest],
        "backtest_levels": headline, "backtest_verdict": verdict,
        "backtest_svg": charts.backtest(backtest) if backtest else "",
        "cutoff": str(backtest[0]["cutoff_at"])[:16] if backtest else "–", "evaluated_until": str(backtest[0]["evaluated_until"])[:16] if backtest else "–",
        "heatmap_svg": charts.heatmap(categories, {(r["category_1"], r["category_2"]): r["lift"] for r in matrix}) if matrix else "",
        "top_rules": {level: [{**r, "support": f"{r['support']:.3f}", "confidence": f"{r['confidence']:.3f}", "lift": f"{r['lift']:.2f}"} for r in rules]
                      for level, rules in top_rules.items()},
        "contract_id": contract()["id"],
        "output_ports": [{"name": p["name"], "table": custom(p)["table"], "rows": f"{rows_in[p['name']]:,}", "description": p["description"]}
                         for p in product["outputPorts"]],
        "input_ports": [{"name": p["name"], "source": custom(p)["sourceFile"], "table": custom(p)["table"], "description": p["description"]}
                        for p in product["inputPorts"]],
        "delivery_ports": custom(product)["deliveryPorts"],
        "lineage": [{**a, "upstream": a["upstream"] or ["(operational source)"]} for a in lineage],
        "metrics": definitions(),
        "slo_run": slo.run_ids[0] if slo.run_ids else "(none yet)", "slo_runs": len(slo.run_ids), "slo_objective": f"{slo.objective:.0%}",
        "slos": [{"group": s.group, "id": s.id, "target": s.target, "observed": "–" if s.observed is None else f"{s.observed:,.4g}",
                  "status": s.status, "css": {report.PASS: "pass", report.FAIL: "fail"}.get(s.status, "other"),
                  "attainment": "–" if s.attainment is None else f"{s.attainment:.0%} of {s.runs}"} for s in slos],
        "slo_summary": {"passed": sum(s.status == report.PASS for s in slo.slos), "failed": len(slo.failed), "total": len(slo.slos),
                        "other": sum(s.status not in (report.PASS, report.FAIL) for s in slo.slos)},
    }


def write_page(snapshot: Path, warehouse: Path, assets: list[dict], out_dir: Path, docs: Path | None = None) -> Path:
    """Render the page into out_dir/index.html, written aside and renamed so a reader never sees half a page.

    `assets` is the running job's lineage (product_affinity.defs.metadata.asset_lineage); `docs` the Great Expectations Data Docs folder, linked from the page
    by a relative path."""
    environment = Environment(loader=PackageLoader("product_affinity", "page"), autoescape=True, undefined=StrictUndefined)
    html = environment.get_template("template.html.j2").render(**context(snapshot, warehouse, assets, docs, out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    staged, page = out_dir / "index.html.partial", out_dir / "index.html"
    staged.write_text(html, encoding="utf-8")
    os.replace(staged, page)
    return page
