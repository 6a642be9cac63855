"""Source-aligned assets: typed, cleaned copies of customer_info, product and purchase.

Each asset loads one source, a file or (with a database source) the table dlt staged from PostgreSQL; rows it cannot
accept land in source_aligned.quarantine.
"""


from datetime import UTC, datetime

import dagster as dg
from dagster_duckdb import DuckDBResource

from product_affinity.contract.odcs import table
from product_affinity.product.descriptor import asset_tags, custom, kinds, owners, port
from product_affinity.defs.quality_checks import freshness_policy
from product_affinity.defs.partitions import daily, days_of, one_run
from product_affinity.defs.resources import WAREHOUSE_STEP, SourceFiles
from product_affinity.source_aligned.cleaning import FOREIGN_KEYS, ingest, ingest_scan
from product_affinity.sources.database import SOURCES, table_name
from product_affinity.sources.staging import STAGING_SCHEMA, staged_scan
from product_affinity.defs.metadata import column_schema, materialization_metadata, table_key

OWNERS = owners()  # from the data product descriptor's team


def source_file_spec(name: str, database: bool = False) -> dg.AssetSpec:
    """The operational source (a file, or a table of the operational database), observed rather than built here."""
    t = table(name)
    stem = t.source_file.removesuffix(".csv")
    return dg.AssetSpec(
        key=["sources", stem],
        description=f"Operational database table {stem}, loaded incrementally on updated_at ({t.description})"
        if database else f"Operational source file {t.source_file} ({t.description})",
        group_name="sources",
        owners=OWNERS,
        kinds={"postgres"} if database else set(custom(port(name))["sourceKinds"]),
        tags=asset_tags(),
    )


def source_aligned_asset(name: str, database: bool = False) -> dg.AssetsDefinition:
    """The cleaned table of one source: from its file, or (database) from the table dlt staged from PostgreSQL."""
    t = table(name)
    loaded_from = dg.AssetKey([STAGING_SCHEMA, table_name(name)]) if database else source_file_spec(name).key
    upstream = [loaded_from] + [
        table_key(fk.references) for fk in FOREIGN_KEYS.get(name, [])
    ]

    @dg.asset(
        name=name,
        key_prefix="source_aligned",
        group_name="source_aligned",
        description=f"{port(name)['description']} Typed, trimmed, normalised and deduplicated on "
        f"({', '.join(t.primary_key)}); rejected rows go to source_aligned.quarantine with a reason.",
        deps=upstream,
        owners=OWNERS,
        kinds=kinds(name),
        tags=asset_tags(name, layer="source_aligned"),
        metadata={"dagster/column_schema": column_schema(t), "dagster/table_name": t.physical_name},
        freshness_policy=freshness_policy() if name == "purchase" else None,
        partitions_def=daily if t.partition_column else None,
        backfill_policy=one_run if t.partition_column else None,
        op_tags=WAREHOUSE_STEP,
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource, source_files: SourceFiles):
        with warehouse.get_connection() as conn:
            now = datetime.now(UTC).replace(tzinfo=None)
            days = days_of(context) if t.partition_column else None
            if database:
                result = ingest_scan(conn, staged_scan(conn, warehouse.database, name), name, now=now, days=days)
            else:
                result = ingest(conn, source_files.path, name, now=now, days=days)
            context.log.info(
                f"{result.source}: {result.rows_in:,} rows in, {result.accepted:,} accepted, "
                f"{sum(result.quarantined.values()):,} quarantined {result.quarantined or ''}"
                + (f" (days {days}, and the lines with no day in the partitions)" if days else "")
            )
            if result.ignored_columns:
                context.log.warning(f"{result.source}: ignored column(s) not in the contract: {result.ignored_columns}")
            return dg.MaterializeResult(
                metadata=materialization_metadata(
                    conn,
                    t,
                    rows_in=result.rows_in,
                    rows_accepted=result.accepted,
                    rows_quarantined=sum(result.quarantined.values()),
                    quarantined_by_reason=dg.MetadataValue.json(result.quarantined),
                    ignored_columns=list(result.ignored_columns),
                )
            )

    return _asset


def quarantine_spec(assets: list[dg.AssetsDefinition]) -> dg.AssetSpec:
    """source_aligned.quarantine in the catalogue: a table with its schema and lineage, but not a step of its own.

    Each source-aligned step replaces its source's rows in it while loading (see cleaning.ingest), so no one step
    builds it and Dagster cannot run it; the rows each step put there are counted in that step's materialization
    (rows_quarantined, quarantined_by_reason)."""
    t = table("quarantine")
    return dg.AssetSpec(
        key=[t.schema, t.name],
        deps=[asset.key for asset in assets],
        description=f"{t.description} Written by the source-aligned steps as they load each file (each replaces its "
        "own source's rows); their materializations count what they quarantined.",
        group_name="source_aligned",
        owners=OWNERS,
        kinds={"duckdb", "table"},
        tags=asset_tags(layer="source_aligned"),
        metadata={"dagster/column_schema": column_schema(t), "dagster/table_name": t.physical_name},
    )


source_files = [source_file_spec(name) for name in SOURCES]
source_aligned_assets = [source_aligned_asset(name) for name in SOURCES]
quarantine = quarantine_spec(source_aligned_assets)
