"""The Dagster definitions load, and the catalogue they show is complete."""

from datetime import date
from pathlib import Path

import dagster as dg

from product_affinity.contract.odcs import checked_tables, source_tables, table, tables
from product_affinity.definitions import _executor_config, build_definitions, defs, executor
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.defs.page import page_path
from product_affinity.defs.partitions import range_tags
from product_affinity.partitions import Days
from product_affinity.publication import open_published
from product_affinity.quality.results import COLUMNS, SLO_RESULTS
from product_affinity.semantic.loader import model
from product_affinity.product.descriptor import owners
from product_affinity.warehouse import profile, replace_table


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("product_affinity")
    assert [s.name for s in defs.schedules] == ["daily_product_affinity"]


def test_the_steps_that_open_the_warehouse_run_one_at_a_time_in_processes_of_their_own():
    """On the multiprocess executor only steps tagged WAREHOUSE_STEP are kept to one at a time: a step opening the
    warehouse without the tag could start beside another and fail on the warehouse's lock. The counting's chunks open
    no warehouse, so they run at once."""
    ops = list(defs.resolve_job_def("product_affinity").graph.iterate_op_defs())
    opening = {op.name for op in ops if "warehouse" in op.required_resource_keys}
    tagged = {op.name for op in ops if WAREHOUSE_STEP.items() <= op.tags.items()}
    assert opening == tagged and {"plan_counting", "load_counts"} <= opening
    assert "count_chunk" in {op.name for op in ops} - opening
    limit = {"key": "product-affinity/writes", "value": "warehouse", "limit": 1}
    assert _executor_config({"multiprocess": {"max_concurrent": 4}}) == {
        "multiprocess": {"max_concurrent": 4, "tag_concurrency_limits": [limit]}}
    assert _executor_config({"in_process": {}}) == {"in_process": {}}


def test_every_contract_table_is_an_asset_with_owner_description_and_schema():
    graph = defs.resolve_asset_graph()
    for t in tables().values():
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


def test_tables_written_alongside_are_assets_with_schema_and_lineage_that_no_job_runs():
    """quarantine is written by the source-aligned steps, slo_results by the checks: shown downstream of them, never run."""
    graph, job = defs.resolve_asset_graph(), defs.resolve_job_def("product_affinity")
    quarantine, results = dg.AssetKey(["source_aligned", "quarantine"]), dg.AssetKey(SLO_RESULTS.split("."))
    assert graph.get(quarantine).parent_keys == {dg.AssetKey(["source_aligned", t.name]) for t in source_tables()}
    assert graph.get(results).parent_keys == {dg.AssetKey([t.schema, t.name]) for t in checked_tables()}
    schema = graph.get(results).metadata["dagster/column_schema"]
    assert [(c.name, c.type) for c in schema.columns] == list(COLUMNS.items())
    for key in (quarantine, results):
        assert not graph.get(key).is_executable and key not in job.asset_layer.executable_asset_keys


def rollup_schemas() -> dict[str, dg.TableSchema]:
    graph = defs.resolve_asset_graph()
    return {
        graph.get(dg.AssetKey(["semantic", f"{r.view}_{r.name}"])).metadata["dagster/table_name"]:
        graph.get(dg.AssetKey(["semantic", f"{r.view}_{r.name}"])).metadata["dagster/column_schema"]
        for v in model().views.values() for r in v.rollups
    }


def test_every_rollup_declares_its_columns_dimensions_first():
    rollups = {r.table: r for v in model().views.values() for r in v.rollups}
    schemas = rollup_schemas()
    assert set(schemas) == set(rollups)
    for name, schema in schemas.items():
        dimensions = list(rollups[name].columns())
        assert [c.name for c in schema.columns][: len(dimensions)] == dimensions
        assert len(schema.columns) > len(dimensions) and all(c.type for c in schema.columns)


def test_the_declared_rollup_schemas_are_what_the_pipeline_builds(published_sample):
    with open_published(published_sample) as conn:
        for name, schema in rollup_schemas().items():
            built = [(row[0], row[1]) for row in conn.execute(f"DESCRIBE {name}").fetchall()]
            assert built == [(c.name, c.type) for c in schema.columns], name


def test_every_asset_links_to_the_product_page_and_its_data_docs(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    graph = build_definitions(tmp_path / "sources", warehouse).resolve_asset_graph()
    checked = {dg.AssetKey([t.schema, t.name]): t.name for t in checked_tables()}
    for key in graph.get_all_asset_keys():
        metadata = graph.get(key).metadata
        assert metadata["product_page"].url == page_path(warehouse).resolve().as_uri()
        page = f"expectations/{checked[key]}.html" if key in checked else "index.html"
        assert metadata["data_docs"].url == (tmp_path / "quality_docs" / page).resolve().as_uri(), key


def test_the_links_point_at_files_a_run_wrote(published_sample):
    graph = build_definitions(published_sample.parent / "sources", published_sample).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        for link in ("product_page", "data_docs"):
            assert Path(graph.get(key).metadata[link].url.removeprefix("file://")).is_file(), (key, link)


def test_every_job_the_ui_can_launch_runs_in_one_process():
    """DuckDB has one writer: "Materialize all" (the implicit __ASSET_JOB) runs in process like the product_affinity job,
    unless a run's config asks for a process per step."""
    for job in (defs.resolve_implicit_global_asset_job_def(), defs.resolve_job_def("product_affinity")):
        assert job.executor_def is executor, job.name
    assert executor.config_schema.as_field().default_value == {"in_process": {}}


def test_a_run_over_many_days_stores_each_check_once():
    """Dagster 1.13 takes a run's partitions from the asset step last in key order; a partitioned one there makes it
    store every check of the run once per day. The step last in that order must build an unpartitioned asset."""
    from dagster._core.execution.api import create_execution_plan

    job = defs.resolve_job_def("product_affinity")
    graph = job.asset_layer.asset_graph
    plan = create_execution_plan(job, tags=range_tags(Days(date(2026, 1, 1), date(2026, 3, 1))))
    built = [output.properties.asset_key for step in sorted(plan.step_dict.values(), key=lambda s: s.key)
             for output in step.step_outputs if output.properties and output.properties.asset_key]
    assert graph.get(built[-1]).partitions_def is None, built[-1]


def test_the_data_docs_step_runs_after_every_check_step_of_the_job():
    """The Data Docs are drawn from the results the checks recorded, so their step must come after every table's check
    step: Dagster orders a step after a table's blocking checks only, so a table left with no blocking rule would
    let the Docs be drawn before its checks ran."""
    from dagster._core.execution.api import create_execution_plan

    from product_affinity.defs.quality import DATA_DOCS_KEY

    job = defs.resolve_job_def("product_affinity")
    plan = create_execution_plan(job, tags=range_tags(Days(date(2026, 1, 1), date(2026, 1, 3))))
    upstream = {step.key: step.get_all_dependency_keys() if hasattr(step, "get_all_dependency_keys")  # the counts' map
                else step.get_execution_dependency_keys() for step in plan.step_dict.values()}
    docs = "__".join(DATA_DOCS_KEY.path)
    before, frontier = set(), [docs]
    while frontier:
        for key in upstream[frontier.pop()] - before:
            before.add(key)
            frontier.append(key)
    assert {f"{t.name}_quality" for t in checked_tables()} <= before, sorted(before)
