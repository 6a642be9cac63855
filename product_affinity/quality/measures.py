"""Exact measurement of every rule of the contract with DuckDB aggregates: completeness, validity, uniqueness,
declared types, freshness, the quarantine share and the reconciliations (accuracy).

Why not Great Expectations on a pandas frame: a frame of a large table is a sample, pandas shows
DECIMAL and DOUBLE alike, and on a source-aligned table GE sees only the rows ingestion accepted,
so "at most 1 % missing customer_id" could never fail (those rows were quarantined before the
check). Here each rule is one aggregate over the whole table, and on a source-aligned table over
the rows received: the accepted rows plus the rows quarantined from the same source file.

A quarantined row that was parsed keeps its values as JSON (`record`), so every rule is judged on
it as on an accepted row. A line that could not be parsed (malformed_row, bad_type,
invalid_encoding) has no values: it counts as invalid for the column it is blamed on and in the
rows received, and is judged on nothing else.

A reconciliation compares a published figure with the same figure recomputed from the accepted
purchase lines (reconciliation.py) on every row of the table: no sample, whatever its size.

Results carry counts and the source lines of the rows to blame, never a value: values of a column
a policy masks or hides must not leave through the SLO results (docs/quality.md). A row of an
output port that does not reconcile is named by its key (a rule id, a pair of categories, a month,
a customer id), never by a column the contract classifies as personal data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from product_affinity.contract.odcs import INTEGER_TYPES, Rule, Table, quality_rules, table
from product_affinity.quality.reconciliation import recomputation, recomputed_from
from product_affinity.sql import line_number_mask

UNPARSED = ("malformed_row", "bad_type", "invalid_encoding")  # quarantined lines whose values are unknown
LINES_SHOWN = 10
RANGE_WORDS = {"minimum": (">=", "at least"), "exclusiveMinimum": (">", "above"), "maximum": ("<=", "at most"),
               "exclusiveMaximum": ("<", "below")}  # fmt: skip


@dataclass(frozen=True)
class Measurement:
    """How one rule fared, measured exactly: `observed` is in the rule's unit, `unit` says of what."""

    observed: float | None
    passed: bool
    rows_checked: int
    unit: str
    detail: dict[str, Any] = field(default_factory=dict)


def reconciled(rule: Rule) -> bool:
    """A custom rule is a reconciliation (the contract loader refuses any other), measured on its own by reconcile()."""
    return rule.metric == "custom"


def on_received_rows(t: Table) -> bool:
    return t.source_file is not None


def _range(rule: Rule) -> list[tuple[str, str, Any]]:
    return [(sql, words, rule.arguments[key]) for key, (sql, words) in RANGE_WORDS.items() if key in rule.arguments]


def meaning(rule: Rule) -> str:
    """What the rule counts, in words: what 'valid', 'missing' or 'duplicated' means for it."""
    column = rule.columns[0] if rule.columns else ""
    if rule.metric == "nullValues":
        return f"Missing: {column} is empty or absent."
    if rule.metric == "invalidValues":
        args = rule.arguments
        if "validValues" in args:
            return f"Valid: {column} is one of {', '.join(map(str, args['validValues']))}; an empty value is not judged."
        if "pattern" in args:
            return f"Valid: {column} matches the pattern {args['pattern']}; an empty value is not judged."
        bounds = " and ".join(f"{words} {value}" for _, words, value in _range(rule))
        return f"Valid: {column} is a number {bounds}; a value that is not a number counts as invalid, an empty one is not judged."
    if rule.metric == "duplicateValues":
        return (f"Duplicated: a row repeating the ({', '.join(rule.columns)}) of another row (each repeat counts, the first "
                "does not); rows with an empty value are not judged.")
    if rule.metric == "columnTypes":
        return "Each column's DuckDB type (information_schema) equals the contract's physicalType, DECIMAL precision and scale included."
    if rule.metric == "freshness":
        return f"Age, in hours, of the newest accepted {column} against the wall clock when the check runs."
    if rule.metric == "quarantineShare":
        return "The share of the rows received that were quarantined, for the reason with the most rows."
    if reconciled(rule):
        stored, recomputed = _compared(rule)
        missing = ("a row where either is empty is not judged" if rule.implementation["kwargs"].get("ignore_row_if") == "either_value_is_missing"
                   else "a row where only one is empty does not reconcile")
        return (f"Reconciles: {stored} equals {recomputed}, recomputed from {recomputed_from(recomputed)}, on every row "
                f"(no sample); {missing}.")
    return ""


