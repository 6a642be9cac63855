"""Quality gates: the contract's rules as Great Expectations suites, run as Dagster asset checks, kept as SLO results."""
