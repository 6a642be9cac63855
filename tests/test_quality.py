"""Quality gates: the contract's rules run as Great Expectations suites in Dagster asset checks, through the real job.

Each dimension has a check that passes on a clean sample and one that fails on data broken on
purpose; a failing `error` rule blocks what is built downstream, a `warning` rule does not.
"""

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from product_affinity.cli import main
from product_affinity.defs.consumer_aligned import consumer_aligned_assets
from product_affinity.contract.odcs import checked_tables, quality_rules, service_levels, table
from product_affinity.definitions import build_definitions, defs
from product_affinity.defs.partitions import range_tags
from product_affinity.partitions import all_days
from product_affinity.defs.metadata import table_key
from product_affinity.defs.quality_checks import quality_checks
from product_affinity.semantic.loader import model
from product_affinity.quality import data_docs
from product_affinity.quality.measures import measure
from product_affinity.quality.results import Row, Validation
from product_affinity.quality.report import declared_markdown
from product_affinity.quality.suites import EXPECTATIONS_DIR, NOT_IN_SUITES, suite_json
from product_affinity.defs.resources import resources
from product_affinity.defs.source_aligned import source_aligned_assets
from product_affinity.sources.sample import generate_sample

QUALITY_DOCS = Path(__file__).resolve().parent.parent / "docs" / "quality.md"  # the SLO section of the manual
# Two months of history, not two years: each day is a partition every whole run here records.
SMALL = dict(customers=300, products=60, orders=1_500, history_days=60)
PORTS = [t for t in checked_tables() if t.layer == "consumer_aligned"]


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def run_job(sources: Path, warehouse: Path) -> dg.ExecuteInProcessResult:
    """The product_affinity job, as `product-affinity run` and the schedule run it."""
    job = build_definitions(sources, warehouse).resolve_job_def("product_affinity")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                  tags=range_tags(all_days(sources, warehouse)))


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def failed(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], str]:
    """(table, rule id) -> Dagster severity of every failed check."""
    return {key: e.severity.value for key, e in evaluations(result).items() if not e.passed}


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def slo_results(warehouse: Path) -> list[dict]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rows = conn.execute("SELECT * FROM quality.slo_results").fetchall()
        return [dict(zip([d[0] for d in conn.description], row)) for row in rows]


