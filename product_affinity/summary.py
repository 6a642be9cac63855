"""The end-of-run summary: row accounting, the strongest affinities, the top cross-sell opportunities."""

from __future__ import annotations

from pathlib import Path

import duckdb

from product_affinity.contract import tables


def _print_table(conn: duckdb.DuckDBPyConnection, title: str, sql: str) -> None:
    print(f"{title}\n{conn.sql(sql).pl()}\n")


def print_summary(warehouse: Path) -> None:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        counts = " UNION ALL ".join(
            f"SELECT '{t.physical_name}' AS table_name, count(*) AS rows FROM {t.physical_name}" for t in tables().values()
        )
        _print_table(conn, "Rows per table", counts)
        _print_table(
            conn,
            "Row accounting (rows in = accepted + quarantined)",
            """SELECT source, reason, count(*) AS rows FROM source_aligned.quarantine GROUP BY ALL ORDER BY source, rows DESC""",
        )
        _print_table(
            conn,
            "Strongest category affinities",
            """SELECT category_1, category_2, round(support, 4) AS support, round(confidence, 3) AS confidence,
                      round(lift, 2) AS lift FROM consumer_aligned.product_affinity_matrix ORDER BY lift DESC LIMIT 5""",
        )
        _print_table(
            conn,
            "Strongest product rules",
            """SELECT rule_id, round(support, 4) AS support, round(confidence, 3) AS confidence, round(lift, 1) AS lift
               FROM consumer_aligned.association_rules WHERE level = 'product' ORDER BY lift DESC LIMIT 5""",
        )
        _print_table(
            conn,
            "Top cross-sell opportunities",
            """SELECT r.customer_id, r.recommended_name, r.score, round(r.expected_value, 2) AS expected_value, r.rule_id
               FROM consumer_aligned.cross_sell_recommendations AS r
               WHERE r.level = 'category' AND r.rank = 1 ORDER BY r.expected_value DESC LIMIT 5""",
        )
