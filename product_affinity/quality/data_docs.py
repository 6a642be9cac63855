"""The Great Expectations Data Docs of the latest checks, drawn from the exact results.

DuckDB measures every rule (measures.py); Great Expectations draws them. Each table's page shows
its suite (generated from the contract, suites.py) and a validation result built from the very
results that decided the checks: per expectation, the rows judged, the rows that broke it, the
verdict, or the error that kept it from running. GE validates nothing itself, so the Docs and the
gate cannot disagree, and no pandas frame (a sample, for a large table) is loaded.

The Docs are drawn once, after the checks, by their own step (the quality/data_docs asset), from the
results the checks recorded in quality.slo_results (results.latest): each table's latest run. A
check step never imports GE: the import takes 4-5 s, and drawing the pages a quarter of a second a
table, which the audit would otherwise pay in every check step. Great Expectations is imported here,
inside the functions, never when the package loads: Dagster imports the definitions far more often
than the Docs are drawn. Like the results, the Docs hold counts, never a value: GE keeps no
unexpected example because it sees no data.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from product_affinity.contract.odcs import Table, checked_tables
from product_affinity.quality.gx_import import great_expectations
from product_affinity.quality.measures import measured_on
from product_affinity.quality.offline_docs import make_offline
from product_affinity.quality.results import Row, Validation, latest
from product_affinity.quality.suites import suite

FOLDER = "quality_docs"  # next to the warehouse
MEASURED_BY = "DuckDB aggregates over every row (product_affinity.quality.measures); Great Expectations only draws the results"


def _site(docs_dir: str):
    """A fresh ephemeral GE context and its Data Docs site builder, the folder emptied first: the Docs show what
    one drawing puts in them. The builder compiles its page templates when made, so it is made once a drawing."""
    gx = great_expectations()
    from great_expectations.render.renderer.site_builder import SiteBuilder

    shutil.rmtree(docs_dir, ignore_errors=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    return context, SiteBuilder(
        data_context=context,
        site_name="local_site",
        show_how_to_buttons=False,
        site_index_builder={"class_name": "DefaultSiteIndexBuilder"},
        store_backend={"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
    )


def _result(row: Row) -> tuple[dict, dict]:
    """(GE's result, GE's exception_info) of one expectation, from the rule's exact result."""
    found = json.loads(row.detail)
    if found.get("errors"):
        message = "; ".join(found["errors"])  # redacted when stored; the trace is not kept, so the page shows the message
        return {}, {"raised_exception": True, "exception_message": message, "exception_traceback": message}
    if row.rule.metric == "freshness":
        return {"observed_value": found.get("newest")}, {}
    bad = found.get("bad_rows", 0)
    return {"element_count": row.rows_checked, "unexpected_count": bad, "partial_unexpected_list": [],
            "unexpected_percent": 100 * bad / row.rows_checked if row.rows_checked else 0.0}, {}


def _kwargs(expectation: dict, row: Row) -> dict:
    """The expectation's arguments as they were checked: the freshness bound is the one measured against (the naive
    UTC wall clock the check recorded, less the rule's threshold)."""
    kwargs = dict(expectation["kwargs"])
    measured_at = json.loads(row.detail).get("measured_at")
    if row.rule.metric == "freshness" and measured_at:
        kwargs["min_value"] = (datetime.fromisoformat(measured_at) - timedelta(hours=row.rule.threshold)).isoformat(sep=" ")
    return kwargs


def _validation(gx, t: Table, checks: dict, found: Validation):
    """The table's recorded results as a GE validation result of its suite, and the key GE stores it under."""
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    by_rule = {row.rule.id: row for row in found.rows}
    results = []
    for expectation in checks["expectations"]:
        if (row := by_rule.get(expectation["meta"]["rule_id"])) is None:
            continue  # a run that checked some of the table's rules (one picked in the UI) validated only those
        result, error = _result(row)
        config = ExpectationConfiguration(type=expectation["type"], kwargs=_kwargs(expectation, row), meta=expectation["meta"],
                                          description=expectation["description"], severity=expectation["severity"])
        results.append(ExpectationValidationResult(success=row.passed, expectation_config=config, result=result, exception_info=error or None))
    passed = sum(r.success for r in results)
    run_id, batch_id = RunIdentifier(run_name=found.run_id, run_time=found.checked_at.replace(tzinfo=UTC)), f"warehouse-{t.name}"
    validated = ExpectationSuiteValidationResult(
        success=passed == len(results), results=results, suite_name=t.name, batch_id=batch_id,
        statistics={"evaluated_expectations": len(results), "successful_expectations": passed,
                    "unsuccessful_expectations": len(results) - passed,
                    "success_percent": 100 * passed / len(results) if results else None},
        meta={"great_expectations_version": gx.__version__, "run_id": run_id, "validation_time": run_id.run_time.isoformat(),
              "active_batch_definition": {"datasource_name": "warehouse", "data_connector_name": "duckdb",
                                          "data_asset_name": t.physical_name, "batch_identifiers": {"rows": measured_on(t)}},
              "batch_spec": {"data_asset_name": t.physical_name, "measured_by": MEASURED_BY, "dagster_run": found.run_id}},
    )
    key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=t.name), run_id=run_id,
                                     batch_identifier=batch_id)
    return key, validated


def draw(tables: list[Table], validations: dict[str, Validation], docs_dir: Path) -> Path:
    """Draw the Data Docs in docs_dir, emptied first: every table's suite, and for each table in `validations` (by
    name: results.latest) its recorded results as the suite's validation. Returns the index page.

    One drawing for all the tables: GE is imported, and its site builder made, once."""
    gx = great_expectations()

    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    docs = str(docs_dir.resolve())
    context, site = _site(docs)
    drawn = []
    for t in tables:
        checks = suite(t)
        context.suites.add(gx.ExpectationSuite(**checks))
        drawn.append(ExpectationSuiteIdentifier(name=t.name))
        if t.name in validations:
            key, validated = _validation(gx, t, checks, validations[t.name])
            context.validation_results_store.set(key, validated)
            drawn.append(key)
    site.build(resource_identifiers=drawn)
    make_offline(Path(docs))  # the pages load their scripts and styles from the folder, not from CDNs
    return Path(docs) / "index.html"


def folder(warehouse: Path) -> Path:
    """Where the Data Docs of a warehouse are: next to it."""
    return Path(warehouse).parent / FOLDER


def redraw(warehouse: Path) -> Path:
    """Draw the Data Docs of the warehouse from the latest results it recorded, outside a run: after a run a blocking
    check stopped before its Data Docs step, whose failures are what the Docs are most wanted for."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        found = latest(conn, checked_tables())
    return draw(checked_tables(), found, folder(warehouse))
