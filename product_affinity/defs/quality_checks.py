"""The contract's quality rules as Dagster asset checks: one multi-asset check per table, one check per rule.

A rule with severity `error` is a blocking check with ERROR severity, so when it fails nothing
downstream of the table is built and no snapshot is published; a `warning` rule is a non-blocking
WARN check. Every rule is measured exactly by DuckDB aggregates on every row (measures.py): on a
source-aligned table over the rows received, and a reconciliation against figures recomputed from
the accepted purchase lines. Great Expectations draws the recorded results as Data Docs in a step of
their own after the checks (defs/quality.py), so no check step pays for GE.
Every result carries the rule id, dimension, SLO target, observed value with its unit, rows
checked and, for a failure, how many rows are to blame and where: lines of a source file, or the
keys of the output rows that do not reconcile; never a personal value. Results are kept in
quality.slo_results. A measurement that cannot run fails its rules with the error's type and
message, quoted values removed (a check that did not run proves nothing).
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from product_affinity.defs.metadata import table_key
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.contract.odcs import Rule, Table, checked_tables, quality_rules, service_level
from product_affinity.quality import data_docs, measures, results
from product_affinity.tracking import watching

SEVERITY = {"error": dg.AssetCheckSeverity.ERROR, "warning": dg.AssetCheckSeverity.WARN}


def freshness_policy() -> dg.FreshnessPolicy:
    """The purchase latency SLA as Dagster's freshness policy, so the UI flags an asset not refreshed within it."""
    return dg.FreshnessPolicy.time_window(fail_window=service_level("freshness_purchase").duration)


def docs_dir(warehouse: DuckDBResource) -> Path:
    """Great Expectations Data Docs are written next to the warehouse."""
    return data_docs.folder(Path(warehouse.database))


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def description(t: Table, rule: Rule) -> str:
    """What the rule promises, what its measure counts (what 'valid' means), its objective and the rows it is measured on."""
    on = measures.rule_measured_on(t, rule)
    return " ".join(filter(None, [rule.description, measures.meaning(rule), f"SLO: {rule.target}, measured on {on}."]))


def _spec(t: Table, rule: Rule) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        rule.id,
        asset=table_key(t),
        description=description(t, rule),
        blocking=rule.blocking,
        metadata={"rule_id": rule.id, "dimension": rule.dimension, "severity": rule.severity, "slo_target": rule.target},
    )


def _result(t: Table, row: results.Row, rows_in_table: int | None) -> dg.AssetCheckResult:
    rule = row.rule
    return dg.AssetCheckResult(
        asset_key=table_key(t),
        check_name=rule.id,
        passed=row.passed,
        severity=SEVERITY[rule.severity],
        metadata={
            "rule_id": rule.id,
            "dimension": rule.dimension,
            "severity": rule.severity,
            "slo_target": rule.target,
            "observed": dg.MetadataValue.float(float(row.observed)) if row.observed is not None else dg.MetadataValue.null(),
            "observed_unit": row.observed_unit,
            "rows_checked": row.rows_checked,
            **_where(row),
            "rows_in_table": dg.MetadataValue.int(rows_in_table) if rows_in_table is not None else dg.MetadataValue.null(),
            "detail": dg.MetadataValue.json(json.loads(row.detail)),
        },
    )


def run_of(context: dg.AssetCheckExecutionContext | dg.AssetExecutionContext, built: dg.AssetKey | None) -> results.Run:
    """The running run. It is a pipeline run when `built` was materialized by this very run (a check-only run is
    not), or when `built` is None: the step asking builds its asset now, as the snapshot step does."""
    started = context.instance.get_run_record_by_id(context.run.run_id).start_time
    latest = None if built is None else context.instance.get_latest_materialization_event(built)
    return results.Run(
        context.run.run_id,
        datetime.fromtimestamp(started, UTC).replace(tzinfo=None) if started else _utc_now(),
        built is None or (latest is not None and latest.run_id == context.run.run_id),
    )


def _where(row: results.Row) -> dict:
    """Which rows a failed rule blames, on one line each, so the run's failure report can print them."""
    found = json.loads(row.detail)
    where = {}
    if "bad_rows" in found:
        where["bad_rows"] = found["bad_rows"]
    if found.get("file") and found.get("lines"):
        where["where"] = (f"{found['file']} lines {found['first_line']}-{found['last_line']}, "
                          f"first {', '.join(map(str, found['lines'][:5]))}")
    elif found.get("first_keys"):
        keys = [" ".join(key) for key in found["first_keys"][:5]]
        while len(keys) > 1 and len(f"({', '.join(found['key'])}) first {', '.join(keys)}") > 100:
            keys.pop()  # the run's failure report prints facts of at most 100 characters
        where["where"] = f"({', '.join(found['key'])}) first {', '.join(keys)}"
    return where


def _measured(rule: Rule, m: measures.Measurement) -> results.Row:
    return results.Row(rule, m.observed, m.passed, m.rows_checked, json.dumps(m.detail, default=str), m.unit)


def _failed(rule: Rule, error: Exception) -> results.Row:
    return results.Row(rule, None, False, 0, json.dumps({"errors": [results.redact(f"{type(error).__name__}: {error}")]}), "")


def _evaluate(t: Table, conn: duckdb.DuckDBPyConnection, now: datetime) -> tuple[int | None, list[results.Row]]:
    """Rows in the table and each rule's result row; `now` is the wall clock freshness is measured against."""
    rules = quality_rules(t.name)
    by_rule: dict[str, results.Row] = {}
    rows_in_table = None
    try:
        rows_in_table = conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]
        with watching(conn, f"{t.physical_name}: measuring {sum(not measures.reconciled(r) for r in rules)} rules on every row"):
            measured = measures.measure(conn, t, now)
        by_rule |= {r.id: _measured(r, measured[r.id]) for r in rules if r.id in measured}
    except Exception as error:  # noqa: BLE001 - reported as the failure of every rule it measures, see the module docstring
        by_rule |= {r.id: _failed(r, error) for r in rules if not measures.reconciled(r)}
    for rule in filter(measures.reconciled, rules):  # each on its own: one that cannot run fails alone
        try:
            with watching(conn, f"{t.physical_name}: {len(by_rule)}/{len(rules)} rules measured, reconciling {rule.id}"):
                by_rule[rule.id] = _measured(rule, measures.reconcile(conn, t, rule))
        except Exception as error:  # noqa: BLE001 - as above
            by_rule[rule.id] = _failed(rule, error)
    return rows_in_table, [by_rule[r.id] for r in rules]


def table_checks(t: Table) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name=f"{t.name}_quality",
        specs=[_spec(t, rule) for rule in quality_rules(t.name)],
        description=f"The data contract's quality rules for {t.physical_name}, measured by DuckDB on every row.",
        can_subset=True,
        op_tags=WAREHOUSE_STEP,
    )
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        """Measures every rule, records and reports the selected checks (all of them, unless one was picked in the UI)."""
        with warehouse.get_connection() as conn:  # one connection: opening and closing the warehouse take 30 ms each
            rows_in_table, rows = _evaluate(t, conn, _utc_now())
            selected = {key.name for key in context.selected_asset_check_keys}
            rows = [row for row in rows if row.rule.id in selected]
            results.record(conn, run_of(context, table_key(t)), _utc_now(), t, rows_in_table, rows)
        for row in rows:
            yield _result(t, row, rows_in_table)

    return _checks


quality_checks = [table_checks(t) for t in checked_tables()]