def measured_on(t: Table) -> str:
    """The rows a table's rules are measured on (a non-key uniqueness rule says its own, see _duplicates)."""
    if on_received_rows(t):
        return f"rows received from {t.source_file} (accepted + quarantined)"
    return f"rows of {t.physical_name}"


def rule_measured_on(t: Table, rule: Rule) -> str:
    """The rows one rule is measured on, as its check description says."""
    accepted = rule.metric in ("freshness", "columnTypes") or (rule.metric == "duplicateValues" and list(rule.columns) != t.primary_key)
    return f"rows of {t.physical_name}" if accepted or not on_received_rows(t) else measured_on(t)


def _quarantined_sql(t: Table) -> str:
    """The parsed rows quarantined from the table's source file, with their line (`_line`); each record's JSON is
    parsed once for all its columns."""
    paths = ", ".join(f"'$.{c.name}'" for c in t.columns)
    parsed = ", ".join(f"TRY_CAST(v[{i}] AS {c.type}) AS {c.name}" for i, c in enumerate(t.columns, start=1))
    unparsed = ", ".join(f"'{reason}'" for reason in UNPARSED)
    return f"""(SELECT {parsed}, _line FROM (SELECT json_extract_string(record, [{paths}]) AS v, line AS _line
        FROM {table('quarantine').physical_name} WHERE source = $source AND reason NOT IN ({unparsed})))"""


def _condition(rule: Rule, params: dict[str, Any]) -> str:
    """SQL true when a row breaks a null or validity rule; constants bound as named parameters."""
    column = rule.columns[0]
    if rule.metric == "nullValues":
        return f"{column} IS NULL"
    args, name = rule.arguments, f"p_{rule.id}"
    if "validValues" in args:
        params[name] = list(args["validValues"])
        return f"{column} IS NOT NULL AND NOT list_contains(${name}, {column}::VARCHAR)"
    if "pattern" in args:
        params[name] = args["pattern"]
        return f"{column} IS NOT NULL AND NOT regexp_full_match({column}::VARCHAR, ${name})"
    bounds = []
    for i, (sql, _, value) in enumerate(_range(rule)):
        params[f"{name}_{i}"] = value
        bounds.append(f"{column} {sql} ${name}_{i}")
    return f"{column} IS NOT NULL AND NOT ({' AND '.join(bounds)})"


def _where(t: Table, bad: int, lines: list[int] | None, first: int | None, last: int | None, quarantined: int) -> dict[str, Any]:
    """Where the rows to blame are: the source file's lines of those quarantined, and how many were accepted."""
    where: dict[str, Any] = {"bad_rows": bad}
    if on_received_rows(t):
        where |= {"file": t.source_file, "quarantined": quarantined, "accepted": bad - quarantined}
        if quarantined:
            where |= {"lines": sorted(lines or [])[:LINES_SHOWN], "first_line": first, "last_line": last}
    return where


def _compare(rule: Rule, observed: float | None) -> bool:
    if observed is None:
        return False
    if rule.operator == "mustBe":
        return observed == rule.threshold
    if rule.operator == "mustBeLessOrEqualTo":
        return observed <= rule.threshold
    return observed >= rule.threshold


def _share(rule: Rule, t: Table, bad: int, checked: int, where: dict, what: str) -> Measurement:
    if rule.unit == "rows":
        observed, unit = float(bad), f"rows of {checked:,} {what}"
    else:
        observed, unit = (100 * bad / checked if checked else 0.0), f"% of {checked:,} {what}"
    return Measurement(observed, _compare(rule, observed), checked, unit, where)


def _counted(rule: Rule, broken: str) -> str:
    """Aggregates counting the rows that break a null or validity rule and the rows it judges. count(column) comes
    from DuckDB's statistics where count(*) FILTER (column IS NULL) scans: 0.02 s against 2 s on 33M lines."""
    column = rule.columns[0]
    if rule.metric == "nullValues":
        return f"count(*) - count({column}), count(*)"
    return f"count(*) FILTER ({broken}), count({column})"


