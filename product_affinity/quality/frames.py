"""The rows Great Expectations validates: the whole table, or a reproducible sample of a large one, plus recomputed
columns. GE decides only the contract's custom rules (the reconciliations) and draws the Data Docs; every
library rule's verdict is measured exactly on the whole table by DuckDB (measures.py).

Loading a 32M-line purchase table into pandas would take gigabytes, so above FULL_CHECK_ROWS the
checks read a reservoir sample (DuckDB, fixed seed: the same table gives the same rows). What must
be exact whatever the sample is computed by DuckDB over the whole warehouse for the rows that are
checked: how many rows of the whole table share each row's key (uniqueness), and the figures the
accuracy rules reconcile with (reconciliation.py). Rows with a recomputed value and the number of
rows checked are reported with every result.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from product_affinity.contract.odcs import Table, quality_rules
from product_affinity.quality.reconciliation import CHECKED, RECOMPUTED, Recomputation
from product_affinity.quality.suites import rows_sharing

FULL_CHECK_ROWS = 250_000
SAMPLE_SEED = 7


@dataclass(frozen=True)
class Frame:
    rows: pd.DataFrame
    rows_in_table: int


def _added_columns(t: Table) -> dict[str, Recomputation]:
    """Columns the table's rules read that the table does not have, with how to compute them."""
    added = {}
    for rule in quality_rules(t.name):
        if rule.metric == "duplicateValues":
            name, keys = rows_sharing(rule.columns), ", ".join(rule.columns)
            added[name] = Recomputation(rule.columns, f"""
                SELECT {keys}, count(*) AS {name} FROM {t.physical_name}
                SEMI JOIN (SELECT DISTINCT {keys} FROM {CHECKED}) USING ({keys}) GROUP BY ALL""")
        for value in rule.implementation.get("kwargs", {}).values():
            if isinstance(value, str) and value in RECOMPUTED:
                added[value] = RECOMPUTED[value]
    return added


def load(conn: duckdb.DuckDBPyConnection, t: Table) -> Frame:
    rows_in_table = conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]
    sample = f" USING SAMPLE reservoir({FULL_CHECK_ROWS} ROWS) REPEATABLE ({SAMPLE_SEED})" if rows_in_table > FULL_CHECK_ROWS else ""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {CHECKED} AS SELECT * FROM {t.physical_name}{sample}")
    try:
        added = _added_columns(t)
        joins = "".join(
            f" LEFT JOIN ({how.sql}) AS a{i} ON " + " AND ".join(f"a{i}.{k} = c.{k}" for k in how.join_on)
            for i, how in enumerate(added.values())
        )
        picked = "".join(f", a{i}.{name}" for i, name in enumerate(added))
        rows = conn.execute(f"SELECT c.*{picked} FROM {CHECKED} AS c{joins}").df()
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {CHECKED}")
    # GE fingerprints a frame by hashing it; list cells (VARCHAR[]) are unhashable and make it pickle the whole frame.
    for name in rows.columns[rows.dtypes == object]:
        rows[name] = rows[name].map(lambda cell: tuple(cell) if hasattr(cell, "__len__") and not isinstance(cell, str) else cell)
    return Frame(rows, rows_in_table)
