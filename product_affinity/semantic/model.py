"""The semantic model's parts: cubes, their dimensions, measures and joins, views, metrics and rollups.

Plain frozen dataclasses, built once by product_affinity.semantic.loader from the files in cubes/ and
views/; the compiler, the policy engine and the delivery paths read them and never change them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from product_affinity.contract.odcs import ContractError

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


RELATIONSHIPS = {"many_to_one": "one_to_many", "one_to_many": "many_to_one", "one_to_one": "one_to_one"}


AGGREGATES = {"count", "count_distinct", "sum", "avg", "min", "max"}


GRAINS = ("day", "week", "month", "quarter", "year")


FINER_OR_EQUAL = {"day": set(GRAINS), "week": {"week"}, "month": {"month", "quarter", "year"}, "quarter": {"quarter", "year"},
                  "year": {"year"}}  # the grains a rollup at each grain can answer (weeks straddle months)


MASKS = {"redact", "hash", "partial"}


class ModelError(ContractError):
    """A model file declares something that cannot be compiled."""


def semantic_type(physical: str) -> str:
    """The contract's physical type as the model's member type: string, number, time, boolean or list."""
    physical = physical.upper()
    if physical.endswith("[]"):
        return "list"
    if physical.startswith(("VARCHAR", "TEXT")):
        return "string"
    if physical.startswith(("TIMESTAMP", "DATE")):
        return "time"
    if physical == "BOOLEAN":
        return "boolean"
    return "number"


@dataclass(frozen=True)
class Mask:
    """How a personal-data value is shown to someone not cleared to see it.

    redact: replaced ('***' for text, empty otherwise); hash: a keyed SHA-256 (stable, so it still
    groups and joins, but unreadable); partial: the first `show_first` characters and everything
    from `show_from` on (***@example.com), or the last `show_last` characters (***0100).
    A mask is chosen for what it hides (docs/governance/access-model.md): what a partial mask
    leaves must be shared by many values, and a hash suits only values about as many as people.
    """

    kind: str
    show_first: int = 0
    show_from: str | None = None
    show_last: int = 0

    @classmethod
    def parse(cls, declared: Any, where: str) -> Mask:
        kind, options = (declared, {}) if isinstance(declared, str) else next(iter(declared.items()))
        if kind not in MASKS:
            raise ModelError(f"{where}: mask must be one of {sorted(MASKS)}, not {kind!r}")
        mask = cls(kind, **(options or {}))
        if kind == "partial" and not (mask.show_from or mask.show_last):
            raise ModelError(f"{where}: a partial mask needs show_from or show_last")
        return mask


@dataclass(frozen=True)
class Dimension:
    name: str
    title: str
    description: str
    type: str
    sql: str  # with {CUBE} standing for the cube's alias; runs on DuckDB and PostgreSQL alike (the Postgres port reads it too)
    pii: bool = False  # it shows personal data: it reads a pii column it does not generalise
    mask: Mask | None = None
    reads: frozenset[str] = frozenset()  # its lineage: the contract columns of its cube's table its SQL reads
    generalises: frozenset[str] = frozenset()  # pii columns it reads but shows only coarsened (declared in the model)
    personal: frozenset[str] = frozenset()  # the pii columns it shows: those it reads, less those it generalises


@dataclass(frozen=True)
class Measure:
    name: str
    title: str
    description: str
    type: str  # an aggregate, or ratio (numerator / denominator, two measures of the same cube)
    sql: str | None = None
    filter: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    reads: frozenset[str] = frozenset()  # its lineage: the columns its sql and filter read (a ratio: both its measures')
    personal: frozenset[str] = frozenset()  # the pii columns among them (an aggregate generalises nothing)


@dataclass(frozen=True)
class Join:
    cube: str
    relationship: str
    on: tuple[tuple[str, str], ...]  # (column of this cube, column of the other)

    @property
    def safe(self) -> bool:
        """Following it never repeats a row of the cube it starts from."""
        return self.relationship != "one_to_many"


@dataclass(frozen=True)
class Cube:
    name: str
    title: str
    description: str
    table: str  # physical table
    contract_table: str  # its name in the data contract
    primary_key: tuple[str, ...]
    dimensions: dict[str, Dimension]
    measures: dict[str, Measure]
    joins: dict[str, Join] = field(default_factory=dict)  # both directions, by the cube they lead to

    def member(self, name: str) -> Dimension | Measure:
        return self.dimensions.get(name) or self.measures[name]


@dataclass(frozen=True)
class ViewMember:
    name: str  # as the view exposes it
    cube: str
    member: Dimension | Measure

    @property
    def is_measure(self) -> bool:
        return isinstance(self.member, Measure)

    @property
    def lineage(self) -> frozenset[str]:
        """The columns the member reads, as cube.column (the names policies use)."""
        return frozenset(f"{self.cube}.{column}" for column in self.member.reads)

    @property
    def personal(self) -> frozenset[str]:
        """The personal-data columns the member shows, as cube.column: a group must see them all in clear to read
        the member in clear (a dimension), or at all (a measure: an aggregate cannot be masked)."""
        return frozenset(f"{self.cube}.{column}" for column in self.member.personal)


@dataclass(frozen=True)
class Metric:
    """A view-level derived metric: an expression over the view's measures, written {measure}."""

    name: str
    title: str
    description: str
    expression: str
    measures: tuple[str, ...]


