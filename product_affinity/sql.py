"""Long SQL statements live in .sql files next to the module that runs them; `load` reads one.

A statement file is SQL as a reader would write it, so it can be read, diffed and run in a SQL console. Its
{placeholders} are filled by str.format with identifiers only: table names from the data contract and SQL
expressions the code declares once (the metric definitions). Values (numbers, dates, names from settings, data or a
request) are never formatted in: the statement names them $parameter and they are bound when it runs.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def load(module_file: str, name: str) -> str:
    """The text of the statement file `name` in the folder of the module `module_file` (the caller's __file__).

    The files are package data (pyproject.toml), so an installed wheel has them next to its modules too."""
    return (Path(module_file).parent / name).read_text(encoding="utf-8")


def line_number_mask(column: str) -> tuple[str, str]:
    """(condition, aggregate) for finding repeated values of an integer column within groups without a hash table of
    every value, as line numbers within an order: the rows whose value fits a 63-bit mask (0 to 62), and the mask
    their values set over a group. A group with more fitting rows than bits set repeats a value; rows that do not fit
    are left to a grouping by value. Used by the cleaning (which keys repeat) and the audit (how many rows repeat)."""
    return f"{column} BETWEEN 0 AND 62", f"bit_or(1::BIGINT << {column}::BIGINT)"
