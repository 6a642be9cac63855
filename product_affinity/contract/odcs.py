"""The data contract, loaded once: every module asks it for columns, types, quality rules and SLOs instead of restating them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CONTRACT_PATH = Path(__file__).with_name("product_affinity.odcs.yaml")
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT")  # the contract's physical types that hold whole numbers


class ContractError(Exception):
    """The contract declares something this product cannot check."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool
    unique: bool
    primary_key: bool
    pii: bool
    description: str
    partitioned: bool = False  # ODCS `partitioned`: the table is stored and loaded in daily partitions of this column
    options: dict[str, Any] = field(default_factory=dict)  # ODCS logicalTypeOptions: minimum, maximum, ...


@dataclass(frozen=True)
class Table:
    name: str
    physical_name: str
    description: str
    columns: tuple[Column, ...]
    custom: dict[str, str]

    @property
    def schema(self) -> str:
        return self.physical_name.split(".")[0]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.primary_key]

    @property
    def source_file(self) -> str | None:
        return self.custom.get("sourceFile")

    @property
    def layer(self) -> str | None:
        return self.custom.get("layer")

    @property
    def partition_column(self) -> str | None:
        """The column whose UTC day is the table's daily partition (ODCS `partitioned`), if the table is partitioned."""
        return next((c.name for c in self.columns if c.partitioned), None)

    @property
    def first_partition_day(self) -> date:
        return date.fromisoformat(self.custom["firstPartitionDay"])

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


# What each operator promises, as the comparison the report prints.
OPERATORS = {"mustBe": "=", "mustBeLessOrEqualTo": "<=", "mustBeGreaterOrEqualTo": ">="}
# What a rule's number counts: library metrics count the bad values; other rules measure the good share.
MEASURES = {
    "nullValues": "missing",
    "invalidValues": "invalid",
    "duplicateValues": "duplicated",
    "custom": "values meeting the expectation",
    "columnTypes": "columns with the declared type",
    "freshness": "age of the newest value",
    "quarantineShare": "of rows received quarantined for one reason",
}
WRITTEN_METRICS = ("nullValues", "invalidValues", "duplicateValues", "custom")  # columnTypes and freshness are derived
UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "min": timedelta(minutes=1), "ms": timedelta(milliseconds=1)}


@dataclass(frozen=True)
class Rule:
    """One quality rule of one table: a service-level indicator with its objective (operator, threshold, unit).

    `metric` is an ODCS library metric (nullValues, invalidValues, duplicateValues), `custom` for a
    reconciliation (a Great Expectations column-pair expectation written in the contract, measured
    exactly by DuckDB), or one of the rules every table gets
    without writing it: `columnTypes` (schema) and `freshness` (the latency SLA of a column).
    """

    id: str
    table: str
    dimension: str
    severity: str  # error: blocks what is built from the table; warning: reported only
    metric: str
    operator: str
    threshold: float
    unit: str  # percent, rows or hours
    description: str
    columns: tuple[str, ...] = ()
    arguments: dict[str, Any] = field(default_factory=dict)
    implementation: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return self.severity == "error"

    @property
    def target(self) -> str:
        """The objective as an analyst reads it, e.g. '<= 1 % missing'."""
        unit = {"percent": "%", "hours": "h"}.get(self.unit, self.unit)
        measure = "values that reconcile" if self.dimension == "accuracy" else MEASURES[self.metric]
        return f"{OPERATORS[self.operator]} {self.threshold:g} {unit} {measure}"


@dataclass(frozen=True)
class ServiceLevel:
    """An slaProperties entry: an SLO about the product rather than one table's content."""

    id: str
    property: str
    value: Any
    unit: str
    element: str
    driver: str
    description: str

    @property
    def duration(self) -> timedelta:
        return self.value * UNITS[self.unit]


def _column(prop: dict) -> Column:
    return Column(
        name=prop["name"],
        type=prop["physicalType"],
        required=bool(prop.get("required", False)),
        unique=bool(prop.get("unique", False)),
        primary_key=bool(prop.get("primaryKey", False)),
        pii=prop.get("classification") == "pii",
        partitioned=bool(prop.get("partitioned", False)),
        description=prop.get("description", ""),
        options=dict(prop.get("logicalTypeOptions", {})),
    )


@cache
def contract() -> dict:
    return yaml.safe_load(CONTRACT_PATH.read_text())


@cache
def tables() -> dict[str, Table]:
    return {
        entry["name"]: Table(
            name=entry["name"],
            physical_name=entry["physicalName"],
            description=entry.get("description", ""),
            columns=tuple(_column(p) for p in entry["properties"]),
            custom={c["property"]: c["value"] for c in entry.get("customProperties", [])},
        )
        for entry in contract()["schema"]
    }


def table(name: str) -> Table:
    return tables()[name]


@cache
def service_levels() -> tuple[ServiceLevel, ...]:
    return tuple(
        ServiceLevel(
            id=entry["id"],
            property=entry["property"],
            value=entry["value"],
            unit=entry.get("unit", ""),
            element=entry.get("element", ""),
            driver=entry.get("driver", ""),
            description=entry.get("description", ""),
        )
        for entry in contract()["slaProperties"]
    )


def service_level(sla_id: str) -> ServiceLevel:
    return next(s for s in service_levels() if s.id == sla_id)


