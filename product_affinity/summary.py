"""The end-of-run summary: row accounting, the strongest affinities, the top cross-sell opportunities."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from product_affinity.contract.odcs import source_tables, tables
from product_affinity.warehouse import used_parameters

SECTIONS = {
    "Row accounting (rows in = accepted + quarantined)": """
        WITH accepted AS ({accepted}),
        quarantined AS (
            SELECT source, sum(n) AS quarantined, string_agg(reason || ' ' || n, ', ' ORDER BY n DESC, reason) AS reasons
            FROM (SELECT source, reason, count(*) AS n FROM {quarantine} GROUP BY ALL)
            GROUP BY source
        )
        SELECT source, accepted + coalesce(quarantined, 0) AS rows_in, accepted, coalesce(quarantined, 0) AS quarantined,
               coalesce(reasons, '') AS reasons
        FROM accepted LEFT JOIN quarantined USING (source) ORDER BY source""",
    "Output ports": "{outputs}",
    "Strongest category affinities": """
        SELECT category_1, category_2, round(support, 4) AS support, round(confidence, 3) AS confidence,
               round(lift, 2) AS lift
        FROM {product_affinity_matrix} ORDER BY lift DESC, category_1 LIMIT 6""",
    "Strongest product rules": """
        SELECT r.rule_id, a.product_name AS if_bought, c.product_name AS then_likely, round(r.confidence, 3) AS confidence,
               round(r.lift, 1) AS lift
        FROM {association_rules} AS r
        JOIN {product} AS a ON a.product_id::VARCHAR = r.antecedents[1]
        JOIN {product} AS c ON c.product_id::VARCHAR = r.consequents[1]
        WHERE r.level = 'product' ORDER BY r.lift DESC, r.rule_id LIMIT 6""",
    "Top cross-sell opportunities (category level, by expected value)": """
        SELECT customer_id, recommended_name, round(score, 3) AS score, round(expected_value, 2) AS expected_value, rule_id
        FROM {cross_sell_recommendations}
        WHERE level = 'category' ORDER BY expected_value DESC, customer_id LIMIT 5""",
}


def print_summary(warehouse: Path) -> None:
    ports = [t for t in tables().values() if t.schema == "consumer_aligned"]
    fill = {
        **{t.name: t.physical_name for t in tables().values()},  # the tables the sections name, as the contract names them
        "accepted": " UNION ALL ".join(
            f"SELECT ${t.name} AS source, count(*) AS accepted FROM {t.physical_name}" for t in source_tables()
        ),
        "outputs": " UNION ALL ".join(f"SELECT ${t.name} AS output_port, count(*) AS rows FROM {t.physical_name}" for t in ports),
    }
    # What the rows are labelled with, bound: each source table's file, each port's name.
    labels = {t.name: t.source_file for t in source_tables()} | {t.name: t.name for t in ports}
    with duckdb.connect(str(warehouse), read_only=True) as conn, pl.Config(
        tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, fmt_str_lengths=100, tbl_width_chars=160
    ):
        for title, sql in SECTIONS.items():
            query = sql.format(**fill)
            print(f"{title}\n{conn.sql(query, params=used_parameters(query, labels)).pl()}\n")
