"""The GraphQL API (Strawberry): the same views, queries and port reads as REST, through the same DeliveryService.

A request without a valid key is refused with HTTP 401 before any resolver runs; a query the
principal may not run, or one the model cannot answer, comes back as a GraphQL error whose
`extensions.code` is FORBIDDEN or BAD_USER_INPUT (Apollo's codes).
"""

from __future__ import annotations

from typing import Any

import strawberry
from fastapi import Request
from graphql import GraphQLError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON

from product_affinity.defaults import SLO_RUNS
from product_affinity.delivery.bounds import GRAPHQL_LIMITS
from product_affinity.request_limits import MAX_CURSOR_CHARS, MAX_LIMIT, MAX_OFFSET
from product_affinity.delivery.offline import OfflineGraphQLRouter
from product_affinity.delivery.service import DeliveryService, Result
from product_affinity.governance.audit import AuditLog
from product_affinity.semantic.access import AccessDenied
from product_affinity.governance.credentials import Caller
from product_affinity.publication import NothingPublished
from product_affinity.semantic.compiler import QueryError
from product_affinity.semantic.query import Query

IDE_REQUEST = "GET without a query: the GraphiQL page"


@strawberry.input(description="One condition on a member, or an and/or group of conditions.")
class FilterInput:
    member: str | None = None
    operator: str | None = None
    values: list[JSON] | None = None
    or_: list[FilterInput] | None = strawberry.field(name="or", default=None)
    and_: list[FilterInput] | None = strawberry.field(name="and", default=None)


@strawberry.input
class TimeDimensionInput:
    dimension: str
    granularity: str | None = None
    date_range: list[str] | None = None


@strawberry.input
class OrderInput:
    member: str
    direction: str = "asc"


@strawberry.input(description="A semantic query, as POST /load takes it.")
class QueryInput:
    measures: list[str] | None = None
    dimensions: list[str] | None = None
    time_dimensions: list[TimeDimensionInput] | None = None
    filters: list[FilterInput] | None = None
    order: list[OrderInput] | None = None
    limit: int | None = None
    offset: int | None = None
    ungrouped: bool | None = None


@strawberry.type
class ColumnInfo:
    name: str
    title: str
    type: str
    kind: str


@strawberry.type
class LoadResult:
    columns: list[ColumnInfo]
    rows: list[JSON]
    policies: JSON
    snapshot: str
    rollup: str | None = None
    next: str | None = None


def _filter(f: FilterInput) -> dict[str, Any]:
    if f.or_ is not None:
        return {"or": [_filter(p) for p in f.or_]}
    if f.and_ is not None:
        return {"and": [_filter(p) for p in f.and_]}
    return {"member": f.member, "operator": f.operator, "values": f.values or []}


def _query(q: QueryInput) -> Query:
    declared = {
        "measures": q.measures, "dimensions": q.dimensions,
        "timeDimensions": [{"dimension": t.dimension, "granularity": t.granularity, "dateRange": t.date_range}
                           for t in q.time_dimensions] if q.time_dimensions is not None else None,
        "filters": [_filter(f) for f in q.filters] if q.filters is not None else None,
        "order": [[o.member, o.direction] for o in q.order] if q.order is not None else None,
        "limit": q.limit, "offset": q.offset, "ungrouped": q.ungrouped,
    }
    try:
        return Query.model_validate({k: v for k, v in declared.items() if v is not None})
    except ValidationError as error:
        raise GraphQLError(f"invalid query: {error.errors(include_url=False, include_context=False, include_input=False)}",
                           extensions={"code": "BAD_USER_INPUT"}) from None


def _result(r: Result) -> LoadResult:
    return LoadResult(columns=[ColumnInfo(**vars(c)) for c in r.columns], rows=r.rows, policies=r.policies, snapshot=r.snapshot,
                      rollup=r.rollup, next=r.next)


async def _served(call) -> Any:
    """Run a service call in the thread pool (DuckDB releases the GIL; the event loop stays free), turning its
    refusals into GraphQL errors with a code."""
    try:
        return await run_in_threadpool(call)
    except AccessDenied as error:
        raise GraphQLError(str(error), extensions={"code": "FORBIDDEN"}) from None
    except QueryError as error:
        raise GraphQLError(str(error), extensions={"code": "BAD_USER_INPUT"}) from None
    except NothingPublished as error:
        raise GraphQLError(str(error), extensions={"code": "UNAVAILABLE"}) from None


@strawberry.type(name="Query")
class Queries:
    @strawberry.field(description="The views you may query, their members and the policies applied to you.")
    async def meta(self, info: strawberry.Info) -> JSON:
        service, caller = info.context["service"], info.context["caller"]
        return await _served(lambda: service.meta(caller, "graphql meta"))

    @strawberry.field(description="The data product descriptor: owner, ports, delivery ports.")
    async def product(self, info: strawberry.Info) -> JSON:
        service, caller = info.context["service"], info.context["caller"]
        return await _served(lambda: service.product(caller, "graphql product"))

    @strawberry.field(description="SLO status, as GET /slo: every SLO's target, latest observation, attainment and error budget.")
    async def slo(self, info: strawberry.Info, runs: int = SLO_RUNS) -> JSON:
        service, caller = info.context["service"], info.context["caller"]
        if not 1 <= runs <= 1_000:
            raise GraphQLError("runs: between 1 and 1000", extensions={"code": "BAD_USER_INPUT"})
        return await _served(lambda: service.slo(caller, runs, "graphql slo"))

    @strawberry.field(description="Run a semantic query.")
    async def load(self, info: strawberry.Info, query: QueryInput) -> LoadResult:
        service, caller = info.context["service"], info.context["caller"]
        return _result(await _served(lambda: service.load(caller, _query(query), "graphql load")))  # validated off the loop

    @strawberry.field(description="Rows of an output port, a page at a time.")
    async def port(self, info: strawberry.Info, name: str, limit: int = 100, offset: int = 0,
                   after: str | None = None) -> LoadResult:
        service, caller = info.context["service"], info.context["caller"]
        if not (1 <= limit <= MAX_LIMIT and 0 <= offset <= MAX_OFFSET):
            raise GraphQLError(f"limit must be 1..{MAX_LIMIT} and offset 0..{MAX_OFFSET}", extensions={"code": "BAD_USER_INPUT"})
        if after is not None and len(after) > MAX_CURSOR_CHARS:
            raise GraphQLError(f"after: longer than max_cursor_chars = {MAX_CURSOR_CHARS} allows", extensions={"code": "BAD_USER_INPUT"})
        return _result(await _served(lambda: service.read_port(caller, name, limit, offset, "graphql port", after)))


REFUSALS = {"FORBIDDEN": "denied", "BAD_USER_INPUT": "invalid", "UNAVAILABLE": "unavailable"}


class Schema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        """Tell the audit log what each error means for the request's outcome (the response is a 200 all the same), and
        log only what went wrong on our side: a refusal is the client's answer, not a server error, and so is an
        error without a path (the document did not parse or validate, or broke a limit, before any resolver ran)."""
        for error in errors:
            AuditLog.refused(_outcome(error), error.message)
        unexpected = [e for e in errors if e.path and (e.extensions or {}).get("code") not in REFUSALS]
        super().process_errors(unexpected, execution_context)


def _outcome(error: GraphQLError) -> str:
    """A refusal's code says what it is; an error without one is the document's (syntax, validation: it has no path)
    or ours (a resolver failed)."""
    code = (error.extensions or {}).get("code")
    if code in REFUSALS:
        return REFUSALS[code]
    return "error" if error.path else "invalid"


schema = Schema(query=Queries, extensions=GRAPHQL_LIMITS)


def graphql_router(service: DeliveryService) -> GraphQLRouter:
    async def context(request: Request) -> dict[str, Any]:
        if request.method == "GET" and "query" not in request.query_params:
            return {"service": service, "caller": None}  # the GraphiQL page itself holds no data
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
        caller: Caller = service.authenticate(key, "graphql")
        return {"service": service, "caller": caller}

    return OfflineGraphQLRouter(schema, context_getter=context)  # GraphiQL's files from this app, not unpkg
