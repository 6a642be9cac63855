"""Running a table's suite with Great Expectations, and reading the result back rule by rule.

Great Expectations is imported here, inside the functions, never when the package loads: the
import takes seconds, and Dagster imports the definitions far more often than checks run. One
ephemeral GE context per process (per Data Docs folder) holds every suite and validation of the
run, so the Data Docs it writes index all the tables validated in the latest run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from product_affinity.contract.odcs import Rule, Table, quality_rules, table
from product_affinity.quality.frames import Frame
from product_affinity.quality.offline_docs import make_offline
from product_affinity.quality.measures import measured_here
from product_affinity.quality.results import redact
from product_affinity.quality.suites import freshness_parameter, suite


@dataclass(frozen=True)
class Outcome:
    """How one rule fared: passed, the observed value in the rule's unit, and how many values were checked."""

    passed: bool
    observed: float | None
    rows_checked: int
    details: dict[str, Any]


@cache
def _context(docs_dir: str):
    """An ephemeral GE context for the Data Docs in docs_dir, emptied first so they show this process's validations only."""
    import great_expectations as gx

    shutil.rmtree(docs_dir, ignore_errors=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    context.data_sources.add_pandas(name="warehouse")
    return context


@cache
def _data_docs(docs_dir: str):
    """The Data Docs site builder, made once per context (per process): it compiles its page templates when
    made, which context.build_data_docs would do again for every table validated."""
    from great_expectations.render.renderer.site_builder import SiteBuilder

    return SiteBuilder(
        data_context=_context(docs_dir),
        site_name="local_site",
        show_how_to_buttons=False,
        site_index_builder={"class_name": "DefaultSiteIndexBuilder"},
        store_backend={"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
    )


@cache
def _validation_definition(docs_dir: str, name: str):
    """The table's suite bound to an in-memory frame, made once per context."""
    import great_expectations as gx

    context = _context(docs_dir)
    batch = context.data_sources.get("warehouse").add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("checked rows")
    checks = context.suites.add(gx.ExpectationSuite(**suite(table(name))))
    return context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=checks))


def validate(t: Table, frame: Frame, now: datetime, docs_dir: Path) -> dict[str, Outcome]:
    """Validate the frame against the table's suite in one GE run, write its Data Docs page, and return the outcome
    of each rule GE decides (the custom expectations; measures.py measures the others exactly).

    `now` is the naive UTC wall clock the freshness expectation measures against. GE keeps no
    example of an unexpected value (partial_unexpected_count 0), in its results or its Data Docs:
    examples would carry values a policy masks or hides.
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    docs = str(docs_dir.resolve())
    rules = quality_rules(t.name)
    parameters = {freshness_parameter(r): now - timedelta(hours=r.threshold) for r in rules if r.metric == "freshness"}
    result = _validation_definition(docs, t.name).run(
        batch_parameters={"dataframe": frame.rows}, expectation_parameters=parameters,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 0},
    )
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=t.name), run_id=result.meta["run_id"], batch_identifier=result.batch_id
    )
    _context(docs).validation_results_store.set(key, result)
    _data_docs(docs).build(resource_identifiers=[key, key.expectation_suite_identifier])
    make_offline(Path(docs))  # the pages load their scripts and styles from the folder, not from CDNs
    by_rule: dict[str, list] = {}
    for r in result.results:  # not in suite order
        by_rule.setdefault(r.expectation_config.meta["rule_id"], []).append(r)
    return {rule.id: _outcome(rule, by_rule[rule.id]) for rule in rules if not measured_here(rule)}


def _error(r) -> str | None:
    """GE's exception message, from either of the two shapes exception_info takes."""
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return info.get("exception_message")
    for value in info.values():
        if getattr(value, "raised_exception", False):
            return value.exception_message
    return None


def _outcome(rule: Rule, results: list) -> Outcome:
    """A custom rule's outcome: the percent of the values checked that meet the expectation, and how many were checked."""
    (r,) = results
    if errors := [redact(e) for e in [_error(r)] if e]:
        return Outcome(False, None, 0, {"errors": errors})
    stats = r.result
    checked = stats.get("element_count", 0) - (stats.get("missing_count") or 0)
    bad_percent = stats.get("unexpected_percent")
    observed = None if bad_percent is None else 100 - bad_percent
    return Outcome(r.success, observed, checked, {"unexpected_count": stats.get("unexpected_count")})
