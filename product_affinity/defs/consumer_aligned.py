"""Consumer-aligned output ports: the product's public contract (columns and types in the data contract)."""


from types import ModuleType

import dagster as dg
from dagster_duckdb import DuckDBResource

from product_affinity.consumer_aligned import affinity_matrix, clv, customer_metrics, daily_counts, recommendations
from product_affinity.consumer_aligned import association_rules as rules
from product_affinity.consumer_aligned.baskets import LEVELS, PURCHASES
from product_affinity.contract.odcs import table, tables
from product_affinity.product.descriptor import asset_tags, kinds, port
from product_affinity.defs.quality_checks import freshness_policy
from product_affinity.defs.partitions import daily, days_of, one_run
from product_affinity.defs.resources import WAREHOUSE_STEP, AffinitySettings
from product_affinity.defs.source_aligned import OWNERS
from product_affinity.defs.metadata import column_schema, materialization_metadata, table_key
from product_affinity.partitions import Days
from product_affinity.warehouse import replace_table

SOURCE_ALIGNED = {t.name: table_key(t) for t in tables().values() if t.source_file}  # the tables loaded from a source


def output_port(name: str, deps: list[dg.AssetKey], defined_in: ModuleType) -> dict:
    """Asset arguments shared by every output port: schema from the contract; description, ownership, kinds and tags
    from the data product descriptor (which resolves the port's description from the contract)."""
    t = table(name)
    return dict(
        name=name,
        key_prefix="consumer_aligned",
        group_name="consumer_aligned",
        deps=deps,
        description=f"{port(name)['description']}\n\n{defined_in.__doc__}",
        owners=OWNERS,
        kinds=kinds(name),
        tags=asset_tags(name, layer="consumer_aligned", output_port=""),
        metadata={"dagster/column_schema": column_schema(t), "dagster/table_name": t.physical_name},
        freshness_policy=freshness_policy(),
        op_tags=WAREHOUSE_STEP,
    )


def publish_port(conn, name: str, sql: str, **metadata) -> dg.MaterializeResult:
    """Replace an output port's table from a query, typed as the contract says, and describe it for Dagster."""
    replace_table(conn, table(name), sql)
    return dg.MaterializeResult(metadata=materialization_metadata(conn, table(name), **metadata))


@dg.op(ins={"purchase": dg.In(dg.Nothing), "product": dg.In(dg.Nothing)},  # run after the lines and products load
       out={"days": dg.Out(Days | None), "chunks": dg.DynamicOut()}, tags=WAREHOUSE_STEP)
def plan_counting(context: dg.OpExecutionContext, warehouse: DuckDBResource, settings: AffinitySettings):
    """Fanned out (`fan_out_days`): the run's days, widened as `days_to_count` widens them, their lines exported as
    Parquet for the chunks' steps, and the chunks, each (root, days). Otherwise nothing: the load step counts."""
    if settings.fan_out_days is None:
        yield dg.Output(None, "days")
        return
    root = settings.partitions(warehouse.database)
    with warehouse.get_connection() as conn:
        daily_counts.attach(conn, daily_counts.counts_database(warehouse.database))
        days = daily_counts.days_to_count(conn, days_of(context))
        daily_counts.export_lines(conn, root, days)
    yield dg.Output(days, "days")
    for chunk in days.chunks(settings.fan_out_days):
        yield dg.DynamicOutput((root, chunk), output_name="chunks", mapping_key=chunk.first.strftime("%Y%m%d"))


@dg.op
def count_chunk(context: dg.OpExecutionContext, settings: AffinitySettings, chunk) -> Days:
    """The map over one chunk's days (root, days): their lines' files counted into per-day count files under the root.
    It requires no warehouse: it takes no lock and opens no DuckDB file, so chunks run at once."""
    root, days = chunk
    if settings.engine == "spark":
        from product_affinity.consumer_aligned import spark_counts  # pyspark: the spark extra, needed by this engine only

        spark_counts.count_lines(spark_counts.session(), root, days, settings.category_max_itemset_size)
    else:
        daily_counts.count_files(root, days, settings.category_max_itemset_size)
    context.log.info(f"counted {days} ({settings.engine}) into {root}")
    return days


@dg.op(out=dg.Out(dg.Nothing), tags=WAREHOUSE_STEP)
def load_counts(context: dg.OpExecutionContext, warehouse: DuckDBResource, settings: AffinitySettings,
                days: Days | None, counted: list[Days]) -> None:
    """The counts of the run's days into the counts file and the window's totals: loaded from the chunks' files when
    the count was fanned out (`days` planned), else counted here, by DuckDB in the warehouse or by Spark."""
    with warehouse.get_connection() as conn:
        daily_counts.attach(conn, daily_counts.counts_database(warehouse.database))
        if days is not None:
            if [day for chunk in sorted(counted, key=lambda c: c.first) for day in chunk] != list(days):
                raise RuntimeError(f"the chunks counted {sorted(map(str, counted))}, not the days planned, {days}")
            counted_days = daily_counts.count_days(conn, days, settings.category_max_itemset_size,
                                                   settings.rules_window_days, counted_in=settings.partitions(warehouse.database))
        else:
            days = daily_counts.days_to_count(conn, days_of(context))
            if settings.engine == "spark":
                from product_affinity.consumer_aligned import spark_counts  # pyspark: the spark extra, needed by this engine only

                counted_days = spark_counts.count_days(conn, settings.partitions(warehouse.database), days,
                                                       settings.category_max_itemset_size, settings.rules_window_days)
            else:
                counted_days = daily_counts.count_days(conn, days, settings.category_max_itemset_size, settings.rules_window_days)
        held = daily_counts.size(conn)
    context.log.info(f"counts ({days}, {settings.engine}, {len(counted) or 'not'} fanned out): {counted_days.baskets:,} "
                     f"baskets on {counted_days.days:,} days, {counted_days.recounted:,} days recounted, {counted_days.itemsets}")
    context.add_output_metadata({
        "engine": settings.engine, "fanned_out_steps": len(counted),
        "days_with_baskets": counted_days.days, "days_recounted": counted_days.recounted, "baskets": counted_days.baskets,
        "itemset_rows_written": dg.MetadataValue.json(counted_days.itemsets), "rows_held": dg.MetadataValue.json(held),
    })


