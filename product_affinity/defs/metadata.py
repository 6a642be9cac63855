"""What an asset shows in the Dagster catalogue: its columns as the contract declares them, and per materialization its
rows, schema and column profile."""

from typing import Any

import dagster as dg
import duckdb

from product_affinity.contract.odcs import Table, table
from product_affinity.warehouse import profile

def table_key(t: Table | str) -> dg.AssetKey:
    """The asset of a contract table: its schema and name, the one way every asset key of a table is made."""
    t = table(t) if isinstance(t, str) else t
    return dg.AssetKey([t.schema, t.name])


def column_schema(t: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type,
                description=c.description or None,
                tags={"pii": ""} if c.pii else {},
                constraints=dg.TableColumnConstraints(nullable=not c.required, unique=c.unique),
            )
            for c in t.columns
        ]
    )


def materialization_metadata(conn: duckdb.DuckDBPyConnection, t: Table, **extra: Any) -> dict[str, Any]:
    rows = conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": column_schema(t),
        "table": t.physical_name,
        "profile": dg.MetadataValue.md(profile(conn, t)),
        **extra,
    }



def asset_lineage(graph) -> list[dict]:
    """The running job's assets (its asset graph, from the step's context) as plain data for the domain code that
    reports on lineage: each asset's name, its upstream assets' names, and whether the product builds it."""
    built = set(graph.materializable_asset_keys)
    return [{"asset": key.to_user_string(), "upstream": sorted(k.to_user_string() for k in graph.get(key).parent_keys),
             "built": key in built} for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())]
