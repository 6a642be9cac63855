"""Write-audit-publish: consumers read an immutable snapshot, never the warehouse being written.

The pipeline, the only writer, builds every table in the working warehouse (the staging area) and
the asset checks audit them there. The `publication/snapshot` asset depends on every table, so it
runs only when all of them were built and none failed a blocking check; it then copies the
checkpointed warehouse file into a new snapshot and atomically moves the `CURRENT` pointer to it:

    data/warehouse.duckdb                               working warehouse, written by the pipeline alone
    data/published/CURRENT                              names the published snapshot
    data/published/20261101T050012.345678Z-1a2b3c4d.duckdb    a snapshot: UTC time and run id, read-only

Readers open the snapshot CURRENT names, read-only (`open_published`). A snapshot is never written
after it is renamed into place, so readers never wait on DuckDB's single-writer lock and never see
a half-written table. Every step is ordered so that a run failing or killed at any point leaves
CURRENT and the snapshot it names as they were; the next publication removes what it left behind.
"""

import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from product_affinity.defs.business import business_assets
from product_affinity.defs.consumer_aligned import SOURCE_ALIGNED, consumer_aligned_assets
from product_affinity.product.descriptor import asset_tags, delivery_port
from product_affinity.defaults import DEFAULT_WAREHOUSE
from product_affinity.defs.rollups import rollup_assets
from product_affinity.defs.source_aligned import OWNERS
from product_affinity.quality import governance
from product_affinity.defs.quality_checks import run_of

POINTER = "CURRENT"
KEEP_SNAPSHOTS = 3  # the published one and the two before it; a reader is never two publications behind
SNAPSHOT_KEY = dg.AssetKey(["publication", "snapshot"])


class NothingPublished(FileNotFoundError):
    """No run has published the warehouse yet."""


def published_dir(warehouse: Path) -> Path:
    return Path(warehouse).parent / "published"


def _current(directory: Path) -> str | None:
    try:
        return (directory / POINTER).read_text().strip() or None
    except FileNotFoundError:
        return None


def published_snapshot(warehouse: Path = DEFAULT_WAREHOUSE) -> Path:
    """The snapshot consumers read: the file CURRENT names."""
    name = _current(published_dir(warehouse))
    if name is None:
        raise NothingPublished(f"nothing has been published from {warehouse} yet: run `product-affinity run`")
    return published_dir(warehouse) / name


def open_published(warehouse: Path = DEFAULT_WAREHOUSE) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published snapshot: never blocked by a running pipeline."""
    return duckdb.connect(str(published_snapshot(warehouse)), read_only=True)


@dataclass(frozen=True)
class Published:
    path: Path
    previous: str | None
    tables: dict[str, int]
    copy_seconds: float
    removed: list[str]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _row_counts(snapshot: Path) -> dict[str, int]:
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        names = [r[0] for r in conn.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0] for name in names}


def _point_to(directory: Path, name: str) -> None:
    """Replace CURRENT atomically: readers see the old name or the new one, never a torn file."""
    staged = directory / f"{POINTER}.partial"
    with open(staged, "w") as f:
        f.write(f"{name}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(staged, directory / POINTER)
    _fsync(directory)


def prune(directory: Path, keep: int = KEEP_SNAPSHOTS) -> list[str]:
    """Remove `*.partial` files, snapshots CURRENT never named (a killed or failed publication's), and
    all but the last `keep` snapshots up to the current one. Returns the names removed."""
    current = _current(directory)
    snapshots = sorted(p.name for p in directory.glob("*.duckdb"))
    kept = set([name for name in snapshots if current is not None and name <= current][-keep:])
    removed = [p.name for p in directory.glob("*.partial")] + [name for name in snapshots if name not in kept]
    for name in removed:
        (directory / name).unlink(missing_ok=True)
    return removed


def publish(conn: duckdb.DuckDBPyConnection, warehouse: Path, run_id: str, keep: int = KEEP_SNAPSHOTS) -> Published:
    """Copy the working warehouse into a new snapshot and point CURRENT at it.

    `conn` is open on the warehouse and stays open throughout, so DuckDB's lock keeps every other
    process from writing the file while it is copied. The checkpointed file is copied rather than its
    tables re-inserted: at Instacart scale the copy takes 0.4 s, DuckDB's COPY FROM DATABASE 6.3 s.
    """
    warehouse, directory = Path(warehouse), published_dir(warehouse)
    directory.mkdir(parents=True, exist_ok=True)
    previous = _current(directory)
    removed = prune(directory, keep)  # first, so a killed run's leftovers free their space before the copy
    conn.execute("CHECKPOINT")  # merge the write-ahead log: the file alone is then the whole database
    wal = warehouse.with_name(f"{warehouse.name}.wal")
    if wal.exists() and wal.stat().st_size:
        raise RuntimeError(f"{wal} is not empty after CHECKPOINT: another connection holds an open transaction")

    started = time.perf_counter()
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{run_id[:8]}.duckdb"
    staged, snapshot = directory / f"{name}.partial", directory / name
    shutil.copyfile(warehouse, staged)
    _fsync(staged)
    staged.chmod(0o444)  # immutable from here on
    os.replace(staged, snapshot)
    _fsync(directory)
    copy_seconds = time.perf_counter() - started

    tables = _row_counts(snapshot)  # proves it opens before any reader is pointed at it
    _point_to(directory, name)
    try:  # published: from here on nothing may fail the step; the next publication prunes again
        removed += prune(directory, keep)
    except OSError as error:
        dg.get_dagster_logger().warning(f"could not prune {directory}: {error}")
    return Published(snapshot, previous, tables, copy_seconds, removed)


@dg.asset(
    key=SNAPSHOT_KEY,
    group_name="publication",
    deps=[*SOURCE_ALIGNED.values(), *(a.key for a in [*consumer_aligned_assets, *business_assets, *rollup_assets])],
    description="The published, read-only snapshot of every table: what consumers read. Runs only once every "
    "table was built and passed its blocking checks; until then the previous snapshot stays published. "
    "Open it with product_affinity.publication.open_published() or the file named in published/CURRENT.",
    owners=OWNERS,
    kinds={delivery_port("published-snapshot")["type"]},
    tags=asset_tags(layer="publication"),
)
def snapshot(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    path = Path(warehouse.database)
    context.log.info(f"measuring the governance SLOs, then publishing {path} into {published_dir(path)}")
    with warehouse.get_connection() as conn:
        # Measured on the data about to be published, with the running job's asset graph, so readers only read.
        governance.record(conn, run_of(context, None), context.job_def.asset_layer.asset_graph)
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
    try:
        if SNAPSHOT_KEY in built:  # only a check on the snapshot itself can fail after it
            lines.append(f"The run published {published_snapshot(warehouse)} before it failed.")
        else:
            lines.append(f"Nothing from this run was published; consumers still read {published_snapshot(warehouse)}, unchanged.")
    except NothingPublished:
        lines.append(f"Nothing from this run was published, and nothing has been published from {warehouse} yet.")
    return "\n".join(lines)