@dg.graph_asset(
    key=["counts", "daily_counts"],
    group_name="consumer_aligned",
    description=f"Per-day basket, product, product-pair and category-itemset counts, and their sum over the rules' "
    f"window. With `fan_out_days`, the counting is a step per chunk of days, run in parallel by a multiprocess, "
    f"Kubernetes or Celery executor, then loaded by one step.\n\n{daily_counts.__doc__}",
    owners=OWNERS,
    kinds={"duckdb"},
    tags=asset_tags(layer="consumer_aligned"),
    ins={name: dg.AssetIn(SOURCE_ALIGNED[name], dagster_type=dg.Nothing) for name in ("purchase", "product")},
    partitions_def=daily,
    backfill_policy=one_run,
)
def counts(purchase, product):
    days, chunks = plan_counting(purchase=purchase, product=product)
    return load_counts(days, chunks.map(count_chunk).collect())


@dg.asset(**output_port("association_rules", [counts.key, SOURCE_ALIGNED["product"]], rules))
def association_rules(context: dg.AssetExecutionContext, warehouse: DuckDBResource, settings: AffinitySettings):
    with warehouse.get_connection() as conn:
        daily_counts.attach(conn, daily_counts.counts_database(warehouse.database))
        conn.execute("BEGIN TRANSACTION")  # a window setting changed since the counts ran: age days out, or bring them in
        daily_counts.sync_window(conn, settings.rules_window_days)
        conn.execute("COMMIT")
        thresholds, how = {level: settings.thresholds(level) for level in LEVELS}, {"engine": settings.engine}
        if settings.engine == "spark":  # the reduce on Spark, over the window's per-day count files
            from product_affinity.consumer_aligned import spark_counts  # pyspark: the spark extra, needed by this engine only

            spark = spark_counts.session()
            mined = spark_counts.reduce(conn, settings.partitions(warehouse.database), thresholds, spark=spark)
            how["spark"] = spark_counts.described(spark)
        else:  # the window's totals, kept by difference in the counts file
            mined = daily_counts.rules_from_counts(conn, thresholds)
        by_level = {level: int((mined["level"] == level).sum()) for level in LEVELS}
        context.log.info(f"association_rules ({settings.engine}): {by_level}")
        conn.register("_mined_rules", mined)
        return publish_port(conn, "association_rules", "SELECT * FROM _mined_rules", rules_by_level=by_level,
                              window_baskets=daily_counts.window_baskets(conn), **how)


@dg.asset(**output_port("product_affinity_matrix", [counts.key], affinity_matrix))
def product_affinity_matrix(warehouse: DuckDBResource):
    with warehouse.get_connection() as conn:
        daily_counts.attach(conn, daily_counts.counts_database(warehouse.database))
        return publish_port(conn, "product_affinity_matrix", affinity_matrix.affinity_matrix_sql(conn))


@dg.asset(**output_port("cross_sell_recommendations", [table_key("association_rules"), SOURCE_ALIGNED["purchase"], counts.key],
                        recommendations))
def cross_sell_recommendations(warehouse: DuckDBResource, settings: AffinitySettings):
    with warehouse.get_connection() as conn:
        daily_counts.attach(conn, daily_counts.counts_database(warehouse.database))  # the baskets each item is in
        return publish_port(conn, "cross_sell_recommendations", recommendations.build(
            conn, settings.recommendations_per_customer, item_baskets=daily_counts.item_baskets_sql))


@dg.asset(
    **output_port(
        "customer_metrics",
        [SOURCE_ALIGNED["customer"], SOURCE_ALIGNED["purchase"], table_key("cross_sell_recommendations")],
        customer_metrics,
    )
)
def customer_metrics_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource, settings: AffinitySettings):
    with warehouse.get_connection() as conn:
        last_day = conn.execute(f"SELECT CAST(max(purchased_at) AS DATE) FROM {PURCHASES}").fetchone()[0]
        summary = clv.summarise(conn, PURCHASES, last_day)
        fitted = clv.fit(summary)
        for problem in fitted.problems:
            context.log.warning(f"customer_metrics: predictions left empty: {problem}")
        horizon_weeks = settings.clv_horizon_months * clv.WEEKS_PER_MONTH
        conn.register(customer_metrics.PREDICTIONS, clv.predictions(summary, fitted, horizon_weeks, settings.discount_rate))
        aggregates = None  # computed by DuckDB in the port's query
        if settings.engine == "spark":  # computed by Spark from the lines' files, read from its Parquet output
            from product_affinity.consumer_aligned import spark_counts  # pyspark: the spark extra, needed by this engine only

            daily_counts.attach(conn, daily_counts.counts_database(warehouse.database))  # which days' files are current
            aggregates = spark_counts.customer_aggregates(conn, settings.partitions(warehouse.database),
                                                          settings.frequency_window_days)
        return publish_port(conn, "customer_metrics",
                            customer_metrics.customer_metrics_sql(settings.frequency_window_days, aggregates),
                            **clv.fit_metadata(fitted), engine=settings.engine)


output_ports = [association_rules, product_affinity_matrix, cross_sell_recommendations, customer_metrics_asset]
consumer_aligned_assets = [counts, *output_ports]
