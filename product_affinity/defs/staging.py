"""The database source's load step: dagster-dlt's assets over the dlt pipeline of sources/staging.py.

Only built when the definitions are given a database source, so the default (files) imports neither dlt nor
dagster-dlt and needs neither installed (they come with the `postgres` extra).
"""

from pathlib import Path

import dagster as dg

from product_affinity.product.descriptor import asset_tags, owners
from product_affinity.defs.resources import WAREHOUSE_STEP
from product_affinity.sources.staging import STAGING_SCHEMA, dlt_pipeline, dlt_source, staged_tables


def staging_assets(dsn: str, warehouse: Path) -> tuple[dg.AssetsDefinition, dict]:
    """The `staging.<table>` assets loaded by one dlt run (incremental, merged on the keys), and the resource it needs."""
    from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
    from dagster_dlt.translator import DltResourceTranslatorData

    class Translator(DagsterDltTranslator):
        def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
            name = data.resource.name
            return super().get_asset_spec(data).replace_attributes(
                key=dg.AssetKey([STAGING_SCHEMA, name]),
                deps=[dg.AssetKey(["sources", name])],
                group_name="source_aligned",
                description=f"{name} as loaded from the operational database by dlt: rows written since the last load "
                "(updated_at above its cursor) merged on the key; deletes at the source are not seen.",
                owners=owners(),
                tags=asset_tags(layer="source_aligned"),
            )

    @dlt_assets(dlt_source=dlt_source(dsn), dlt_pipeline=dlt_pipeline(warehouse), name="load_operational_database",
                dagster_dlt_translator=Translator(), op_tags=WAREHOUSE_STEP)  # dlt writes the warehouse file
    def load_operational_database(context: dg.AssetExecutionContext, dlt: DagsterDltResource):
        # the source as of this run: which tables are staged already (merged) and which are not yet (appended)
        yield from dlt.run(context=context, dlt_source=dlt_source(dsn, staged_tables(warehouse)))

    return load_operational_database, {"dlt": DagsterDltResource()}
