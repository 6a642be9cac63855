"""Refusing a request that costs too much before FastAPI or Strawberry work on it (the limits are in delivery.limits).

`RequestLimits` wraps the whole app: a body bigger than MAX_BODY_BYTES is refused (413) without
being read further, and JSON nested deeper than MAX_JSON_DEPTH (in the body or in a query
parameter) is refused (400) after being parsed in the thread pool, so neither a big nor a deep
request holds the event loop that /health and every other request need. `GRAPHQL_LIMITS` are the
Strawberry extensions bounding a GraphQL document: aliases, tokens, depth and data fields.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from graphql import FieldNode, GraphQLError, ValidationRule
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter

from product_affinity.request_limits import (MAX_BODY_BYTES, MAX_GRAPHQL_ALIASES, MAX_GRAPHQL_DATA_FIELDS,
                                              MAX_GRAPHQL_DEPTH, MAX_GRAPHQL_TOKENS, MAX_JSON_DEPTH, json_depth)

DATA_FIELDS = {"load", "port"}  # the GraphQL fields that read the warehouse


def json_problem(text: bytes | str, where: str) -> str | None:
    """Why a JSON text nests too deeply to be taken, or None (text that is not JSON is left to the parser that
    names the error)."""
    try:
        depth = json_depth(json.loads(text))
    except RecursionError:
        depth = None  # deeper than Python's own parser goes
    except ValueError:
        return None
    if depth is None or depth > MAX_JSON_DEPTH:
        found = "deeper than Python parses" if depth is None else f"{depth} deep"
        return f"{where}: JSON nested {found}, more than max_json_depth = {MAX_JSON_DEPTH} allows"
    return None


class RequestLimits:
    """Pure ASGI middleware: bound the body's bytes and the JSON's depth, then hand the body on as it was read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            await _refuse(send, 413, f"request body: {declared.decode(errors='replace')} bytes, more than "
                                     f"max_body_bytes = {MAX_BODY_BYTES} allows")
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:  # a chunked body declares no length
                await _refuse(send, 413, f"request body: more than max_body_bytes = {MAX_BODY_BYTES} allows")
                return
        query_string = scope.get("query_string", b"")
        problem = await run_in_threadpool(_problem, bytes(body), query_string) if body or query_string else None
        if problem:
            await _refuse(send, 400, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the client's disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _problem(body: bytes, query_string: bytes) -> str | None:
    """The first JSON, in the body or in a query parameter (GET /load's query, GraphQL's variables), nested too deep."""
    if len(query_string) > MAX_BODY_BYTES:
        return f"query string: more than max_body_bytes = {MAX_BODY_BYTES} allows"
    found = [json_problem(body, "request body")] if body else []
    found += [json_problem(value, f"query parameter {name}") for name, value in parse_qsl(query_string.decode(errors="replace"))
              if value[:1] in "[{"]
    return next((problem for problem in found if problem), None)


async def _refuse(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class DataFieldLimit(ValidationRule):
    """At most MAX_GRAPHQL_DATA_FIELDS load or port fields in a document: each one reads the warehouse, and aliases
    would otherwise run the same costly read many times in one request."""

    def __init__(self, context) -> None:
        super().__init__(context)
        self.seen = 0

    def enter_field(self, node: FieldNode, *_) -> None:
        if node.name.value in DATA_FIELDS:
            self.seen += 1
            if self.seen == MAX_GRAPHQL_DATA_FIELDS + 1:
                self.report_error(GraphQLError(
                    f"more than max_graphql_data_fields = {MAX_GRAPHQL_DATA_FIELDS} load or port fields in one document: "
                    "send the others as requests of their own", node, extensions={"code": "BAD_USER_INPUT"}))


GRAPHQL_LIMITS = [  # factories: Strawberry builds each extension afresh for every request
    lambda: MaxTokensLimiter(max_token_count=MAX_GRAPHQL_TOKENS),
    lambda: MaxAliasesLimiter(max_alias_count=MAX_GRAPHQL_ALIASES),
    lambda: QueryDepthLimiter(max_depth=MAX_GRAPHQL_DEPTH),
    lambda: AddValidationRules([DataFieldLimit]),
]
