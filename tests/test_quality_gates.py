"""Every blocking rule of the contract can fail: for each, a broken input that makes it fail through the real job.

Source-aligned rules are measured on the rows received (accepted + quarantined), so bad rows that
ingestion quarantines still count against them: broken source files go through the source-aligned
assets and their checks (a job subset). Output-port rules are broken by tampering with the built
tables, then running their checks. One full-job case shows a bad batch is refused: nothing is
published, the old snapshot is untouched, and the failure names the rule, the rows and the lines.
"""

import hashlib
import json
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from product_affinity.cli import main
from product_affinity.defs.consumer_aligned import consumer_aligned_assets
from product_affinity.contract.odcs import checked_tables, quality_rules, table
from product_affinity.definitions import build_definitions
from product_affinity.defs.partitions import range_tags
from product_affinity.partitions import all_days
from product_affinity.publication import published_snapshot
from product_affinity.quality import report
from product_affinity.defs.metadata import table_key
from product_affinity.defs.quality_checks import quality_checks
from product_affinity.defs.resources import resources
from product_affinity.defs.source_aligned import SOURCES, source_aligned_assets
from product_affinity.sources.sample import generate_sample

# Five months of history, not two years: each day is a partition every whole run records; the backtests hold out 90.
SMALL = dict(customers=300, products=60, orders=1_500, defects=False, history_days=150)
SOURCE_TABLES = [table(name) for name in SOURCES]
PORTS = [t for t in checked_tables() if t.layer == "consumer_aligned"]


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def blocking(t) -> set[str]:
    return {r.id for r in quality_rules(t.name) if r.blocking}


def failed(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations() if not e.passed}


