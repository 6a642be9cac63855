"""The SLO report: every SLO of the contract, its target, the latest observation, attainment and error budget.

Data-quality SLOs are the contract's rules, observed by the asset checks and kept in
quality.slo_results; the pipeline run time is read from the same rows (a run's start to its last
check), and so are the governance SLOs, which the pipeline measures before it publishes. Only
pipeline runs count: a check-only run (it built nothing it checked) is left out. The API latency
is read from the audit log. This module only reads: it measures nothing on the data. An SLO
nothing measures yet says so. The quarantine share of each source, per reason, is listed with its
trend over the runs. Attainment is the share of the last N runs that met the SLO; the
error budget is the share of runs the contract's attainment objective allows to miss it, and
what is left of it (below zero: overspent).
"""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from product_affinity.contract.odcs import OPERATORS, attainment_objective, checked_tables, quality_rules, service_levels
from product_affinity.quality import governance
from product_affinity.quality.results import SLO_RESULTS

PASS, FAIL, NOT_RUN, NOT_MEASURED = "pass", "fail", "not run", "not measured yet"
QUARANTINE_RULE = "quarantine_share_per_reason"
UNITS = {"percent": " %", "hours": " h", "rows": " rows", "min": " min", "ms": " ms"}  # observed values carry their unit
GROUPS = {"regulatory": "governance", "operational": "architecture"}


class WarehouseUnavailable(Exception):
    """The warehouse cannot be opened for reading (missing, or locked by a running pipeline)."""


@dataclass(frozen=True)
class Slo:
    id: str
    group: str  # the asset a data-quality SLO is about, or architecture / governance
    kind: str  # the rule's dimension, or the SLA property
    severity: str
    target: str
    observed: float | None  # in the latest run
    unit: str
    status: str
    runs: int  # of the last N runs, those that measured it
    failed_runs: int
    objective: float
    detail: str

    @property
    def attainment(self) -> float | None:
        return (self.runs - self.failed_runs) / self.runs if self.runs else None

    @property
    def error_budget_left(self) -> float | None:
        allowed = (1 - self.objective) * self.runs
        return 1 - self.failed_runs / allowed if allowed else None


@dataclass(frozen=True)
class Report:
    warehouse: str
    generated_at: str
    run_ids: list[str]  # newest first
    objective: float
    slos: list[Slo]
    quarantine: list[dict]  # per source and reason: percent of the rows received, per run, oldest first

    @property
    def failed(self) -> list[Slo]:
        return [s for s in self.slos if s.status == FAIL]


def open_read_only(warehouse: Path) -> duckdb.DuckDBPyConnection:
    if not Path(warehouse).exists():
        raise WarehouseUnavailable(f"{warehouse} does not exist: run `product-affinity run` first")
    try:
        return duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            raise WarehouseUnavailable(
                f"{warehouse} is locked by another process, most likely a pipeline run writing it; "
                f"try again when the run has finished ({error})"
            ) from error
        raise


def _results(conn: duckdb.DuckDBPyConnection, runs: int) -> tuple[list[str], dict[tuple[str, str], list[dict]], list[dict]]:
    """The last `runs` run ids (newest first), their results by (asset, rule id), and each run's duration."""
    exists = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", SLO_RESULTS.split(".")
    ).fetchone()[0]
    if not exists:
        return [], {}, []
    has_flag = conn.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? AND column_name = 'pipeline_run'",
        SLO_RESULTS.split("."),
    ).fetchone()[0]
    pipeline = "WHERE pipeline_run" if has_flag else ""  # results written before the flag existed all count
    recent = f"(SELECT run_id FROM {SLO_RESULTS} {pipeline} GROUP BY run_id ORDER BY max(checked_at) DESC LIMIT {int(runs)})"
    run_ids = [r[0] for r in conn.execute(f"SELECT run_id FROM {recent} AS r").fetchall()]
    rows = conn.execute(f"SELECT * FROM {SLO_RESULTS} WHERE run_id IN {recent} ORDER BY checked_at DESC").fetchall()
    names = [d[0] for d in conn.description]
    by_rule: dict[tuple[str, str], list[dict]] = {}
    for row in map(lambda values: dict(zip(names, values)), rows):
        by_rule.setdefault((row["asset"], row["rule_id"]), []).append(row)
    durations = conn.execute(
        f"""SELECT run_id, epoch(max(checked_at) - min(run_started_at)) / 60 AS minutes
        FROM {SLO_RESULTS} WHERE run_id IN {recent} GROUP BY run_id ORDER BY max(checked_at) DESC"""
    ).fetchall()
    return run_ids, by_rule, [{"run_id": r, "minutes": m} for r, m in durations]


