"""What a principal may get of each member, worked out here from the model's SQL and the policies, independently of
the engine's lineage code (product_affinity.governance), so the attacker tests can hold the engine to it.

- A member's columns are read from its own SQL: {CUBE}.<column> in its sql and filter, a ratio's two measures.
- A column is as visible to a principal as the plain dimension showing it is (in clear, masked, or refused) in the
  most open view they read; a column no plain dimension shows anywhere they read is hidden from them.
- So a member reading a hidden column must be refused; a measure or metric reading a column the principal sees
  masked must be refused too (an aggregate at customer grain is the value); a dimension reading a masked column
  must come back masked, unless the model declares it a generalisation of that column.
"""

import re

from product_affinity.governance.policies import readable_views
from product_affinity.semantic.model import Dimension
from product_affinity.semantic.loader import model

COLUMN = re.compile(r"\{CUBE\}\.(\w+)")
ORDER = {"clear": 2, "masked": 1, "hidden": 0}


def columns_read(cube: str, member) -> set[str]:
    """The test's own reading of a member's lineage, from its SQL: cube.column."""
    if getattr(member, "type", None) == "ratio":
        measures = model().cubes[cube].measures
        return columns_read(cube, measures[member.numerator]) | columns_read(cube, measures[member.denominator])
    text = " ".join(filter(None, [member.sql, getattr(member, "filter", None)]))
    return {f"{cube}.{column}" for column in COLUMN.findall(text)}


def column_visibility(who) -> dict[str, str]:
    """cube.column -> clear, masked or hidden for the principal, from the plain dimensions that show a column."""
    seen: dict[str, str] = {}
    for granted in readable_views(who).values():
        for name, vm in granted.view.members.items():
            if not isinstance(vm.member, Dimension) or not re.fullmatch(r"\{CUBE\}\.\w+", vm.member.sql):
                continue
            column = f"{vm.cube}.{vm.member.sql.split('.')[1]}"
            state = "hidden" if name not in granted.members else "masked" if f"{vm.cube}.{name}" in granted.masks else "clear"
            if ORDER[state] > ORDER[seen.get(column, "hidden")] or column not in seen:
                seen[column] = state
    return seen


def expectation(view, name: str, visibility: dict[str, str]) -> str:
    """refused, masked or open: what the principal may get of the member, from its columns."""
    if name in view.metrics:
        columns = set().union(*(columns_read(view.members[m].cube, view.members[m].member) for m in view.metrics[name].measures))
        is_measure, generalised = True, set()
    else:
        vm = view.members[name]
        columns, is_measure = columns_read(vm.cube, vm.member), vm.is_measure
        generalised = {f"{vm.cube}.{c}" for c in getattr(vm.member, "generalises", ())}
    states = {c: visibility.get(c, "hidden") for c in columns}
    if "hidden" in states.values():
        return "refused"
    masked = {c for c, s in states.items() if s == "masked"}
    if masked and is_measure:
        return "refused"
    return "masked" if masked - generalised else "open"
