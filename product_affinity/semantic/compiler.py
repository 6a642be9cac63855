"""Compile a query, with the policy engine's answer, into one parameterised SQL statement on the published snapshot.

Guarantees:
- Identifiers come only from the model: every member the query names is looked up in its view
  (QueryError when it is not there, AccessDenied when the principal may not read it). Filter
  values are bound as parameters; limit and offset are validated integers.
- Measures never fan out. Each cube's measures are aggregated on their own, over the cube's own
  rows: when a dimension or filter is reached through a one-to-many join (a customer's
  purchases, say), the rows are first reduced to distinct (primary key, dimensions) pairs, so a
  customer's spend is counted once per group, never once per order line. Measures of several
  cubes are aggregated separately and then joined on the dimensions.
- Policies hold on every path: masked dimensions are masked wherever they appear (output,
  filters, grouping, order), and a row filter on a cube limits that cube's rows and every row
  that belongs to one of them (reached through many-to-one joins), in every subquery, so
  aggregates never include rows the principal cannot see.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from product_affinity.semantic.access import Access, AccessDenied, Principal
from product_affinity.semantic.model import Cube, Dimension, FINER_OR_EQUAL, Mask, Measure, Metric, Rollup, View, rollup_parts
from product_affinity.semantic.loader import model
from product_affinity.semantic.query import MemberFilter, OrFilter, Query, _flatten


class QueryError(ValueError):
    """The query names something the view does not have, or combines members in a way that has no meaning (HTTP 400)."""


@dataclass(frozen=True)
class Column:
    name: str  # the key in each result row: view.member, or view.member.granularity
    title: str
    type: str
    kind: str  # dimension, time_dimension, measure or metric


@dataclass(frozen=True)
class Compiled:
    sql: str
    params: dict[str, Any]
    columns: list[Column]
    rollup: str | None = None  # the rollup table that answered, if one did


def _q(identifier: str) -> str:
    return f'"{identifier}"'


# The few spellings DuckDB and PostgreSQL do not share; everything else the compiler writes runs on both,
# so the Postgres port (product_affinity.delivery.postgres) masks and filters with the same SQL as the API.
DIALECTS = {
    "duckdb": {"sha256_hex": "sha256({0})", "has_any": "list_has_any({0}, [{1}])", "ends_with": "ends_with({0}, {1})"},
    "postgres": {"sha256_hex": "encode(sha256(convert_to({0}, 'UTF8')), 'hex')", "has_any": "{0} && ARRAY[{1}]::text[]",
                 "ends_with": "right({0}, length({1})) = {1}"},
}


def mask_sql(expr: str, mask: Mask, kind: str, salt: str, dialect: str = "duckdb") -> str:
    """The SQL of a masked value, byte for byte the same in DuckDB and PostgreSQL; `salt` is an SQL expression."""
    if mask.kind == "redact":
        return f"CASE WHEN {expr} IS NULL THEN NULL ELSE '***' END" if kind == "string" else "NULL"
    if mask.kind == "hash":
        digest = DIALECTS[dialect]["sha256_hex"].format(f"{salt} || CAST({expr} AS VARCHAR)")
        return f"CASE WHEN {expr} IS NULL THEN NULL ELSE left({digest}, 20) END"
    if mask.show_from:
        mark = mask.show_from.replace("'", "''")
        return (f"CASE WHEN strpos({expr}, '{mark}') > {mask.show_first} "
                f"THEN left({expr}, {mask.show_first}) || '***' || substr({expr}, strpos({expr}, '{mark}')) "
                f"WHEN {expr} IS NULL THEN NULL ELSE '***' END")
    return (f"CASE WHEN length({expr}) > {mask.show_last} THEN '***' || right({expr}, {mask.show_last}) "
            f"WHEN {expr} IS NULL THEN NULL ELSE '***' END")


class _Params:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __call__(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"


def _time_value(value: Any, member: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)  # the warehouse keeps UTC
    except ValueError:
        raise QueryError(f"{member}: {value!r} is not an ISO date or timestamp") from None
    except OverflowError:  # a zone offset moving it past year 9999 or before year 1
        raise QueryError(f"{member}: {value!r} is outside the years 1 to 9999 in UTC") from None


def _end_of(value: Any, member: str) -> datetime:
    """The exclusive end of a range's last day ('2026-03-31' means up to the end of that day)."""
    end = _time_value(value, member)
    try:
        return end + timedelta(days=1) if len(str(value)) <= 10 else end
    except OverflowError:
        raise QueryError(f"{member}: a range cannot end on {value!r}, the last day there is (end it by 9999-12-30)") from None


