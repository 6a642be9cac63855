"""quality.slo_results in the Dagster catalogue: a table with its schema and lineage, written by the quality checks."""

import dagster as dg

from product_affinity.contract.odcs import checked_tables
from product_affinity.product.descriptor import asset_tags, owners
from product_affinity.defs.metadata import table_key
from product_affinity.quality.results import COLUMNS, SLO_RESULTS


def slo_results_spec() -> dg.AssetSpec:
    """Every checked table's checks append their results here (one row per rule per run), so no step builds the
    table and Dagster cannot run it: it is shown downstream of the tables whose checks write it."""
    return dg.AssetSpec(
        key=SLO_RESULTS.split("."),
        deps=[table_key(t) for t in checked_tables()],
        description="One row per quality rule per run: observed value, target, passed, rows checked. Appended by the "
        "asset checks of the tables upstream; SLO attainment and the error budget are computed from it.",
        group_name="quality",
        owners=owners(),
        kinds={"duckdb", "table"},
        tags=asset_tags(layer="quality"),
        metadata={
            "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(name, type_) for name, type_ in COLUMNS.items()]),
            "dagster/table_name": SLO_RESULTS,
        },
    )


slo_results = slo_results_spec()
