"""The business alignment's output ports: does the cross-sell score predict purchases, and how the North Star moves."""

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from product_affinity.defs.metadata import table_key
from product_affinity.business import backtest, clv_backtest, kpi_tree
from product_affinity.consumer_aligned import clv, daily_counts
from product_affinity.defs.consumer_aligned import SOURCE_ALIGNED, counts, output_port, publish_port
from product_affinity.consumer_aligned.baskets import LEVELS, PURCHASES
from product_affinity.contract.odcs import table
from product_affinity.product.descriptor import alignment
from product_affinity.defs.resources import AffinitySettings



@dg.asset(**output_port("recommendation_backtest", [SOURCE_ALIGNED["purchase"], SOURCE_ALIGNED["product"], counts.key], backtest))
def recommendation_backtest(context: dg.AssetExecutionContext, warehouse: DuckDBResource, settings: AffinitySettings):
    thresholds = {level: settings.thresholds(level) for level in LEVELS}
    with warehouse.get_connection() as conn:
        # The counts file: where the training side is kept, and the counts its rules come from (counted before this step).
        daily_counts.attach(conn, daily_counts.counts_database(warehouse.database))
        sql = backtest.backtest_sql(conn, thresholds, settings.recommendations_per_customer, settings.backtest_holdout_days,
                                    keep_in=daily_counts.SCHEMA, counted=True)
        result = publish_port(conn, "recommendation_backtest", sql)
        figures = conn.execute(
            f"SELECT level, k, recommender, hit_rate, precision_at_k FROM ({sql}) WHERE k = $k ORDER BY level, recommender",
            {"k": settings.recommendations_per_customer},
        ).fetchall()
    lines = [f"| {level} | {k} | {who} | {hit:.3f} | {precision:.3f} |" for level, k, who, hit, precision in figures]
    context.log.info("backtest at k: " + "; ".join(line.strip("| ").replace(" | ", " ") for line in lines))
    table = "| level | k | recommender | hit rate | precision |\n|---|---|---|---|---|\n" + "\n".join(lines)
    return dg.MaterializeResult(metadata={**result.metadata, "at_k": dg.MetadataValue.md(table)})


@dg.asset(**output_port("clv_backtest", [SOURCE_ALIGNED["purchase"]], clv_backtest))
def clv_backtest_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource, settings: AffinitySettings):
    with warehouse.get_connection() as conn:
        rows, fitted = clv_backtest.backtest(conn, PURCHASES, settings.clv_holdout_days)
        for problem in fitted.problems:
            context.log.warning(f"clv_backtest: no model prediction: {problem}")
        conn.register("_clv_backtest_rows", rows)
        result = publish_port(conn, "clv_backtest", "SELECT * FROM _clv_backtest_rows", **clv.fit_metadata(fitted))
    lines = [f"| {r.predictor} | {r.measure} | {r.actual:.1f} | {r.predicted:.1f} | {r.total_error_percent:+.1f} | {r.mean_absolute_error:.2f} |"
             for r in rows.itertuples() if pd.notna(r.predicted) and pd.notna(r.total_error_percent)]
    context.log.info("clv_backtest: " + "; ".join(line.strip("| ").replace(" | ", " ") for line in lines))
    table_md = "| predictor | measure | actual | predicted | total error % | MAE |\n|---|---|---|---|---|---|\n" + "\n".join(lines)
    return dg.MaterializeResult(metadata={**result.metadata, "holdout": dg.MetadataValue.md(table_md)})


@dg.asset(
    **output_port(
        "kpi_tree",
        [SOURCE_ALIGNED["purchase"], SOURCE_ALIGNED["product"], table_key("customer_metrics"), table_key("recommendation_backtest")],
        kpi_tree,
    )
)
def kpi_tree_asset(warehouse: DuckDBResource):
    with warehouse.get_connection() as conn:
        rows = pd.DataFrame(kpi_tree.build(conn), columns=table("kpi_tree").column_names)
        conn.register("_kpi_rows", rows)
        result = publish_port(conn, "kpi_tree", "SELECT * FROM _kpi_rows")
    north_star = rows[rows["node_id"] == alignment()["northStar"]["id"]].tail(1)
    facts = {} if north_star.empty else {
        "north_star_month": str(north_star["month"].iloc[0])[:7],
        "north_star": float(north_star["value"].iloc[0]),
        "north_star_change": dg.MetadataValue.float(float(north_star["change"].iloc[0])) if pd.notna(north_star["change"].iloc[0]) else dg.MetadataValue.null(),
    }
    return dg.MaterializeResult(metadata={**result.metadata, **facts})


business_assets = [recommendation_backtest, clv_backtest_asset, kpi_tree_asset]