def _typed(value: Any, kind: str, member: str) -> Any:
    if kind == "number":
        if isinstance(value, bool):
            raise QueryError(f"{member}: {value!r} is not a number")
        try:
            number = float(value)
        except ValueError:
            raise QueryError(f"{member}: {value!r} is not a number") from None
        if not math.isfinite(number):  # 'NaN', 'inf', '1e999': float() reads them, no column holds them
            raise QueryError(f"{member}: {value!r} is not a finite number")
        return number
    if kind == "time":
        return _time_value(value, member)
    if kind == "boolean":
        if isinstance(value, bool) or str(value).lower() in ("true", "false"):
            return value if isinstance(value, bool) else str(value).lower() == "true"
        raise QueryError(f"{member}: {value!r} is not true or false")
    return str(value)


STRING_OPERATORS = {"contains", "notContains", "startsWith", "endsWith"}
ORDER_OPERATORS = {"gt", "gte", "lt", "lte"}
DATE_OPERATORS = {"inDateRange", "notInDateRange", "beforeDate", "afterDate"}
COMPARISON = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def condition(expr: str, kind: str, operator: str, values: list[Any], member: str, param: Callable[[Any], str],
              dialect: str = "duckdb") -> str:
    """One filter as SQL over `expr`, its values written by `param` (bound as parameters, or Postgres literals for DDL)."""
    if operator == "set":
        return f"{expr} IS NOT NULL"
    if operator == "notSet":
        return f"{expr} IS NULL"
    if operator in DATE_OPERATORS and kind != "time":
        raise QueryError(f"{member}: {operator} applies to time dimensions only")
    if operator in STRING_OPERATORS and kind not in ("string", "list"):
        raise QueryError(f"{member}: {operator} applies to text only")
    if operator in ORDER_OPERATORS and kind not in ("number", "time", "string"):
        raise QueryError(f"{member}: {operator} applies to numbers, times and text only")
    if kind == "list":
        if operator not in ("equals", "notEquals"):
            raise QueryError(f"{member}: a list can only be filtered with equals or notEquals (holds one of the values)")
        has = DIALECTS[dialect]["has_any"].format(expr, ", ".join(param(str(v)) for v in values))
        return has if operator == "equals" else f"NOT {has}"
    if operator in ("equals", "notEquals"):
        listed = ", ".join(param(_typed(v, kind, member)) for v in values)
        return f"{expr} IN ({listed})" if operator == "equals" else f"({expr} NOT IN ({listed}) OR {expr} IS NULL)"
    if operator in COMPARISON:
        return f"{expr} {COMPARISON[operator]} {param(_typed(values[0], kind, member))}"
    if operator in ("contains", "notContains"):
        found = f"strpos(lower(CAST({expr} AS VARCHAR)), lower({param(str(values[0]))})) > 0"
        return found if operator == "contains" else f"(NOT {found} OR {expr} IS NULL)"
    if operator == "startsWith":
        return f"starts_with({expr}, {param(str(values[0]))})"
    if operator == "endsWith":
        return DIALECTS[dialect]["ends_with"].format(expr, param(str(values[0])))
    if operator in ("inDateRange", "notInDateRange"):
        inside = f"({expr} >= {param(_time_value(values[0], member))} AND {expr} < {param(_end_of(values[1], member))})"
        return inside if operator == "inDateRange" else f"NOT {inside}"
    bound = param(_time_value(values[0], member) if operator == "beforeDate" else _end_of(values[0], member))
    return f"{expr} < {bound}" if operator == "beforeDate" else f"{expr} >= {bound}"


def _period_start(moment: datetime, grain: str) -> datetime:
    """The start of the day, week (Monday), month, quarter or year `moment` falls in."""
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain in ("month", "quarter", "year"):
        month = {"month": day.month, "quarter": day.month - (day.month - 1) % 3, "year": 1}[grain]
        return day.replace(month=month, day=1)
    return day


