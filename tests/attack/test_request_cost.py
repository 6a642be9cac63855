"""Attacker tests: one cheap request must not pin the server (issue 10, "one cheap request pins the server").

Each request below cost seconds of a worker, or its event loop, before the limits in
product_affinity/request_limits.py: a 4.7 KB body nested 480 deep, 100 filters of 1,000 values,
ten GraphQL aliases of an ungrouped load, a huge ungrouped result, a query DuckDB works on for long.
Each is sent to a real server (a process of its own) and must be refused with a client error
naming the limit, while /health keeps answering.
"""

import json

import httpx
import pytest

from product_affinity.request_limits import MAX_FILTER_CONDITIONS, MAX_FILTER_VALUES, MAX_GRAPHQL_ALIASES
from product_affinity.governance.credentials import KeyStore
from tests.attack.live_server import live_server, while_in_flight

pytestmark = pytest.mark.slow
LEAF = {"member": "sales.quantity", "operator": "gt", "values": [1]}
LOAD = "query($q: QueryInput!) { load(query: $q) { rows } }"
# Every sales line with six of its attributes: tens of megabytes as JSON, at any scale past the smallest.
UNGROUPED = {"dimensions": ["sales.customer_id", "sales.product_name", "sales.purchased_at", "sales.country", "sales.category",
                            "sales.channel"], "ungrouped": True, "limit": 50_000}
# A grouped query DuckDB works on for a while even on the sample: every customer by every product, distinct counts.
SLOW = {"measures": ["sales.purchases", "sales.buyers", "sales.spend_per_customer"],
        "dimensions": ["sales.customer_id", "sales.product_name"], "limit": 50_000}


def nested(depth: int) -> dict:
    f = LEAF
    for _ in range(depth):
        f = {"or": [f]}
    return f


def deep_load(depth: int) -> str:
    """A query whose one filter nests `depth` or-groups, as JSON text (json.dumps itself recurses too deep for it)."""
    return '{"measures": ["sales.lines"], "filters": [' + '{"or": [' * depth + json.dumps(LEAF) + "]}" * depth + "]}"


@pytest.fixture(scope="module")
def server(published_sample, tmp_path_factory):
    with live_server(published_sample, tmp_path_factory.mktemp("server") / "serve.log") as url:
        yield url, {"Authorization": f"Bearer {KeyStore(published_sample).issue('steward')}"}


@pytest.fixture(scope="module")
def tight_server(published_sample, tmp_path_factory):
    """A server whose DuckDB statement timeout is 50 ms, so a query of the sample's size runs into it."""
    with live_server(published_sample, tmp_path_factory.mktemp("tight") / "serve.log", statement_timeout_s=0.05) as url:
        yield url, {"Authorization": f"Bearer {KeyStore(published_sample).issue('steward')}"}


def post(server, path: str, body: dict | str) -> httpx.Response:
    url, headers = server
    return httpx.post(url + path, content=body if isinstance(body, str) else json.dumps(body), headers={**headers, "Content-Type": "application/json"}, timeout=120)


def graphql_errors(response: httpx.Response) -> str:
    assert response.status_code < 500, response.text
    errors = response.json().get("errors")
    assert errors and not response.json().get("data"), response.text[:500]
    return " ".join(e["message"] for e in errors)


def test_a_body_nested_480_deep_is_refused_while_health_answers(server):
    body = deep_load(480)
    assert len(body) < 5_000  # the 4.7 KB body of the issue
    answer, health = while_in_flight(lambda: post(server, "/load", body), server[0])
    assert health == [200, 200, 200]
    assert answer.status_code == 400 and "max_json_depth" in answer.json()["error"], answer.text[:300]
    gql = post(server, "/graphql", '{"query": ' + json.dumps(LOAD) + ', "variables": {"q": ' + body + "}}")
    assert gql.status_code == 400 and "max_json_depth" in gql.json()["error"], gql.text[:300]


def test_filter_depth_conditions_and_values_are_bounded_before_validation(server):
    shallow_but_too_deep = {"measures": ["sales.lines"], "filters": [nested(5)]}
    many_conditions = {"measures": ["sales.lines"], "filters": [{"and": [LEAF] * 40}] * 3}
    many_values = {"measures": ["sales.lines"], "filters": [
        {"member": "sales.customer_id", "operator": "equals", "values": list(range(MAX_FILTER_VALUES // 2 + 1))}] * 2}
    assert 3 * 40 > MAX_FILTER_CONDITIONS
    for query, limit in ((shallow_but_too_deep, "max_filter_depth"), (many_conditions, "max_filter_conditions"),
                         (many_values, "max_filter_values")):
        rest = post(server, "/load", query)
        assert rest.status_code == 422 and limit in rest.text and "filters" in rest.text, rest.text[:300]
        assert limit in graphql_errors(post(server, "/graphql", {"query": LOAD, "variables": {"q": query}}))


def test_a_hundred_filters_of_a_thousand_values_are_refused_unread_while_health_answers(server):
    body = {"measures": ["sales.lines"], "filters": [
        {"member": "sales.customer_id", "operator": "equals", "values": list(range(1_000))} for _ in range(100)]}
    answer, health = while_in_flight(lambda: post(server, "/load", body), server[0])
    assert health == [200, 200, 200]
    assert answer.status_code == 413 and "max_body_bytes" in answer.json()["error"], answer.text[:300]


def test_an_alias_bomb_of_ungrouped_loads_is_refused_while_health_answers(server):
    fields = " ".join(f"a{i}: load(query: $q) {{ rows }}" for i in range(10))
    answer, health = while_in_flight(
        lambda: post(server, "/graphql", {"query": f"query($q: QueryInput!) {{ {fields} }}", "variables": {"q": UNGROUPED}}),
        server[0])
    assert health == [200, 200, 200]
    assert f"Allowed: {MAX_GRAPHQL_ALIASES}" in graphql_errors(answer) and "max_graphql_data_fields" in graphql_errors(answer)
    three = " ".join(f"a{i}: load(query: $q) {{ rows }}" for i in range(3))  # within the aliases, past the data fields
    assert "max_graphql_data_fields" in graphql_errors(
        post(server, "/graphql", {"query": f"query($q: QueryInput!) {{ {three} }}", "variables": {"q": UNGROUPED}}))


def test_a_huge_ungrouped_result_is_refused_by_its_bytes_while_health_answers(server):
    answer, health = while_in_flight(lambda: post(server, "/load", UNGROUPED), server[0])
    assert health == [200, 200, 200]
    assert answer.status_code == 400 and "max_result_bytes" in answer.json()["error"], answer.text[:300]
    assert "max_result_bytes" in graphql_errors(post(server, "/graphql", {"query": LOAD, "variables": {"q": UNGROUPED}}))
    port = httpx.get(f"{server[0]}/ports/cross_sell_recommendations", params={"limit": 50_000}, headers=server[1], timeout=120)
    assert port.status_code in (200, 400), port.text[:300]  # the whole port is one page or a refusal, never a 500


def test_a_query_past_the_statement_timeout_is_interrupted_while_health_answers(tight_server):
    answer, health = while_in_flight(lambda: post(tight_server, "/load", SLOW), tight_server[0])
    assert health == [200, 200, 200]
    assert answer.status_code == 400 and "statement_timeout_s" in answer.json()["error"], answer.text[:300]
    assert "statement_timeout_s" in graphql_errors(post(tight_server, "/graphql", {"query": LOAD, "variables": {"q": SLOW}}))