def _data_slos(latest: str | None, by_rule: dict, objective: float) -> list[Slo]:
    slos = []
    for t in checked_tables():
        asset = f"{t.schema}/{t.name}"
        for rule in quality_rules(t.name):
            rows = by_rule.get((asset, rule.id), [])
            now = rows[0] if rows and rows[0]["run_id"] == latest else None
            status = NOT_RUN if now is None else PASS if now["passed"] else FAIL
            detail = "" if now is None else f"observed in {now.get('observed_unit') or rule.unit}; {now['detail']}"
            slos.append(Slo(rule.id, asset, rule.dimension, rule.severity, rule.target, None if now is None else now["observed"], rule.unit,
                            status, len(rows), sum(not r["passed"] for r in rows), objective, detail))
    return slos


def _service_level_slos(durations: list[dict], by_rule: dict, latest: str | None, objective: float, warehouse: Path) -> list[Slo]:
    """SLOs about the product rather than one table: the run time and the governance SLOs per run, the API latency now."""
    slos = []
    for sla in service_levels():
        if sla.property == "latency":  # measured on the data, by the timeliness rule on its element
            continue
        percent = sla.unit == "percent"
        target = f"{OPERATORS['mustBeGreaterOrEqualTo' if percent else 'mustBeLessOrEqualTo']} {sla.value:g} {sla.unit}"
        observed, runs, failed, detail = None, 0, 0, sla.description
        if sla.id == "pipeline_run_time":
            limit = sla.duration.total_seconds() / 60
            observed = durations[0]["minutes"] if durations else None
            runs, failed = len(durations), sum(d["minutes"] > limit for d in durations)
            status = NOT_RUN if observed is None else PASS if observed <= limit else FAIL
        elif sla.id in governance.MEASURED_BY_THE_PIPELINE:
            rows = by_rule.get((governance.SERVICE_LEVEL, sla.id), [])
            now = rows[0] if rows and rows[0]["run_id"] == latest else None
            runs, failed = len(rows), sum(not r["passed"] for r in rows)
            observed = None if now is None else now["observed"]
            status = NOT_RUN if now is None else NOT_MEASURED if observed is None else PASS if now["passed"] else FAIL
            offenders = [] if now is None else json.loads(now["detail"]).get("falls_short", [])
            detail += f" Not yet: {', '.join(offenders)}." if offenders else ""
        elif sla.id == "api_latency":
            observed = governance.api_latency(warehouse)
            status = NOT_MEASURED if observed is None else PASS if observed <= sla.value else FAIL
        else:
            status = NOT_MEASURED
        unit = "min" if sla.id == "pipeline_run_time" else sla.unit
        slos.append(Slo(sla.id, GROUPS.get(sla.driver, sla.driver), sla.property, "", target, observed, unit, status,
                        runs, failed, objective, detail))
    return slos


def _quarantine_trend(run_ids: list[str], by_rule: dict) -> list[dict]:
    """Per source and reason, the percent of the rows received quarantined in each of the runs, oldest first
    (0 in a run that quarantined none for that reason, None in a run that did not measure the source)."""
    trend = []
    for t in checked_tables():
        if not t.source_file:
            continue
        measured = {r["run_id"]: json.loads(r["detail"]) for r in by_rule.get((f"{t.schema}/{t.name}", QUARANTINE_RULE), [])}
        oldest_first = [run for run in reversed(run_ids) if run in measured]
        shares = {run: {q["reason"]: q["percent"] for q in measured[run].get("by_reason", [])} for run in oldest_first}
        for reason in sorted({reason for found in shares.values() for reason in found}):
            trend.append({"source": t.source_file, "reason": reason, "runs": oldest_first,
                          "percent": [shares[run].get(reason, 0.0) for run in oldest_first]})
    return trend


