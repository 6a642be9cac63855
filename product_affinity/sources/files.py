"""File connector: scans a source CSV into typed columns declared by the contract.

Malformed lines and values that do not parse as the declared type do not stop the scan:
DuckDB records them in a rejects table (with line and column) so they can be quarantined.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from product_affinity.contract.odcs import Table


class SourceError(Exception):
    """A source that cannot be read at all (missing file or column, empty file, bad header)."""


@dataclass(frozen=True)
class SourceScan:
    path: Path
    select_sql: str  # yields the contract columns, typed (a file's in file order)
    rejects_table: str  # DuckDB temp table with the lines that could not be parsed
    ignored_columns: tuple[str, ...]
    # False: a row's line is its place in the scan (a file's order). True: its place in key order, which the scan does
    # not follow (a staged table: sorting every row only to number the few quarantined took seconds).
    lines_in_key_order: bool = False
    # True: no two rows share a key (a staged table: merged on it, or appended from a table keyed on it), so repeated
    # keys are not looked for (a second of a day's run from the database at Instacart scale, finding none).
    keys_unique: bool = False


def read_header(path: Path) -> list[str]:
    if not path.exists():
        raise SourceError(f"{path}: source file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: line 1 (header) is not valid UTF-8: {exc.reason}") from exc
    if not header:
        raise SourceError(f"{path}: file is empty; expected a header line")
    return [name.strip() for name in header]


def scan(path: Path, table: Table) -> SourceScan:
    """Plan the scan of one source file; the header must hold every contract column, in any order."""
    header = read_header(path)
    missing = [name for name in table.column_names if name not in header]
    if missing:
        raise SourceError(
            f"{path}: line 1 (header) lacks column(s) {', '.join(missing)}; "
            f"the contract for {table.name} declares {', '.join(table.column_names)}"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise SourceError(f"{path}: line 1 (header) repeats column(s) {', '.join(duplicated)}")
    types = {c.name: c.type for c in table.columns}
    columns = ", ".join(f"'{name}': '{types.get(name, 'VARCHAR')}'" for name in header)
    rejects = f"rejects_{table.name}"
    escaped = str(path).replace("'", "''")
    select_sql = (
        f"SELECT {', '.join(table.column_names)} "
        f"FROM read_csv('{escaped}', header = true, auto_detect = false, delim = ',', quote = '\"', "
        f"escape = '\"', columns = {{{columns}}}, timestampformat = '%Y-%m-%d %H:%M:%S', "
        f"store_rejects = true, rejects_table = '{rejects}', rejects_scan = '{rejects}_scan')"
    )
    ignored = tuple(name for name in header if name not in types)
    return SourceScan(path=path, select_sql=select_sql, rejects_table=rejects, ignored_columns=ignored)