def _nulls_and_validity(conn: duckdb.DuckDBPyConnection, t: Table, rules: list[Rule]) -> dict[str, Measurement]:
    """Every null and validity rule of the table: one scan counting the rows that break each rule, and on a
    source-aligned table a second over the parsed quarantined rows that also finds their lines.

    Two scans rather than one over both: the accepted rows have no line, and asking for the lines
    of 33M of them (every rule's min, max and first lines) took 38 s where counting takes half a second.
    """
    if not rules:
        return {}
    params: dict[str, Any] = {}
    broken = [_condition(rule, params) for rule in rules]
    counted = conn.execute(
        f"SELECT count(*), {', '.join(_counted(rule, b) for rule, b in zip(rules, broken))} FROM {t.physical_name}", params
    ).fetchone()
    found = None
    if on_received_rows(t):
        found = conn.execute(
            f"""SELECT count(*), {', '.join(f"{_counted(rule, b)}, count(_line) FILTER ({b}), "
                                            f"min(_line, {LINES_SHOWN}) FILTER ({b} AND _line IS NOT NULL), "
                                            f"min(_line) FILTER ({b}), max(_line) FILTER ({b})" for rule, b in zip(rules, broken))}
            FROM {_quarantined_sql(t)}""", params | {"source": t.source_file}).fetchone()
    unparsed = _unparsed(conn, t)
    rows = counted[0] + (found[0] if found else 0) + sum(n for n, *_ in unparsed.values())
    measured = {}
    for i, rule in enumerate(rules):
        q_bad, q_judged, quarantined, lines, first, last = found[1 + 6 * i: 7 + 6 * i] if found else (0, 0, 0, None, None, None)
        bad, judged = counted[1 + 2 * i] + q_bad, counted[2 + 2 * i] + q_judged
        if rule.metric == "invalidValues" and rule.columns[0] in unparsed:  # lines whose value did not parse as its type
            n, u_lines, u_first, u_last = unparsed[rule.columns[0]]
            bad, judged, quarantined = bad + n, judged + n, quarantined + n
            lines = sorted((lines or []) + u_lines)
            first, last = min(filter(None, [first, u_first])), max(filter(None, [last, u_last]))
        judged = rows if rule.metric == "nullValues" else judged
        what = measured_on(t) if rule.metric == "nullValues" else f"non-empty values of {measured_on(t)}"
        measured[rule.id] = _share(rule, t, bad, judged, _where(t, bad, lines, first, last, quarantined), what)
    return measured


def _unparsed(conn: duckdb.DuckDBPyConnection, t: Table) -> dict[str | None, tuple[int, list[int], int, int]]:
    """Lines of the source that could not be parsed, by the column blamed: (rows, first lines, first, last)."""
    if not on_received_rows(t):
        return {}
    found = conn.execute(
        f"""SELECT column_name, count(*), min(line, {LINES_SHOWN}), min(line), max(line) FROM {table('quarantine').physical_name}
        WHERE source = ? AND list_contains(?, reason) GROUP BY column_name""",
        [t.source_file, list(UNPARSED)],
    ).fetchall()
    return {column: (n, lines, first, last) for column, n, lines, first, last in found}


def _repeats(conn: duckdb.DuckDBPyConnection, t: Table, columns: tuple[str, ...]) -> tuple[int, int]:
    """(rows of the table with every column filled, how many of them repeat the columns of an earlier row).

    Exactly, without a hash table of every distinct key when the last column is an integer, as a line
    number or a rank is: the rows are grouped by the other columns and the last one's values from 0
    to 62 set bits of a mask, so a group repeats as many rows as it has rows beyond the bits set; rows
    whose last value does not fit are grouped by the whole key. On 33M purchase lines this is 2 s
    where grouping by (order_id, line_number) took 12 s.
    """
    keys, filled = ", ".join(columns), " AND ".join(f"{c} IS NOT NULL" for c in columns)
    *others, last = columns
    if t.column(last).type not in INTEGER_TYPES:
        return conn.execute(f"""SELECT coalesce(sum(n), 0), coalesce(sum(n - 1), 0)
            FROM (SELECT count(*) AS n FROM {t.physical_name} WHERE {filled} GROUP BY {keys})""").fetchone()
    (fits, mask), by_others = line_number_mask(last), f"GROUP BY {', '.join(others)}" if others else ""
    return conn.execute(f"""SELECT coalesce(sum(n), 0), coalesce(sum(n - bit_count(mask)), 0) FROM (
        SELECT count(*) AS n, {mask} AS mask FROM {t.physical_name} WHERE {filled} AND {fits} {by_others}
        UNION ALL
        SELECT count(*), 1::BIGINT FROM {t.physical_name} WHERE {filled} AND NOT ({fits}) GROUP BY {keys})""").fetchone()