def _aligned(f: MemberFilter, grain: str) -> bool:
    """Whether a time filter keeps the same rows from a rollup at `grain` as from the timestamps: every bound it
    compares with starts a period of that grain, and it compares with >= and < only."""
    if f.operator in ("set", "notSet"):
        return True
    try:
        bounds = {"inDateRange": lambda v: [_time_value(v[0], f.member), _end_of(v[1], f.member)],
                  "notInDateRange": lambda v: [_time_value(v[0], f.member), _end_of(v[1], f.member)],
                  "beforeDate": lambda v: [_time_value(v[0], f.member)], "afterDate": lambda v: [_end_of(v[0], f.member)],
                  "gte": lambda v: [_time_value(v[0], f.member)], "lt": lambda v: [_time_value(v[0], f.member)]}[f.operator](f.values)
    except (KeyError, QueryError):
        return False
    return all(_period_start(bound, grain) == bound for bound in bounds)


def _reaggregate(measure: Measure, cube: Cube, column: Callable[[str], str]) -> str:
    """A measure from a rollup's additive parts (rollup_parts), summed again over the query's groups."""
    if measure.type == "ratio":
        num, den = (_reaggregate(cube.measures[m], cube, column) for m in (measure.numerator, measure.denominator))
        return f"CAST({num} AS DOUBLE) / nullif({den}, 0)"
    if measure.type == "avg":
        return f"CAST(sum({column(measure.name + '__sum')}) AS DOUBLE) / nullif(sum({column(measure.name + '__count')}), 0)"
    if measure.type == "count":
        return f"coalesce(sum({column(measure.name)}), 0)"  # a count of nothing is 0, as on the detail
    return f"{'sum' if measure.type == 'sum' else measure.type}({column(measure.name)})"


def _safe(steps: list[tuple[str, str]]) -> bool:
    cubes = model().cubes
    return all(cubes[a].joins[b].safe for a, b in steps)


def _join_clause(a: str, a_alias: str, b: str, b_alias: str) -> str:
    join, cube = model().cubes[a].joins[b], model().cubes[b]
    on = " AND ".join(f"{_q(a_alias)}.{x} = {_q(b_alias)}.{y}" for x, y in join.on)
    return f"LEFT JOIN {cube.table} AS {_q(b_alias)} ON {on}"


