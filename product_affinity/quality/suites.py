"""The Great Expectations suites, one per checked table, generated from the contract's quality rules.

expectations/<table>.json is what this module writes (`product-affinity expectations`); a test
fails when those files and the contract disagree. The suites state each rule as GE reads it: the
Data Docs draw them with the exact results DuckDB measured (measures.py, data_docs.py), so the
contract stays the one place where rules are written.

Some expectations name a column the table does not have, which the measurement computes: how many
rows share a row's key (uniqueness), and a figure recomputed from the source lines (accuracy,
reconciliation.py). Freshness compares against a bound known only when the checks run, the
expectation parameter `<rule id>_not_before`.
"""

from __future__ import annotations

import json
from pathlib import Path

from product_affinity.contract.odcs import Rule, Table, contract, quality_rules
from product_affinity.defaults import PROJECT_ROOT
from product_affinity.quality.gx_import import great_expectations

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"

SEVERITIES = {"error": "critical", "warning": "warning"}
# Rules with no GE expectation: DuckDB checks the declared types exactly (pandas shows DECIMAL and
# DOUBLE alike), and the quarantine share is a count over the quarantine table (measures.py).
NOT_IN_SUITES = ("columnTypes", "quarantineShare")


def rows_sharing(columns: tuple[str, ...]) -> str:
    """Name of the added column counting the rows of the whole table that share a row's values in `columns`."""
    return "rows_sharing_" + "_".join(columns)


def freshness_parameter(rule: Rule) -> str:
    return f"{rule.id}_not_before"


def _mostly(rule: Rule) -> dict:
    """GE's `mostly` (the share of values that must pass) from the rule's operator and threshold."""
    share = rule.threshold / 100 if rule.unit == "percent" else 0
    passing = share if rule.metric == "custom" else 1 - share
    return {} if passing >= 1 else {"mostly": round(passing, 6)}


def _expectations(rule: Rule) -> list[tuple[str, dict, str]]:
    """(expectation type, kwargs, what it checks) for each expectation that, together, decide one rule."""
    column = rule.columns[0] if rule.columns else None
    return [(kind, kwargs, rule.description) for kind, kwargs in _rule_expectation(rule, column)]


def _rule_expectation(rule: Rule, column: str | None) -> list[tuple[str, dict]]:
    if rule.metric == "nullValues":
        return [("expect_column_values_to_not_be_null", {"column": column, **_mostly(rule)})]
    if rule.metric == "duplicateValues":
        return [("expect_column_values_to_be_between", {"column": rows_sharing(rule.columns), "max_value": 1, **_mostly(rule)})]
    if rule.metric == "invalidValues":
        args = rule.arguments
        if "validValues" in args:
            return [("expect_column_values_to_be_in_set", {"column": column, "value_set": args["validValues"], **_mostly(rule)})]
        if "pattern" in args:
            return [("expect_column_values_to_match_regex", {"column": column, "regex": args["pattern"], **_mostly(rule)})]
        bounds = {
            "min_value": args.get("minimum", args.get("exclusiveMinimum")),
            "max_value": args.get("maximum", args.get("exclusiveMaximum")),
            "strict_min": "exclusiveMinimum" in args,
            "strict_max": "exclusiveMaximum" in args,
        }
        return [("expect_column_values_to_be_between", {"column": column, **bounds, **_mostly(rule)})]
    if rule.metric == "freshness":
        return [(rule.implementation["type"], {"column": column, "min_value": {"$PARAMETER": freshness_parameter(rule)}})]
    return [(rule.implementation["type"], {**rule.implementation.get("kwargs", {}), **_mostly(rule)})]


def suite(t: Table) -> dict:
    """The suite of one table as GE's JSON (what ExpectationSuite.to_json_dict() gives), in rule order."""
    gx = great_expectations()

    expectations = [
        {
            "type": kind,
            "kwargs": kwargs,
            "severity": SEVERITIES[rule.severity],
            "description": f"{rule.id} ({rule.dimension}, {rule.target}): {about}",
            "meta": {"rule_id": rule.id, "dimension": rule.dimension, "target": rule.target},
        }
        for rule in quality_rules(t.name)
        if rule.metric not in NOT_IN_SUITES
        for kind, kwargs, about in _expectations(rule)
    ]
    meta = {"table": t.physical_name, "contract": contract()["id"], "contract_version": contract()["version"],
            "generated_by": "product-affinity expectations"}
    # Building the GE object validates every expectation's arguments before anything is written.
    return gx.ExpectationSuite(name=t.name, expectations=expectations, meta=meta).to_json_dict()


def suite_json(t: Table) -> str:
    return json.dumps(suite(t), indent=2, sort_keys=True) + "\n"


def write_suites(directory: Path, tables: list[Table]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tables:
        path = directory / f"{t.name}.json"
        path.write_text(suite_json(t), encoding="utf-8")
        written.append(path)
    return written
