"""The contract's quality rules as Dagster asset checks: one multi-asset check per table, one check per rule.

A rule with severity `error` is a blocking check with ERROR severity, so when it fails nothing
downstream of the table is built; a `warning` rule is a non-blocking WARN check. Every result
carries the rule id, dimension, SLO target, observed value and rows checked, and is kept in
quality.slo_results. When Great Expectations cannot run at all, every rule of the table fails
with the error (a check that did not run proves nothing).
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from product_affinity.contract import Rule, Table, checked_tables, quality_rules, service_level
from product_affinity.quality import frames, results

SEVERITY = {"error": dg.AssetCheckSeverity.ERROR, "warning": dg.AssetCheckSeverity.WARN}


def asset_key(t: Table) -> dg.AssetKey:
    return dg.AssetKey([t.schema, t.name])


def freshness_policy() -> dg.FreshnessPolicy:
    """The purchase latency SLA as Dagster's freshness policy, so the UI flags an asset not refreshed within it."""
    return dg.FreshnessPolicy.time_window(fail_window=service_level("freshness_purchase").duration)


def docs_dir(warehouse: DuckDBResource) -> Path:
    """Great Expectations Data Docs are written next to the warehouse."""
    return Path(warehouse.database).parent / "quality_docs"


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _spec(t: Table, rule: Rule) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        rule.id,
        asset=asset_key(t),
        description=f"{rule.description} SLO: {rule.target}.",
        blocking=rule.blocking,
        metadata={"rule_id": rule.id, "dimension": rule.dimension, "severity": rule.severity, "slo_target": rule.target},
    )


def _result(t: Table, row: results.Row, rows_in_table: int | None) -> dg.AssetCheckResult:
    rule = row.rule
    return dg.AssetCheckResult(
        asset_key=asset_key(t),
        check_name=rule.id,
        passed=row.passed,
        severity=SEVERITY[rule.severity],
        metadata={
            "rule_id": rule.id,
            "dimension": rule.dimension,
            "severity": rule.severity,
            "slo_target": rule.target,
            "observed": dg.MetadataValue.float(float(row.observed)) if row.observed is not None else dg.MetadataValue.null(),
            "rows_checked": row.rows_checked,
            "rows_in_table": dg.MetadataValue.int(rows_in_table) if rows_in_table is not None else dg.MetadataValue.null(),
            "detail": dg.MetadataValue.json(json.loads(row.detail)),
        },
    )


def _evaluate(t: Table, warehouse: DuckDBResource, now: datetime) -> tuple[int | None, list[results.Row]]:
    """Rows in the table and each rule's result row; `now` is the wall clock freshness is measured against."""
    from product_affinity.quality.validation import validate

    try:
        with warehouse.get_connection() as conn:
            frame = frames.load(conn, t)
        outcomes = validate(t, frame, now, docs_dir(warehouse))
    except Exception as error:  # noqa: BLE001 - reported as the failure of every rule, see the module docstring
        failed = json.dumps({"error": f"{type(error).__name__}: {error}"})
        return None, [results.Row(rule, None, False, 0, failed) for rule in quality_rules(t.name)]
    return frame.rows_in_table, [
        results.Row(rule, o.observed, o.passed, o.rows_checked, json.dumps(o.details, default=str))
        for rule, o in ((rule, outcomes[rule.id]) for rule in quality_rules(t.name))
    ]


def table_checks(t: Table) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name=f"{t.name}_quality",
        specs=[_spec(t, rule) for rule in quality_rules(t.name)],
        description=f"The data contract's quality rules for {t.physical_name}, validated with Great Expectations.",
        can_subset=True,
    )
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        """Validates the whole suite (one GE run), reports the selected checks (all of them, unless one was picked in the UI)."""
        rows_in_table, rows = _evaluate(t, warehouse, _utc_now())
        selected = {key.name for key in context.selected_asset_check_keys}
        rows = [row for row in rows if row.rule.id in selected]
        checked_at = _utc_now()
        started = context.instance.get_run_record_by_id(context.run.run_id).start_time
        run_started_at = datetime.fromtimestamp(started, UTC).replace(tzinfo=None) if started else checked_at
        with warehouse.get_connection() as conn:
            results.record(conn, context.run.run_id, run_started_at, checked_at, t, rows_in_table, rows)
        for row in rows:
            yield _result(t, row, rows_in_table)

    return _checks


quality_checks = [table_checks(t) for t in checked_tables()]