def _duplicates(conn: duckdb.DuckDBPyConnection, t: Table, rule: Rule) -> Measurement:
    """Rows repeating the values of another row, among the rows whose columns are all filled: a key rule of a
    source-aligned table counts over the rows received (a repeated line is quarantined as duplicate_key);
    any other rule over the rows accepted (a quarantined repeat is not another customer with that e-mail).

    Over the rows received, the repeats are those among the accepted rows (_repeats) plus every
    quarantined row but the first of each key no accepted row holds. The quarantined rows are few:
    their keys are looked up among the accepted rows, and those sharing a key are the lines to blame.
    """
    keys = ", ".join(rule.columns)
    judged, bad = _repeats(conn, t, rule.columns)
    quarantined, lines, first, last = 0, [], None, None
    received = on_received_rows(t) and list(rule.columns) == t.primary_key
    if received:
        filled = " AND ".join(f"{c} IS NOT NULL" for c in rule.columns)
        rows, new_keys, quarantined, lines, first, last = conn.execute(
            f"""WITH groups AS (
                SELECT {keys}, count(*) AS n, count(_line) AS q, min(_line, {LINES_SHOWN}) AS l, min(_line) AS f, max(_line) AS m
                FROM {_quarantined_sql(t)} WHERE {filled} GROUP BY {keys}
            ), held AS (SELECT DISTINCT {keys}, true AS accepted FROM {t.physical_name} SEMI JOIN groups USING ({keys}))
            SELECT coalesce(sum(n), 0), count(*) FILTER (accepted IS NULL), coalesce(sum(q) FILTER (n > 1 OR accepted), 0),
                   flatten(list(l) FILTER (n > 1 OR accepted)), min(f) FILTER (n > 1 OR accepted), max(m) FILTER (n > 1 OR accepted)
            FROM groups LEFT JOIN held USING ({keys})""",
            {"source": t.source_file},
        ).fetchone()
        judged, bad = judged + rows, bad + rows - new_keys
    where = _where(t, int(bad), [line for line in (lines or []) if line is not None], first, last, int(quarantined))
    where["accepted"] = max(0, where.get("accepted", 0))
    on = measured_on(t) if received else f"rows of {t.physical_name}"
    return _share(rule, t, int(bad), int(judged), where, f"rows with ({keys}) filled, of {on}")


def declared_type(contract_type: str) -> str:
    """The contract's physicalType as DuckDB's information_schema spells it."""
    return contract_type.upper().replace(" ", "")


def _types(conn: duckdb.DuckDBPyConnection, t: Table, rule: Rule) -> Measurement:
    schema, name = t.physical_name.split(".")
    actual = dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?", [schema, name]
    ).fetchall())
    wrong = {c.name: {"declared": c.type, "actual": actual.get(c.name, "missing")}
             for c in t.columns if declared_type(actual.get(c.name, "missing")) != declared_type(c.type)}
    observed = 100 * (len(t.columns) - len(wrong)) / len(t.columns)
    return Measurement(observed, _compare(rule, observed), len(t.columns), f"% of {len(t.columns)} declared columns",
                       {"wrong_types": wrong})


def _freshness(conn: duckdb.DuckDBPyConnection, t: Table, rule: Rule, now: datetime) -> Measurement:
    column = rule.columns[0]
    newest, rows = conn.execute(f"SELECT max({column}), count(*) FROM {t.physical_name}").fetchone()
    age = None if newest is None else (now - newest).total_seconds() / 3600
    return Measurement(age, _compare(rule, age), rows, f"hours since the newest accepted {column}",
                       {"newest": None if newest is None else str(newest), "measured_at": now.isoformat(sep=" ")})


