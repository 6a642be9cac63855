"""Every HTTP request the APIs receive gets exactly one audit entry, with the status code it really got, written before
the response leaves.

A pure ASGI middleware around the whole app, outside even Starlette's error handler and FastAPI's
body limit (`audited()` puts it there; `add_middleware` would put it inside them): it sees every
request, those refused before a handler runs (413, 422), GraphQL's syntax and validation errors,
the unauthenticated, reads that call no service, and the ones that raise (500) or are cancelled or
disconnected mid-flight (499, "aborted").
Handlers add what they know (who asked, the operations and their policies) to the request's
`AuditedRequest` through a context variable, which the thread pool and Strawberry's resolvers
inherit. Starlette's BaseHTTPMiddleware would run the app in another task, where those notes are lost.

If the entry cannot be written the client gets a 503 instead of the response: nothing is served unaudited.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
from fastapi import FastAPI

from product_affinity.governance.audit import AuditedRequest, AuditLog, audited_request

log = logging.getLogger(__name__)

BODY_KEPT = 2_048  # of a request no operation describes (a 422, a GraphQL syntax error), the start of its body is kept
ABORTED = "the client went away or the request was cancelled before the response"
UNAUDITED = json.dumps({"error": "the request could not be audited, so it is not answered; try again later"}).encode()


class AuditMiddleware:
    def __init__(self, app: Any, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, body, state = time.perf_counter(), bytearray(), {"written": False, "refused": False, "disconnected": False}
        request = AuditedRequest(method=scope["method"], path=scope["path"])
        token = audited_request.set(request)

        def entry(status: int, outcome: str | None = None, detail: str | None = None) -> dict:
            head = bytes(body) or scope.get("query_string", b"")[:BODY_KEPT]
            return request.entry(status, outcome or request.outcome(status), (time.perf_counter() - started) * 1000,
                                 head.decode("utf-8", "replace") if head else None, detail)

        async def receive_audited() -> dict:
            message = await receive()
            if message["type"] == "http.request" and len(body) < BODY_KEPT:
                body.extend(message.get("body", b"")[:BODY_KEPT - len(body)])
            elif message["type"] == "http.disconnect":
                state["disconnected"] = True
            return message

        async def send_audited(message: dict) -> None:
            if state["refused"]:
                return  # the 503 has been sent in its place
            if message["type"] == "http.response.start" and not state["written"]:
                state["written"] = True
                # A client gone before its answer never gets it, whatever the app answers (a 500 for the body it lost).
                written = entry(499, "aborted", ABORTED) if state["disconnected"] else entry(message["status"])
                try:
                    await anyio.to_thread.run_sync(self.audit.write, written)
                except Exception:
                    log.exception("could not write the audit entry of %s %s", request.method, request.path)
                    state["refused"] = True
                    await send({"type": "http.response.start", "status": 503,
                                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(UNAUDITED)).encode())]})
                    await send({"type": "http.response.body", "body": UNAUDITED})
                    return
            await send(message)

        try:
            await self.app(scope, receive_audited, send_audited)
        except BaseException as error:
            if not state["written"]:
                state["written"] = True
                # Written here, in this thread: a cancelled task cannot wait for a worker thread.
                aborted = state["disconnected"] or isinstance(error, anyio.get_cancelled_exc_class())
                try:
                    self.audit.write(entry(499, "aborted", ABORTED) if aborted
                                     else entry(500, "error", f"{type(error).__name__}: {error}"))
                except Exception:
                    log.exception("could not write the audit entry of %s %s", request.method, request.path)
            raise
        else:
            if not state["written"]:  # the app returned without answering (a middleware gave up on a client that left)
                state["written"] = True
                await anyio.to_thread.run_sync(self.audit.write, entry(499, "aborted", ABORTED) if state["disconnected"]
                                               else entry(500, "error", "the application returned no response"))
        finally:
            audited_request.reset(token)


def audited(app: FastAPI, audit: AuditLog) -> FastAPI:
    """`app` with AuditMiddleware outermost, around the middleware stack FastAPI builds (add_middleware would put it
    inside Starlette's error handler and FastAPI's body limit, so their refusals would go unlogged)."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: AuditMiddleware(build(), audit)
    return app
