"""Property-based fuzzing of the published API specs (Schemathesis): whatever a client sends, no server error.

Requests are generated from /openapi.json and from the GraphQL schema, authenticated as a principal
whose policies exercise every path of the engine (masks, row filters, several groups), and sent
to the real app on the published sample. Each operation is fuzzed with Hypothesis directly
(schemathesis's lazy pytest fixtures do not run under pytest 9).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from product_affinity.delivery.rest import create_app
from product_affinity.governance.credentials import KeyStore

FUZZED_AS = "jon"  # regional and marketing analyst: masked personal data, a row filter, two groups combined
CLIENT_CODES = {"FORBIDDEN", "BAD_USER_INPUT"}
# Examples per operation, not in all: every operation of both schemas is fuzzed (each test asserts which). 25 keep
# Hypothesis's mix of boundary and random inputs per operation at a quarter of the time 100 took.
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def app(published_sample):
    return create_app(published_sample), {"Authorization": f"Bearer {KeyStore(published_sample).issue(FUZZED_AS)}"}


def fuzz(schema, headers: dict, **checks) -> list[str]:
    """Fuzz every operation of `schema` with the given checks (default: all of Schemathesis's); return the operations fuzzed."""
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @EXAMPLES
        def run(case):
            case.call_and_validate(headers=headers, **checks)

        run()
        fuzzed.append(operation.label)
    return fuzzed


def test_rest_has_no_server_error_and_answers_as_documented(app):
    # Every check but "schema-valid data is accepted": a query can be valid JSON and still name members of two
    # views, or a member the principal may not read, which the API rightly refuses with 400 or 403.
    fuzzed = fuzz(schemathesis.openapi.from_asgi("/openapi.json", app[0]), app[1], excluded_checks=[positive_data_acceptance])
    assert {"POST /load", "GET /load", "GET /ports/{port}", "GET /meta"} <= set(fuzzed)


def refused_not_failed(ctx, response, case):
    """Every GraphQL error is a refusal the API names (FORBIDDEN, BAD_USER_INPUT) or a query that did not validate;
    an error from a resolver without one of those codes is an exception the server did not handle."""
    assert response.status_code < 500, response.text
    for error in response.json().get("errors") or []:
        assert "path" not in error or (error.get("extensions") or {}).get("code") in CLIENT_CODES, error


def test_graphql_has_no_server_error(app):
    fuzzed = fuzz(schemathesis.graphql.from_asgi("/graphql", app[0], headers=app[1]), app[1], checks=[refused_not_failed])
    assert {"Query.load", "Query.port", "Query.meta"} <= set(fuzzed)
