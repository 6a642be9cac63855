"""The REST API (FastAPI; OpenAPI at /openapi.json, docs at /docs) and, mounted on it, the GraphQL API at /graphql.

Every data endpoint authenticates with an API key (`Authorization: Bearer <key>` or `X-API-Key`)
and goes through DeliveryService, the one place access is decided: 401 without a valid key, 403
when the principal's groups do not allow what was asked, 400 for a query the model cannot
answer or one that costs more than delivery.limits allows (413 for a body too big), 503 while
nothing is published yet. Every request, to any path, gets one audit entry (governance/audit_middleware.py).
"""


import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query as Param, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError

from product_affinity.delivery.bounds import RequestLimits
from product_affinity.delivery.service import DeliveryService, Result, Unauthenticated
from product_affinity.governance.audit_middleware import audited
from product_affinity.semantic.access import AccessDenied
from product_affinity.governance.credentials import Caller
from product_affinity.publication import NothingPublished
from product_affinity.defaults import DEFAULT_WAREHOUSE, SLO_RUNS
from product_affinity.semantic.compiler import QueryError
from product_affinity.request_limits import MAX_CURSOR_CHARS, MAX_LIMIT, MAX_OFFSET, MAX_QUERY_PARAM_CHARS
from product_affinity.semantic.query import Query

WAREHOUSE_ENV = "PRODUCT_AFFINITY_WAREHOUSE"
bearer = HTTPBearer(auto_error=False, description="An API key issued with `product-affinity keys issue <principal>`.")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same API key, as a header.")


class ColumnOut(BaseModel):
    name: str
    title: str
    type: str
    kind: str


class LoadResponse(BaseModel):
    query: dict[str, Any]
    data: list[dict[str, Any]]
    annotation: list[ColumnOut]
    policies: dict[str, Any]
    snapshot: str
    rollup: str | None = None
    next: str | None = None


class Error(BaseModel):
    error: str


ERRORS = {400: {"model": Error}, 401: {"model": Error}, 403: {"model": Error}, 413: {"model": Error}, 503: {"model": Error}}


def response(result: Result) -> LoadResponse:
    return LoadResponse(query=result.query, data=result.rows, annotation=[ColumnOut(**vars(c)) for c in result.columns],
                        policies=result.policies, snapshot=result.snapshot, rollup=result.rollup, next=result.next)


def create_app(warehouse: Path = DEFAULT_WAREHOUSE) -> FastAPI:
    from product_affinity.delivery.graphql import graphql_router
    from product_affinity.delivery.offline import GRAPHIQL_URL, graphiql_files

    service = DeliveryService(warehouse)
    app = FastAPIOffline(  # /docs and /redoc load Swagger UI and ReDoc from the installed package, not a CDN
        title="Product Affinity",
        version="1.0",
        description="Cross-sell insight for an online retailer: the semantic model's views, queried under the product's "
        "access policies, and the output ports read directly. Every request needs an API key.",
    )
    app.state.service = service
    app.add_middleware(RequestLimits)  # a body too big or too deep is refused before anything parses it

    async def caller(request: Request,
               bearer_key: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
               header_key: Annotated[str | None, Security(api_key_header)]) -> Caller:
        key = bearer_key.credentials if bearer_key else header_key
        return service.authenticate(key, f"rest {request.method} {request.url.path}")

    Authenticated = Annotated[Caller, Depends(caller)]

    @app.exception_handler(Unauthenticated)
    def _unauthenticated(_, error: Unauthenticated):
        return JSONResponse({"error": str(error)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(AccessDenied)
    def _denied(_, error: AccessDenied):
        return JSONResponse({"error": str(error)}, status_code=403)

    @app.exception_handler(QueryError)
    def _invalid(_, error: QueryError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(NothingPublished)
    def _unpublished(_, error: NothingPublished):
        return JSONResponse({"error": str(error)}, status_code=503)

    @app.get("/health", summary="Is the API up, and which snapshot does it serve (no key needed)")
    async def health() -> dict[str, str]:  # on the event loop: it never waits behind requests in the thread pool
        return {"status": "ok", "snapshot": service.published().name}

    @app.get("/meta", summary="The views you may query, their members, and the policies applied to you", responses=ERRORS)
    def meta(who: Authenticated, request: Request) -> dict[str, Any]:
        return service.meta(who, f"rest GET {request.url.path}")

    @app.post("/load", summary="Run a semantic query (measures by dimensions, filtered, ordered, limited)",
              responses=ERRORS, response_model=LoadResponse)
    def load(query: Query, who: Authenticated, request: Request) -> LoadResponse:
        return response(service.load(who, query, f"rest POST {request.url.path}"))

    @app.get("/load", summary="The same as POST /load, with the query as JSON in ?query=", responses=ERRORS,
             response_model=LoadResponse)
    def load_get(who: Authenticated, request: Request,
                 query: Annotated[str, Param(description="The query as JSON", max_length=MAX_QUERY_PARAM_CHARS)]) -> LoadResponse:
        try:
            parsed = Query.model_validate_json(query)
        except ValidationError as error:
            raise HTTPException(422, detail=error.errors(include_url=False, include_context=False, include_input=False)) from None
        return response(service.load(who, parsed, f"rest GET {request.url.path}"))

    @app.get("/ports", summary="The output ports, with their columns as the data contract declares them", responses=ERRORS)
    def ports(who: Authenticated) -> list[dict[str, Any]]:
        return service.ports()

    @app.get("/ports/{port}", summary="Rows of an output port, a page at a time, as your policies allow",
             responses=ERRORS, response_model=LoadResponse)
    def read_port(port: str, who: Authenticated, request: Request,
                  limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 100,
                  offset: Annotated[int, Param(ge=0, le=MAX_OFFSET)] = 0,
                  after: Annotated[str | None, Param(max_length=MAX_CURSOR_CHARS, description="The `next` cursor of the page before")] = None,
                  ) -> LoadResponse:
        return response(service.read_port(who, port, limit, offset, f"rest GET {request.url.path}", after))

    @app.get("/product", summary="The data product descriptor (Open Data Product Standard): owner, ports, delivery ports",
             responses=ERRORS)
    def product(who: Authenticated, request: Request) -> dict[str, Any]:
        return service.product(who, f"rest GET {request.url.path}")

    @app.get("/slo", summary="SLO status: every SLO's target, latest observation, attainment and error budget", responses=ERRORS)
    def slo(who: Authenticated, request: Request, runs: Annotated[int, Param(ge=1, le=1_000)] = SLO_RUNS) -> dict[str, Any]:
        return service.slo(who, runs, f"rest GET {request.url.path}")

    app.mount(GRAPHIQL_URL, graphiql_files(), name="graphiql")  # the files GraphiQL's page loads, with no network
    app.include_router(graphql_router(service), prefix="/graphql", include_in_schema=False)  # its own schema: GraphQL introspection
    return audited(app, service.audit)  # one audit entry per request, outermost


def app_from_environment() -> FastAPI:
    """The app each `product-affinity serve` worker builds, on the warehouse named by PRODUCT_AFFINITY_WAREHOUSE."""
    return create_app(Path(os.environ.get(WAREHOUSE_ENV, DEFAULT_WAREHOUSE)))
