"""SQL in the package: long statements in .sql files that ship with it, and values bound, not formatted in.

Read from the source, as tests/test_layout.py reads imports: the checks hold for code no test happens to run.
"""

import ast
import fnmatch
import re
import tomllib
from importlib.resources import files
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "product_affinity"
PYPROJECT = PACKAGE.parent / "pyproject.toml"

# A formatted value is in a value's place when what precedes it in an f-string that holds SQL opens a string literal
# or is a comparison, LIMIT, OFFSET, INTERVAL, IN ( or VALUES (. Identifiers (tables from the contract, expressions
# the code declares) go elsewhere: after FROM, JOIN, SELECT, a comma, an opening parenthesis.
HOLDS_SQL = re.compile(r"\b(SELECT|FROM|WHERE|INSERT|UPDATE|DELETE|CREATE|ALTER|VALUES|LIMIT|INTERVAL)\b")
VALUE_PLACE = re.compile(r"('|(=|<>|!=|<|>|\bLIMIT|\bOFFSET|\bINTERVAL|\bIN \(|\bVALUES \()\s*)$", re.IGNORECASE)

# Where a value is still formatted into SQL, and why. The modules being rewritten by the ingestion and quality work
# are listed so that this test guards the rest of the package now; remove an entry when its module binds the value
# (the test fails on an entry that no longer matches anything, so the list only shrinks).
KNOWN = {
    ("semantic/compiler.py", "int(q.limit)"): "generated SQL: the compiler writes LIMIT and OFFSET as integers it cast",
    ("semantic/compiler.py", "int(q.offset)"): "generated SQL, as above",
    ("consumer_aligned/metrics.py", "days * int(windows_back)"): "the customer_metrics port's statement is run "
    "without parameters by defs/consumer_aligned.py (publish_port); int() cast",
    ("consumer_aligned/metrics.py", "days"): "as above",
    ("consumer_aligned/metrics.py", "end"): "not a value: the window's end, an SQL expression over as_of",
    ("consumer_aligned/association_rules.py", "size"): "being rewritten (incremental computation)",
    ("source_aligned/cleaning.py", "limit"): "being rewritten (incremental computation)",
    ("source_aligned/cleaning.py", "key"): "being rewritten (incremental computation)",
    ("sources/files.py", "escaped"): "being rewritten (incremental computation); read_csv options take no parameters",
    ("sources/files.py", "rejects"): "being rewritten (incremental computation); read_csv options take no parameters",
    ("consumer_aligned/daily_counts.py", "', '.join(f'd.{k}' for k in keys)"): "not a value: the key columns of the MERGE",
    ("consumer_aligned/daily_counts.py", "days.first"): "one SQL text for DuckDB and Spark (translated by SQLGlot), "
    "which takes no DuckDB parameter: the run's first day as a DATE literal",
    ("consumer_aligned/daily_counts.py", "days.end"): "as above",
    ("consumer_aligned/daily_counts.py", "int(minimum)"): "as above, an int() cast",
    ("consumer_aligned/daily_counts.py", "int(max_itemset_size)"): "as above, an int() cast",
    ("consumer_aligned/daily_counts.py", "before"): "not a value: an SQL expression of a day (the backtest's cut-off, "
    "a DuckDB variable its statements read)",
    ("consumer_aligned/recommendations.py", "ITEM[level]"): "not a value: the level's item column (baskets.ITEM)",
    ("defs/sensors.py", "path"): "being rewritten (incremental computation): read_csv's path could be bound",
    ("partitions.py", "path"): "being rewritten (incremental computation): read_csv's path could be bound",
    ("quality/measures.py", "unparsed"): "quality/ is being reworked (exact checks)",
    ("quality/reconciliation.py", 'alignment()["northStar"]["id"]'): "quality/ is being reworked (exact checks)",
    ("quality/report.py", "int(runs)"): "quality/ is being reworked (exact checks)",
    ("quality/results.py", "', '.join('?' * len(COLUMNS))"): "not a value: the ? placeholders of the bound row",
}


def values_formatted_into_sql(package: Path = PACKAGE) -> set[tuple[str, str]]:
    """(module, formatted expression) for every value placed into SQL by an f-string in the package."""
    found = set()
    for path in package.rglob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.JoinedStr):
                continue
            if not HOLDS_SQL.search("".join(v.value for v in node.values if isinstance(v, ast.Constant))):
                continue
            before = ""
            for part in node.values:
                if isinstance(part, ast.Constant):
                    before = part.value
                    continue
                if VALUE_PLACE.search(before):
                    found.add((path.relative_to(package).as_posix(), ast.get_source_segment(source, part.value)))
                before = ""
    return found


def test_values_are_bound_not_formatted_into_sql():
    found = values_formatted_into_sql()
    unexpected = sorted(found - KNOWN.keys())
    assert not unexpected, "values formatted into SQL (bind them as $name or ?):\n" + "\n".join(map(str, unexpected))
    stale = sorted(KNOWN.keys() - found)
    assert not stale, f"no longer formatted into SQL, so remove them from KNOWN: {stale}"


def test_the_check_sees_a_value_formatted_into_sql(tmp_path):
    """The check itself: a string value in quotes and a number after LIMIT are caught; a table name is not."""
    (tmp_path / "leaky.py").write_text(
        "def f(t, name, n):\n"
        "    return f\"SELECT * FROM {t} WHERE name = '{name}' LIMIT {n}\"\n"
    )
    assert values_formatted_into_sql(tmp_path) == {("leaky.py", "name"), ("leaky.py", "n")}


def loaded_statement_files() -> set[tuple[str, str]]:
    """(module's folder, file name) for every .sql file name a module of the package names in its code."""
    named = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[\w.]+\.sql", node.value):
                named.add((path.parent.relative_to(PACKAGE).as_posix(), node.value))
    return named


def test_every_statement_file_is_next_to_the_code_that_loads_it_and_ships_with_the_package():
    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["product_affinity"]
    on_disk = {(p.parent.relative_to(PACKAGE).as_posix(), p.name) for p in PACKAGE.rglob("*.sql")}
    named = loaded_statement_files()
    assert named, "no module loads a .sql file: the check would pass vacuously"
    assert named == on_disk, f"named but missing: {sorted(named - on_disk)}; on disk but loaded by nothing: {sorted(on_disk - named)}"
    for folder, name in sorted(on_disk):
        relative = name if folder == "." else f"{folder}/{name}"
        # setuptools matches package data with glob patterns relative to the package; * does not cross a /
        assert any(fnmatch.fnmatch(relative, pattern) and relative.count("/") == pattern.count("/") for pattern in package_data), \
            f"{relative} is not package data in pyproject.toml: an installed wheel would lack it"
        resource = files("product_affinity").joinpath(relative)
        assert resource.is_file() and resource.read_text(encoding="utf-8").strip(), relative
