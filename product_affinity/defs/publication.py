"""The publication/snapshot asset (write-audit-publish's last step) and the report of a run that published nothing.

The snapshot itself is made by product_affinity.publication, which knows nothing of Dagster.
"""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from product_affinity.defs.business import business_assets
from product_affinity.defs.metadata import asset_lineage
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.defs.consumer_aligned import SOURCE_ALIGNED, output_ports
from product_affinity.defs.quality_checks import run_of
from product_affinity.defs.rollups import rollup_assets
from product_affinity.defs.source_aligned import OWNERS
from product_affinity.product.descriptor import asset_tags, delivery_port
from product_affinity.publication import NothingPublished, publish, published_dir, published_snapshot
from product_affinity.quality import governance

SNAPSHOT_KEY = dg.AssetKey(["publication", "snapshot"])


@dg.asset(
    key=SNAPSHOT_KEY,
    group_name="publication",
    deps=[*SOURCE_ALIGNED.values(), *(a.key for a in [*output_ports, *business_assets, *rollup_assets])],
    description="The published, read-only snapshot of every table: what consumers read. Runs only once every "
    "table was built and passed its blocking checks; until then the previous snapshot stays published. "
    "Open it with product_affinity.publication.open_published() or the file named in published/CURRENT.",
    owners=OWNERS,
    kinds={delivery_port("published-snapshot")["type"]},
    tags=asset_tags(layer="publication"),
    op_tags=WAREHOUSE_STEP,
)
def snapshot(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    path = Path(warehouse.database)
    context.log.info(f"measuring the governance SLOs, then publishing {path} into {published_dir(path)}")
    with warehouse.get_connection() as conn:
        # Measured on the data about to be published, with the running job's asset graph, so readers only read.
        governance.record(conn, run_of(context, None), asset_lineage(context.job_def.asset_layer.asset_graph))
        published = publish(conn, path, context.run.run_id)
    context.log.info(
        f"published {published.path} in {published.copy_seconds:.2f}s (was {published.previous}); "
        f"removed {published.removed or 'nothing'}"
    )
    rows = "\n".join(f"| {name} | {count:,} |" for name, count in published.tables.items())
    return dg.MaterializeResult(
        metadata={
            "snapshot": dg.MetadataValue.path(str(published.path)),
            "bytes": published.path.stat().st_size,
            "copy_seconds": round(published.copy_seconds, 3),
            "previous_snapshot": published.previous or "",
            "tables": dg.MetadataValue.md(f"| table | rows |\n|---|---|\n{rows}"),
            "row_counts": dg.MetadataValue.json(published.tables),
        }
    )


def _facts(metadata: dict) -> str:
    """A check's scalar metadata (observed value, threshold...) on one line; tables and documents left out."""
    return ", ".join(
        f"{key}={entry.value}" for key, entry in metadata.items()
        if isinstance(entry.value, (int, float, str, bool)) and len(str(entry.value)) <= 100
    )


def failure_report(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, warehouse: Path) -> str:
    """Why a run published nothing: failed steps, failed checks, the assets not built, what consumers still read."""
    lines = []
    for event in result.all_events:
        if event.is_step_failure or event.is_resource_init_failure:
            error = event.event_specific_data.error
            if error.cls_name != "DagsterAssetCheckFailedError":  # the failed checks are listed below, with their facts
                lines.append(f"FAILED {event.step_key or 'resource setup'}: {(error.cause or error).message.strip()}")
    for check in result.get_asset_check_evaluations():
        if not check.passed:
            kind = f"{check.severity.value}{', blocking' if check.blocking else ''}"
            detail = "; ".join(filter(None, [check.description, _facts(check.metadata)]))
            lines.append(f"FAILED check {check.asset_key.to_user_string()}:{check.check_name} ({kind}){': ' + detail if detail else ''}")
    # Steps held back by a failed blocking check never start (no STEP_SKIPPED): compare plan and outcome.
    planned = {
        record.dagster_event.asset_key
        for record in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    }
    built = {event.asset_key for event in result.get_asset_materialization_events()}
    if missing := sorted(key.to_user_string() for key in planned - built):
        lines.append(f"Not materialized: {', '.join(missing)}")
    if SNAPSHOT_KEY in built:  # only a check on the snapshot itself can fail after it
        lines.append(f"The run published {published_snapshot(warehouse)} before it failed.")
    else:
        lines.append(nothing_published(warehouse))
    return "\n".join(lines)


def nothing_published(warehouse: Path) -> str:
    """What consumers read after a run that published nothing."""
    try:
        return f"Nothing from this run was published; consumers still read {published_snapshot(warehouse)}, unchanged."
    except NothingPublished:
        return f"Nothing from this run was published, and nothing has been published from {warehouse} yet."

