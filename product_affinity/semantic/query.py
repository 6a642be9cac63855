"""A query against one view, as every delivery path receives it (in the style of Cube's /load query).

Members are named `<view>.<member>`. The shape is validated here (types, bounds, no unknown
fields); whether the members exist and may be read is decided by the compiler and the policy
engine. Filter values are data: they are bound as parameters, never written into SQL.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from product_affinity.request_limits import (MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH, MAX_FILTER_VALUES, MAX_LIMIT,
                                              MAX_OFFSET, MAX_VALUE_CHARS)

Value = Annotated[str, Field(max_length=MAX_VALUE_CHARS)] | Annotated[float, Field(allow_inf_nan=False)] | bool
MemberName = Annotated[str, Field(min_length=3, max_length=200, examples=["sales.total_spend"])]
Granularity = Literal["day", "week", "month", "quarter", "year"]
Operator = Literal[
    "equals", "notEquals", "contains", "notContains", "startsWith", "endsWith",
    "gt", "gte", "lt", "lte", "set", "notSet", "inDateRange", "notInDateRange", "beforeDate", "afterDate",
]
NO_VALUES = {"set", "notSet"}
ONE_VALUE = {"contains", "notContains", "startsWith", "endsWith", "gt", "gte", "lt", "lte", "beforeDate", "afterDate"}
TWO_VALUES = {"inDateRange", "notInDateRange"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MemberFilter(Strict):
    member: MemberName
    operator: Operator
    values: Annotated[list[Value], Field(max_length=MAX_FILTER_VALUES)] = []

    @model_validator(mode="after")
    def _value_count(self) -> MemberFilter:
        count = len(self.values)
        expected = 0 if self.operator in NO_VALUES else 1 if self.operator in ONE_VALUE else 2 if self.operator in TWO_VALUES else None
        if expected is None and count == 0:
            raise ValueError(f"{self.operator} needs at least one value")
        if expected is not None and count != expected:
            raise ValueError(f"{self.operator} takes {expected} value(s), got {count}")
        return self


class OrFilter(Strict):
    or_: Annotated[list[Filter], Field(alias="or", min_length=1, max_length=MAX_FILTER_CONDITIONS)]


class AndFilter(Strict):
    and_: Annotated[list[Filter], Field(alias="and", min_length=1, max_length=MAX_FILTER_CONDITIONS)]


def _filter_kind(value: Any) -> str:
    """Which kind of filter a value is, by its keys: one kind is validated, so an error names what is wrong with it
    instead of every way it fails to be each of the three (and nested groups cost linear time, not more)."""
    if isinstance(value, dict):
        return "or" if "or" in value else "and" if "and" in value else "member"
    return "or" if isinstance(value, OrFilter) else "and" if isinstance(value, AndFilter) else "member"


Filter = Annotated[Union[Annotated[MemberFilter, Tag("member")], Annotated[OrFilter, Tag("or")],
                         Annotated[AndFilter, Tag("and")]], Discriminator(_filter_kind)]


class TimeDimension(Strict):
    dimension: MemberName
    granularity: Granularity | None = None
    date_range: Annotated[list[Annotated[str, Field(max_length=40)]] | None, Field(alias="dateRange", min_length=2, max_length=2)] = None


class Query(Strict):
    """What to compute: measures grouped by dimensions, filtered, ordered, limited."""

    measures: Annotated[list[MemberName], Field(max_length=50)] = []
    dimensions: Annotated[list[MemberName], Field(max_length=50)] = []
    time_dimensions: Annotated[list[TimeDimension], Field(alias="timeDimensions", max_length=5)] = []
    filters: Annotated[list[Filter], Field(max_length=MAX_FILTER_CONDITIONS)] = []
    order: Annotated[list[tuple[MemberName, Literal["asc", "desc"]]], Field(max_length=50)] = []
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 10_000
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0
    ungrouped: bool = Field(False, description="Rows as they are, without grouping (dimensions only).")

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        """Refuse filters too deep or too many before they are validated one by one: what that costs grows with them."""
        if isinstance(data, dict) and isinstance(data.get("filters"), list):
            depth, conditions, values = filter_cost(data["filters"])
            for name, found, limit, what in (
                ("max_filter_depth", depth, MAX_FILTER_DEPTH, "and/or groups nested {} deep"),
                ("max_filter_conditions", conditions, MAX_FILTER_CONDITIONS, "{} conditions"),
                ("max_filter_values", values, MAX_FILTER_VALUES, "{} values in all"),
            ):
                if found > limit:
                    raise ValueError(f"filters: {what.format(found)}, more than {name} = {limit} allows")
        return data

    @model_validator(mode="after")
    def _asks_for_something(self) -> Query:
        if not (self.measures or self.dimensions or self.time_dimensions):
            raise ValueError("a query needs at least one measure, dimension or time dimension")
        return self

    def members(self) -> list[str]:
        """Every member the query names, in the order it names them."""
        named = [*self.measures, *self.dimensions, *(t.dimension for t in self.time_dimensions)]
        return list(dict.fromkeys([*named, *(f.member for f in _flatten(self.filters)), *(m for m, _ in self.order)]))


def filter_cost(filters: list) -> tuple[int, int, int]:
    """How deep and/or groups nest in raw (unvalidated) filters, how many conditions and values they hold; walked
    without recursion, and whatever is not shaped like a filter is left for validation to name."""
    depth = conditions = values = 0
    stack = [(f, 0) for f in filters]
    while stack:
        f, level = stack.pop()
        if not isinstance(f, dict):
            continue
        group = f.get("or", f.get("and"))
        if isinstance(group, list):
            depth = max(depth, level + 1)
            stack.extend((g, level + 1) for g in group)
        else:
            conditions += 1
            values += len(f["values"]) if isinstance(f.get("values"), list) else 0
    return depth, conditions, values


def _flatten(filters: list[Filter]) -> list[MemberFilter]:
    flat = []
    for f in filters:
        flat += [f] if isinstance(f, MemberFilter) else _flatten(f.or_ if isinstance(f, OrFilter) else f.and_)
    return flat


OrFilter.model_rebuild()
AndFilter.model_rebuild()
Query.model_rebuild()