def blank(frame: pl.DataFrame, column: str, rows: pl.Series, value: str | None = None) -> pl.DataFrame:
    return frame.with_columns(pl.when(rows).then(pl.lit(value, dtype=pl.String)).otherwise(pl.col(column)).alias(column))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Fresh sources without planted defects, run once through the whole job (published)."""
    root = tmp_path_factory.mktemp("gates")
    generate_sample(root / "sources", **SMALL, end=now())
    warehouse = root / "warehouse.duckdb"
    result = build_definitions(root / "sources", warehouse).resolve_job_def("product_affinity").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, tags=range_tags(all_days(root / "sources", warehouse)))
    assert result.success and not failed(result)
    return root / "sources", warehouse


def break_sources(clean_sources: Path, broken: Path, names: tuple[str, ...]) -> dict[tuple[str, str], list[int]]:
    """Copy the sources with every blocking rule of the tables `names` broken on its own rows; returns the file
    lines planted per rule.

    Lines: the header is line 1, so row i of a frame is line i + 2; repeats appended at the end.
    """
    shutil.copytree(clean_sources, broken)
    planted: dict[tuple[str, str], list[int]] = {}

    def rewrite(name: str, edits: list[tuple[str, str, list[int], str | None]], repeat: list[int]) -> None:
        if name not in names:
            return
        t = table(name)
        path = broken / t.source_file
        frame = pl.read_csv(path, infer_schema=False)
        index = pl.Series(range(len(frame)))
        for rule_id, column, rows, value in edits:
            frame = blank(frame, column, index.is_in(rows), value)
            planted[(name, rule_id)] = [i + 2 for i in rows]
        frame = pl.concat([frame, frame[repeat]])  # exact repeats of clean rows: duplicate keys
        planted[(name, "uniqueness_key")] = [len(frame) - len(repeat) + 2 + i for i in range(len(repeat))]
        frame.write_csv(path)

    # purchase (about 12,000 lines): each blocking rule on its own 2-8% of the lines, in buckets of i % 50
    lines = len(pl.read_csv(clean_sources / "purchase.csv", infer_schema=False))
    bucket = lambda *b: [i for i in range(lines) if i % 50 in b]  # noqa: E731
    required = ["order_id", "line_number", "customer_id", "product_id", "quantity", "unit_price", "purchased_at"]
    rewrite("purchase", [(f"completeness_{c}", c, bucket(k), None) for k, c in enumerate(required)]
            + [("validity_quantity", "quantity", bucket(10, 11, 12, 13), "-1"),
               ("validity_unit_price", "unit_price", bucket(14, 15, 16, 17), "-2.50")],
            repeat=bucket(20, 21))
    # customer (300 lines): 3% without a key, 3% repeated
    rewrite("customer", [("completeness_customer_id", "customer_id", list(range(0, 300, 33)), None)], repeat=list(range(5, 300, 33)))
    # product (60 lines): one product per required column without its value, 4 with a negative price, 2 repeated
    rewrite("product", [(f"completeness_{c}", c, [k], None) for k, c in enumerate(["product_id", "product_name", "category", "list_price"])]
            + [("validity_list_price", "list_price", [10, 11, 12, 13], "-1.00")], repeat=[20, 21])
    return planted


@pytest.mark.slow
def test_every_blocking_source_rule_fails_on_the_rows_received(tmp_path):
    """Customer and product broken in one run; purchase, which is built from them, broken in a second."""
    stale = tmp_path / "stale"  # three days old: freshness fails too
    generate_sample(stale, **SMALL, end=now() - timedelta(days=3))
    checks = [c for c in quality_checks if any(k.asset_key in {table_key(t) for t in SOURCE_TABLES} for k in c.check_keys)]
    planted, found = {}, {}
    for names in (("customer", "product"), ("purchase",)):
        broken = tmp_path / "_".join(names)
        planted |= break_sources(stale, broken, names)
        result = dg.materialize([*source_aligned_assets, *checks], resources=resources(broken, tmp_path / f"{broken.name}.duckdb"),
                                instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                tags=range_tags(all_days(broken, tmp_path / f"{broken.name}.duckdb")))
        found |= failed(result)
    expected = {(t.name, rule) for t in SOURCE_TABLES for rule in blocking(t)}
    assert expected == set(planted) | {("purchase", "freshness_purchased_at")}  # a new blocking rule needs its break here
    assert expected <= set(found), sorted(expected - set(found))
    for (name, rule_id), lines in planted.items():
        facts = found[(name, rule_id)].metadata
        assert facts["bad_rows"].value == len(lines), (name, rule_id)
        assert facts["where"].value.startswith(f"{table(name).source_file} lines {min(lines)}-{max(lines)}"), (name, rule_id)
        assert found[(name, rule_id)].severity == dg.AssetCheckSeverity.ERROR
    assert found[("purchase", "freshness_purchased_at")].metadata["observed"].value > 48
    assert "hours" in found[("purchase", "freshness_purchased_at")].metadata["observed_unit"].value


def _tamper(conn: duckdb.DuckDBPyConnection, t) -> None:
    """Break every blocking rule of one built output port, each the way a wrong build would."""
    name, rules = t.physical_name, [r for r in quality_rules(t.name) if r.blocking]
    rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    for r in (r for r in rules if r.metric == "custom"):  # a reconciled figure that no longer reconciles
        c = r.implementation["kwargs"]["column_A"]
        conn.execute(f"UPDATE {name} SET {c} = {c} + 1")
    for r in (r for r in rules if r.metric == "invalidValues"):
        c, args = r.columns[0], r.arguments
        bad = ("'bogus'" if "validValues" in args else
               f"{args.get('minimum', args.get('exclusiveMinimum'))} - 1" if {"minimum", "exclusiveMinimum"} & args.keys()
               else f"{args.get('maximum', args.get('exclusiveMaximum'))} + 1")
        conn.execute(f"""UPDATE {name} SET {c} = {bad} WHERE rowid IN (
            SELECT rowid FROM {name} WHERE {c} IS NOT NULL ORDER BY rowid LIMIT {max(2, rows // 10)})""")
    for r in (r for r in rules if r.metric == "duplicateValues"):  # the first row, as the breaks above left it, twice
        conn.execute(f"INSERT INTO {name} SELECT * FROM {name} WHERE rowid = (SELECT min(rowid) FROM {name})")
    for i, r in enumerate(r for r in rules if r.metric == "nullValues"):  # any row but the first
        conn.execute(f"UPDATE {name} SET {r.columns[0]} = NULL WHERE rowid = (SELECT min(rowid) + 1 + {i % (rows - 1)} FROM {name})")
    swap = {"DOUBLE": "FLOAT", "BIGINT": "HUGEINT", "INTEGER": "BIGINT"}  # DECIMAL -> DOUBLE: pandas shows them alike
    ruled = {c for r in quality_rules(t.name) if r.metric not in ("nullValues", "columnTypes") for c in r.columns}
    decimals_first = sorted(t.columns, key=lambda c: not c.type.startswith("DECIMAL"))
    column = next(c for c in decimals_first if c.name not in ruled and not c.primary_key and (c.type in swap or c.type.startswith("DECIMAL")))
    conn.execute(f"ALTER TABLE {name} ALTER {column.name} TYPE {swap.get(column.type, 'DOUBLE')}")


@pytest.mark.slow
def test_every_blocking_output_port_rule_fails_on_a_wrong_build(clean, tmp_path):
    sources, built = clean
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(built.read_bytes())
    with duckdb.connect(str(warehouse)) as conn:
        for t in PORTS:
            _tamper(conn, t)
    result = dg.materialize(
        [*source_aligned_assets, *consumer_aligned_assets, *quality_checks],
        selection=dg.AssetSelection.checks_for_assets(*(table_key(t) for t in PORTS)),
        resources=resources(sources, warehouse), instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )
    found = failed(result)
    expected = {(t.name, rule) for t in PORTS for rule in blocking(t)}
    assert expected <= set(found), sorted(expected - set(found))
    wrong = json.loads(json.dumps(found[("customer_metrics", "schema_column_types")].metadata["detail"].value))["wrong_types"]
    assert wrong == {"average_order_value": {"declared": "DECIMAL(18,2)", "actual": "DOUBLE"}}  # alike in pandas
    with duckdb.connect(str(warehouse), read_only=True) as conn:  # a check-only run is no pipeline run
        flags = conn.execute("SELECT DISTINCT pipeline_run FROM quality.slo_results WHERE run_id = ?", [result.run_id]).fetchall()
    assert flags == [(False,)]
    assert result.run_id not in report.build(warehouse, 10).run_ids  # nor counts in SLO attainment


@pytest.mark.slow
def test_the_page_and_the_report_only_read(clean):
    """The page is built from the snapshot and the running job's graph: no empty audit folder beside the snapshots,
    and the governance SLOs it shows were measured by the pipeline before publishing."""
    _, warehouse = clean
    assert not (warehouse.parent / "published" / "governance").exists()
    built = report.build(warehouse, 5, read_from=published_snapshot(warehouse))
    governance = {s.id: s for s in built.slos if s.group == "governance"}
    assert {s.status for s in governance.values()} == {"pass"} and all(s.runs == 1 for s in governance.values())


@pytest.mark.slow
def test_a_bad_batch_blocks_publication_and_says_which_rule_how_many_rows_and_where(clean, tmp_path):
    sources, warehouse = clean
    broken = tmp_path / "sources"
    shutil.copytree(sources, broken)
    frame = pl.read_csv(broken / "purchase.csv", infer_schema=False)
    negative = pl.Series(range(len(frame))) % 10 == 3  # 10% of the lines: quarantined one by one, too many to publish
    blank(frame, "quantity", negative, "-4").write_csv(broken / "purchase.csv")
    before = published_snapshot(warehouse)
    digest = hashlib.sha256(before.read_bytes()).hexdigest()
    err = StringIO()
    with redirect_stdout(StringIO()), redirect_stderr(err):
        code = main(["run", "--sources", str(broken), "--warehouse", str(warehouse)])
    lines = [i + 2 for i, bad in enumerate(negative) if bad]
    assert code == 1
    report = err.getvalue()
    assert "FAILED check source_aligned/purchase:validity_quantity (ERROR, blocking)" in report
    assert f"bad_rows={len(lines)}" in report and f"where=purchase.csv lines {lines[0]}-{lines[-1]}, first {lines[0]}, {lines[1]}" in report
    assert "consumers still read" in report
    assert published_snapshot(warehouse) == before and hashlib.sha256(before.read_bytes()).hexdigest() == digest
    # the run stopped before its Data Docs step, so the command drew them: they show the failure that stopped it
    assert f"Data Docs of the checks recorded: {warehouse.parent / 'quality_docs' / 'index.html'}" in report
    (page,) = (warehouse.parent / "quality_docs" / "validations" / "purchase").rglob("*.html")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))
    assert f"validity_quantity (validity, {len(lines)} unexpected values found" in text


def test_each_check_says_what_valid_means_and_what_rows_it_is_measured_on():
    specs = {(spec.asset_key.path[-1], spec.name): spec for c in quality_checks for spec in c.check_specs}
    quantity = specs[("purchase", "validity_quantity")].description
    assert "Valid: quantity is a number above 0" in quantity and "rows received from purchase.csv (accepted + quarantined)" in quantity
    assert "one of Wines, Meats" in specs[("product", "validity_category")].description
    assert "Missing: customer_id is empty" in specs[("purchase", "completeness_customer_id")].description
    for t in checked_tables():
        for rule in quality_rules(t.name):
            assert "SLO: " in specs[(t.name, rule.id)].description and "measured on rows" in specs[(t.name, rule.id)].description
            if rule.metric == "invalidValues":
                assert "Valid: " in specs[(t.name, rule.id)].description, (t.name, rule.id)
