"""The data product descriptor and the business alignment it serves, loaded once and checked against the contract.

The descriptor (product_affinity.odps.yaml, Open Data Product Standard field names) says what the
product is, who owns it, which ports it has and where they are delivered; it drives the Dagster
catalogue (owners, tags, kinds, descriptions) and the data product page, and the API serves it.
Its ports name contract tables: `descriptor()` resolves each against the contract (description,
contract id and version, table), and refuses a descriptor whose ports, product id or domain
disagree with the contract, so the two documents cannot drift apart. Ownership lives here only.
The alignment (alignment.yaml) declares vision, goals, hypotheses, the North Star and its KPI tree.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import yaml

from product_affinity.contract.odcs import Table, contract, source_tables, tables

DESCRIPTOR_PATH = Path(__file__).with_name("product_affinity.odps.yaml")
ALIGNMENT_PATH = Path(__file__).with_name("alignment.yaml")
REQUIRED = ("apiVersion", "kind", "id", "status")  # what ODPS requires of every descriptor
LINKS = ("factor", "outcome", "leading_indicator")


class DescriptorError(Exception):
    """The descriptor or the alignment file is malformed, or disagrees with the data contract."""


def _load(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise DescriptorError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise DescriptorError(f"{path}: expected a mapping at the top level, found {type(loaded).__name__}")
    return loaded


def custom(entry: dict) -> dict:
    """An ODPS element's customProperties as a dict."""
    return {c["property"]: c["value"] for c in entry.get("customProperties", [])}


def _ports(raw: dict, key: str, expected: list[Table], path: Path) -> list[dict]:
    """The descriptor's `key` ports, each resolved against the contract table it names."""
    declared = [port["name"] for port in raw.get(key, [])]
    unknown = [name for name in declared if name not in {t.name for t in expected}]
    missing = [t.name for t in expected if t.name not in declared]
    if unknown or missing or len(set(declared)) != len(declared):
        raise DescriptorError(
            f"{path}: {key} must name each contract table of that kind once: "
            f"unknown {unknown}, missing {missing}, declared {declared}"
        )
    by_name = {t.name: t for t in expected}
    return [
        {
            **port,
            "description": by_name[port["name"]].description,
            "contractId": contract()["id"],
            "version": contract()["version"],
            "customProperties": [
                *port.get("customProperties", []),
                {"property": "table", "value": by_name[port["name"]].physical_name},
                *([{"property": "sourceFile", "value": by_name[port["name"]].source_file}] if key == "inputPorts" else []),
            ],
        }
        for port in raw[key]
    ]


@cache
def _descriptor() -> dict:
    path, raw = DESCRIPTOR_PATH, _load(DESCRIPTOR_PATH)
    if missing := [key for key in REQUIRED if key not in raw]:
        raise DescriptorError(f"{path}: missing required field(s) {missing}")
    for field, theirs in (("id", "dataProduct"), ("domain", "domain")):
        if raw.get(field) != contract().get(theirs):
            raise DescriptorError(f"{path}: {field} {raw.get(field)!r} differs from the contract's {theirs} {contract().get(theirs)!r}")
    if not [member for member in raw.get("team", []) if member.get("role") == "owner"]:
        raise DescriptorError(f"{path}: the team needs a member with role owner")
    return {
        **raw,
        "inputPorts": _ports(raw, "inputPorts", source_tables(), path),
        "outputPorts": _ports(raw, "outputPorts", [t for t in tables().values() if t.layer == "consumer_aligned"], path),
    }


def descriptor() -> dict:
    """The descriptor with its ports resolved against the contract; plain JSON types, a copy the caller may change."""
    return copy.deepcopy(_descriptor())


def owners() -> list[str]:
    """The owning team(s) as Dagster owners ("team:<username>")."""
    return [f"team:{member['username']}" for member in _descriptor()["team"] if member.get("role") == "owner"]


def port(name: str) -> dict:
    """An input or output port by name (a contract table name)."""
    return next(p for p in _descriptor()["inputPorts"] + _descriptor()["outputPorts"] if p["name"] == name)


def delivery_port(name: str) -> dict:
    return next(p for p in custom(_descriptor())["deliveryPorts"] if p["name"] == name)


def kinds(name: str) -> set[str]:
    """Dagster kinds of a port's asset."""
    return set(custom(port(name))["kinds"])


def asset_tags(name: str | None = None, **extra: str) -> dict[str, str]:
    """Dagster tags: the product and its domain on every asset, plus a port's own tags."""
    own = port(name).get("tags", []) if name else []
    return {"data_product": _descriptor()["id"], "domain": _descriptor()["domain"], **{tag: "" for tag in own}, **extra}


@cache
def _alignment() -> dict:
    path, raw = ALIGNMENT_PATH, _load(ALIGNMENT_PATH)
    goals = {goal["id"] for goal in raw["goals"]}
    for h in raw["hypotheses"]:
        if h["goal"] not in goals or not (h["statement"].startswith("We believe that ") and " will help achieve " in h["statement"]):
            raise DescriptorError(f"{path}: hypothesis {h['id']} must read 'We believe that <initiative> will help achieve <goal>' of a declared goal")
    nodes = raw["kpiTree"]
    ids = [node["id"] for node in nodes]
    roots = [node["id"] for node in nodes if "parent" not in node]
    if roots != [raw["northStar"]["id"]] or len(set(ids)) != len(ids):
        raise DescriptorError(f"{path}: the KPI tree needs unique node ids and the North Star as its only root (roots: {roots})")
    for node in nodes:
        if "parent" in node and (node["parent"] not in ids or node.get("link") not in LINKS):
            raise DescriptorError(f"{path}: KPI node {node['id']} needs a declared parent and a link, one of {LINKS}")
    return raw


def alignment() -> dict:
    """Vision, goals, hypotheses, initiatives, the North Star and the KPI tree (a copy the caller may change)."""
    return copy.deepcopy(_alignment())
