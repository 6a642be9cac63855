"""Attacker tests: values the model cannot take are refused with a 400 naming the field, never a 500 (issue 10).

A date range ending on the last representable day, numbers JSON cannot carry but a string can
("NaN", "1e999"), and `after=` cursors this API never wrote (NaN, Infinity, 1e999, numbers longer
than any key, strings longer than any value), on REST and on GraphQL alike.
"""

import base64
import json

import pytest
from fastapi.testclient import TestClient

from product_affinity.delivery.rest import create_app
from product_affinity.governance.credentials import KeyStore

PORT = "cross_sell_recommendations"  # keyed by (customer_id, level, rank)
LOAD = "query($q: QueryInput!) { load(query: $q) { rows } }"
PORT_PAGE = "query($after: String) { port(name: \"cross_sell_recommendations\", after: $after) { rows } }"


@pytest.fixture(scope="module")
def api(published_sample):
    with TestClient(create_app(published_sample), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {KeyStore(published_sample).issue('steward')}"}


def graphql_refusal(api, document: str, variables: dict) -> str:
    """The message of the BAD_USER_INPUT error GraphQL answers with (any other outcome fails)."""
    client, headers = api
    response = client.post("/graphql", json={"query": document, "variables": variables}, headers=headers)
    assert response.status_code == 200, response.text[:300]
    errors = response.json().get("errors") or []
    assert errors and errors[0].get("extensions", {}).get("code") == "BAD_USER_INPUT", response.text[:300]
    return errors[0]["message"]


BAD_QUERIES = {
    "a range ending on 9999-12-31": ({"measures": ["sales.lines"], "timeDimensions": [
        {"dimension": "sales.purchased_at", "dateRange": ["2020-01-01", "9999-12-31"]}]}, "sales.purchased_at"),
    "after the last day there is": ({"measures": ["sales.lines"], "filters": [
        {"member": "sales.purchased_at", "operator": "afterDate", "values": ["9999-12-31"]}]}, "sales.purchased_at"),
    "a zone moving past year 9999": ({"measures": ["sales.lines"], "filters": [
        {"member": "sales.purchased_at", "operator": "gt", "values": ["9999-12-31T23:00:00-05:00"]}]}, "sales.purchased_at"),
    **{f"the string {text}": ({"measures": ["sales.lines"], "filters": [
        {"member": "sales.quantity", "operator": operator, "values": [text]}]}, "sales.quantity")
       for text, operator in (("NaN", "gt"), ("1e999", "equals"), ("-Infinity", "lt"), ("9" * 400, "gte"))},
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_a_value_the_model_cannot_take_is_a_400_naming_the_member(api, case):
    query, member = BAD_QUERIES[case]
    client, headers = api
    rest = client.post("/load", json=query, headers=headers)
    assert rest.status_code == 400 and member in rest.json()["error"], rest.text[:300]
    graphql = {k: v for k, v in query.items() if k != "timeDimensions"}
    if "timeDimensions" in query:
        graphql["timeDimensions"] = [{"dimension": t["dimension"], "dateRange": t["dateRange"]} for t in query["timeDimensions"]]
    assert member in graphql_refusal(api, LOAD, {"q": graphql})


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_CURSORS = {
    "NaN": '[NaN, "category", 1]',
    "Infinity": '[1, "category", Infinity]',
    "1e999": '[1e999, "category", 1]',
    "a number longer than any key": "[1" + "0" * 300 + ', "category", 1]',
    "a string longer than any value": '[1, "' + "x" * 1_200 + '", 1]',
    "the strings NaN and 1e999": '["NaN", "category", "1e999"]',
    "not JSON": "[1, 'category', 1",
}


@pytest.mark.parametrize("case", list(BAD_CURSORS))
def test_a_cursor_this_api_never_wrote_is_a_400_naming_after(api, case):
    client, headers = api
    after = cursor(BAD_CURSORS[case])
    rest = client.get(f"/ports/{PORT}", params={"after": after}, headers=headers)
    assert rest.status_code in (400, 422) and "after" in rest.text, rest.text[:300]  # 422: longer than the parameter may be
    assert "after" in graphql_refusal(api, PORT_PAGE, {"after": after})


def test_a_cursor_the_api_wrote_still_pages(api):
    """The refusals above are not a refusal of every cursor: the `next` of a page reads the page after it."""
    client, headers = api
    first = client.get(f"/ports/{PORT}", params={"limit": 3}, headers=headers).json()
    second = client.get(f"/ports/{PORT}", params={"limit": 3, "after": first["next"]}, headers=headers)
    assert second.status_code == 200 and second.json()["data"] and second.json()["data"][0] not in first["data"]
    assert json.loads(base64.urlsafe_b64decode(first["next"] + "==")) == [first["data"][-1][k] for k in (
        "cross_sell.customer_id", "cross_sell.level", "cross_sell.rank")]
