"""The one policy engine: what a principal may read of each view, masked how, limited to which rows.

Policies are declared once in policies.yaml. Every delivery path asks `access(principal, view)`
and nothing else: the REST and GraphQL APIs compile its answer into their DuckDB queries
(product_affinity.semantic.compiler), and the Postgres port compiles the same declarations into
roles, grants, row-level security and masking views. Combining groups follows Cube: views and
members are unioned across a principal's groups, row filters intersect, and a personal-data
dimension the principal may not see in clear comes back masked rather than refused.

Access follows lineage (docs/governance/access-model.md): a group grants a member only if no
column the member reads (semantic.ViewMember.lineage) is one the group hides, and a measure only
if the group sees every personal-data column it reads in clear, since an aggregate cannot be
masked and at customer grain it is the value itself. A derived dimension is masked unless a
group sees all the personal data it shows in clear. Whatever the grouping, the rule is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from product_affinity.semantic.model import Dimension, Mask, ModelError, View, ViewMember
from product_affinity.semantic.loader import model
from product_affinity.semantic.access import Access, AccessDenied, AppliedFilter, Principal, RowFilter

POLICIES_PATH = Path(__file__).with_name("policies.yaml")


SHOWN = {"redact": "redacted", "hash": "hashed", "partial": "partly shown"}


class PolicyError(ModelError):
    """policies.yaml declares something the model does not have."""


@dataclass(frozen=True)
class Grant:
    """What one group may read of one view."""

    includes: Any  # "*" or a list of member names
    excludes: tuple[str, ...] = ()

    def allows(self, member: str) -> bool:
        return (self.includes == "*" or member in self.includes) and member not in self.excludes


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    views: dict[str, Grant]  # "*" for every view
    unmask: Any  # "*" or a set of cube.column
    masks: dict[str, Mask]  # cube.dimension -> mask
    row_filters: tuple[RowFilter, ...]
    hides: frozenset[str] = frozenset()  # cube.column: columns no member the group reads may read

    def grant(self, view: str) -> Grant | None:
        return self.views.get(view) or self.views.get("*")

    def unmasks(self, column: str) -> bool:
        return self.unmask == "*" or column in self.unmask

    def sees_in_clear(self, member: ViewMember) -> bool:
        """Whether the group sees every personal-data column the member shows in clear."""
        return all(self.unmasks(column) for column in member.personal)

    def may_read(self, view: View, name: str) -> bool:
        """Whether the group grants member (or metric) `name` of `view`: its grant allows it and, by lineage, the
        member reads no column the group hides and, if it is a measure, no personal data the group sees masked.
        (A metric is read through its measures: access() also requires each of them.)"""
        grant = self.grant(view.name)
        if grant is None or not grant.allows(name):
            return False
        if name in view.metrics:
            return True
        member = view.members[name]
        return not member.lineage & self.hides and (not member.is_measure or self.sees_in_clear(member))


@dataclass(frozen=True)
class Policies:
    groups: dict[str, Group]
    principals: dict[str, Principal]


def _column(ref: str, where: str) -> str:
    """A cube.column reference: a column of the contract table a cube of the model reads."""
    cube, _, name = ref.partition(".")
    found = model().cubes.get(cube)
    if found is None or name not in {c for m in (*found.dimensions.values(), *found.measures.values()) for c in m.reads}:
        raise PolicyError(f"{where}: {ref!r} is not a cube.column the semantic model reads")
    return ref


def _dimension(ref: str, where: str) -> tuple[str, Dimension]:
    cube, _, name = ref.partition(".")
    found = model().cubes.get(cube)
    if found is None or name not in found.dimensions:
        raise PolicyError(f"{where}: {ref!r} is not a cube.dimension of the semantic model")
    return cube, found.dimensions[name]


def _grant(view: str, declared: Any, where: str) -> Grant:
    grant = Grant("*") if declared == "*" else Grant(declared.get("includes", "*"), tuple(declared.get("excludes", ())))
    if view != "*":
        if view not in model().views:
            raise PolicyError(f"{where}: there is no view {view!r}")
        v = model().views[view]
        named = [*([] if grant.includes == "*" else grant.includes), *grant.excludes]
        if unknown := [m for m in named if m not in v.members and m not in v.metrics]:
            raise PolicyError(f"{where}: view {view} has no members {unknown}")
    return grant


def _group(name: str, entry: dict) -> Group:
    where = f"{POLICIES_PATH.name} group {name}"
    views = {view: _grant(view, declared, where) for view, declared in entry.get("views", {}).items()}
    unmask = entry.get("unmask", [])
    if unmask != "*":
        unmask = frozenset(_column(ref, f"{where} unmask") for ref in unmask)
    hides = frozenset(_column(ref, f"{where} hide") for ref in entry.get("hide", []))
    masks = {}
    for ref, declared in entry.get("masks", {}).items():
        _, dimension = _dimension(ref, where)
        if not dimension.pii:
            raise PolicyError(f"{where}: {ref} is not personal data, so there is nothing to mask")
        masks[ref] = Mask.parse(declared, f"{where} mask of {ref}")
    filters = []
    for f in entry.get("row_filters", []):
        cube, dimension = _dimension(f["member"], where)
        filters.append(RowFilter(name, cube, dimension.name, f["operator"], tuple(map(str, f.get("values", [])))))
    return Group(name, entry.get("description", ""), views, unmask, masks, tuple(filters), hides)


@cache
def policies(path: Path = POLICIES_PATH) -> Policies:
    declared = yaml.safe_load(path.read_text())
    groups = {name: _group(name, entry) for name, entry in declared["groups"].items()}
    principals = {}
    for name, entry in declared.get("principals", {}).items():
        if unknown := [g for g in entry["groups"] if g not in groups]:
            raise PolicyError(f"{path.name} principal {name}: unknown groups {unknown}")
        principals[name] = Principal(name, tuple(entry["groups"]), dict(entry.get("attributes", {})), entry.get("description", ""))
    return Policies(groups, principals)


def principal(name: str) -> Principal:
    try:
        return policies().principals[name]
    except KeyError:
        raise AccessDenied(f"unknown principal {name!r}") from None


def access(who: Principal, view_name: str) -> Access:
    """What `who` may read of the view, or AccessDenied."""
    view = model().views.get(view_name)
    groups = [g for name, g in policies().groups.items() if name in who.groups]  # in declared order, as Postgres compiles them
    granting = [(g, g.grant(view_name)) for g in groups if view is not None and g.grant(view_name)]
    if not granting:
        raise AccessDenied(f"{who.name} may not read the view {view_name!r}")
    members = frozenset(m for m in view.members if any(g.may_read(view, m) for g, _ in granting))
    members |= {name for name, metric in view.metrics.items()
                if any(g.may_read(view, name) for g, _ in granting) and set(metric.measures) <= members}
    masks = {}
    for name in members & view.members.keys():
        vm = view.members[name]
        ref = f"{vm.cube}.{name}"
        if isinstance(vm.member, Dimension) and vm.member.pii:
            allowing = [g for g, _ in granting if g.may_read(view, name)]
            if not any(g.sees_in_clear(vm) for g in allowing):
                masks[ref] = next((g.masks[ref] for g in allowing if ref in g.masks), vm.member.mask)
    filters = tuple(AppliedFilter(f, f.resolve(who.attributes)) for g in groups for f in g.row_filters)
    return Access(who, view, tuple(g.name for g, _ in granting), members, masks, filters)


def readable_views(who: Principal) -> dict[str, Access]:
    """Every view `who` may read, with their access to it (what /meta shows them)."""
    readable = {}
    for name in model().views:
        try:
            readable[name] = access(who, name)
        except AccessDenied:
            continue
    return readable


def markdown_table() -> str:
    """The groups as the README shows them: the views they read, how they see personal data, the rows they are limited to."""
    lines = ["| group | who | views | personal data | rows |", "|---|---|---|---|---|"]
    for g in policies().groups.values():
        views = ", ".join("every view" if v == "*" else f"`{v}`" + ("" if grant.includes == "*" and not grant.excludes else " (some members)")
                          for v, grant in g.views.items())
        personal = "in clear" if g.unmask == "*" else ", ".join(f"{ref.split('.')[1]} {SHOWN[m.kind]}" for ref, m in g.masks.items()) or "masked"
        personal += "".join(f"; no {column}, nor any member reading it" for column in sorted(g.hides))
        rows = "; ".join(f"{f.cube}.{f.dimension} {f.operator} {', '.join(f.values)}" for f in g.row_filters) or "all"
        lines.append(f"| `{g.name}` | {g.description} | {views} | {personal} | {rows} |")
    return "\n".join(lines)