def build(warehouse: Path, runs: int, read_from: Path | None = None) -> Report:
    """The report of `warehouse`, read from it or from `read_from` (a snapshot it published, which no run locks).

    Only reads: the results were measured by the pipeline; the API latency comes from the audit log.
    """
    objective = attainment_objective()
    with open_read_only(read_from or warehouse) as conn:
        run_ids, by_rule, durations = _results(conn, runs)
    latest = run_ids[0] if run_ids else None
    slos = _data_slos(latest, by_rule, objective) + _service_level_slos(durations, by_rule, latest, objective, Path(warehouse))
    return Report(str(read_from or warehouse), datetime.now(UTC).isoformat(timespec="seconds"), run_ids, objective, slos,
                  _quarantine_trend(run_ids, by_rule))


def _number(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.4g}{suffix}"


def text(report: Report) -> str:
    runs = len(report.run_ids)
    lines = [
        f"SLO report for {report.warehouse}: latest run {report.run_ids[0] if runs else '(none yet)'}, "
        f"attainment over the last {runs} run(s), objective {report.objective:.0%} of runs",
    ]
    header = ("SLO", "target", "observed", "status", "attainment", "error budget left")
    for group in dict.fromkeys(s.group for s in report.slos):
        rows = [
            (s.id, f"{s.target} [{s.severity}]" if s.severity else s.target, _number(s.observed, UNITS.get(s.unit, f" {s.unit}")), s.status,
             "-" if s.attainment is None else f"{s.attainment:.0%} of {s.runs}",
             "-" if s.error_budget_left is None else f"{s.error_budget_left:.0%}")
            for s in report.slos if s.group == group
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines += ["", group] + ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    if report.quarantine:
        lines += ["", f"quarantine share per reason, % of the rows received, over the last {runs} run(s), oldest first"]
        lines += [f"{q['source']:<18} {q['reason']:<18} " + " ".join(f"{p:.2f}" for p in q["percent"]) for q in report.quarantine]
    failed = report.failed
    lines += ["", f"{len(failed)} SLO(s) failed" + (": " + ", ".join(f"{s.group} {s.id}" for s in failed) if failed else "")]
    return "\n".join(lines)


def as_json(report: Report) -> str:
    slos = [asdict(s) | {"attainment": s.attainment, "error_budget_left": s.error_budget_left} for s in report.slos]
    return json.dumps(asdict(report) | {"slos": slos}, indent=2) + "\n"


def as_junit(report: Report) -> str:
    """JUnit XML as CI systems read it (pytest's element set): a failing SLO is a <failure>, one not measured is <skipped>."""
    suites = ET.Element("testsuites", name="product-affinity SLOs", tests=str(len(report.slos)),
                        failures=str(len(report.failed)), errors="0", time="0")
    for group in dict.fromkeys(s.group for s in report.slos):
        members = [s for s in report.slos if s.group == group]
        suite = ET.SubElement(
            suites, "testsuite", name=group, tests=str(len(members)), failures=str(sum(s.status == FAIL for s in members)),
            errors="0", skipped=str(sum(s.status in (NOT_RUN, NOT_MEASURED) for s in members)), time="0",
            timestamp=report.generated_at, hostname=socket.gethostname(),
        )
        for s in members:
            case = ET.SubElement(suite, "testcase", classname=group, name=s.id, time="0")
            observed = f"observed {_number(s.observed)} {s.unit}, target {s.target}"
            if s.status == FAIL:
                ET.SubElement(case, "failure", message=observed, type=s.severity or "slo").text = s.detail
            elif s.status in (NOT_RUN, NOT_MEASURED):
                ET.SubElement(case, "skipped", message=s.status)
            ET.SubElement(case, "system-out").text = (
                f"{observed}; attainment {_number(s.attainment)} over {s.runs} run(s); "
                f"error budget left {_number(s.error_budget_left)}"
            )
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def declared_markdown() -> str:
    """The SLOs as the contract declares them, for the README: data-quality rules grouped by table, then the SLAs."""
    lines = ["| table | dimension | SLO | severity | checks |", "|---|---|---|---|---|"]
    for t in checked_tables():
        groups: dict[tuple[str, str, str], list[str]] = {}
        for rule in quality_rules(t.name):
            groups.setdefault((rule.dimension, rule.target, rule.severity), []).append(f"`{rule.id}`")
        lines += [f"| `{t.physical_name}` | {dimension} | {target} | {severity} | {', '.join(ids)} |"
                  for (dimension, target, severity), ids in groups.items()]
    lines += ["", "| SLO | target | driver | what it promises |", "|---|---|---|---|"]
    lines += [f"| `{s.id}` | {s.value:g} {s.unit} | {s.driver} | {s.description} |" for s in service_levels()]
    return "\n".join(lines)
