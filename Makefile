# Two commands matter: `make run` (sample data -> DuckDB warehouse -> summary) and `make test`.
# Everything else is a convenience on top of the same virtual environment.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/dagster_home
# One "planned" event per asset for a run over many days, not one per day (see product_affinity/cli.py run_job).
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS := true

.PHONY: run test test-fast docs dev bench bench-audit bench-rules bench-spark bench-api bench-postgres clean

# `make run` installs what running needs and nothing else; each target adds the extra it needs on top
# (pyproject.toml: test, docs, dev). A stamp per extra: the environment is rebuilt only when the declared
# dependencies change, and a change rebuilds the runtime first, then the extras on it.
$(VENV)/.installed-run: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-%: $(VENV)/.installed-run
	$(BIN)/pip install --quiet -c constraints.txt -e '.[$*]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/product-affinity generate
	$(BIN)/product-affinity run

# What CI runs (.ci/run): every test, including the docs site's strict build (tests/test_docs.py). One pytest-xdist
# worker per core, a test file per worker, so a file's module fixtures (often a whole run) run once
# (docs/operations/testing.md); `pytest` alone runs the same tests in one process.
XDIST := -n auto --dist loadfile
test: $(VENV)/.installed-test
	$(BIN)/pytest $(XDIST)

# The fast tier: every module, none of the whole-pipeline runs (see docs/operations/testing.md).
test-fast: $(VENV)/.installed-test
	$(BIN)/pytest $(XDIST) -m "not slow"

docs: $(VENV)/.installed-docs
	$(BIN)/mkdocs build --strict --site-dir site

dev: $(VENV)/.installed-dev
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev

bench: $(VENV)/.installed-run
	$(BIN)/python benchmarks/pipeline.py

# The audit (every asset check) on the warehouse `make bench` built (or builds it), against the sampled audit before.
bench-audit: $(VENV)/.installed-run
	$(BIN)/python benchmarks/audit.py --reuse

# The rules engine from scratch against rusket (the bench extra) and mlxtend, identical rules; options: benchmarks/rules.py --help.
bench-rules: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/rules.py

# The counts' map and reduce on DuckDB and on Spark local at 1x, 2x, 4x, and MLlib's FPGrowth; needs Java (options: --help).
bench-spark: $(VENV)/.installed-spark
	$(BIN)/python benchmarks/spark.py

# Reuses the Instacart-scale snapshot `make bench` published, or builds it first; its client is httpx (the test extra).
bench-api: $(VENV)/.installed-test
	$(BIN)/python benchmarks/api.py --reuse

# Needs the PostgreSQL server; publishes the snapshot `make bench` published (or builds it) into a throwaway database.
bench-postgres: $(VENV)/.installed-run
	$(BIN)/python benchmarks/postgres_port.py

clean:
	rm -rf $(VENV) site data/sample data/*.duckdb* data/*.partitions data/published dagster_home/storage dagster_home/logs dagster_home/history dagster_home/schedules
