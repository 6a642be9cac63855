"""Where the product reads and writes when told nothing else, declared once in a module that imports nothing heavy.

The CLI builds its `--help` from these values, so this module must stay cheap to import: no Dagster,
DuckDB, pandas or mlxtend here (a test runs every command's `--help` and fails if one of them is loaded).
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCES = PROJECT_ROOT / "data" / "sample"
DEFAULT_WAREHOUSE = PROJECT_ROOT / "data" / "warehouse.duckdb"

# The sample generator's default size: a run on it takes about a minute on two cores.
DEFAULT_SIZE = dict(customers=2_000, products=400, orders=20_000)
# The sample generator's default seed: the same seed and end give the same sample, byte for byte.
SAMPLE_SEED = 7
# The sample's default history, in days before its end: two years, so the backtests have a past to learn from. Each
# day is a daily partition, which a run over all of them plans and records one by one.
SAMPLE_HISTORY_DAYS = 730

# SLO attainment and the quarantine trend are measured over the last this many pipeline runs, unless a reader asks
# for another window (`slo --runs`, GET /slo?runs=, GraphQL slo(runs:)); the product page always uses it.
SLO_RUNS = 30

# How long a BI tool's statement may run on the Postgres port before the server cancels it (seconds).
POSTGRES_STATEMENT_TIMEOUT = 60.0

# The operational database to load the sources from instead of files (`run --postgres DSN` overrides it); unset,
# the sources are the files in DEFAULT_SOURCES, which needs no database.
SOURCE_DSN_VARIABLE = "PRODUCT_AFFINITY_SOURCE_DSN"
