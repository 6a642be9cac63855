"""Resources, declared once and shared by every asset."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from product_affinity.consumer_aligned.association_rules import Thresholds

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCES = PROJECT_ROOT / "data" / "sample"
DEFAULT_WAREHOUSE = PROJECT_ROOT / "data" / "warehouse.duckdb"


class SourceFiles(dg.ConfigurableResource):
    """Where the operational sources land as files (customer_info.csv, product.csv, purchase.csv)."""

    directory: str = str(DEFAULT_SOURCES)

    @property
    def path(self) -> Path:
        return Path(self.directory)


class AffinitySettings(dg.ConfigurableResource):
    """Business parameters of the rules, metrics and recommendations."""

    category_min_support: float = 0.01
    category_min_confidence: float = 0.10
    category_max_itemset_size: int = 3
    product_min_support: float = 0.002
    product_min_confidence: float = 0.10
    product_max_itemset_size: int = 2
    recommendations_per_customer: int = 3
    frequency_window_days: int = 365
    discount_rate: float = 0.10

    def thresholds(self, level: str) -> Thresholds:
        return Thresholds(
            min_support=getattr(self, f"{level}_min_support"),
            min_confidence=getattr(self, f"{level}_min_confidence"),
            max_itemset_size=getattr(self, f"{level}_max_itemset_size"),
        )


def resources(sources: Path = DEFAULT_SOURCES, warehouse: Path = DEFAULT_WAREHOUSE) -> dict:
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    return {
        "warehouse": DuckDBResource(database=str(warehouse)),
        "source_files": SourceFiles(directory=str(sources)),
        "settings": AffinitySettings(),
    }