def latency(element: str) -> ServiceLevel:
    """The latency (freshness) SLA of a `table.column` element."""
    found = [s for s in service_levels() if s.property == "latency" and s.element == element]
    if len(found) != 1:
        raise ContractError(f"expected one latency SLA on {element}, found {len(found)}")
    return found[0]


def attainment_objective() -> float:
    """Share of runs (0-1) in which every SLO must be met; what is left over is its error budget."""
    custom = {c["property"]: c["value"] for c in contract().get("customProperties", [])}
    return custom["sloAttainmentObjective"] / 100


def _threshold(entry: dict, where: str) -> tuple[str, float]:
    declared = [key for key in entry if key.startswith("must")]
    if len(declared) != 1 or declared[0] not in OPERATORS:
        raise ContractError(f"{where}: declare exactly one of {', '.join(OPERATORS)} (found {declared})")
    return declared[0], float(entry[declared[0]])


def _rule(t: Table, entry: dict, column: Column | None) -> Rule:
    """A written quality entry, normalised; a property's rule without an id is called <dimension>_<column>."""
    where = f"{t.name}.{column.name if column else ''} quality {entry.get('id', entry.get('metric'))}"
    metric = entry.get("metric") or ("custom" if entry.get("type") == "custom" else None)
    if metric == "custom" and entry.get("method") == "quarantineShare":
        if not t.source_file:
            raise ContractError(f"{where}: only a table loaded from a source file has a quarantine")
        metric = "quarantineShare"
    elif metric not in WRITTEN_METRICS:
        raise ContractError(f"{where}: unsupported metric or type (use one of {', '.join(WRITTEN_METRICS)})")
    elif metric == "custom" and entry.get("dimension") != "timeliness" and entry.get("method") != "reconciliation":
        raise ContractError(f"{where}: a custom rule is a reconciliation (method: reconciliation), a quarantineShare or a "
                            "timeliness rule; nothing measures any other")
    columns = (column.name,) if column else tuple(entry.get("arguments", {}).get("properties", ()))
    arguments = dict(entry.get("arguments", {}))
    if metric == "invalidValues" and not {"validValues", "pattern"} & arguments.keys():
        arguments = column.options  # the valid range is declared on the property itself
        if not arguments:
            raise ContractError(f"{where}: invalidValues needs validValues, a pattern or logicalTypeOptions")
    if entry.get("dimension") == "timeliness":
        sla = latency(f"{t.name}.{column.name}")
        operator, threshold, unit = "mustBeLessOrEqualTo", sla.duration / timedelta(hours=1), "hours"
        metric = "freshness"
    else:
        operator, threshold = _threshold(entry, where)
        unit = entry.get("unit", "rows")
    if unit == "rows" and (operator, threshold) != ("mustBe", 0):
        raise ContractError(f"{where}: a count of rows can only be required to be 0; use unit: percent")
    return Rule(
        id=entry.get("id") or f"{entry['dimension']}_{column.name}",
        table=t.name,
        dimension=entry["dimension"],
        severity=entry["severity"],
        metric=metric,
        operator=operator,
        threshold=threshold,
        unit=unit,
        description=entry.get("description", ""),
        columns=columns,
        arguments=arguments,
        implementation=dict(entry.get("implementation", {})),
    )


def _implied_rules(t: Table, written: list[Rule]) -> list[Rule]:
    """Rules the schema declaration itself implies: declared types of an output port, and no missing value in a
    required column that writes no completeness rule of its own.

    A source-aligned table has no type rule: ingestion casts every value to its declared type and
    quarantines what does not cast (reason bad_type), so the table's types cannot differ from the
    contract's; the quarantine share SLO measures the values that did not cast.
    """
    own = {r.id for r in written}
    types = Rule(
        id="schema_column_types", table=t.name, dimension="conformity", severity="error", metric="columnTypes",
        operator="mustBe", threshold=100, unit="percent", columns=tuple(t.column_names),
        description=f"Every column of {t.physical_name} has the type the contract declares.",
    )
    required = [
        Rule(
            id=f"completeness_{c.name}", table=t.name, dimension="completeness", severity="error", metric="nullValues",
            operator="mustBe", threshold=0, unit="rows", columns=(c.name,),
            description=f"{c.name} is required: no row may lack it.",
        )
        for c in t.columns
        if c.required and f"completeness_{c.name}" not in own
    ]
    return ([] if t.source_file else [types]) + required


@cache
def quality_rules(name: str) -> tuple[Rule, ...]:
    """Every quality rule of a table: those the schema implies, then those written on its properties and on itself."""
    t, entry = table(name), next(e for e in contract()["schema"] if e["name"] == name)
    written = [_rule(t, q, t.column(p["name"])) for p in entry["properties"] for q in p.get("quality", [])]
    written += [_rule(t, q, None) for q in entry.get("quality", [])]
    rules = _implied_rules(t, written) + written
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise ContractError(f"{name}: rule ids must be unique, {sorted({i for i in ids if ids.count(i) > 1})} repeat")
    return tuple(rules)


def source_tables() -> list[Table]:
    """The tables loaded from the operational sources (customer_info, product, purchase): those with a sourceFile. The
    contract lists them in the order they load in, customers and products before the purchases checked against them."""
    return [t for t in tables().values() if t.source_file]


def checked_tables() -> list[Table]:
    """The tables whose quality is checked: the input ports (typed copies of the source files) and the output ports."""
    return [*source_tables(), *(t for t in tables().values() if t.layer == "consumer_aligned")]
