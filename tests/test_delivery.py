"""The REST and GraphQL APIs on the published sample, tested as an attacker and as a client would:
no key, the wrong group, masked personal data, row filters on rows and on totals, the audit log, publication.

The last test runs in the fast tier: a warehouse of three customers, ingested and published by the product's own
code, served by the real app, so a change that breaks delivery or a policy fails `pytest -m "not slow"` too."""

import json
import shutil
from datetime import datetime

import duckdb
import pytest
from fastapi.testclient import TestClient

from product_affinity.contract.odcs import source_tables
from product_affinity.delivery.rest import create_app
from product_affinity.governance.policies import access, policies, principal
from product_affinity.governance.audit import AuditLog
from product_affinity.governance.credentials import KeyStore
from product_affinity.product.descriptor import custom
from product_affinity.product.descriptor import descriptor
from product_affinity.publication import open_published, publish, published_snapshot
from product_affinity.quality.governance import pii_masked_on_delivery
from product_affinity.semantic import compiler
from product_affinity.source_aligned.cleaning import ingest
from tests.conftest import PRODUCTS, customer, write_sources

SPAIN_SPEND = "SELECT sum(quantity * unit_price) FROM source_aligned.purchase JOIN source_aligned.customer USING (customer_id) WHERE country = 'Spain'"


@pytest.fixture(scope="module")
def api(published_sample):
    keys = {name: KeyStore(published_sample).issue(name) for name in policies().principals}
    with TestClient(create_app(published_sample)) as client:
        yield client, keys, published_sample


@pytest.fixture(scope="module")
def sql(published_sample):
    with open_published(published_sample) as conn:
        yield lambda text: conn.execute(text).fetchall()


def rest(api, who, query):
    client, keys, _ = api
    return client.post("/load", json=query, headers={"Authorization": f"Bearer {keys[who]}"})


def graphql(api, who, query: dict, fields: str = "columns { name } rows policies"):
    client, keys, _ = api
    document = f"query($q: QueryInput!) {{ load(query: $q) {{ {fields} }} }}"
    return client.post("/graphql", json={"query": document, "variables": {"q": query}},
                       headers={"Authorization": f"Bearer {keys[who]}"})


def graphql_query(query: dict) -> dict:
    """A REST query in GraphQL's input shape."""
    out = {k: v for k, v in query.items() if k not in ("timeDimensions", "order")}
    if "order" in query:
        out["order"] = [{"member": m, "direction": d} for m, d in query["order"]]
    return out


def both(api, who, query) -> list[list[dict]]:
    """The rows REST and GraphQL return for the same query."""
    r, g = rest(api, who, query), graphql(api, who, graphql_query(query))
    assert r.status_code == 200, r.text
    assert g.status_code == 200 and "errors" not in g.json(), g.text
    return [r.json()["data"], g.json()["data"]["load"]["rows"]]


@pytest.mark.parametrize("method, path", [("get", "/meta"), ("post", "/load"), ("get", "/ports"), ("get", "/ports/customer_metrics"),
                                          ("get", "/slo"), ("get", "/product"), ("post", "/graphql")])
@pytest.mark.parametrize("key", [None, "pa_00000000_not-a-key"])
def test_no_valid_key_is_401_everywhere(api, method, path, key):
    client, _, _ = api
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"query": "{ meta }"} if path == "/graphql" else {"measures": ["sales.lines"]}
    response = client.request(method, path, json=body if method == "post" else None, headers=headers)
    assert response.status_code == 401
    assert "API key" in response.json()["error"]


def test_the_openapi_spec_is_published(api):
    client, _, _ = api
    spec = client.get("/openapi.json").json()
    assert {"/meta", "/load", "/ports/{port}", "/slo", "/product"} <= spec["paths"].keys()
    assert {"HTTPBearer", "APIKeyHeader"} <= spec["components"]["securitySchemes"].keys()


