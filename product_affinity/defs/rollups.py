"""The semantic model's rollups as Dagster assets, each gated by a check that it adds up to the detail.

A rollup is built in the working warehouse after the tables it summarises, audited, and published
with them in the snapshot (publication depends on it), so the APIs answer covered queries from a
few thousand rows. Its check recomputes every measure's parts over the whole detail and compares
them with the rollup's own totals; it blocks publication when they differ, since the APIs would
otherwise give different figures depending on which path a query took.
"""

from __future__ import annotations

import math

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from product_affinity.defs.metadata import table_key
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.contract.odcs import table, tables
from product_affinity.product.descriptor import asset_tags, owners
from product_affinity.semantic.model import Rollup
from product_affinity.semantic.loader import model
from product_affinity.semantic.compiler import finer_rollup, rollup_sql


def _key(rollup: Rollup) -> dg.AssetKey:
    return dg.AssetKey(["semantic", f"{rollup.view}_{rollup.name}"])


def _upstream(rollup: Rollup) -> list[dg.AssetKey]:
    """The tables of every cube the rollup's view joins, as assets, and the rollup it is summed from, if any."""
    view = model().views[rollup.view]
    finer = finer_rollup(rollup)
    return [table_key(t) for t in (table(model().cubes[c].contract_table) for c in view.paths)] + ([_key(finer)] if finer else [])


def column_schemas(rollups: list[Rollup]) -> dict[str, dg.TableSchema]:
    """Each rollup's columns and types exactly as DuckDB will build them: its SELECT described over empty copies of the
    contract's tables in memory. Known before the first run, so the UI shows a rollup's schema as it does a port's."""
    def depth(rollup: Rollup) -> int:  # a rollup summed from another is described after it, over its empty table
        finer = finer_rollup(rollup)
        return 0 if finer is None else depth(finer) + 1

    with duckdb.connect() as conn:
        for t in tables().values():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {t.schema}")
            conn.execute(f"CREATE TABLE {t.physical_name} ({', '.join(f'{c.name} {c.type}' for c in t.columns)})")
        conn.execute("CREATE SCHEMA IF NOT EXISTS semantic")
        schemas = {}
        for rollup in sorted(rollups, key=depth):
            conn.execute(f"CREATE TABLE {rollup.table} AS {rollup_sql(rollup)}")
            described = conn.execute(f"DESCRIBE {rollup.table}").fetchall()
            dimensions = len(rollup.columns())
            schemas[rollup.table] = dg.TableSchema(columns=[
                dg.TableColumn(name, type_, description="dimension" if i < dimensions else "additive part of a measure")
                for i, (name, type_, *_) in enumerate(described)
            ])
        return schemas


def _totals(conn, rollup: Rollup) -> dict[str, object]:
    """Each additive part's total over the rollup, and over the detail (a rollup with no dimensions)."""
    parts = [c[0] for c in conn.execute(f"DESCRIBE {rollup.table}").fetchall()][len(rollup.columns()):]
    kept = conn.execute(f"SELECT {', '.join(_total(p, rollup) for p in parts)} FROM {rollup.table}").fetchone()
    whole = Rollup(rollup.name, rollup.view, "", (), rollup.measures)
    detail = conn.execute(f"SELECT {', '.join(f'{_total(p, rollup)}' for p in parts)} FROM ({rollup_sql(whole, from_detail=True)})").fetchone()
    return {part: (k, d) for part, k, d in zip(parts, kept, detail)}


def _total(part: str, rollup: Rollup) -> str:
    view = model().views[rollup.view]
    measure = view.members.get(part)
    kind = measure.member.type if measure is not None else "sum"  # avg parts (x__sum, x__count) add up
    return f'{kind if kind in ("min", "max") else "sum"}("{part}")'


def _same(kept, detail) -> bool:
    """Exact for counts and decimal sums; floating-point sums may differ in the last bits with the order of addition."""
    if isinstance(kept, float) or isinstance(detail, float):
        return kept is not None and detail is not None and math.isclose(kept, detail, rel_tol=1e-9)
    return kept == detail


def rollup_asset(rollup: Rollup, schema: dg.TableSchema) -> dg.AssetsDefinition:
    @dg.asset(
        key=_key(rollup),
        group_name="semantic",
        deps=_upstream(rollup),
        description=f"Rollup of the {rollup.view} view ({rollup.table}): {rollup.description}",
        owners=owners(),
        kinds={"duckdb", "table"},
        tags=asset_tags(layer="semantic"),
        metadata={"dagster/column_schema": schema, "dagster/table_name": rollup.table},
        op_tags=WAREHOUSE_STEP,
    )
    def _asset(warehouse: DuckDBResource) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS semantic")
            conn.execute(f"CREATE OR REPLACE TABLE {rollup.table} AS {rollup_sql(rollup)}")
            rows = conn.execute(f"SELECT count(*) FROM {rollup.table}").fetchone()[0]
        return dg.MaterializeResult(metadata={"dagster/row_count": rows, "table": rollup.table,
                                              "dimensions": list(rollup.columns()), "measures": list(rollup.measures)})

    @dg.asset_check(asset=_key(rollup), name="adds_up_to_the_detail", blocking=True, op_tags=WAREHOUSE_STEP,
                    description="Every measure's parts, totalled over the rollup, equal the same totals over the detail tables.")
    def _check(warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as conn:
            totals = _totals(conn, rollup)
        differ = {part: {"rollup": str(k), "detail": str(d)} for part, (k, d) in totals.items() if not _same(k, d)}
        return dg.AssetCheckResult(passed=not differ, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"parts_checked": len(totals), "differences": dg.MetadataValue.json(differ)})

    return _asset, _check


_rollups = [r for v in model().views.values() for r in v.rollups]
_schemas = column_schemas(_rollups)
_built = [rollup_asset(r, _schemas[r.table]) for r in _rollups]
rollup_assets = [asset for asset, _ in _built]
rollup_checks = [check for _, check in _built]
