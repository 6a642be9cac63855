"""The data product page asset: rebuilt after every publication, from the published snapshot only."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from product_affinity.defs.metadata import asset_lineage
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.page.render import write_page
from product_affinity.product.descriptor import asset_tags, delivery_port, owners
from product_affinity.defs.publication import SNAPSHOT_KEY
from product_affinity.publication import published_snapshot
from product_affinity.defs.quality_checks import docs_dir

PAGE = delivery_port("product-page")


def page_path(warehouse: Path) -> Path:
    """Where the page is written: next to the warehouse, as the descriptor's delivery port says."""
    return Path(warehouse).parent / PAGE["location"]


@dg.asset(
    # "web/", not "publication/": Dagster 1.13 takes a run's partitions from the asset step last in key order, and
    # when that one is partitioned (source_aligned/purchase) every check of a run over N days is stored N times
    # (221,000 rows and 330 MB in the instance for the sample's two years). tests/test_definitions.py holds it.
    key=["web", "product_page"],
    group_name="publication",
    deps=[SNAPSHOT_KEY],
    description=f"{PAGE['description']} What the product is and who owns it, its ports and lineage, the metric "
    "definitions, the KPI tree, the category affinity heatmap, top rules, the backtest and the SLO status, "
    "built from the published snapshot only.",
    owners=owners(),
    kinds={PAGE["type"]},
    tags=asset_tags(layer="publication"),
    op_tags=WAREHOUSE_STEP,
)
def product_page(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    working = Path(warehouse.database)
    snapshot = published_snapshot(working)
    page = write_page(snapshot, working, asset_lineage(context.job_def.asset_layer.asset_graph), page_path(working).parent, docs_dir(warehouse))
    context.log.info(f"wrote {page} from {snapshot}")
    return dg.MaterializeResult(metadata={"page": dg.MetadataValue.path(str(page)), "snapshot": snapshot.name,
                                          "bytes": page.stat().st_size})
