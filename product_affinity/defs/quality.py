"""quality.slo_results in the Dagster catalogue (a table with its schema and lineage, written by the quality checks),
and the Great Expectations Data Docs drawn from it once the checks have run."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from product_affinity.contract.odcs import checked_tables
from product_affinity.product.descriptor import asset_tags, owners
from product_affinity.defs.metadata import table_key
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.defs.quality_checks import docs_dir
from product_affinity.quality import data_docs as docs
from product_affinity.quality.results import COLUMNS, SLO_RESULTS, latest

DATA_DOCS_KEY = dg.AssetKey(["quality", "data_docs"])


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


@dg.asset(
    key=DATA_DOCS_KEY,
    group_name="quality",
    # Downstream of every checked table, so the step runs after their check steps: each table has blocking rules,
    # and Dagster starts a step downstream of a table only once its blocking checks have run (tests/test_quality.py).
    deps=[table_key(t) for t in checked_tables()],
    description="The Great Expectations Data Docs (quality_docs/index.html next to the warehouse): every checked "
    "table's suite, generated from the contract, and its latest validation, drawn from the results its checks "
    "recorded in quality.slo_results. GE validates nothing. A run stopped by a blocking check does not reach this "
    "step: the CLI then draws the Docs itself; from the UI, materialize this asset alone to draw the latest results.",
    owners=owners(),
    kinds={"html"},
    tags=asset_tags(layer="quality"),
    op_tags=WAREHOUSE_STEP,
)
def data_docs(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        found = latest(conn, checked_tables())
    index = docs.draw(checked_tables(), found, docs_dir(warehouse))
    runs = {name: v.run_id for name, v in found.items()}
    context.log.info(f"drew {index}: {len(checked_tables())} suites, {len(found)} validations")
    return dg.MaterializeResult(metadata={
        "index": dg.MetadataValue.path(str(index)),
        "validations": len(found),
        "from_this_run": sum(run == context.run.run_id for run in runs.values()),
        "runs_drawn": dg.MetadataValue.json(runs),
    })