class _Compiler:
    def __init__(self, query: Query, access: Access, salt: str, rollups: Container[str] | None = None) -> None:
        self.query, self.access, self.view, self.rollups = query, access, access.view, rollups
        self.param, self._salt, self._salt_param = _Params(), salt, None
        for name in query.members():
            self._member(name)  # refuses unknown and forbidden members before any SQL is written

    # -- members ---------------------------------------------------------------------------
    def _member(self, full: str) -> tuple[str, Dimension | Measure | Metric]:
        view_name, _, name = full.partition(".")
        if view_name != self.view.name:
            raise QueryError(f"{full}: a query reads one view ({self.view.name}); name members as {self.view.name}.<member>")
        if name in self.view.metrics:
            self.access.check(name)
            return name, self.view.metrics[name]
        if name not in self.view.members:
            raise QueryError(f"{full}: the view {self.view.name} has no member {name!r} (GET /meta lists them)")
        self.access.check(name)
        return name, self.view.members[name].member

    def _cube_of(self, name: str) -> str:
        return self.view.members[name].cube

    def dimension_sql(self, name: str) -> str:
        vm = self.view.members[name]
        expr = vm.member.sql.replace("{CUBE}", _q(vm.cube))
        mask = self.access.masks.get(f"{vm.cube}.{name}")
        if mask is None:
            return expr
        if mask.kind == "hash" and self._salt_param is None:
            self._salt_param = self.param(self._salt)  # bound only when used: DuckDB refuses unused parameters
        return mask_sql(expr, mask, vm.member.type, self._salt_param)

    # -- filters ---------------------------------------------------------------------------
    def _filter_sql(self, f, sql_of: Callable[[str], str]) -> str:
        """A filter (group) as SQL, each member's value given by `sql_of(member name)`."""
        if isinstance(f, MemberFilter):
            name, member = self._member(f.member)
            kind = "number" if isinstance(member, (Measure, Metric)) else member.type
            return condition(sql_of(name), kind, f.operator, f.values, f.member, self.param)
        parts, glue = (f.or_, " OR ") if isinstance(f, OrFilter) else (f.and_, " AND ")
        return "(" + glue.join(self._filter_sql(p, sql_of) for p in parts) + ")"

    def _is_measure_filter(self, f) -> bool:
        members = [self._member(m.member)[1] for m in _flatten([f])]
        kinds = {isinstance(m, (Measure, Metric)) for m in members}
        if len(kinds) > 1:
            raise QueryError("a filter group cannot mix measures and dimensions")
        return kinds.pop()

    # -- joins and row filters ---------------------------------------------------------------
    def _from(self, base: str, cubes: set[str]) -> tuple[str, list[str]]:
        """FROM clause joining `cubes` to `base` along the view's tree, and the row-filter conditions that apply."""
        joined, clauses = [base], [f"FROM {model().cubes[base].table} AS {_q(base)}"]
        for cube in sorted(cubes - {base}):
            for a, b in self.view.steps(base, cube):
                if b not in joined:
                    joined.append(b)
                    clauses.append(_join_clause(a, a, b, b))
        conditions = []
        for n, applied in enumerate(self.access.row_filters):
            f = applied.filter
            target = model().cubes[f.cube].dimensions[f.dimension]
            if f.cube in joined:
                conditions.append(self._row_condition(applied, target.sql.replace("{CUBE}", _q(f.cube)), target.type))
                continue
            for start in list(joined):  # every cube whose rows belong to a filtered row is filtered through it
                path = model().path(start, f.cube, safe_only=True)
                if path is None:
                    continue
                cube, alias = start, start
                for step, join in enumerate(path):
                    next_alias = f"rf{n}_{start}_{step}_{join.cube}"
                    clauses.append(_join_clause(cube, alias, join.cube, next_alias))
                    cube, alias = join.cube, next_alias
                conditions.append(self._row_condition(applied, target.sql.replace("{CUBE}", _q(alias)), target.type))
        return "\n".join(clauses), conditions

    def _row_condition(self, applied, expr: str, kind: str) -> str:
        """A row filter on `expr`, the real value (policies never see the mask)."""
        f = applied.filter
        return condition(expr, kind, f.operator, list(applied.values), f"{f.cube}.{f.dimension}", self.param)

    # -- the statement -----------------------------------------------------------------------
    def compile(self) -> Compiled:
        q = self.query
        measures = [self._member(m) for m in q.measures]
        if any(not isinstance(m, (Measure, Metric)) for _, m in measures):
            raise QueryError("measures must name measures or metrics; put dimensions in dimensions")
        dims = [self._member(d)[0] for d in q.dimensions]
        if any(not isinstance(self.view.members[d].member, Dimension) for d in dims):
            raise QueryError("dimensions must name dimensions; put measures in measures")
        columns, dim_exprs = [], []
        for d in dims:
            vm = self.view.members[d]
            columns.append(Column(f"{self.view.name}.{d}", vm.member.title, vm.member.type, "dimension"))
            dim_exprs.append((d, None))
        time_filters = []
        for t in q.time_dimensions:
            name, member = self._member(t.dimension)
            if not isinstance(member, Dimension) or member.type != "time":
                raise QueryError(f"{t.dimension} is not a time dimension")
            if t.granularity:
                columns.append(Column(f"{t.dimension}.{t.granularity}", f"{member.title} ({t.granularity})", "time", "time_dimension"))
                dim_exprs.append((name, t.granularity))
            if t.date_range:
                time_filters.append(MemberFilter(member=t.dimension, operator="inDateRange", values=list(t.date_range)))
        dim_filters, measure_filters = [], []
        for f in [*q.filters, *time_filters]:
            (measure_filters if self._is_measure_filter(f) else dim_filters).append(f)
        if not (measures or dim_exprs):
            raise QueryError("nothing to return: ask for a measure, a dimension, or a time dimension with a granularity")
        if q.ungrouped and (measures or measure_filters):
            raise QueryError("an ungrouped query returns rows as they are: ask for dimensions only")

        needed_measures = self._measures_needed(measures, measure_filters)
        dim_cubes = {self._cube_of(d) for d, _ in dim_exprs} | {
            self._cube_of(self._member(m.member)[0]) for f in dim_filters for m in _flatten([f])}
        rollup = self._covering_rollup(needed_measures, dim_exprs, dim_filters)
        if rollup:
            body = self._rollup_query(rollup, needed_measures, dim_exprs, dim_filters)
        elif needed_measures:
            by_cube: dict[str, dict[str, Measure]] = {}
            for name in needed_measures:
                by_cube.setdefault(self._cube_of(name), {})[name] = self.view.members[name].member
            parts = {cube: self._measure_subquery(cube, named, dim_exprs, dim_cubes, dim_filters) for cube, named in by_cube.items()}
            body = self._combine(parts, len(dim_exprs))
        else:
            body = self._dimension_query(dim_exprs, dim_cubes, dim_filters)
        for name, member in measures:
            kind = "metric" if isinstance(member, Metric) else "measure"
            columns.append(Column(f"{self.view.name}.{name}", member.title, "number", kind))

        outer = [f"r.d{i} AS c{i}" for i in range(len(dim_exprs))]
        outer += [f"{self._measure_column(name)} AS c{len(dim_exprs) + i}" for i, (name, _) in enumerate(measures)]
        where = [self._filter_sql(f, self._measure_column) for f in measure_filters]
        sql = f"SELECT {', '.join(outer)}\nFROM ({body}) AS r" + (f"\nWHERE {' AND '.join(where)}" if where else "")
        sql += f"\nORDER BY {self._order(columns, dim_exprs, measures)}\nLIMIT {int(q.limit)} OFFSET {int(q.offset)}"
        return Compiled(sql, self.param.values, columns, rollup.table if rollup else None)

    def _measures_needed(self, measures, measure_filters) -> list[str]:
        """Cube measures to aggregate: those asked for, those metrics and filters use."""
        needed = []
        names = [n for n, _ in measures] + [self._member(m.member)[0] for f in measure_filters for m in _flatten([f])]
        for name in names:
            needed += list(self.view.metrics[name].measures) if name in self.view.metrics else [name]
        for name in needed:
            self.access.check(name)
        return list(dict.fromkeys(needed))

    def _measure_column(self, name: str) -> str:
        if name in self.view.metrics:
            metric = self.view.metrics[name]
            expr = metric.expression
            for used in metric.measures:
                expr = expr.replace(f"{{{used}}}", f"r.m_{used}")
            return f"CAST({expr} AS DOUBLE)"
        return f"r.m_{name}"

    def _aggregate(self, cube: Cube, measure: Measure, alias: str) -> str:
        if measure.type == "ratio":
            num, den = (self._aggregate(cube, cube.measures[m], alias) for m in (measure.numerator, measure.denominator))
            return f"CAST({num} AS DOUBLE) / nullif({den}, 0)"
        expr = measure.sql.replace("{CUBE}", _q(alias)) if measure.sql else "*"
        call = {"count": f"count({expr})", "count_distinct": f"count(DISTINCT {expr})"}.get(measure.type, f"{measure.type}({expr})")
        return f"{call} FILTER (WHERE {measure.filter.replace('{CUBE}', _q(alias))})" if measure.filter else call

    def _grouped_dims(self, dim_exprs) -> list[str]:
        return [f"date_trunc('{grain}', {self.dimension_sql(d)})" if grain else self.dimension_sql(d) for d, grain in dim_exprs]

    def _measure_subquery(self, cube: str, measures: dict[str, Measure], dim_exprs, dim_cubes: set[str], dim_filters) -> str:
        """`measures` (column name -> measure of `cube`) by the dimensions, over the cube's own rows."""
        c = model().cubes[cube]
        from_sql, row_conditions = self._from(cube, dim_cubes)
        conditions = row_conditions + [self._filter_sql(f, self.dimension_sql) for f in dim_filters]
        where = f"\nWHERE {' AND '.join(conditions)}" if conditions else ""
        dims = self._grouped_dims(dim_exprs)
        keys = [f"d{i}" for i in range(len(dims))]
        aggregates = ", ".join(f"{self._aggregate(c, measure, 'm')} AS m_{n}" for n, measure in measures.items())
        fans_out = any(not _safe(self.view.steps(cube, other)) for other in dim_cubes)
        if not fans_out:  # every joined row is one row of the cube: aggregate directly
            aggregates = ", ".join(f"{self._aggregate(c, measure, cube)} AS m_{n}" for n, measure in measures.items())
            select = ", ".join([*(f"{d} AS {k}" for d, k in zip(dims, keys)), aggregates])
            return f"SELECT {select}\n{from_sql}{where}" + ("\nGROUP BY ALL" if dims else "")
        # One row per (primary key, dimensions): the cube's rows, each counted once per group.
        pk = [f"{_q(cube)}.{col} AS k_{col}" for col in c.primary_key]
        distinct = f"SELECT DISTINCT {', '.join([*pk, *(f'{d} AS {k}' for d, k in zip(dims, keys))])}\n{from_sql}{where}"
        on = " AND ".join(f"m.{col} = keys.k_{col}" for col in c.primary_key)
        select = ", ".join([*(f"keys.{k}" for k in keys), aggregates])
        return f"SELECT {select}\nFROM ({distinct}) AS keys JOIN {c.table} AS m ON {on}" + ("\nGROUP BY ALL" if keys else "")

    def _combine(self, parts: dict[str, str], n_dims: int) -> str:
        if len(parts) == 1:
            return next(iter(parts.values()))
        ctes = [f"q{i} AS ({sql})" for i, sql in enumerate(parts.values())]
        measures = ", ".join(f"q{i}.* EXCLUDE ({', '.join(f'd{j}' for j in range(n_dims))})" if n_dims else f"q{i}.*"
                             for i in range(len(parts)))
        if not n_dims:
            return f"WITH {', '.join(ctes)}\nSELECT {measures} FROM {', '.join(f'q{i}' for i in range(len(parts)))}"
        keys = ", ".join(f"d{j}" for j in range(n_dims))
        union = " UNION ".join(f"SELECT {keys} FROM q{i}" for i in range(len(parts)))
        joins = "\n".join(
            f"LEFT JOIN q{i} ON " + " AND ".join(f"q{i}.d{j} IS NOT DISTINCT FROM g.d{j}" for j in range(n_dims))
            for i in range(len(parts))
        )
        return f"WITH {', '.join(ctes)}, groups AS ({union})\nSELECT {', '.join(f'g.d{j}' for j in range(n_dims))}, {measures}\nFROM groups AS g\n{joins}"

    # -- rollups -------------------------------------------------------------------------------
    def _covering_rollup(self, needed: list[str], dim_exprs, dim_filters) -> Rollup | None:
        """The first of the view's rollups that answers the query exactly, policies included, or None."""
        if self.query.ungrouped or not needed:
            return None
        filtered = [(self._member(m.member)[0], m) for f in dim_filters for m in _flatten([f])]
        for rollup in self.view.rollups:
            if self.rollups is not None and rollup.table not in self.rollups:
                continue
            if not set(needed) <= set(rollup.measures):
                continue
            if not all(grain is None and d in rollup.dimensions
                       or grain in FINER_OR_EQUAL.get(rollup.granularity, ()) and d == rollup.time_dimension
                       for d, grain in dim_exprs):
                continue
            if not all(d in rollup.dimensions or d == rollup.time_dimension and _aligned(m, rollup.granularity) for d, m in filtered):
                continue
            if all(self._rollup_column(rollup, a.filter) or not self._filter_applies(rollup, a.filter) for a in self.access.row_filters):
                return rollup
        return None

    def _rollup_column(self, rollup: Rollup, f) -> str | None:
        """The rollup's column holding a row filter's dimension, if it has one."""
        return next((d for d in rollup.dimensions if d == f.dimension and self.view.members[d].cube == f.cube), None)

    def _filter_applies(self, rollup: Rollup, f) -> bool:
        """Whether a row filter limits some row the rollup was built from (as _from decides for a query on the detail)."""
        cubes = {self._cube_of(n) for n in (*rollup.measures, *rollup.columns())}
        return any(model().path(c, f.cube, safe_only=True) is not None for c in cubes)

    def _rollup_query(self, rollup: Rollup, needed: list[str], dim_exprs, dim_filters) -> str:
        def column(name: str) -> str:
            return f'"rollup".{_q(name)}'

        dims = [f"date_trunc('{grain}', {column(d)})" if grain else column(d) for d, grain in dim_exprs]
        measures = [f"{_reaggregate(self.view.members[n].member, model().cubes[self._cube_of(n)], column)} AS m_{n}" for n in needed]
        conditions = [self._row_condition(a, column(held), self.view.members[held].member.type)
                      for a in self.access.row_filters if (held := self._rollup_column(rollup, a.filter))]
        conditions += [self._filter_sql(f, column) for f in dim_filters]
        select = ", ".join([*(f"{d} AS d{i}" for i, d in enumerate(dims)), *measures])
        where = f"\nWHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT {select}\nFROM {rollup.table} AS \"rollup\"{where}" + ("\nGROUP BY ALL" if dims else "")

    def parts_of(self, rollup: Rollup) -> dict[str, dict[str, Measure]]:
        """The additive parts a rollup keeps (its columns after the dimensions), by the cube that measures them."""
        by_cube: dict[str, dict[str, Measure]] = {}
        for name in rollup.measures:
            cube = model().cubes[self._cube_of(name)]
            by_cube.setdefault(cube.name, {}).update(rollup_parts(self.view.members[name].member, cube.measures))
        return by_cube

    def build_rollup(self, rollup: Rollup, from_detail: bool) -> str:
        """The SELECT that builds a rollup table: its dimensions, and every measure's additive parts, by group."""
        dim_exprs = [(d, None) for d in rollup.dimensions] + ([(rollup.time_dimension, rollup.granularity)] if rollup.time_dimension else [])
        dim_cubes = {self._cube_of(d) for d, _ in dim_exprs}
        by_cube = self.parts_of(rollup)
        finer = None if from_detail else finer_rollup(rollup)
        if finer is not None:
            return self._summed_from(rollup, finer, dim_exprs, by_cube)
        parts = {cube: self._measure_subquery(cube, named, dim_exprs, dim_cubes, []) for cube, named in by_cube.items()}
        columns = [f"d{i} AS {_q(d)}" for i, (d, _) in enumerate(dim_exprs)]
        columns += [f"m_{n} AS {_q(n)}" for named in by_cube.values() for n in named]
        return f"SELECT {', '.join(columns)} FROM ({self._combine(parts, len(dim_exprs))})"

    @staticmethod
    def _summed_from(rollup: Rollup, finer: Rollup, dim_exprs, by_cube: dict[str, dict[str, Measure]]) -> str:
        """`rollup` as its parts summed again over the rows of a `finer` one (finer_rollup): the same rows and types as
        from the detail, since each part adds up across groups; a count's sum is cast back to the count's BIGINT."""
        columns = [f"date_trunc('{grain}', {_q(d)}) AS {_q(d)}" if grain != finer.granularity and grain else _q(d)
                   for d, grain in dim_exprs]
        for named in by_cube.values():
            for n, part in named.items():
                call = {"count": f"CAST(sum({_q(n)}) AS BIGINT)", "min": f"min({_q(n)})", "max": f"max({_q(n)})"}
                columns.append(f"{call.get(part.type, f'sum({_q(n)})')} AS {_q(n)}")
        return f"SELECT {', '.join(columns)} FROM {finer.table}" + (" GROUP BY ALL" if dim_exprs else "")

    def _dimension_query(self, dim_exprs, dim_cubes: set[str], dim_filters) -> str:
        candidates = [*sorted(dim_cubes), self.view.root, *self.view.paths]
        base = next((c for c in candidates if all(_safe(self.view.steps(c, d)) for d in dim_cubes)), None)
        if base is None:
            raise QueryError("these dimensions belong to entities that only relate through a measure: add a measure")
        from_sql, row_conditions = self._from(base, dim_cubes)
        conditions = row_conditions + [self._filter_sql(f, self.dimension_sql) for f in dim_filters]
        where = f"\nWHERE {' AND '.join(conditions)}" if conditions else ""
        dims = self._grouped_dims(dim_exprs)
        select = ", ".join(f"{d} AS d{i}" for i, d in enumerate(dims))
        return f"SELECT {select}\n{from_sql}{where}" + ("" if self.query.ungrouped else "\nGROUP BY ALL")

    def _order(self, columns: list[Column], dim_exprs, measures) -> str:
        """The order asked for, then every dimension, so pages are stable."""
        positions = {c.name: i for i, c in enumerate(columns)}
        for i, (name, grain) in enumerate(dim_exprs):
            positions.setdefault(f"{self.view.name}.{name}", i)  # a time dimension by its name orders by its grain
        order = []
        for member, direction in self.query.order:
            if member not in positions:
                raise QueryError(f"order by {member}: only members the query selects can order it")
            order.append(f"c{positions[member]} {direction.upper()} NULLS LAST")
        key = {f"{self.view.name}.{c}" for c in model().cubes[self.view.root].primary_key}
        if not (self.query.ungrouped and key <= {member for member, _ in self.query.order}):  # a full key already orders rows
            order += [f"c{i} ASC NULLS LAST" for i in range(len(dim_exprs))]
        return ", ".join(dict.fromkeys(order)) or "1"