def edit_csv(path: Path, **columns) -> None:
    """Rewrite a source file with some columns replaced (the file is read as text, as the source system wrote it)."""
    frame = pl.read_csv(path, infer_schema=False)
    frame.with_columns(**{name: pl.Series(values, dtype=pl.String) for name, values in columns.items()}).write_csv(path)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A fresh, clean sample run once through the job."""
    root = tmp_path_factory.mktemp("clean")
    generate_sample(root / "sources", **SMALL, end=now())
    return root / "sources", root / "warehouse.duckdb", run_job(root / "sources", root / "warehouse.duckdb")


# ---- one contract, suites and checks derived from it ----------------------------------------


def test_expectation_suites_are_generated_from_the_contract():
    on_disk = {p.name for p in EXPECTATIONS_DIR.glob("*.json")}
    assert on_disk == {f"{t.name}.json" for t in checked_tables()}, "regenerate with: product-affinity expectations"
    for t in checked_tables():
        assert (EXPECTATIONS_DIR / f"{t.name}.json").read_text() == suite_json(t), "regenerate with: product-affinity expectations"


def test_every_suite_expectation_names_the_rule_it_serves():
    for t in checked_tables():
        served = {e["meta"]["rule_id"] for e in json.loads(suite_json(t))["expectations"]}
        assert served == {r.id for r in quality_rules(t.name) if r.metric not in NOT_IN_SUITES}  # measured by DuckDB alone


def test_the_contract_keeps_the_floors_of_every_dimension():
    rules = [r for t in checked_tables() for r in quality_rules(t.name)]
    assert {r.dimension for r in rules} == {"completeness", "uniqueness", "timeliness", "conformity", "validity", "accuracy"}
    bound = {"completeness": 1, "uniqueness": 1, "validity": 5}  # of the rows received, on a source table
    for r in rules:
        if r.dimension in bound and r.unit == "percent":
            assert r.operator == "mustBeLessOrEqualTo" and r.threshold <= bound[r.dimension], r
        if r.dimension == "accuracy":  # measured on every row: a published figure that does not reconcile is wrong
            assert (r.operator, r.threshold, r.unit) == ("mustBe", 100, "percent"), r
        if r.dimension == "timeliness":
            assert r.threshold <= 24 and r.severity == "error", r
        if r.dimension == "conformity":
            assert r.threshold == 100, r
    for t in checked_tables():  # a missing key blocks: any on an output, over 1 % of the rows received from a source
        floor = (1, "percent") if t.source_file else (0, "rows")
        for key in {"customer_id", "product_id", "order_id"} & set(t.column_names):
            assert any(r.id == f"completeness_{key}" and (r.threshold, r.unit) <= floor and r.unit == floor[1] and r.blocking
                       for r in quality_rules(t.name)), (t.name, key)
    for t in PORTS:  # published outputs: no duplicate key at all
        assert any(r.metric == "duplicateValues" and (r.threshold, r.unit) == (0, "rows") for r in quality_rules(t.name)), t.name


def test_each_rule_is_a_check_blocking_exactly_when_its_severity_is_error():
    specs = {(spec.asset_key, spec.name): spec for check in quality_checks for spec in check.check_specs}
    expected = {(table_key(t), r.id): r for t in checked_tables() for r in quality_rules(t.name)}
    assert specs.keys() == expected.keys()
    for key, rule in expected.items():
        assert specs[key].blocking == (rule.severity == "error")
        assert specs[key].metadata["slo_target"] == rule.target
    assert {k.path[-1] for k, _ in specs} == {"customer", "product", "purchase", *(t.name for t in PORTS)}


def test_purchase_and_output_ports_carry_the_latency_sla_as_freshness_policy():
    graph = defs.resolve_asset_graph()
    for t in [table("purchase"), *PORTS]:
        policy = graph.get(table_key(t)).freshness_policy
        assert policy.fail_window.to_timedelta() == timedelta(hours=24), t.name


def test_docs_slo_table_is_generated_from_the_contract():
    shown = re.search(r"<!-- slos:start -->\n(.*?)\n<!-- slos:end -->", QUALITY_DOCS.read_text(), re.S).group(1)
    assert shown == declared_markdown(), "regenerate with: python -c 'from product_affinity.quality.report import declared_markdown; print(declared_markdown())'"


def test_repeated_keys_are_counted_exactly_whatever_the_last_key_column_holds():
    """A key's repeats are counted by a bit mask per order when the line number is from 0 to 62 and by the whole key
    otherwise; with quarantined rows repeating accepted keys or each other, the count, the rows to blame and their
    lines are those of a plain count over every row received."""
    conn = duckdb.connect()
    purchase, quarantine = table("purchase"), table("quarantine")
    conn.execute("CREATE SCHEMA source_aligned")
    for t in (purchase, quarantine):
        conn.execute(f"CREATE TABLE {t.physical_name} ({', '.join(f'{c.name} {c.type}' for c in t.columns)})")
    accepted = [(1, 1), (1, 1), (1, 62), (1, 62), (1, 63), (1, 63), (2, -1), (2, -1), (2, 100), (3, 0), (3, None), (None, 4), (4, 7)]
    quarantined = {10: (4, 7), 11: (5, 200), 12: (5, 200), 13: (6, 1), 14: (None, 1)}  # line: key
    conn.executemany(f"INSERT INTO {purchase.physical_name} (order_id, line_number) VALUES (?, ?)", accepted)
    conn.executemany(f"INSERT INTO {quarantine.physical_name} (source, line, reason, record) "
                     "VALUES ('purchase.csv', ?, 'duplicate_key', json_object('order_id', ?, 'line_number', ?))",
                     [(line, *key) for line, key in quarantined.items()])
    received = [key for key in accepted + list(quarantined.values()) if None not in key]
    shared = Counter(received)
    blamed = sorted(line for line, key in quarantined.items() if shared[key] > 1)
    found = measure(conn, purchase, datetime(2026, 1, 1))["uniqueness_key"]
    assert found.rows_checked == len(received) and found.detail["bad_rows"] == len(received) - len(shared) == 6
    assert (found.detail["quarantined"], found.detail["lines"], found.detail["last_line"]) == (len(blamed), blamed, max(blamed))


def test_the_data_docs_draw_each_rule_as_measured_even_one_that_could_not_run(tmp_path):
    """GE validates nothing: each expectation's page shows the measured counts and verdict, or the error that kept the
    rule from running (a page GE fails to draw is only logged, so a missing page would go unnoticed)."""
    t = table("kpi_tree")
    rows = [Row(r, None, False, 0, json.dumps({"errors": ["BinderException: Cannot compare values of type '…'"]}), "")
            if r.id == "accuracy_north_star" else Row(r, 0.0, r.id != "uniqueness_key", 345, json.dumps({"bad_rows": 7}), "rows")
            for r in quality_rules(t.name)]
    index = data_docs.draw(checked_tables(), {t.name: Validation("run-17", now(), rows)}, tmp_path)
    (page,) = (tmp_path / "validations" / t.name).rglob("*.html")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))
    assert "raised an exception: BinderException: Cannot compare values of type" in text
    assert "Unsuccessful Expectations 2" in text and t.physical_name in text and "DuckDB aggregates over every row" in text
    assert "run-17" in text  # the Dagster run whose checks recorded the results
    # every table's suite is drawn, a validation only for the tables with results
    assert all((tmp_path / "expectations" / f"{c.name}.html").exists() for c in checked_tables())
    assert [p.parent.parent.parent.name for p in (tmp_path / "validations").rglob("*.html")] == [t.name]
    assert index == tmp_path / "index.html"


# ---- the checks on real runs -------------------------------------------------------------------


@pytest.mark.slow
def test_a_clean_sample_passes_every_check_and_is_published(clean):
    _, warehouse, result = clean
    assert result.success
    assert failed(result) == {}
    rollups = sum(len(v.rollups) for v in model().views.values())  # each gated by a check that it adds up
    assert len(evaluations(result)) == sum(len(quality_rules(t.name)) for t in checked_tables()) + rollups
    assert "snapshot" in materialized(result)
    accuracy = evaluations(result)[("association_rules", "accuracy_support_count")]
    assert accuracy.metadata["observed"].value == 100 and accuracy.metadata["rows_checked"].value > 0
    docs = warehouse.parent / "quality_docs"  # the Data Docs: every checked table's suite and validation, linked from the index
    index = (docs / "index.html").read_text()
    for t in checked_tables():
        assert f"expectations/{t.name}.html" in index and (docs / "expectations" / f"{t.name}.html").exists(), t.name
        pages = list((docs / "validations" / t.name).rglob("*.html"))
        assert pages and all(p.relative_to(docs).as_posix() in index for p in pages), t.name


@pytest.mark.slow
def test_slo_results_keep_one_row_per_rule_per_run(clean):
    _, warehouse, result = clean
    rows = [r for r in slo_results(warehouse) if r["run_id"] == result.run_id and r["asset"] != "service_level"]
    keys = [(r["asset"], r["rule_id"]) for r in rows]
    assert sorted(keys) == sorted((f"{t.schema}/{t.name}", r.id) for t in checked_tables() for r in quality_rules(t.name))
    fresh = next(r for r in rows if r["rule_id"] == "freshness_purchased_at")
    assert fresh["passed"] and fresh["operator"] == "mustBeLessOrEqualTo" and fresh["target"] == 24 and fresh["unit"] == "hours"
    over = [(r["asset"], r["rule_id"], r["rows_checked"], r["rows_in_table"]) for r in rows
            if r["asset"].startswith("consumer_aligned/") and r["rule_id"] != "schema_column_types"  # that one counts columns
            and not r["rows_checked"] <= r["rows_in_table"]]
    assert not over, f"checked more rows than the table holds: {over}"
    with duckdb.connect(str(warehouse), read_only=True) as conn:  # a source's rules count the rows received
        quarantined = dict(conn.execute("SELECT source, count(*) FROM source_aligned.quarantine GROUP BY source").fetchall())
    for r in (r for r in rows if r["rule_id"] == "quarantine_share_per_reason"):
        t = table(r["asset"].split("/")[1])
        assert r["rows_checked"] == r["rows_in_table"] + quarantined.get(t.source_file, 0) and "received" in r["observed_unit"]


@pytest.mark.slow
def test_warnings_fail_without_blocking_anything(tmp_path):
    """Missing, malformed and shared e-mails and unknown categories are WARN failures: everything is still built and published."""
    sources, warehouse = tmp_path / "sources", tmp_path / "warehouse.duckdb"
    generate_sample(sources, **SMALL, end=now())
    customers = pl.read_csv(sources / "customer_info.csv", infer_schema=False)
    n = len(customers)  # 5% of rows each: missing, malformed, and one shared address
    email = [None if i % 20 == 0 else "not-an-email" if i % 20 == 1 else "shared@example.com" if i % 20 == 2 else e
             for i, e in enumerate(customers["email"])]
    edit_csv(sources / "customer_info.csv", email=email)
    products = pl.read_csv(sources / "product.csv", infer_schema=False)
    edit_csv(sources / "product.csv", category=["Toys" if i % 10 == 0 else c for i, c in enumerate(products["category"])])

    result = run_job(sources, warehouse)
    assert n > 100 and result.success
    assert failed(result) == {
        ("customer", "completeness_email"): "WARN",
        ("customer", "validity_email"): "WARN",
        ("customer", "uniqueness_email"): "WARN",
        ("product", "validity_category"): "WARN",
    }
    assert {"customer_metrics", "association_rules", "snapshot"} <= materialized(result)
    missing = evaluations(result)[("customer", "completeness_email")].metadata
    assert missing["observed"].value == pytest.approx(5, abs=0.5) and missing["slo_target"].value == "<= 1 % missing"
    assert missing["observed_unit"].value.startswith("% of ") and "rows received from customer_info.csv" in missing["observed_unit"].value

    # Published with failing warnings: the report counts each as a JUnit failure, exits 1 and spends its error budget.
    junit, report_json = tmp_path / "slo.xml", tmp_path / "slo.json"
    with redirect_stdout(StringIO()):
        assert main(["slo", "--warehouse", str(warehouse), "--junit", str(junit), "--json", str(report_json)]) == 1
    failures = {(f.get("classname"), f.get("name")) for f in ET.parse(junit).getroot().findall(".//testcase[failure]")}
    assert failures == {(f"source_aligned/{t}", rule) for t, rule in failed(result)}
    slos = {(s["group"], s["id"]): s for s in json.loads(report_json.read_text())["slos"]}
    assert slos[("source_aligned/customer", "validity_email")]["error_budget_left"] < 0


@pytest.mark.slow
def test_stale_purchases_fail_freshness_and_block_every_output(tmp_path):
    sources, warehouse = tmp_path / "sources", tmp_path / "warehouse.duckdb"
    generate_sample(sources, **SMALL, end=now() - timedelta(days=3))
    result = run_job(sources, warehouse)
    assert not result.success
    assert failed(result) == {("purchase", "freshness_purchased_at"): "ERROR"}
    assert materialized(result) == {"customer", "product", "purchase"}  # no output port, nothing published
    (fresh,) = [r for r in slo_results(warehouse) if r["rule_id"] == "freshness_purchased_at"]
    assert not fresh["passed"] and fresh["observed"] > 48


@pytest.mark.slow
def test_a_wrong_type_or_a_figure_that_does_not_reconcile_fails_blocking(clean, tmp_path):
    """Tamper with built output ports, then run their checks again (the job's checks, without rebuilding)."""
    sources, built, _ = clean
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(built.read_bytes())
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("ALTER TABLE consumer_aligned.product_affinity_matrix ALTER baskets_with_both TYPE VARCHAR")
        conn.execute("UPDATE consumer_aligned.customer_metrics SET total_spend = total_spend + 1 WHERE customer_id % 20 = 0")
    ports = [table_key(table("product_affinity_matrix")), table_key(table("customer_metrics"))]
    result = dg.materialize(
        [*source_aligned_assets, *consumer_aligned_assets, *quality_checks],
        selection=dg.AssetSelection.checks_for_assets(*ports),
        resources=resources(sources, warehouse),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success  # a blocking check failed with ERROR
    assert failed(result) == {
        ("product_affinity_matrix", "schema_column_types"): "ERROR",  # its counts, as text, still equal the recount
        ("customer_metrics", "accuracy_total_spend"): "ERROR",
    }
    reconciled = evaluations(result)[("customer_metrics", "accuracy_total_spend")].metadata["observed"].value
    assert reconciled == pytest.approx(95, abs=1)


# ---- the SLO report ----------------------------------------------------------------------------


@pytest.mark.slow
def test_slo_report_prints_and_writes_json_and_junit(clean, tmp_path):
    _, warehouse, result = clean
    out, junit = tmp_path / "slo.json", tmp_path / "slo.xml"
    with redirect_stdout(StringIO()) as printed:
        code = main(["slo", "--warehouse", str(warehouse), "--runs", "5", "--json", str(out), "--junit", str(junit)])
    assert code == 0
    assert "freshness_purchased_at" in printed.getvalue() and "not measured yet" in printed.getvalue()

    report = json.loads(out.read_text())
    assert report["run_ids"][0] == result.run_id
    slos = {(s["group"], s["id"]): s for s in report["slos"]}
    rules = sum(len(quality_rules(t.name)) for t in checked_tables())
    assert len(slos) == rules + len([s for s in service_levels() if s.property != "latency"])
    assert all(s["status"] == "pass" and s["attainment"] == 1 for s in report["slos"] if s["group"].count("/"))
    assert slos[("architecture", "api_latency")]["status"] == "not measured yet"  # no API has served this warehouse
    assert slos[("governance", "lineage_recorded")]["observed"] == 100 == slos[("governance", "pii_classified")]["observed"]
    assert slos[("governance", "pii_masked_on_delivery")]["observed"] == 100
    assert slos[("architecture", "pipeline_run_time")]["status"] == "pass"

    suites = ET.parse(junit).getroot()
    assert suites.tag == "testsuites" and int(suites.get("tests")) == len(slos) and suites.get("failures") == "0"
    cases = suites.findall("testsuite/testcase")
    assert len(cases) == len(slos) and not suites.findall(".//failure")
    assert len(suites.findall(".//skipped")) == 1


@pytest.mark.slow
def test_slo_report_on_a_warehouse_with_no_successful_run_says_so_and_exits_2(tmp_path, capsys):
    """A run that published nothing leaves nothing to report on: a short message and exit 2 (1 means an SLO failed)."""
    sources, warehouse = tmp_path / "sources", tmp_path / "warehouse.duckdb"
    assert main(["slo", "--warehouse", str(warehouse)]) == 2  # no warehouse at all
    generate_sample(sources, **SMALL, end=now() - timedelta(days=3))
    assert not run_job(sources, warehouse).success  # stale: refused, nothing published
    capsys.readouterr()
    assert main(["slo", "--warehouse", str(warehouse)]) == 2
    err = capsys.readouterr().err
    assert "nothing has been published" in err and "Traceback" not in err and len(err.splitlines()) <= 2


@pytest.mark.slow
def test_slo_report_reads_the_snapshot_while_a_running_pipeline_locks_the_warehouse(clean, tmp_path, capsys):
    """The report reads only the published snapshot: a writer's lock on the working warehouse neither stops it nor
    is taken by it."""
    _, warehouse, _ = clean
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(warehouse)!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["slo", "--warehouse", str(warehouse)]) == 0
    finally:
        holder.kill()
        holder.wait()
    assert "0 SLO(s) failed" in capsys.readouterr().out
