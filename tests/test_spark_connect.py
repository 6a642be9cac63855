"""The spark engine through Spark Connect: the same code, a client of a Spark Connect server (SPARK_REMOTE), publishes
what the duckdb engine publishes.

`SPARK_REMOTE=local[2]` makes pyspark start a Spark Connect server here and the job's session a client of it, over
gRPC, as it would be of a cluster's server (`sc://host:15002`). A short sample goes through `product-affinity run
--engine spark` in a process of its own, as a Spark Connect client, and through the default engine's rules and
customer metrics (and what they read) in this process. The published rules and customer metrics and every counts
table must hold the same rows (EXCEPT ALL both ways), and the spark run's metadata must say the rules came through
Spark Connect, not local mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from product_affinity.consumer_aligned import daily_counts
from product_affinity.defs.metadata import table_key
from product_affinity.partitions import Days, file_days
from product_affinity.sources.sample import generate_sample
from tests.conftest import assert_same_rows, require_spark, run_ports

pytestmark = pytest.mark.slow
PORTS = ["association_rules", "customer_metrics"]


def cli_run(sources, warehouse, home, *extra: str, **environment: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "product_affinity.cli", "run", "--sources", str(sources), "--warehouse", str(warehouse), *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, "DAGSTER_HOME": str(home), **environment},
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require_spark()
    root = tmp_path_factory.mktemp("spark_connect")
    sources, home = root / "sources", root / "dagster_home"
    home.mkdir()
    generate_sample(sources, customers=300, products=60, orders=3_000, history_days=14,
                    end=datetime.now(UTC).replace(tzinfo=None))  # fresh: the run's freshness check is real
    first, last = file_days(sources)
    run_ports(sources, root / "duckdb.duckdb", Days(first, last + timedelta(days=1)))  # the reference: the default engine
    cli_run(sources, root / "connect.duckdb", home, "--engine", "spark", SPARK_REMOTE="local[2]")
    return root, home


@pytest.mark.parametrize("port", PORTS)
def test_the_ports_through_spark_connect_equal_duckdbs(runs, port):
    root, _ = runs
    assert_same_rows(root / "duckdb.duckdb", root / "connect.duckdb", f"consumer_aligned.{port}")


@pytest.mark.parametrize("name", [*daily_counts.COUNTED, *(f"total_{kind}" for kind in daily_counts.KEYS)])
def test_the_counts_through_spark_connect_equal_duckdbs(runs, name):
    root, _ = runs
    assert_same_rows(*(daily_counts.counts_database(root / f"{way}.duckdb") for way in ("duckdb", "connect")), f"main.{name}")


def test_the_rules_say_they_came_through_spark_connect(runs):
    _, home = runs
    with dg.DagsterInstance.from_config(str(home)) as instance:
        rules = instance.get_latest_materialization_event(table_key("association_rules")).asset_materialization.metadata
    assert rules["engine"].value == "spark"
    assert rules["spark"].value == "Spark Connect"