def compile_query(query: Query, access: Access, salt: str, rollups: Container[str] | None = None) -> Compiled:
    """The SQL (DuckDB) answering `query` for the principal of `access`; QueryError (400) or AccessDenied (403) otherwise.

    A query a rollup covers is answered from it (the same figures, from far fewer rows): any rollup the model
    declares, or only those whose tables are in `rollups` (what a snapshot holds; empty: read the detail)."""
    return _Compiler(query, access, salt, rollups).compile()


def _unrestricted(view: View, who: str) -> Access:
    """Every member of the view, nothing masked, no row filter: for SQL that policies are applied to afterwards, elsewhere."""
    return Access(Principal(who, ()), view, (), frozenset(view.members), {}, ())


def _rollup_compiler(rollup: Rollup) -> _Compiler:
    view = model().views[rollup.view]
    query = Query(dimensions=[f"{view.name}.{d}" for d in rollup.columns()] or [], measures=[f"{view.name}.{m}" for m in rollup.measures])
    return _Compiler(query, _unrestricted(view, "pipeline"), "")


def rollup_sql(rollup: Rollup, from_detail: bool = False) -> str:
    """The SELECT that builds `rollup`: every row, no policy (the pipeline builds it). From the detail tables, or,
    when another rollup holds all it needs in more detail (finer_rollup), from that rollup's few rows: the monthly
    sales from the daily ones at Instacart scale in a hundredth of the time the 33M lines took (2.7 s). A rollup's
    check reads the detail (`from_detail`), or it would compare a rollup with the one it was summed from."""
    return _rollup_compiler(rollup).build_rollup(rollup, from_detail)


