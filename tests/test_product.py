"""The data product descriptor and the business alignment: loaded, resolved against the contract, driving Dagster."""

import json

import dagster as dg
import pytest

from product_affinity.product import descriptor as product
from product_affinity.business.kpi_tree import LATEST, MEASURES
from product_affinity.contract.odcs import contract, tables
from product_affinity.definitions import defs


def test_descriptor_resolves_every_port_against_the_contract():
    d = product.descriptor()
    json.dumps(d)  # served as JSON by the API
    assert {k: d[k] for k in ("apiVersion", "kind", "id", "domain")} == {
        "apiVersion": "v1.0.0", "kind": "DataProduct", "id": contract()["dataProduct"], "domain": contract()["domain"]}
    outputs = {p["name"]: p for p in d["outputPorts"]}
    assert set(outputs) == {t.name for t in tables().values() if t.layer == "consumer_aligned"}
    for name, port in outputs.items():
        assert (port["contractId"], port["version"], port["description"]) == (contract()["id"], contract()["version"], tables()[name].description)
        assert product.custom(port)["table"] == tables()[name].physical_name
    assert {p["name"] for p in d["inputPorts"]} == {t.name for t in tables().values() if t.source_file}
    delivery = {p["type"] for p in product.custom(d)["deliveryPorts"]}
    assert {"duckdb", "html", "rest", "graphql", "postgres"} <= delivery
    assert product.owners() == ["team:customer-analytics"]


def test_descriptor_drives_owners_tags_and_kinds_of_every_asset():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == product.owners(), key
        assert node.tags["data_product"] == product.descriptor()["id"], key
    for port in product.descriptor()["outputPorts"]:
        node = graph.get(dg.AssetKey(["consumer_aligned", port["name"]]))
        assert set(node.kinds) == product.kinds(port["name"]) and set(port.get("tags", [])) <= set(node.tags)


def test_a_descriptor_that_disagrees_with_the_contract_is_refused_naming_the_file(tmp_path, monkeypatch):
    broken = tmp_path / "broken.odps.yaml"
    broken.write_text(product.DESCRIPTOR_PATH.read_text().replace("  - name: kpi_tree\n", "  - name: kpi_trees\n"))
    monkeypatch.setattr(product, "DESCRIPTOR_PATH", broken)
    product._descriptor.cache_clear()
    try:
        with pytest.raises(product.DescriptorError, match=r"broken\.odps\.yaml: outputPorts .* unknown \['kpi_trees'\], missing \['kpi_tree'\]"):
            product.descriptor()
    finally:
        product._descriptor.cache_clear()


def test_alignment_states_hypotheses_north_star_and_a_kpi_tree_that_is_all_measured():
    a = product.alignment()
    assert all(h["statement"].startswith("We believe that ") and " will help achieve " in h["statement"] for h in a["hypotheses"])
    nodes = {n["id"]: n for n in a["kpiTree"]}
    assert nodes[a["northStar"]["id"]]["type"] == "north_star" and "parent" not in nodes[a["northStar"]["id"]]
    assert set(nodes) == set(MEASURES) | set(LATEST)
    business = {n["id"] for n in a["kpiTree"] if n["type"] == "business"}
    assert {"revenue", "repeat_customer_share"} <= business
