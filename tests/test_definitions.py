"""The Dagster definitions load, and the catalogue they show is complete."""

import dagster as dg

from product_affinity.contract import table, tables
from product_affinity.definitions import defs
from product_affinity.product import owners
from product_affinity.warehouse import profile, replace_table


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("product_affinity")
    assert [s.name for s in defs.schedules] == ["daily_product_affinity"]


def test_every_contract_table_but_quarantine_is_an_asset_with_owner_description_and_schema():
    graph = defs.resolve_asset_graph()
    for t in tables().values():
        if t.name == "quarantine":  # written alongside each source-aligned table
            continue
        node = graph.get(dg.AssetKey([t.schema, t.name]))
        assert node.owners == owners()  # the descriptor's owning team
        assert node.description.startswith(t.description)
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == t.column_names
        assert node.group_name == t.schema


def test_lineage_runs_from_source_files_to_output_ports():
    graph = defs.resolve_asset_graph()
    upstream = graph.get(dg.AssetKey(["consumer_aligned", "customer_metrics"])).parent_keys
    assert dg.AssetKey(["consumer_aligned", "cross_sell_recommendations"]) in upstream
    assert graph.get(dg.AssetKey(["source_aligned", "purchase"])).parent_keys == {
        dg.AssetKey(["sources", "purchase"]),
        dg.AssetKey(["source_aligned", "customer"]),
        dg.AssetKey(["source_aligned", "product"]),
    }


def test_a_profiles_distinct_count_never_exceeds_the_rows(conn):
    """HyperLogLog estimates 102 distinct values among 100 unique ones: the profile says at most 100."""
    t = table("product")
    replace_table(conn, t, "SELECT range AS product_id, 'p' || range AS product_name, 'c' || range AS category, "
                           "'s' || range AS subcategory, range AS list_price FROM range(100)")
    assert conn.execute("SELECT approx_count_distinct(product_id) FROM source_aligned.product").fetchone()[0] > 100
    header, _, *rows = profile(conn, t).splitlines()
    distinct = header.split(" | ").index("distinct (approx.)")
    counts = {row.split(" | ")[0].strip("| "): int(row.split(" | ")[distinct]) for row in rows}
    assert counts["product_id"] == 100 and all(count <= 100 for count in counts.values())
