"""Governance SLOs, measured by the pipeline before it publishes: on the product's declarations (the contract and
the asset graph of the running definitions) and on its delivery (masks as the APIs apply them, on the data
about to be published). The results go to quality.slo_results, so the report, the page and /slo only read.

The API latency SLO is measured when the report is read, from the audit log the API writes.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
import duckdb
import numpy as np

from product_affinity.contract.odcs import service_level, service_levels, tables
from product_affinity.quality import results
from product_affinity.semantic.loader import model

# The running job's assets, as the wiring hands them over (product_affinity.defs.metadata.asset_lineage): each asset's
# name, the names of its upstream assets, and whether the product builds it.
Lineage = list[dict]

SERVICE_LEVEL = "service_level"  # the asset column of the governance SLOs' result rows

# Column names that give away personal data, whatever table they are in.
PERSONAL_DATA = re.compile(r"(^|_)(first_name|last_name|full_name|email|phone|address|birth)")


def pii_classified(conn: duckdb.DuckDBPyConnection, lineage: Lineage) -> tuple[float, list[str]]:
    """Percent of the columns that look personal which the contract classifies pii, and those it does not."""
    personal = [f"{t.name}.{c.name}" for t in tables().values() for c in t.columns if PERSONAL_DATA.search(c.name)]
    unclassified = [name for name in personal if not tables()[name.split(".")[0]].column(name.split(".")[1]).pii]
    return 100 * (len(personal) - len(unclassified)) / len(personal), unclassified


def lineage_recorded(conn: duckdb.DuckDBPyConnection, lineage: Lineage) -> tuple[float, list[str]]:
    """Percent of the assets the product builds that declare their upstream assets, and those that do not, in the
    asset graph of the running definitions (the step's context hands it over).

    The operational source files are where lineage starts, so they have no upstream to declare.
    """
    built = [asset for asset in lineage if asset["built"]]
    orphans = [asset["asset"] for asset in built if not asset["upstream"]]
    return 100 * (len(built) - len(orphans)) / len(built), orphans


def pii_masked_on_delivery(conn: duckdb.DuckDBPyConnection, lineage: Lineage) -> tuple[float | None, list[str]]:
    """Percent of the personal-data members principals read masked, of those their policies mask, checked on the data.

    For every principal, view and personal-data member the policy engine masks for them, the API's
    own compiled query runs on the warehouse and must return none of the stored values in clear.
    """
    from product_affinity.governance.policies import policies, readable_views
    from product_affinity.semantic.model import Dimension
    from product_affinity.semantic.compiler import compile_query
    from product_affinity.semantic.query import Query

    checked, leaks = 0, []
    for who in policies().principals.values():
        for view_name, granted in readable_views(who).items():
            for name in sorted(granted.members & granted.view.members.keys()):
                vm = granted.view.members[name]
                if not (isinstance(vm.member, Dimension) and f"{vm.cube}.{name}" in granted.masks):
                    continue
                checked += 1
                compiled = compile_query(Query(dimensions=[f"{view_name}.{name}"], limit=50_000), granted, secrets.token_hex(8))
                delivered = {row[0] for row in conn.execute(compiled.sql, compiled.params).fetchall()} - {None}
                cube = model().cubes[vm.cube]
                stored = {row[0] for row in conn.execute(f"SELECT DISTINCT {vm.member.sql.replace('{CUBE}.', '')} FROM {cube.table}").fetchall()}
                if delivered & stored:
                    leaks.append(f"{who.name} reads {view_name}.{name} in clear")
    return (100 * (checked - len(leaks)) / checked if checked else None), leaks


MEASURED_BY_THE_PIPELINE = {f.__name__: f for f in (pii_classified, lineage_recorded, pii_masked_on_delivery)}


def record(conn: duckdb.DuckDBPyConnection, run: results.Run, lineage: Lineage) -> None:
    """Measure every governance SLO and keep one result row each in quality.slo_results (asset `service_level`)."""
    rows = []
    for sla in service_levels():
        if sla.id not in MEASURED_BY_THE_PIPELINE:
            continue
        observed, offenders = MEASURED_BY_THE_PIPELINE[sla.id](conn, lineage)
        rows.append({
            "run_id": run.run_id, "run_started_at": run.started_at, "checked_at": datetime.now(UTC).replace(tzinfo=None),
            "asset": SERVICE_LEVEL, "rule_id": sla.id, "dimension": sla.property, "severity": "", "operator": "mustBeGreaterOrEqualTo",
            "target": float(sla.value), "unit": sla.unit, "observed": observed,
            "passed": observed is not None and observed >= sla.value, "rows_checked": None, "rows_in_table": None,
            "detail": json.dumps({"falls_short": offenders}), "observed_unit": "% of those declared", "pipeline_run": run.pipeline_run,
        })
    results.insert(conn, rows)


def api_latency(warehouse: Path) -> float | None:
    """95th percentile, in ms, of the time the API took to answer its last 1,000 successful reads of the recommendations
    (the cross_sell view and its port), as counted when each was audited (the log itself is not re-read); None until
    it has served some. Reads only."""
    from product_affinity.governance.audit import recent_read_durations

    durations = recent_read_durations(warehouse, model().port_view(service_level("api_latency").element).name)
    return float(np.percentile(durations, 95)) if durations else None
