"""All of Product Affinity's Dagster definitions, assembled in one place from the per-layer modules.

Every job, the UI's implicit `__ASSET_JOB` ("Materialize all", "Materialize selected") included, runs its steps in
one process by default (the Definitions' executor): DuckDB lets one process write the warehouse. A run can ask for
a process per step instead (`execution: {config: {multiprocess: {}}}`), for the counting's chunks to run at once
(`fan_out_days`): the steps that open the warehouse still run one at a time. The `product_affinity` job is
what the CLI and the schedule run; "Materialize all" builds the same assets, but a run of a selection (or of checks
only) is a run too.
"""

from __future__ import annotations

import os
from datetime import UTC, timedelta
from pathlib import Path

import dagster as dg

from product_affinity.contract.odcs import checked_tables
from product_affinity.defaults import DEFAULT_SOURCES, DEFAULT_WAREHOUSE, SOURCE_DSN_VARIABLE
from product_affinity.defs.business import business_assets
from product_affinity.defs.consumer_aligned import consumer_aligned_assets
from product_affinity.defs.page import page_path, product_page
from product_affinity.defs.partitions import range_tags
from product_affinity.defs.quality import data_docs, slo_results
from product_affinity.defs.metadata import table_key
from product_affinity.defs.quality_checks import docs_dir, quality_checks
from product_affinity.defs.resources import WAREHOUSE_STEP, resources
from product_affinity.defs.rollups import rollup_assets, rollup_checks
from product_affinity.defs.sensors import database_watermark_sensor, source_files_sensor
from product_affinity.defs.source_aligned import (SOURCES, quarantine, source_aligned_asset, source_aligned_assets,
                                                  source_file_spec, source_files)
from product_affinity.defs.publication import snapshot
from product_affinity.partitions import Days

# Tables in the catalogue that no step of their own builds (Dagster cannot run them): shown, never selected.
WRITTEN_ALONGSIDE = [quarantine, slo_results]


def _executor_config(config: dict) -> dict:
    """The config of Dagster's multi_or_in_process_executor for ours: in a process per step, at most one step that
    opens the warehouse at a time, whatever else the run asks (the warehouse's lock would fail a second one)."""
    if "multiprocess" not in config:
        return config
    limits = [{"key": key, "value": value, "limit": 1} for key, value in WAREHOUSE_STEP.items()]
    return {"multiprocess": {**config["multiprocess"], "tag_concurrency_limits": limits}}


executor = dg.multi_or_in_process_executor.configured(
    _executor_config,
    name="in_process_or_multiprocess",
    config_schema=dg.Field(
        dg.Selector({
            "in_process": {},
            "multiprocess": {"max_concurrent": dg.Field(int, is_required=False, description=(
                "processes at once (default: one per core); the warehouse's steps run one at a time in any case"))},
        }),
        default_value={"in_process": {}},
    ),
)

everything = dg.define_asset_job(
    "product_affinity",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("sources") - dg.AssetSelection.assets(*(spec.key for spec in WRITTEN_ALONGSIDE)),
    description="Materialize every asset: sources -> source-aligned -> consumer-aligned, audit them, then publish a snapshot.",
)

@dg.schedule(job=everything, cron_schedule="0 5 * * *", execution_timezone="UTC", name="daily_product_affinity",
             description="Every day at 05:00 UTC, after the nightly source exports: reload yesterday (closed now) and "
             "today so far, count them, and rebuild and publish what depends on them. The sensors cover late lines "
             "of older days; a backfill from the UI covers any range, as one run.")
def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    today = context.scheduled_execution_time.astimezone(UTC).date()
    return dg.RunRequest(tags=range_tags(Days(today - timedelta(days=1), today + timedelta(days=1))))


def links(warehouse: Path):
    """Adds to an asset's metadata links to the product page and to the Data Docs (a checked table's own expectation
    suite page, else the index). Both are files next to the warehouse, written by the first run."""
    docs = docs_dir(resources(DEFAULT_SOURCES, warehouse)["warehouse"])
    suites = {table_key(t): docs / "expectations" / f"{t.name}.html" for t in checked_tables()}

    def link(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.merge_attributes(metadata={
            "product_page": dg.MetadataValue.url(page_path(warehouse).resolve().as_uri()),
            "data_docs": dg.MetadataValue.url(suites.get(spec.key, docs / "index.html").resolve().as_uri()),
        })

    return link


def build_definitions(sources: Path = DEFAULT_SOURCES, warehouse: Path = DEFAULT_WAREHOUSE,
                      database: str | None = None) -> dg.Definitions:
    """The product's definitions, reading its sources from the files in `sources`, or, given a DSN in `database`,
    from the operational PostgreSQL database (loaded incrementally by dlt into a staging file beside the warehouse)."""
    # One DuckDB writer at a time: DuckDB locks the file per process, so steps run in one process, or one at a time
    # when they open the warehouse (executor).
    loading, extra_resources = [*source_files, *source_aligned_assets], {}
    if database:
        from product_affinity.defs.staging import staging_assets

        load, extra_resources = staging_assets(database, warehouse)
        loading = [*(source_file_spec(name, database=True) for name in SOURCES), load,
                   *(source_aligned_asset(name, database=True) for name in SOURCES)]
    assets = [*loading, quarantine, *consumer_aligned_assets, *business_assets, *rollup_assets,
              snapshot, product_page, slo_results, data_docs]
    return dg.Definitions(
        assets=dg.map_asset_specs(links(warehouse), assets),
        asset_checks=[*quality_checks, *rollup_checks],
        jobs=[everything],
        schedules=[daily],
        sensors=[source_files_sensor(sources, database=bool(database)), database_watermark_sensor(database)],
        resources=resources(sources, warehouse) | extra_resources,
        executor=executor,
    )


def product_affinity_job(sources: str, warehouse: str, database: str | None = None) -> dg.JobDefinition:
    """The product_affinity job of build_definitions, rebuilt by name in each step's process when a run's steps run in
    processes of their own (dg.build_reconstructable_job: a job built from arguments cannot be pickled to them)."""
    return build_definitions(Path(sources), Path(warehouse), database).resolve_job_def("product_affinity")


defs = build_definitions(database=os.environ.get(SOURCE_DSN_VARIABLE) or None)