def quarantine_shares(conn: duckdb.DuckDBPyConnection, t: Table) -> tuple[int, list[dict[str, Any]]]:
    """Rows received from the table's source, and per reason the rows quarantined, their share and where they are."""
    quarantined = conn.execute(
        f"""SELECT reason, count(*), min(line, {LINES_SHOWN}), min(line), max(line), list(DISTINCT column_name) FILTER (column_name IS NOT NULL)
        FROM {table('quarantine').physical_name} WHERE source = ? GROUP BY reason ORDER BY count(*) DESC, reason""",
        [t.source_file],
    ).fetchall()
    accepted = conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]
    received = accepted + sum(r[1] for r in quarantined)
    return received, [
        {"reason": reason, "rows": n, "percent": round(100 * n / received, 4), "columns": sorted(columns or []),
         "file": t.source_file, "lines": lines, "first_line": first, "last_line": last}
        for reason, n, lines, first, last, columns in quarantined
    ]


def _quarantine_share(conn: duckdb.DuckDBPyConnection, t: Table, rule: Rule) -> Measurement:
    received, reasons = quarantine_shares(conn, t)
    top = reasons[0] if reasons else None
    observed = top["percent"] if top else 0.0
    detail = {"rows_received": received, "by_reason": reasons}
    if top:
        detail |= {"bad_rows": top["rows"], "reason": top["reason"]}
    return Measurement(observed, _compare(rule, observed), received, f"% of {received:,} {measured_on(t)}", detail)


def _compared(rule: Rule) -> tuple[str, str]:
    """The published column a reconciliation checks, and the recomputed figure it must equal (reconciliation.py)."""
    kwargs = rule.implementation["kwargs"]
    return kwargs["column_A"], kwargs["column_B"]


def reconcile(conn: duckdb.DuckDBPyConnection, t: Table, rule: Rule) -> Measurement:
    """One reconciliation on every row of the table: the share of the rows whose figure equals the recomputed one.

    A row is judged unless both figures are empty, or either when the rule says `ignore_row_if:
    either_value_is_missing` (GE's expect_column_pair_values_to_be_equal, which the Data Docs show).
    The rows that disagree are counted and the first of them, in key order, named by their key.
    """
    stored, recomputed = _compared(rule)
    how = recomputation(conn, recomputed)
    either = rule.implementation["kwargs"].get("ignore_row_if") == "either_value_is_missing"
    judged = f"t.{stored} IS NOT NULL {'AND' if either else 'OR'} r.{recomputed} IS NOT NULL"
    wrong = f"({judged}) AND t.{stored} IS DISTINCT FROM r.{recomputed}"
    keys = [c for c in t.primary_key if not t.column(c).pii]
    first = f"min(struct_pack({', '.join(f'{k} := t.{k}' for k in keys)}), {LINES_SHOWN}) FILTER ({wrong})" if keys else "NULL"
    checked, bad, named = conn.execute(
        f"""SELECT count(*) FILTER ({judged}), count(*) FILTER ({wrong}), {first}
        FROM {t.physical_name} AS t LEFT JOIN ({how.sql}) AS r ON {' AND '.join(f'r.{k} = t.{k}' for k in how.join_on)}"""
    ).fetchone()
    observed = 100 * (checked - bad) / checked if checked else 100.0
    rows = f"rows of {t.physical_name}" + (f" with both {stored} and {recomputed}" if either else "")
    detail: dict[str, Any] = {"bad_rows": bad}
    if bad and keys:
        detail |= {"key": keys, "first_keys": [[str(found[k]) for k in keys] for found in named]}
    return Measurement(observed, _compare(rule, observed), checked, f"% of {checked:,} {rows} that reconcile", detail)


def measure(conn: duckdb.DuckDBPyConnection, t: Table, now: datetime) -> dict[str, Measurement]:
    """Every rule of the table but the reconciliations, by rule id; `now` is the naive UTC wall clock freshness is
    measured against. Each reconciliation is measured on its own (reconcile), so that one that cannot run fails alone."""
    rules = [r for r in quality_rules(t.name) if not reconciled(r)]
    measured = _nulls_and_validity(conn, t, [r for r in rules if r.metric in ("nullValues", "invalidValues")])
    for rule in rules:
        if rule.metric == "duplicateValues":
            measured[rule.id] = _duplicates(conn, t, rule)
        elif rule.metric == "columnTypes":
            measured[rule.id] = _types(conn, t, rule)
        elif rule.metric == "freshness":
            measured[rule.id] = _freshness(conn, t, rule, now)
        elif rule.metric == "quarantineShare":
            measured[rule.id] = _quarantine_share(conn, t, rule)
    return measured
