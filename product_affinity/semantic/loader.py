"""The semantic model: the product's business-facing lens, declared in files next to the code.

`cubes/` holds one file per entity (customers, purchases, products and the output ports): its
dimensions, measures and joins. `views/` holds one file per view, the product boundary: what a
consumer can ask for, assembled from cubes along join paths. Column types and personal-data
classification come from the data contract, never restated: a dimension names its contract
column, and a pii column must declare how it is masked.

Every member knows its lineage: the contract columns its SQL reads (`reads`), taken from its
`column`, or parsed once from its `sql` and `filter` (`{CUBE}.<column>`, checked against the
contract; a bare column name is refused, so nothing is read unseen). Classification follows
lineage: a derived dimension reading a pii column is pii itself (it must declare a mask) unless
it declares that it `generalises` that column (a coarser value, such as age bands of a birth
year, reviewed as fit to show where the column is masked). The policy engine decides access on
lineage (product_affinity.governance.policies), so a measure can never return what its columns may not.

Every identifier here is checked at load time, so a query can only ever name members the model
declares (product_affinity.semantic.compiler refuses anything else).
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from product_affinity.contract.odcs import table
from product_affinity.semantic.model import AGGREGATES, Cube, Dimension, GRAINS, Join, Mask, Measure, Metric, Model, ModelError, NAME, RELATIONSHIPS, Rollup, View, ViewMember, rollup_parts, semantic_type

HERE = Path(__file__).parent


COLUMN_REFERENCE = re.compile(r"\{CUBE\}\.(\w+)")


STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


def _load_yaml(directory: Path) -> list[tuple[Path, dict]]:
    return [(path, yaml.safe_load(path.read_text())) for path in sorted(directory.glob("*.yaml"))]


def _checked_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ModelError(f"{where}: {name!r} is not a valid name (lower case letters, digits and _)")
    return name


def reads(sql: str | None, columns: dict, where: str) -> frozenset[str]:
    """The contract columns an SQL fragment reads: every {CUBE}.<column>. A column of the table named without
    {CUBE}. (outside a string literal) is refused, so lineage can never miss a column the SQL reads."""
    if not sql:
        return frozenset()
    found = COLUMN_REFERENCE.findall(sql)
    if unknown := sorted({c for c in found if c not in columns}):
        raise ModelError(f"{where}: the contract table has no columns {unknown}")
    rest = set(re.findall(r"\b\w+\b", COLUMN_REFERENCE.sub(" ", STRING_LITERAL.sub(" ", sql))))
    if bare := sorted(rest & columns.keys()):
        raise ModelError(f"{where}: write columns as {{CUBE}}.<column> so their lineage is known; found {bare}")
    return frozenset(found)


def _dimension(entry: dict, columns: dict, where: str) -> Dimension:
    name = _checked_name(entry["name"], where)
    where = f"{where} dimension {name}"
    if "column" in entry:
        column = columns.get(entry["column"])
        if column is None:
            raise ModelError(f"{where}: the contract table has no column {entry['column']!r}")
        kind, sql = semantic_type(column.type), f"{{CUBE}}.{column.name}"
        if "type" in entry or "generalises" in entry:
            raise ModelError(f"{where}: a contract column's type and classification come from the contract; don't restate them")
    else:
        kind, sql = entry.get("type"), entry.get("sql")
        if kind not in {"string", "number", "time", "boolean"} or not sql:
            raise ModelError(f"{where}: a dimension without a column needs sql and a type")
    read = reads(sql, columns, where)
    generalises = frozenset(entry.get("generalises", []))
    personal = {c for c in read if columns[c].pii}
    if stray := sorted(generalises - personal):
        raise ModelError(f"{where}: generalises {stray}, which it does not read as pii columns")
    shown = frozenset(personal - generalises)
    mask = Mask.parse(entry["mask"], where) if "mask" in entry else None
    if shown and mask is None:
        raise ModelError(f"{where}: it reads {sorted(shown)}, which the contract classifies as pii, so declare its mask")
    return Dimension(name, entry.get("title", name), entry.get("description", ""), kind, sql, bool(shown), mask, read, generalises,
                     shown)


def _measure(entry: dict, columns: dict, where: str) -> Measure:
    name = _checked_name(entry["name"], where)
    where = f"{where} measure {name}"
    kind = entry.get("type")
    if kind == "ratio":
        return Measure(name, entry.get("title", name), entry.get("description", ""), kind,
                       numerator=entry["numerator"], denominator=entry["denominator"])
    if kind not in AGGREGATES:
        raise ModelError(f"{where}: type must be ratio or one of {sorted(AGGREGATES)}")
    if "column" in entry:
        if entry["column"] not in columns:
            raise ModelError(f"{where}: the contract table has no column {entry['column']!r}")
        sql = f"{{CUBE}}.{entry['column']}"
    else:
        sql = entry.get("sql")
    if sql is None and kind != "count":
        raise ModelError(f"{where}: a {kind} measure needs a column or sql")
    read = reads(sql, columns, where) | reads(entry.get("filter"), columns, f"{where} filter")
    return Measure(name, entry.get("title", name), entry.get("description", ""), kind, sql, entry.get("filter"), reads=read,
                   personal=frozenset(c for c in read if columns[c].pii))


def _cube(entry: dict, where: str) -> Cube:
    name = _checked_name(entry["name"], where)
    t = table(entry["table"])
    columns = {c.name: c for c in t.columns}
    dimensions = {d.name: d for d in (_dimension(e, columns, where) for e in entry.get("dimensions", []))}
    measures = {m.name: m for m in (_measure(e, columns, where) for e in entry.get("measures", []))}
    if overlap := dimensions.keys() & measures.keys():
        raise ModelError(f"{where}: {sorted(overlap)} are both dimensions and measures")
    for m in list(measures.values()):
        if m.type == "ratio":
            if not {m.numerator, m.denominator} <= {k for k, v in measures.items() if v.type != "ratio"}:
                raise ModelError(f"{where} measure {m.name}: numerator and denominator must be aggregate measures of {name}")
            parts = measures[m.numerator], measures[m.denominator]
            measures[m.name] = replace(m, reads=parts[0].reads | parts[1].reads, personal=parts[0].personal | parts[1].personal)
    unknown_key = [k for k in entry["primary_key"] if k not in columns]
    if unknown_key:
        raise ModelError(f"{where}: primary key columns {unknown_key} are not in the contract table")
    return Cube(name, entry.get("title", name), entry.get("description", ""), t.physical_name, t.name,
                tuple(entry["primary_key"]), dimensions, measures)


def _add_joins(cubes: dict[str, Cube], declared: dict[str, list[dict]]) -> None:
    """Record every declared join on both cubes, the reverse with the reverse cardinality."""
    for name, joins in declared.items():
        for entry in joins:
            other, relationship = entry["cube"], entry["relationship"]
            if other not in cubes or relationship not in RELATIONSHIPS:
                raise ModelError(f"cube {name}: join to {other!r} needs a known cube and one of {sorted(RELATIONSHIPS)}")
            on = tuple(entry["columns"].items())
            cubes[name].joins[other] = Join(other, relationship, on)
            cubes[other].joins[name] = Join(name, RELATIONSHIPS[relationship], tuple((b, a) for a, b in on))


def _members(cube: Cube, includes: Any, excludes: list[str], where: str) -> list[str]:
    names = [*cube.dimensions, *cube.measures]
    chosen = names if includes == "*" else list(includes)
    unknown = [n for n in [*chosen, *excludes] if n not in names]
    if unknown:
        raise ModelError(f"{where}: cube {cube.name} has no members {unknown}")
    return [n for n in chosen if n not in excludes]


def _metric(entry: dict, measures: set[str], where: str) -> Metric:
    name = _checked_name(entry["name"], where)
    used = tuple(dict.fromkeys(re.findall(r"\{(\w+)\}", entry["expression"])))
    if not used or not set(used) <= measures:
        raise ModelError(f"{where} metric {name}: the expression must use the view's measures, found {list(used)}")
    return Metric(name, entry.get("title", name), entry.get("description", ""), entry["expression"], used)


def _rollup(entry: dict, view: View, cubes: dict[str, Cube], where: str) -> Rollup:
    where = f"{where} rollup {entry.get('name')}"
    rollup = Rollup(_checked_name(entry["name"], where), view.name, " ".join(entry.get("description", "").split()),
                    tuple(entry.get("dimensions", [])), tuple(entry["measures"]), entry.get("time_dimension"),
                    entry.get("granularity", "day") if entry.get("time_dimension") else None)
    for name in rollup.columns():
        member = view.members.get(name)
        if member is None or member.is_measure or member.member.pii:
            raise ModelError(f"{where}: {name} is not a dimension of {view.name} free of personal data")
        if (member.member.type == "time") != (name == rollup.time_dimension):
            raise ModelError(f"{where}: a time dimension goes in time_dimension (with a granularity), others in dimensions")
    if rollup.granularity not in (None, *GRAINS):
        raise ModelError(f"{where}: granularity must be one of {GRAINS}")
    for name in rollup.measures:
        member = view.members.get(name)
        if member is None or not member.is_measure:
            raise ModelError(f"{where}: {name} is not a measure of {view.name}")
        try:
            rollup_parts(member.member, cubes[member.cube].measures)
        except ModelError as error:
            raise ModelError(f"{where}: {error}") from None
        fanning = [d for d in rollup.columns()
                   if not all(cubes[a].joins[b].safe for a, b in view.steps(member.cube, view.members[d].cube))]
        if fanning:
            raise ModelError(f"{where}: {name} would be counted more than once per group of {fanning}")
    return rollup


def _view(entry: dict, cubes: dict[str, Cube], where: str) -> View:
    name = _checked_name(entry["name"], where)
    paths, members = {}, {}
    for part in entry["cubes"]:
        walk = tuple(part["path"].split("."))
        if walk[0] not in cubes or any(there not in cubes[here].joins for here, there in zip(walk, walk[1:])):
            raise ModelError(f"{where}: path {part['path']} does not follow declared joins between known cubes")
        cube = cubes[walk[-1]]
        if cube.name in paths:
            raise ModelError(f"{where}: cube {cube.name} is reached twice")
        paths[cube.name] = walk
        for member in _members(cube, part.get("includes", "*"), part.get("excludes", []), where):
            if member in members:
                raise ModelError(f"{where}: member {member} comes from both {members[member].cube} and {cube.name}; exclude one")
            members[member] = ViewMember(member, cube.name, cube.member(member))
    roots = {walk[0] for walk in paths.values()}
    if len(roots) != 1:
        raise ModelError(f"{where}: every path must start at the same root cube, found {sorted(roots)}")
    measures = {m for m, vm in members.items() if vm.is_measure}
    metrics = {m.name: m for m in (_metric(e, measures, where) for e in entry.get("metrics", []))}
    if clash := metrics.keys() & members.keys():
        raise ModelError(f"{where}: metrics {sorted(clash)} clash with members")
    root = roots.pop()
    port = cubes[root].contract_table if table(cubes[root].contract_table).layer == "consumer_aligned" else None
    view = View(name, entry.get("title", name), entry.get("description", ""), root, paths, members, metrics, port=port)
    return replace(view, rollups=tuple(_rollup(r, view, cubes, where) for r in entry.get("rollups", [])))


@cache
def model(directory: Path = HERE) -> Model:
    """The semantic model, loaded and checked once."""
    cubes, joins = {}, {}
    for path, entry in _load_yaml(directory / "cubes"):
        cube = _cube(entry, f"{path.name}")
        cubes[cube.name] = cube
        joins[cube.name] = entry.get("joins", [])
    _add_joins(cubes, joins)
    views = {v.name: v for v in (_view(entry, cubes, path.name) for path, entry in _load_yaml(directory / "views"))}
    return Model(cubes, views)


def markdown_table() -> str:
    """The views as the README shows them: what each answers, its dimensions, its measures and metrics."""
    lines = ["| view | what it answers | dimensions | measures and metrics |", "|---|---|---|---|"]
    for v in model().views.values():
        dims = [f"`{n}`" for n, m in v.members.items() if not m.is_measure]
        measures = [f"`{n}`" for n, m in v.members.items() if m.is_measure] + [f"`{n}` (derived)" for n in v.metrics]
        answers = " ".join(v.description.split()) + (f" Output port: `{v.port}`." if v.port else "")
        lines.append(f"| `{v.name}` | {answers} | {', '.join(dims)} | {', '.join(measures)} |")
    return "\n".join(lines)

