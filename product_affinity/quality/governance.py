"""Governance SLOs measured on the product's own declarations: the contract and the Dagster definitions."""

from __future__ import annotations

import re

from product_affinity.contract import tables

# Column names that give away personal data, whatever table they are in.
PERSONAL_DATA = re.compile(r"(^|_)(first_name|last_name|full_name|email|phone|address|birth)")


def pii_classified() -> tuple[float, list[str]]:
    """Percent of the columns that look personal which the contract classifies pii, and those it does not."""
    personal = [f"{t.name}.{c.name}" for t in tables().values() for c in t.columns if PERSONAL_DATA.search(c.name)]
    unclassified = [name for name in personal if not tables()[name.split(".")[0]].column(name.split(".")[1]).pii]
    return 100 * (len(personal) - len(unclassified)) / len(personal), unclassified


def lineage_recorded() -> tuple[float, list[str]]:
    """Percent of the assets the product builds that declare their upstream assets, and those that do not.

    The operational source files are where lineage starts, so they have no upstream to declare.
    """
    from product_affinity.definitions import defs

    graph = defs.resolve_asset_graph()
    built = [key for key in graph.materializable_asset_keys]
    orphans = [key.to_user_string() for key in built if not graph.get(key).parent_keys]
    return 100 * (len(built) - len(orphans)) / len(built), orphans