def test_a_group_without_the_view_gets_403_on_rest_and_graphql(api):
    query = {"measures": ["customer_360.customers"]}
    r = rest(api, "storefront", query)
    assert r.status_code == 403 and "customer_360" in r.json()["error"]
    g = graphql(api, "storefront", query).json()
    assert g["data"] is None and g["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    client, keys, _ = api
    port = client.get("/ports/customer_metrics", headers={"X-API-Key": keys["storefront"]})
    assert port.status_code == 403


def test_a_member_outside_the_grant_is_403_even_inside_a_filter(api):
    for query in ({"dimensions": ["cross_sell.email"]},
                  {"dimensions": ["cross_sell.customer_id"],
                   "filters": [{"member": "cross_sell.country", "operator": "equals", "values": ["Spain"]}]}):
        assert rest(api, "storefront", query).status_code == 403
        assert graphql(api, "storefront", query).json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert rest(api, "ana", {"measures": ["customer_360.average_income"]}).status_code == 403


def test_members_are_unioned_across_groups_and_row_filters_intersect(api, sql):
    # jon is a regional analyst (Canada, no incomes) and a marketing analyst (everything, every country):
    # he may read incomes (union), but only Canada's (intersection).
    rows = both(api, "jon", {"measures": ["customer_360.average_income", "customer_360.customers"], "dimensions": ["customer_360.country"]})
    expected = sql("SELECT country, avg(income), count(*) FROM source_aligned.customer WHERE country = 'Canada' GROUP BY 1")
    for got in rows:
        assert [(r["customer_360.country"], round(r["customer_360.average_income"], 6), r["customer_360.customers"]) for r in got] \
            == [(c, round(float(i), 6), n) for c, i, n in expected]


def test_personal_data_is_masked_on_rest_and_graphql_alike(api, sql):
    query = {"dimensions": ["customer_360.customer_id", "customer_360.email", "customer_360.phone", "customer_360.first_name",
                            "customer_360.birth_year"], "ungrouped": True, "order": [["customer_360.customer_id", "asc"]], "limit": 200}
    clear = {cid: (email, phone, first, year) for cid, email, phone, first, year in sql(
        "SELECT customer_id, email, phone, first_name, birth_year FROM source_aligned.customer ORDER BY customer_id LIMIT 200")}
    for rows in both(api, "marta", query):
        for row in rows:
            email, phone, first, _ = clear[row["customer_360.customer_id"]]
            if email and "@" in email:
                assert row["customer_360.email"] == f"***{email[email.index('@'):]}"  # the domain only
            assert row["customer_360.phone"] in ("***", None)
            assert row["customer_360.first_name"] in ("***", None) and row["customer_360.birth_year"] is None
    hashed = both(api, "li", query)  # pseudonymised: stable, unreadable, the same on both paths
    assert hashed[0] == hashed[1]
    values = [r["customer_360.email"] for r in hashed[0] if r["customer_360.email"]]
    assert len(set(values)) == len(values) and not any("@" in v for v in values)
    for rows in both(api, "steward", query):  # cleared for personal data
        assert all(row["customer_360.email"] == clear[row["customer_360.customer_id"]][0] for row in rows)


def test_filtering_on_a_masked_member_cannot_reveal_it(api, sql):
    email = sql("SELECT email FROM source_aligned.customer WHERE email IS NOT NULL LIMIT 1")[0][0]
    probe = {"measures": ["customer_360.customers"], "filters": [{"member": "customer_360.email", "operator": "equals", "values": [email]}]}
    assert both(api, "marta", probe) == [[{"customer_360.customers": 0}]] * 2
    assert both(api, "steward", probe) == [[{"customer_360.customers": 1}]] * 2


def test_row_filters_hold_on_rows_on_totals_and_on_port_reads(api, sql):
    spain = float(sql(SPAIN_SPEND)[0][0])
    everyone = float(sql("SELECT sum(quantity * unit_price) FROM source_aligned.purchase")[0][0])
    for query in ({"measures": ["sales.total_spend"]}, {"measures": ["customer_360.customer_total_spend"]}):
        for rows in both(api, "ana", query):
            total = next(iter(rows[0].values()))
            assert total == pytest.approx(spain) and total < everyone
    # Grouped by something that is not the country, the groups still add up to Spain only.
    for rows in both(api, "ana", {"measures": ["sales.total_spend"], "dimensions": ["sales.category"]}):
        assert sum(r["sales.total_spend"] for r in rows) == pytest.approx(spain)
    spanish = {r[0] for r in sql("SELECT customer_id FROM source_aligned.customer WHERE country = 'Spain'")}
    client, keys, _ = api
    read = client.get("/ports/cross_sell_recommendations?limit=50000", headers={"Authorization": f"Bearer {keys['ana']}"})
    assert read.status_code == 200
    customers = {r["cross_sell.customer_id"] for r in read.json()["data"]}
    assert customers and customers <= spanish
    port = client.post(
        "/graphql", json={"query": '{ port(name: "customer_metrics", limit: 50000) { rows } }'},
        headers={"Authorization": f"Bearer {keys['ana']}"}).json()
    assert {r["customer_360.customer_id"] for r in port["data"]["port"]["rows"]} == spanish


def test_a_principal_without_the_attribute_a_filter_needs_sees_nothing(api):
    who = principal("ana")
    stripped = type(who)(who.name, who.groups, {}, who.description)
    with pytest.raises(PermissionError, match="attribute 'country'"):
        access(stripped, "sales")


def test_meta_shows_each_principal_only_their_views_and_masks(api):
    client, keys, _ = api
    meta = client.get("/meta", headers={"Authorization": f"Bearer {keys['storefront']}"}).json()
    assert [v["name"] for v in meta["views"]] == ["cross_sell"]
    assert {m["name"] for m in meta["views"][0]["members"]} == {
        f"cross_sell.{m}" for m in ("customer_id", "level", "rank", "recommended_item", "recommended_name", "score")}
    marta = client.get("/meta", headers={"Authorization": f"Bearer {keys['marta']}"}).json()
    members = {m["name"]: m for v in marta["views"] for m in v["members"]}
    assert members["customer_360.email"]["masked"] == "partial" and members["sales.total_spend"]["masked"] is None


def test_every_request_is_audited(api):
    _, _, warehouse = api
    before = len(AuditLog(warehouse).entries())
    rest(api, "ana", {"measures": ["sales.lines"]})
    rest(api, "storefront", {"measures": ["sales.lines"]})
    api[0].post("/load", json={"measures": ["sales.lines"]})
    ok, denied, anonymous = AuditLog(warehouse).entries()[before:]
    assert ok["principal"] == "ana" and ok["outcome"] == "ok" and ok["rows"] == 1 and ok["view"] == "sales"
    assert ok["policies"]["row_filters"] == [{"group": "regional_analyst", "member": "customers.country", "operator": "equals", "values": ["Spain"]}]
    assert ok["request"] == {"measures": ["sales.lines"]} and ok["key_id"] and ok["snapshot"]
    assert denied["principal"] == "storefront" and denied["outcome"] == "denied"
    assert anonymous["principal"] is None and anonymous["outcome"] == "unauthenticated"
    assert not any(keys in json.dumps(e) for e in AuditLog(warehouse).entries() for keys in api[1].values())


def test_reads_follow_a_new_publication_and_never_block_the_pipeline(published_sample, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"  # a copy, so the shared sample stays as it is
    shutil.copyfile(published_sample, warehouse)
    with duckdb.connect(str(warehouse)) as conn:
        publish(conn, warehouse, "test-run-before")
    key = KeyStore(warehouse).issue("steward")
    with TestClient(create_app(warehouse)) as client:
        ask = lambda query: client.post("/load", json=query, headers={"Authorization": f"Bearer {key}"}).json()  # noqa: E731
        before = ask({"measures": ["cross_sell.recommendations"], "dimensions": ["cross_sell.rank"]})
        # The API holds the snapshot open; the pipeline still opens the working warehouse for writing, and publishes.
        with duckdb.connect(str(warehouse)) as conn:
            conn.execute("DELETE FROM consumer_aligned.cross_sell_recommendations WHERE rank > 1")
            publish(conn, warehouse, "test-run-after")
        after = ask({"measures": ["cross_sell.recommendations"], "dimensions": ["cross_sell.rank"]})
    assert [r["cross_sell.rank"] for r in before["data"]] == [1, 2, 3]
    assert [r["cross_sell.rank"] for r in after["data"]] == [1]
    assert after["snapshot"] == published_snapshot(warehouse).name != before["snapshot"]


def test_slo_status_measures_masking_on_the_data_and_api_latency_from_the_audit_log(api, monkeypatch):
    client, keys, warehouse = api
    headers = {"Authorization": f"Bearer {keys['storefront']}"}
    for offset in range(0, 50, 10):
        assert client.get(f"/ports/cross_sell_recommendations?limit=10&offset={offset}", headers=headers).status_code == 200
    slos = {s["id"]: s for s in client.get("/slo", headers=headers).json()["slos"]}
    assert slos["api_latency"]["status"] == "pass" and 0 < slos["api_latency"]["observed"] < 300
    assert slos["pii_masked_on_delivery"]["status"] == "pass" and slos["pii_masked_on_delivery"]["observed"] == 100
    # A compiler that forgot to mask would be caught on the data.
    def unmasked(expr, mask, kind, salt):
        return expr if salt is None else f"coalesce({expr}, {salt})"  # uses the hash key's parameter, as a hash would

    monkeypatch.setattr(compiler, "mask_sql", unmasked)
    with open_published(warehouse) as conn:
        observed, leaks = pii_masked_on_delivery(conn, warehouse)
    assert observed < 100 and "marta reads customer_360.email in clear" in leaks


def test_the_audit_log_keeps_requests_with_any_character(api):
    _, _, warehouse = api
    before = len(AuditLog(warehouse).entries())
    assert rest(api, "marta", {"measures": ["sales.lines\u2028\x85"]}).status_code == 400  # line separators are data
    entry, = AuditLog(warehouse).entries()[before:]
    assert entry["outcome"] == "invalid" and entry["request"] == {"measures": ["sales.lines\u2028\x85"]}


def test_the_descriptor_is_served_on_both_paths(api):
    client, keys, _ = api
    headers = {"Authorization": f"Bearer {keys['storefront']}"}
    served = client.get("/product", headers=headers).json()
    assert served == descriptor()
    delivery = {p["name"]: p for p in custom(served)["deliveryPorts"]}
    assert delivery["rest-api"]["status"] == delivery["graphql-api"]["status"] == "available"
    graphql = client.post("/graphql", json={"query": "{ product }"}, headers=headers).json()
    assert graphql["data"]["product"] == served


def test_port_pages_by_cursor_cover_the_port_once_in_key_order(api, sql):
    client, keys, _ = api
    headers = {"Authorization": f"Bearer {keys['ana']}"}
    rows, after, pages = [], None, 0
    while pages == 0 or after:
        page = client.get("/ports/cross_sell_recommendations", params={"limit": 700, **({"after": after} if after else {})},
                          headers=headers).json()
        rows, after, pages = rows + page["data"], page["next"], pages + 1
    expected = sql("""SELECT customer_id, level, rank FROM consumer_aligned.cross_sell_recommendations
                      JOIN source_aligned.customer USING (customer_id) WHERE country = 'Spain' ORDER BY ALL""")
    assert pages > 2 and [(r["cross_sell.customer_id"], r["cross_sell.level"], r["cross_sell.rank"]) for r in rows] == expected
    for cursor in ("not-a-cursor", "WzFd", "eyJhIjogMX0"):  # garbage, a key too short, not a list
        response = client.get("/ports/cross_sell_recommendations", params={"after": cursor}, headers=headers)
        assert response.status_code == 400 and "cursor" in response.json()["error"]


@pytest.mark.parametrize("query", ["Infinity", '{"measures": ["sales.lines"], "filters": [{"member": "sales.quantity", '
                                   '"operator": "gt", "values": [Infinity]}]}', "NaN"])
def test_values_json_cannot_carry_are_refused_not_a_server_error(api, query):
    client, keys, _ = api
    response = client.get("/load", params={"query": query}, headers={"Authorization": f"Bearer {keys['marta']}"})
    assert response.status_code == 422


# ---- the fast tier: a tiny warehouse, published by the product's own code ---------------------------------------

TINY_PURCHASES = [  # Spain (customers 1 and 2) spends 2 x 10 + 20 = 40, Canada (customer 3) 4 x 5 + 10 = 30
    "1,1,1,1,2,10.00,2025-03-01 10:00:00,web,false",
    "2,1,2,2,1,20.00,2025-03-02 10:00:00,store,false",
    "3,1,3,3,4,5.00,2025-03-03 10:00:00,web,true",
    "3,2,3,1,1,10.00,2025-03-03 10:00:00,web,true",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The three sources ingested (the pipeline's ingestion, on a connection) and published as a run publishes, with
    no Dagster run: what the APIs need to be tested in the fast tier. No rollup is published, so the detail answers."""
    root = tmp_path_factory.mktemp("tiny")
    sources = write_sources(root / "sources", [customer(1), customer(2), customer(3, country="Canada")], PRODUCTS, TINY_PURCHASES)
    warehouse = root / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as conn:
        for t in source_tables():
            ingest(conn, sources, t.name, datetime(2026, 1, 1))
        publish(conn, warehouse, "tiny-run")
    keys = {name: KeyStore(warehouse).issue(name) for name in ("steward", "ana", "jon")}
    with TestClient(create_app(warehouse)) as client:
        yield client, keys, warehouse


def test_a_tiny_published_warehouse_is_served_under_row_filters_and_hidden_columns(tiny):
    by_country = {"measures": ["sales.total_spend"], "dimensions": ["sales.country"], "order": [["sales.country", "asc"]]}
    expected = {"steward": [("Canada", 30.0), ("Spain", 40.0)], "ana": [("Spain", 40.0)], "jon": [("Canada", 30.0)]}
    for who, spend in expected.items():  # each regional analyst sees their own country's rows only, on both paths
        for rows in both(tiny, who, by_country):
            assert [(r["sales.country"], r["sales.total_spend"]) for r in rows] == spend
    income = {"measures": ["sales.average_income"], "dimensions": ["sales.country"]}
    assert rest(tiny, "ana", income).status_code == 403  # a regional analyst's group hides incomes
    assert graphql(tiny, "ana", income).json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    for rows in both(tiny, "jon", income):  # marketing lets jon read incomes (union), of Canada only (intersection)
        assert rows == [{"sales.country": "Canada", "sales.average_income": 50000.0}]
