"""Product Affinity: a consumer-aligned data product for cross-selling."""
