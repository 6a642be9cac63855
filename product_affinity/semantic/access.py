"""A principal's effective access to one view: the answer the policy engine gives and every delivery path enforces.

It lives beside the model so the compiler can apply it (members allowed, masks, row filters) without
depending on the engine that decides it (product_affinity.governance.policies), as Cube keeps access
policies above its SQL compiler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from product_affinity.semantic.model import Mask, View


ATTRIBUTE = re.compile(r"^\{user\.(\w+)\}$")


class AccessDenied(PermissionError):
    """The principal may not read what was asked (HTTP 403)."""


@dataclass(frozen=True)
class RowFilter:
    """Rows of `cube` (and every row that belongs to one of them) where `dimension` <operator> values."""

    group: str
    cube: str
    dimension: str
    operator: str
    values: tuple[str, ...]  # as declared: literals or {user.<attribute>}

    def resolve(self, attributes: dict[str, Any]) -> tuple[Any, ...]:
        resolved = []
        for value in self.values:
            found = ATTRIBUTE.match(str(value))
            if found is None:
                resolved.append(value)
            elif found.group(1) in attributes:
                extra = attributes[found.group(1)]
                resolved += extra if isinstance(extra, list) else [extra]
            else:
                raise AccessDenied(f"group {self.group} limits rows by the attribute {found.group(1)!r}, which is not set for this principal")
        return tuple(resolved)


@dataclass(frozen=True)
class Principal:
    name: str
    groups: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class AppliedFilter:
    filter: RowFilter
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Access:
    """A principal's effective access to one view: the answer every delivery path enforces."""

    principal: Principal
    view: View
    groups: tuple[str, ...]  # the principal's groups that grant the view
    members: frozenset[str]  # view members (and metrics) the principal may ask for
    masks: dict[str, Mask]  # cube.dimension -> the mask applied
    row_filters: tuple[AppliedFilter, ...]

    def check(self, member: str) -> None:
        if member not in self.members:
            raise AccessDenied(f"{self.principal.name} may not read {self.view.name}.{member}")

    def describe(self) -> dict[str, Any]:
        """The policies applied, as the audit log and the API responses record them."""
        return {
            "groups": list(self.groups),
            "masked": {dimension: mask.kind for dimension, mask in sorted(self.masks.items())},
            "row_filters": [
                {"group": f.filter.group, "member": f"{f.filter.cube}.{f.filter.dimension}", "operator": f.filter.operator,
                 "values": list(f.values)}
                for f in self.row_filters
            ],
        }

