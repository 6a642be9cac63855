"""Quality gates: the contract's rules measured exactly by DuckDB in Dagster asset checks, drawn as Great Expectations
Data Docs, kept as SLO results."""
