# Two commands matter: `make run` (sample data -> DuckDB warehouse -> summary) and `make test`.
# Everything else is a convenience on top of the same virtual environment.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: run test test-fast dev bench bench-api bench-postgres clean

# The environment is rebuilt only when the declared dependencies change.
$(BIN)/product-affinity: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: $(BIN)/product-affinity
	$(BIN)/product-affinity generate
	$(BIN)/product-affinity run

test: $(BIN)/product-affinity
	$(BIN)/pytest

# The fast tier: every module, none of the whole-pipeline runs (see docs/operations/testing.md).
test-fast: $(BIN)/product-affinity
	$(BIN)/pytest -m "not slow"

dev: $(BIN)/product-affinity
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev

bench: $(BIN)/product-affinity
	$(BIN)/python benchmarks/pipeline.py

# Reuses the Instacart-scale snapshot `make bench` published, or builds it first.
bench-api: $(BIN)/product-affinity
	$(BIN)/python benchmarks/api.py --reuse

# Needs the PostgreSQL server; publishes the snapshot `make bench` published (or builds it) into a throwaway database.
bench-postgres: $(BIN)/product-affinity
	$(BIN)/python benchmarks/postgres_port.py

clean:
	rm -rf $(VENV) data/sample data/*.duckdb* data/published dagster_home/storage dagster_home/logs dagster_home/history dagster_home/schedules