@dataclass(frozen=True)
class Rollup:
    """A pre-aggregation of a view: some of its measures, summed by some of its dimensions (and a time grain).

    The pipeline builds it (product_affinity.defs.rollups) and publishes it with the snapshot; the
    compiler answers from it every query it covers, reading thousands of rows instead of millions.
    Only measures that add up across groups qualify (counts, sums, minimums, maximums, averages kept
    as sum and count, ratios of those), and only dimensions no measure fans out to.
    """

    name: str
    view: str
    description: str
    dimensions: tuple[str, ...]
    measures: tuple[str, ...]
    time_dimension: str | None = None
    granularity: str | None = None

    @property
    def table(self) -> str:
        return f"semantic.{self.view}_{self.name}"

    def columns(self) -> tuple[str, ...]:
        return (*self.dimensions, *([self.time_dimension] if self.time_dimension else []))


@dataclass(frozen=True)
class View:
    name: str
    title: str
    description: str
    root: str
    paths: dict[str, tuple[str, ...]]  # cube -> cubes walked from the root to reach it (root first)
    members: dict[str, ViewMember]
    metrics: dict[str, Metric]
    rollups: tuple[Rollup, ...] = ()
    port: str | None = None  # the output port the view is rooted at (what a direct read of the port returns), if any

    def steps(self, start: str, goal: str) -> list[tuple[str, str]]:
        """The (from, to) joins between two cubes of the view's join tree."""
        up, down = self.paths[start], self.paths[goal]
        shared = 0
        while shared < min(len(up), len(down)) and up[shared] == down[shared]:
            shared += 1
        walk = list(reversed(up[shared - 1:])) + list(down[shared:])
        return list(zip(walk, walk[1:]))


@dataclass(frozen=True)
class Model:
    cubes: dict[str, Cube]
    views: dict[str, View]

    def port_view(self, port: str) -> View | None:
        """The view through which an output port is read."""
        return next((v for v in self.views.values() if v.port == port), None)

    def path(self, start: str, goal: str, safe_only: bool = False) -> list[Join] | None:
        """The joins from cube `start` to cube `goal` (breadth first); with safe_only, only joins that never fan out."""
        frontier, seen = [(start, [])], {start}
        while frontier:
            cube, walked = frontier.pop(0)
            if cube == goal:
                return walked
            for join in self.cubes[cube].joins.values():
                if join.cube not in seen and (join.safe or not safe_only):
                    seen.add(join.cube)
                    frontier.append((join.cube, [*walked, join]))
        return None


def rollup_parts(measure: Measure, measures: dict[str, Measure]) -> dict[str, Measure]:
    """The columns a rollup keeps for a measure, each an aggregate that adds up across groups (`measures`: its cube's)."""
    if measure.type == "ratio":
        return rollup_parts(measures[measure.numerator], measures) | rollup_parts(measures[measure.denominator], measures)
    if measure.type == "avg":
        return {f"{measure.name}__sum": Measure(f"{measure.name}__sum", "", "", "sum", measure.sql, measure.filter),
                f"{measure.name}__count": Measure(f"{measure.name}__count", "", "", "count", measure.sql, measure.filter)}
    if measure.type == "count_distinct":
        raise ModelError(f"measure {measure.name}: a distinct count does not add up across groups, so no rollup can keep it")
    return {measure.name: measure}

