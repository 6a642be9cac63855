"""What one API request may cost, declared once: every bound the REST and GraphQL APIs enforce is a constant here.

A request is refused before any work starts when its shape is too big (body bytes, JSON nesting,
filter depth, conditions, values, GraphQL aliases, tokens, depth and data fields, rows asked for);
what cannot be known before (how long DuckDB runs, how many bytes the rows make) is cut off while
it runs. Every refusal is a client error whose message names the limit (the constant's lower-case
name, e.g. `max_filter_depth`) and the field that broke it. docs/governance/request-limits.md
explains each one to callers.
"""

from __future__ import annotations

import os

# The HTTP request, checked by RequestLimits before FastAPI or Strawberry parse it.
MAX_BODY_BYTES = 64 * 1024  # a 100-condition query with long values is about 20 KB
MAX_JSON_DEPTH = 32  # objects and arrays inside each other, anywhere in a JSON body

# A semantic query (POST/GET /load, GraphQL load), checked before the filters are validated one by one.
MAX_FILTER_DEPTH = 4  # and/or groups inside each other
MAX_FILTER_CONDITIONS = 100  # member conditions in all, at every depth
MAX_FILTER_VALUES = 1_000  # values in all conditions together
MAX_VALUE_CHARS = 1_000  # characters in one filter value or cursor value
MAX_LIMIT = 50_000  # rows in one answer (a query's limit, a port page)
MAX_OFFSET = 100_000_000
MAX_QUERY_PARAM_CHARS = 20_000  # GET /load?query=, the query as JSON
MAX_CURSOR_CHARS = 2_000  # an `after` cursor

# What the answer may cost while it is worked out.
MAX_RESULT_BYTES = 4 * 1024 * 1024  # the rows as JSON (estimated), per load or port read: about 1 s of work
STATEMENT_TIMEOUT_S = 1.0  # DuckDB is interrupted after this; the rest of a request's 2 s is rows to JSON and HTTP
STATEMENT_TIMEOUT_ENV = "PRODUCT_AFFINITY_STATEMENT_TIMEOUT_S"  # an operator's override (slower hardware, tests)

# A GraphQL document.
MAX_GRAPHQL_ALIASES = 4
MAX_GRAPHQL_TOKENS = 2_000
MAX_GRAPHQL_DEPTH = 6  # load { columns { name } } is 3
MAX_GRAPHQL_DATA_FIELDS = 2  # load and port fields in one document: each reads the warehouse

# What the API promises under any request, valid or not (the API benchmark checks both).
TARGET_HELD_S = 2.0  # no request holds a worker longer
TARGET_HEALTH_MS = 100  # /health answers within this while the worst request runs


def statement_timeout_s() -> float:
    """The DuckDB statement timeout: STATEMENT_TIMEOUT_S unless the environment sets another (a positive number)."""
    declared = os.environ.get(STATEMENT_TIMEOUT_ENV)
    if declared is None:
        return STATEMENT_TIMEOUT_S
    try:
        seconds = float(declared)
    except ValueError:
        raise ValueError(f"{STATEMENT_TIMEOUT_ENV}={declared!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{STATEMENT_TIMEOUT_ENV}={declared!r} must be a positive number of seconds")
    return seconds


def json_depth(value: object) -> int:
    """How deeply objects and arrays nest in a parsed JSON value, counted without recursion (a deep value cannot
    exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest
