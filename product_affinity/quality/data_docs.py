"""The Great Expectations Data Docs of the latest checks, drawn from the exact results.

DuckDB measures every rule (measures.py); Great Expectations draws them. Each table's page shows
its suite (generated from the contract, suites.py) and a validation result built from the very
results that decided the checks: per expectation, the rows judged, the rows that broke it, the
verdict, or the error that kept it from running. GE validates nothing itself, so the Docs and the
gate cannot disagree, and no pandas frame (a sample, for a large table) is loaded.

Great Expectations is imported here, inside the functions, never when the package loads: the
import takes seconds, and Dagster imports the definitions far more often than checks run. One
ephemeral GE context per process (per Data Docs folder) holds every suite and result of the run,
so the Data Docs it writes index all the tables checked in the latest run. Like the results, the
Docs hold counts, never a value: GE keeps no unexpected example because it sees no data.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from product_affinity.contract.odcs import Table, table
from product_affinity.quality.gx_import import great_expectations
from product_affinity.quality.measures import measured_on
from product_affinity.quality.offline_docs import make_offline
from product_affinity.quality.results import Row
from product_affinity.quality.suites import suite

MEASURED_BY = "DuckDB aggregates over every row (product_affinity.quality.measures); Great Expectations only draws the results"


@cache
def _context(docs_dir: str):
    """An ephemeral GE context for the Data Docs in docs_dir, emptied first so they show this process's checks only."""
    gx = great_expectations()

    shutil.rmtree(docs_dir, ignore_errors=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    return context


@cache
def _data_docs(docs_dir: str):
    """The Data Docs site builder, made once per context (per process): it compiles its page templates when
    made, which context.build_data_docs would do again for every table."""
    great_expectations()  # first: the import below would otherwise load GE with pyspark in sight
    from great_expectations.render.renderer.site_builder import SiteBuilder

    return SiteBuilder(
        data_context=_context(docs_dir),
        site_name="local_site",
        show_how_to_buttons=False,
        site_index_builder={"class_name": "DefaultSiteIndexBuilder"},
        store_backend={"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
    )


@cache
def _suite(docs_dir: str, name: str) -> dict:
    """The table's suite, added to the context once (its page is drawn from there)."""
    gx = great_expectations()

    checks = suite(table(name))
    _context(docs_dir).suites.add(gx.ExpectationSuite(**checks))
    return checks


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


def _kwargs(expectation: dict, row: Row, now: datetime) -> dict:
    """The expectation's arguments as they were checked: the freshness bound is the one measured against."""
    kwargs = dict(expectation["kwargs"])
    if row.rule.metric == "freshness":
        kwargs["min_value"] = (now - timedelta(hours=row.rule.threshold)).isoformat(sep=" ")
    return kwargs


def write(t: Table, rows: list[Row], now: datetime, docs_dir: Path) -> None:
    """Store the table's results as a GE validation result and draw its Data Docs pages (and the index).

    `now` is the naive UTC wall clock the checks measured freshness against.
    """
    gx = great_expectations()
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    docs = str(docs_dir.resolve())
    by_rule = {row.rule.id: row for row in rows}
    results = []
    for expectation in _suite(docs, t.name)["expectations"]:
        row = by_rule[expectation["meta"]["rule_id"]]
        result, error = _result(row)
        config = ExpectationConfiguration(type=expectation["type"], kwargs=_kwargs(expectation, row, now), meta=expectation["meta"],
                                          description=expectation["description"], severity=expectation["severity"])
        results.append(ExpectationValidationResult(success=row.passed, expectation_config=config, result=result, exception_info=error or None))
    passed = sum(r.success for r in results)
    run_id, batch_id = RunIdentifier(run_time=datetime.now(UTC)), f"warehouse-{t.name}"
    validated = ExpectationSuiteValidationResult(
        success=passed == len(results), results=results, suite_name=t.name, batch_id=batch_id,
        statistics={"evaluated_expectations": len(results), "successful_expectations": passed,
                    "unsuccessful_expectations": len(results) - passed,
                    "success_percent": 100 * passed / len(results) if results else None},
        meta={"great_expectations_version": gx.__version__, "run_id": run_id, "validation_time": run_id.run_time.isoformat(),
              "active_batch_definition": {"datasource_name": "warehouse", "data_connector_name": "duckdb",
                                          "data_asset_name": t.physical_name, "batch_identifiers": {"rows": measured_on(t)}},
              "batch_spec": {"data_asset_name": t.physical_name, "measured_by": MEASURED_BY}},
    )
    key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=t.name), run_id=run_id,
                                     batch_identifier=batch_id)
    _context(docs).validation_results_store.set(key, validated)
    _data_docs(docs).build(resource_identifiers=[key, key.expectation_suite_identifier])
    make_offline(Path(docs))  # the pages load their scripts and styles from the folder, not from CDNs
