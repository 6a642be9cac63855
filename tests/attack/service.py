"""The real service as the attacker tests reach it (a test module imports these fixtures): REST and GraphQL on the
published sample with a key for every principal, and the published snapshot read directly, in clear, as ground truth."""

import pytest
from fastapi.testclient import TestClient

from product_affinity.delivery.rest import create_app
from product_affinity.governance.policies import policies
from product_affinity.governance.credentials import KeyStore
from product_affinity.publication import open_published


class Api:
    """The real service over HTTP: REST /load and GraphQL load, with any principal's key."""

    def __init__(self, client: TestClient, keys: dict[str, str]) -> None:
        self.client, self.keys = client, keys

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def rest(self, who: str, query: dict):
        return self.client.post("/load", json=query, headers=self.headers(who))

    def graphql(self, who: str, query: dict, fields: str = "rows"):
        document = f"query($q: QueryInput!) {{ load(query: $q) {{ {fields} }} }}"
        return self.client.post("/graphql", json={"query": document, "variables": {"q": query}}, headers=self.headers(who))

    def graphql_document(self, who: str, document: str):
        return self.client.post("/graphql", json={"query": document}, headers=self.headers(who))


@pytest.fixture(scope="module")
def api(published_sample):
    keys = {name: KeyStore(published_sample).issue(name) for name in policies().principals}
    with TestClient(create_app(published_sample)) as client:
        yield Api(client, keys)


@pytest.fixture(scope="module")
def sql(published_sample):
    with open_published(published_sample) as conn:
        yield lambda text: conn.execute(text).fetchall()
