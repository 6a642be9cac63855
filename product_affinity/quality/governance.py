"""SLOs measured when the report runs: on the product's declarations (contract, definitions), on its delivery
(masks as the APIs apply them) and on its audit log (API latency).

Each takes an open, read-only connection to the data and the working warehouse's path, and returns
the observed value (None until there is something to measure) and what falls short."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import duckdb
import numpy as np

from product_affinity.contract import service_level, tables
from product_affinity.semantic import model

# Column names that give away personal data, whatever table they are in.
PERSONAL_DATA = re.compile(r"(^|_)(first_name|last_name|full_name|email|phone|address|birth)")


def pii_classified(conn: duckdb.DuckDBPyConnection, warehouse: Path) -> tuple[float, list[str]]:
    """Percent of the columns that look personal which the contract classifies pii, and those it does not."""
    personal = [f"{t.name}.{c.name}" for t in tables().values() for c in t.columns if PERSONAL_DATA.search(c.name)]
    unclassified = [name for name in personal if not tables()[name.split(".")[0]].column(name.split(".")[1]).pii]
    return 100 * (len(personal) - len(unclassified)) / len(personal), unclassified


def lineage_recorded(conn: duckdb.DuckDBPyConnection, warehouse: Path) -> tuple[float, list[str]]:
    """Percent of the assets the product builds that declare their upstream assets, and those that do not.

    The operational source files are where lineage starts, so they have no upstream to declare.
    """
    from product_affinity.definitions import defs

    graph = defs.resolve_asset_graph()
    built = [key for key in graph.materializable_asset_keys]
    orphans = [key.to_user_string() for key in built if not graph.get(key).parent_keys]
    return 100 * (len(built) - len(orphans)) / len(built), orphans


def pii_masked_on_delivery(conn: duckdb.DuckDBPyConnection, warehouse: Path) -> tuple[float | None, list[str]]:
    """Percent of the personal-data members principals read masked, of those their policies mask, checked on the data.

    For every principal, view and personal-data member the policy engine masks for them, the API's
    own compiled query runs on the warehouse and must return none of the stored values in clear.
    """
    from product_affinity.governance import policies, readable_views
    from product_affinity.semantic import Dimension
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


def api_latency(conn: duckdb.DuckDBPyConnection, warehouse: Path) -> tuple[float | None, list[str]]:
    """95th percentile, in ms, of the time the API took to answer its last 1,000 successful reads of the recommendations
    (the cross_sell view and its port), as counted when each was audited (the log itself is not re-read); None until
    it has served some."""
    from product_affinity.governance.audit import recent_read_durations

    durations = recent_read_durations(warehouse, model().port_view(service_level("api_latency").element).name)
    return (float(np.percentile(durations, 95)) if durations else None), []
