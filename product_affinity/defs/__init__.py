"""The Dagster wiring, one module per domain: assets, their checks, resources, jobs and schedules.

product_affinity.definitions assembles them; the domain code they call imports no Dagster.
"""