def finer_rollup(rollup: Rollup) -> Rollup | None:
    """The first other rollup of the view that `rollup` can be summed from: it keeps every dimension and additive part
    of `rollup`, all measured by one cube, and its time grain truncates to `rollup`'s. It must be strictly more
    detailed (a finer grain, or more dimensions), so two rollups are never built from each other. None: from the
    detail. The rollup asset then depends on it; its check still compares with the detail."""
    parts = _rollup_compiler(rollup).parts_of(rollup)
    for other in model().views[rollup.view].rollups:
        if other == rollup or not set(rollup.dimensions) <= set(other.dimensions):
            continue
        if rollup.time_dimension and (rollup.time_dimension != other.time_dimension
                                      or rollup.granularity not in FINER_OR_EQUAL.get(other.granularity, ())):
            continue
        if other.time_dimension == rollup.time_dimension and other.granularity == rollup.granularity \
                and set(other.dimensions) == set(rollup.dimensions):
            continue  # no more detailed
        held = _rollup_compiler(other).parts_of(other)
        if len(parts) == 1 and held.keys() == parts.keys() and all(named.items() <= held[c].items() for c, named in parts.items()):
            return other
    return None


def view_rows(view: View) -> tuple[str, list[str]]:
    """Every row of `view` at its grain, as the API's ungrouped query over all its dimensions reads them, but in
    clear and unfiltered: (SQL selecting d0, d1, ... , the dimension names in that order). The Postgres port masks
    and filters these rows itself, in its views and row-level security."""
    names = [name for name, vm in view.members.items() if isinstance(vm.member, Dimension)]
    query = Query(dimensions=[f"{view.name}.{name}" for name in names], ungrouped=True)
    compiler = _Compiler(query, _unrestricted(view, "postgres port"), "", rollups=())
    return compiler._dimension_query([(name, None) for name in names], {view.members[n].cube for n in names}, []), names


def view_of(query: Query) -> str:
    """The view a query reads: the prefix of its members."""
    views = {m.partition(".")[0] for m in query.members()}
    if len(views) != 1:
        raise QueryError(f"a query reads exactly one view; it names {sorted(views)}")
    return views.pop()


__all__ = ["AccessDenied", "Column", "Compiled", "QueryError", "compile_query", "condition", "finer_rollup", "mask_sql",
           "rollup_sql", "view_of", "view_rows"]
