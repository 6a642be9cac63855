"""All of Product Affinity's Dagster definitions, assembled in one place from the per-layer modules."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from product_affinity.business.assets import business_assets
from product_affinity.consumer_aligned.assets import consumer_aligned_assets
from product_affinity.page.assets import product_page
from product_affinity.publication import snapshot
from product_affinity.quality.checks import quality_checks
from product_affinity.semantic.rollups import rollup_assets, rollup_checks
from product_affinity.resources import DEFAULT_SOURCES, DEFAULT_WAREHOUSE, resources
from product_affinity.source_aligned.assets import source_aligned_assets, source_files

everything = dg.define_asset_job(
    "product_affinity",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("sources"),
    description="Materialize every asset: sources -> source-aligned -> consumer-aligned, audit them, then publish a snapshot.",
)

daily = dg.ScheduleDefinition(
    name="daily_product_affinity",
    job=everything,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    description="Refresh everything daily at 05:00 UTC, after the nightly source exports.",
)


def build_definitions(sources: Path = DEFAULT_SOURCES, warehouse: Path = DEFAULT_WAREHOUSE) -> dg.Definitions:
    # One DuckDB writer at a time: DuckDB locks the file per process, so steps run in one process.
    return dg.Definitions(
        assets=[*source_files, *source_aligned_assets, *consumer_aligned_assets, *business_assets, *rollup_assets, snapshot,
                product_page],
        asset_checks=[*quality_checks, *rollup_checks],
        jobs=[everything],
        schedules=[daily],
        resources=resources(sources, warehouse),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
