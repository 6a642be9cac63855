"""The data product: its descriptor (ODPS) and business alignment (North Star, KPI tree), declared in the YAML files here and loaded by descriptor.py."""
