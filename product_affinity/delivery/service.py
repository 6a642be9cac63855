"""The one way data leaves the product through an API: authenticate, ask the policy engine, compile, read the snapshot, audit.

REST and GraphQL are thin skins over `DeliveryService`; neither builds SQL or decides access on
its own, so a policy cannot be skipped by choosing another endpoint. Reads go to the published
snapshot (read-only, immutable), so they never block the pipeline and never see a half-published
state: a request reads the snapshot CURRENT named when it started, start to end.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from product_affinity.contract.odcs import table
from product_affinity.request_limits import MAX_RESULT_BYTES, MAX_VALUE_CHARS, statement_timeout_s
from product_affinity.semantic.access import Access, AccessDenied
from product_affinity.governance.policies import access, readable_views
from product_affinity.governance.audit import AuditLog
from product_affinity.governance.credentials import Caller, KeyStore, masking_key
from product_affinity.publication import published_snapshot
from product_affinity.semantic.model import Dimension
from product_affinity.semantic.loader import model
from product_affinity.semantic.compiler import Column, QueryError, compile_query, view_of
from product_affinity.semantic.query import Query


class Unauthenticated(PermissionError):
    """No key, or a key nobody holds or that was revoked (HTTP 401)."""


KEY_MISSING = "an API key is required: send 'Authorization: Bearer <key>' (product-affinity keys issue <principal>)"
KEY_NOT_VALID = "the API key is not valid: it was never issued here or it has been revoked (product-affinity keys list)"


class TooCostly(QueryError):
    """A query that ran past the statement timeout or whose rows outgrew the result bytes (HTTP 400, like any
    query the API will not answer: the caller can narrow it)."""


@dataclass(frozen=True)
class Result:
    query: dict
    columns: list[Column]
    rows: list[dict[str, Any]]
    policies: dict
    snapshot: str
    rollup: str | None = None  # the rollup that answered, if one did
    next: str | None = None  # for a port read: the cursor of the next page, when there may be one


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


class _Snapshots:
    """A read-only connection to the snapshot CURRENT names, reopened when a publication moves CURRENT.

    The previous connection stays open until the next move, so a request that started on it finishes on it.
    """

    def __init__(self, warehouse: Path) -> None:
        self.warehouse = warehouse
        self._lock = threading.Lock()
        self._open: list[tuple[str, duckdb.DuckDBPyConnection, frozenset[str]]] = []

    def cursor(self) -> tuple[str, duckdb.DuckDBPyConnection, frozenset[str]]:
        """The snapshot's name, a cursor on it, and the tables it holds (a snapshot published before a rollup
        was declared has no table for it, and is answered from the detail)."""
        path = published_snapshot(self.warehouse)
        with self._lock:
            if not self._open or self._open[-1][0] != path.name:
                conn = duckdb.connect(str(path), read_only=True)
                held = frozenset(r[0] for r in conn.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall())
                self._open = [*self._open[-1:], (path.name, conn, held)]
            name, conn, held = self._open[-1]
            return name, conn.cursor(), held


class DeliveryService:
    def __init__(self, warehouse: Path) -> None:
        self.warehouse = Path(warehouse)
        self.keys = KeyStore(self.warehouse)
        self.audit = AuditLog(self.warehouse)
        self.snapshots = _Snapshots(self.warehouse)
        self._masking_key = masking_key(self.warehouse)
        self.statement_timeout_s = statement_timeout_s()

    def authenticate(self, key: str | None, path: str) -> Caller:
        """The caller holding `key`; Unauthenticated, saying whether the key is missing or not valid, otherwise."""
        caller = self.keys.authenticate(key) if key else None
        if caller is None:
            self.audit.record(principal=None, key_id=None, path=path, request=None, outcome="unauthenticated",
                              detail="no API key" if not key else "API key not valid")
            raise Unauthenticated(KEY_MISSING if not key else KEY_NOT_VALID)
        self.audit.identify(caller.principal.name, caller.key_id)
        return caller

    def meta(self, caller: Caller, path: str) -> dict:
        """The views the caller may read, and in each the members they may ask for (masked ones say so)."""
        views = []
        for name, granted in readable_views(caller.principal).items():
            view = granted.view
            members = []
            for member_name in sorted(granted.members):
                if member_name in view.metrics:
                    metric = view.metrics[member_name]
                    members.append({"name": f"{name}.{member_name}", "title": metric.title, "description": metric.description,
                                    "kind": "metric", "type": "number", "masked": None})
                    continue
                vm = view.members[member_name]
                mask = granted.masks.get(f"{vm.cube}.{member_name}")
                is_dimension = isinstance(vm.member, Dimension)
                members.append({
                    "name": f"{name}.{member_name}", "title": vm.member.title, "description": vm.member.description,
                    "kind": ("time_dimension" if vm.member.type == "time" else "dimension") if is_dimension else "measure",
                    "type": vm.member.type if is_dimension else "number", "masked": mask.kind if mask else None,
                })
            views.append({"name": name, "title": view.title, "description": view.description,
                          "output_port": view.port, "members": members, "policies": granted.describe()})
        self.audit.record(principal=caller.principal.name, key_id=caller.key_id, path=path, request={"meta": True},
                          outcome="ok", rows=len(views))
        return {"principal": caller.principal.name, "groups": list(caller.principal.groups), "views": views}

    def load(self, caller: Caller, query: Query, path: str) -> Result:
        """Answer a semantic query; QueryError, AccessDenied or NothingPublished otherwise (each audited)."""
        request = query.model_dump(by_alias=True, exclude_defaults=True)
        return self._answer(caller, path, request, lambda: view_of(query), lambda granted: query)

    def read_port(self, caller: Caller, port: str, limit: int, offset: int, path: str, after: str | None = None) -> Result:
        """Rows of an output port, a page at a time, as the caller may see them: the port's view, ungrouped, in key order.

        Page with `after`, the `next` cursor of the page before (it costs the same on every page), or with
        `offset` (simple, but each page costs more the deeper it is)."""
        request = {"port": port, "limit": limit, "offset": offset, **({"after": after} if after else {})}
        key: list[str] = []

        def view_name() -> str:
            view = model().port_view(port)
            if view is None:
                raise QueryError(f"there is no output port {port!r}; GET /ports lists them")
            return view.name

        def port_query(granted: Access) -> Query:
            columns = [c for c in table(port).column_names if c in granted.members]
            if not columns:
                raise AccessDenied(f"{caller.principal.name} may read none of {port}'s columns")
            key.extend(f"{granted.view.name}.{c}" for c in model().cubes[granted.view.root].primary_key if c in columns)
            filters = []
            if after:
                if len(key) < len(model().cubes[granted.view.root].primary_key):
                    raise QueryError(f"paging with after needs the whole key of {port}, which you may not read: use offset")
                numeric = [granted.view.members[k.split(".", 1)[1]].member.type == "number" for k in key]
                values = _cursor_values(after, numeric)
                filters = [{"member": key[0], "operator": "gte", "values": [values[0]]}, _rows_after(key, values)]
            return Query.model_validate({"dimensions": [f"{granted.view.name}.{c}" for c in columns], "ungrouped": True,
                                         "order": [[k, "asc"] for k in key], "filters": filters, "limit": limit,
                                         "offset": offset})

        result = self._answer(caller, path, request, view_name, port_query)
        full_page = len(result.rows) == limit and len(key) == len(model().cubes[model().port_view(port).root].primary_key)
        return replace(result, next=_cursor([result.rows[-1][k] for k in key]) if full_page else None)

    def _answer(self, caller: Caller, path: str, request: dict, view_name, make_query) -> Result:
        started, view, granted, snapshot = time.perf_counter(), None, None, None
        audit = dict(principal=caller.principal.name, key_id=caller.key_id, path=path, request=request)
        try:
            view = view_name()
            granted = access(caller.principal, view)
            query = make_query(granted)
            snapshot, cursor, held = self.snapshots.cursor()
            try:
                compiled = compile_query(query, granted, self._masking_key, rollups=held)
                values = self._run(cursor, compiled.sql, compiled.params)
            finally:
                cursor.close()
            names = [c.name for c in compiled.columns]
            rows = _bounded_rows(names, values)
        except (QueryError, AccessDenied) as refused:
            outcome = "denied" if isinstance(refused, AccessDenied) else "invalid"
            self.audit.record(**audit, view=view, outcome=outcome, detail=str(refused),
                              policies=granted.describe() if granted else None, duration_ms=_ms(started))
            raise
        except Exception as error:
            self.audit.record(**audit, view=view, outcome="error", detail=f"{type(error).__name__}: {error}",
                              policies=granted.describe() if granted else None, duration_ms=_ms(started))
            raise
        policies = granted.describe()
        self.audit.record(**audit, view=view, outcome="ok", rows=len(rows), policies=policies, snapshot=snapshot,
                          duration_ms=_ms(started), detail=f"answered from {compiled.rollup}" if compiled.rollup else None)
        return Result(query.model_dump(by_alias=True, exclude_defaults=True), compiled.columns, rows, policies, snapshot,
                      compiled.rollup)

    def _run(self, cursor: duckdb.DuckDBPyConnection, sql: str, params: dict) -> list[tuple]:
        """Run a statement, interrupted after the statement timeout (DuckDB has no statement_timeout setting: a timer
        thread interrupts the cursor, which only this request uses)."""
        timer = threading.Timer(self.statement_timeout_s, cursor.interrupt)
        timer.start()
        try:
            return cursor.execute(sql, params).fetchall()
        except duckdb.InterruptException:
            raise TooCostly(f"the query ran longer than statement_timeout_s = {self.statement_timeout_s:g} s and was "
                            "stopped: filter it more, or ask for fewer rows or dimensions") from None
        finally:
            timer.cancel()

    def ports(self) -> list[dict]:
        """The output ports a direct read serves, with their columns as the contract declares them."""
        return [{"name": v.port, "description": table(v.port).description, "view": v.name,
                 "columns": [{"name": c.name, "type": c.type, "description": c.description} for c in table(v.port).columns]}
                for v in model().views.values() if v.port]

    def product(self, caller: Caller, path: str) -> dict:
        """The data product descriptor: what the product is, who owns it, its ports and where they are delivered."""
        from product_affinity.product.descriptor import descriptor

        self.audit.record(principal=caller.principal.name, key_id=caller.key_id, path=path, request={"product": True}, outcome="ok")
        return descriptor()

    def slo(self, caller: Caller, runs: int, path: str) -> dict:
        """The SLO report of the published snapshot (its quality.slo_results were audited before it was published)."""
        from product_affinity.quality import report

        built = report.build(self.warehouse, runs, read_from=self.published())
        self.audit.record(principal=caller.principal.name, key_id=caller.key_id, path=path, request={"slo": runs},
                          outcome="ok", rows=len(built.slos))
        return json.loads(report.as_json(built))

    def published(self) -> Path:
        return published_snapshot(self.warehouse)


def _cursor(values: list) -> str:
    """An opaque cursor: the key of the last row read, to continue after it."""
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def _bounded_rows(names: list[str], values: list[tuple]) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts, refused once their estimated JSON size passes MAX_RESULT_BYTES (a name, a value
    and their quotes per cell; numbers and dates counted at their usual width)."""
    rows, size, keys = [], 0, sum(len(name) + 6 for name in names)
    for row in values:
        size += keys + sum(len(v) if isinstance(v, str) else 12 for v in row)
        if size > MAX_RESULT_BYTES:
            raise TooCostly(f"the rows pass max_result_bytes = {MAX_RESULT_BYTES:,} bytes after {len(rows):,} rows: "
                            "ask for fewer rows (limit) or fewer dimensions")
        rows.append({name: _json_value(v) for name, v in zip(names, row)})
    return rows


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a value a cursor holds")


def _cursor_values(cursor: str, numeric: list[bool]) -> list:
    """The key values a cursor holds, one for each key column (`numeric` says which are numbers); QueryError naming
    `after` for anything this API does not write (NaN, Infinity, numbers no column holds, a string for a number,
    values longer than a filter value may be)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise QueryError("after: not a cursor this API returned") from None
    if not isinstance(values, list) or len(values) != len(numeric) or not all(map(_cursor_value, values, numeric)):
        raise QueryError("after: not a cursor this API returned")
    return values


def _cursor_value(value: Any, numeric: bool) -> bool:
    if isinstance(value, bool) or isinstance(value, str) == numeric:
        return False
    if isinstance(value, str):
        return len(value) <= MAX_VALUE_CHARS
    if isinstance(value, int):
        return abs(value) < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _rows_after(key: list[str], values: list) -> dict:
    """The filter for rows after `values` in key order: k1 > v1, or k1 = v1 and the rest after theirs."""
    first = {"member": key[0], "operator": "gt", "values": [values[0]]}
    if len(key) == 1:
        return first
    return {"or": [first, {"and": [{"member": key[0], "operator": "equals", "values": [values[0]]},
                                   _rows_after(key[1:], values[1:])]}]}


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000

