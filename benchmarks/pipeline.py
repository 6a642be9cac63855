"""Benchmark: the pipeline at a given scale, and the rules engine against mlxtend where mlxtend fits.

Prints each stage's wall time and peak memory (every stage runs in its own process, so peak RSS is
that stage's own), and in the same run the ratio of mlxtend's fpgrowth + association_rules to our
engine on identical data, after checking both give identical rules.

    python benchmarks/pipeline.py                      # Instacart scale + mlxtend comparison
    python benchmarks/pipeline.py --orders 200000 --customers 20000 --products 5000 --compare-orders 100000
    python benchmarks/pipeline.py --no-mlxtend --postgres postgresql://127.0.0.1/affinity_bench   # the database source
    python benchmarks/pipeline.py --no-mlxtend --orders 20000 --customers 2000 --products 400 --history-days 60 \
        --postgres postgresql://127.0.0.1/affinity_small   # the default sample's size: a run's fixed cost
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

from product_affinity.defaults import SAMPLE_HISTORY_DAYS

# seconds, GB at Instacart scale: the whole job from nothing, one day added, the rules from the window's counts
TARGETS = {"pipeline": (60, 6), "daily": (10, 6), "rules from counts": (2, 4)}
OUT = Path(__file__).parent / "out"


def _measured(fn, *args) -> dict:
    """Run fn in this (child) process; return its result with wall seconds and peak RSS in GB."""
    started = time.perf_counter()
    result = fn(*args)
    return {
        "seconds": time.perf_counter() - started,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "result": result,
    }


def _child(queue, fn, args):
    try:
        queue.put(_measured(fn, *args))
    except BaseException:
        queue.put({"error": traceback.format_exc()})
        raise


def isolated(fn, *args) -> dict:
    """Run fn in a fresh process so its peak memory is its own."""
    queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=_child, args=(queue, fn, args))
    process.start()
    outcome = queue.get()
    process.join()
    if "error" in outcome:
        raise RuntimeError(f"{fn.__name__} failed in its process:\n{outcome['error']}")
    return outcome


# The sample ends this long less than a day ago. The build from nothing must find its newest line under 24 hours old
# (the freshness SLO, against the wall clock), and the day added after it must not end after now (`generate
# --add-days` moves a sample with the clock, never past it): the build's checks run within LEAD of the generation,
# and the day is added once the newest line is a day old, after a wait of LEAD less the build's time, if any.
# From the database, writing the sample into it (about 2 minutes) and dlt's first full load (about 4) come first.
LEAD = {"files": timedelta(minutes=6), "database": timedelta(minutes=16)}


def generate(directory: Path, customers: int, products: int, orders: int, lead: timedelta,
             history_days: int = SAMPLE_HISTORY_DAYS) -> dict:
    from product_affinity.sources.sample import generate_sample

    return generate_sample(directory, customers=customers, products=products, orders=orders, history_days=history_days,
                           end=datetime.now(UTC) - timedelta(days=1) + lead)["rows"]


def write_database(dsn: str, sources: Path) -> dict:
    """The generated sample written into the operational database (`generate --postgres`), as of now."""
    from product_affinity.sources.database import write_sample

    return write_sample(dsn, sources, datetime.now(UTC).replace(tzinfo=None)).rows


def pipeline(sources: Path, warehouse: Path, database: str | None = None) -> dict:
    """Materialize everything from nothing (from the files, or from the database with a first full load); return each
    asset step's wall time from Dagster's event log."""
    from product_affinity.consumer_aligned.daily_counts import counts_database
    from product_affinity.defs.partitions import range_tags
    from product_affinity.partitions import Days, all_days
    from product_affinity.sources.database import purchase_days
    from product_affinity.sources.staging import staging_database, working_dir

    warehouse.unlink(missing_ok=True)
    counts_database(warehouse).unlink(missing_ok=True)
    staging_database(warehouse).unlink(missing_ok=True)  # from nothing: dlt's first full load is part of the build
    shutil.rmtree(working_dir(warehouse), ignore_errors=True)
    if database:
        first, last = purchase_days(database)
        days = Days(first, last + timedelta(days=1))
    else:
        days = all_days(sources, warehouse)
    return run_days(sources, warehouse, range_tags(days), database)


def run_days(sources: Path, warehouse: Path, tags: dict[str, str], database: str | None = None) -> dict:
    """The job over the days in `tags`; each step's wall time from Dagster's event log."""
    import dagster as dg

    from product_affinity.definitions import build_definitions
    from product_affinity.defs.run_history import configured_like_the_project

    # Recorded as `product-affinity run` records a run: in a Dagster instance on disk, configured as the project's, a
    # run planning its range of days in one event per asset (cli.run_job; 1,462 events, 3.7 s, otherwise).
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    home = configured_like_the_project(warehouse.parent / "dagster_home")
    instance = dg.DagsterInstance.from_config(str(home))
    result = build_definitions(sources, warehouse, database).resolve_job_def("product_affinity").execute_in_process(
        instance=instance, run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        tags=tags,
    )
    steps = [e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.step_key]
    started = {e.step_key: e.timestamp for e in steps if e.dagster_event.event_type_value == "STEP_START"}
    return {e.step_key: e.timestamp - started[e.step_key] for e in steps if e.dagster_event.event_type_value == "STEP_SUCCESS"}


def add_one_day(sources: Path, warehouse: Path, database: str | None = None) -> dict[str, str]:
    """`generate --add-days 1` (new orders, late lines, corrections) to the files or the database; return the tags of
    the run the files sensor or the database watermark sensor asks for then (its range of days). Timed apart from
    the run: writing the sample is not the product's work."""
    import dagster as dg
    import duckdb

    from product_affinity.defs.sensors import database_watermark_sensor, source_files_sensor
    from product_affinity.sources import database as operational
    from product_affinity.sources.sample import add_days_to_files

    sensor = database_watermark_sensor(database) if database else source_files_sensor(sources, database=False)
    seen = sensor.evaluate_tick(dg.build_sensor_context(cursor=None))
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        newest = conn.execute("SELECT max(purchased_at) FROM source_aligned.purchase").fetchone()[0]
    wait = (newest + timedelta(days=1, seconds=1) - datetime.now(UTC).replace(tzinfo=None)).total_seconds()
    if wait > 0:
        print(f"  waiting {wait:.0f} s for the newest purchase ({newest}) to be a day old", flush=True)
        time.sleep(wait)
    if database:
        operational.add_days(database, 1)
    else:
        add_days_to_files(sources, 1)
    return dict(sensor.evaluate_tick(dg.build_sensor_context(cursor=seen.cursor)).run_requests[0].tags)


def rules_from_counts(warehouse: Path) -> dict:
    """The association_rules asset's computation from the window's counts alone, and the rows the counts hold."""
    import duckdb

    from product_affinity.consumer_aligned import daily_counts
    from product_affinity.defs.resources import AffinitySettings

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        conn.execute(f"ATTACH '{daily_counts.counts_database(warehouse)}' AS {daily_counts.SCHEMA} (READ_ONLY)")
        rules = daily_counts.rules_from_counts(conn, {level: AffinitySettings().thresholds(level) for level in ("category", "product")})
        return {"rules": len(rules), "held": daily_counts.size(conn)}


def our_rules(warehouse: Path, levels: tuple[str, ...]) -> list:
    """The association_rules asset's computation alone, reading the source-aligned tables."""
    import duckdb

    from product_affinity.consumer_aligned.association_rules import mine_all_levels
    from product_affinity.defs.resources import AffinitySettings

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rules = mine_all_levels(conn, {level: AffinitySettings().thresholds(level) for level in levels})
    return _comparable(rules["antecedents"], rules["consequents"], rules["lift"])


def mlxtend_rules(warehouse: Path, levels: tuple[str, ...]) -> list:
    """The reference path: one-hot baskets, mlxtend fpgrowth, mlxtend association_rules."""
    import duckdb
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    from product_affinity.consumer_aligned.baskets import ITEM, lines
    from product_affinity.defs.resources import AffinitySettings

    found = []
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for level in levels:
            t = AffinitySettings().thresholds(level)
            baskets = conn.execute(f"SELECT DISTINCT p.order_id, CAST({ITEM[level]} AS VARCHAR) AS item FROM {lines()}").df()
            onehot = pd.crosstab(baskets["order_id"], baskets["item"]).astype(bool)
            del baskets
            itemsets = fpgrowth(onehot, min_support=t.min_support, use_colnames=True, max_len=t.max_itemset_size)
            # minus 1e-12: mlxtend's float confidence drops rules exactly on the threshold; ours keeps them
            rules = association_rules(
                itemsets, num_itemsets=len(onehot), metric="confidence", min_threshold=t.min_confidence - 1e-12
            )
            found += _comparable(rules["antecedents"], rules["consequents"], rules["lift"])
    return found


def _stages(steps: dict[str, float]) -> dict[str, list[float]]:
    """Step times summed by stage: building the tables, auditing them (quality checks), publishing."""
    stages = {"= build (assets)": [], "= audit (quality checks)": [], "= publish": []}
    for step, seconds in steps.items():
        stage = "= audit (quality checks)" if step.endswith("_quality") else "= publish" if step.startswith("publication") else "= build (assets)"
        stages[stage].append(seconds)
    return stages


def _comparable(antecedents, consequents, lifts) -> list:
    return sorted((tuple(sorted(map(str, a))), tuple(sorted(map(str, c))), round(float(lift), 9)) for a, c, lift in zip(antecedents, consequents, lifts))


def report(name: str, measured: dict, target: tuple[int, int] | None = None) -> None:
    goal = f"   (target {target[0]} s, {target[1]} GB)" if target else ""
    print(f"{name:<44} {measured['seconds']:8.1f} s  {measured['peak_gb']:6.2f} GB peak{goal}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=3_400_000)
    parser.add_argument("--customers", type=int, default=206_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--history-days", type=int, default=SAMPLE_HISTORY_DAYS,
                        help="days of purchases (default: %(default)s). The newest line lies up to an hour before the "
                        "sample's end when orders are sparse (20,000 orders over two years), older than the build's "
                        "lead allows: 60 days make the default sample's size dense enough to measure a run's fixed cost")
    parser.add_argument("--compare-orders", type=int, default=1_000_000)
    parser.add_argument("--compare-products", type=int, default=1_000)
    parser.add_argument("--reuse", action="store_true", help="reuse sources generated by an earlier run")
    parser.add_argument("--no-mlxtend", action="store_true", help="skip the comparison with mlxtend (about 6 minutes)")
    parser.add_argument("--postgres", metavar="DSN", help="read the sources from this PostgreSQL database (the sample "
                        "is written into it, replacing its tables): the build's first load and the day added go through dlt")
    args = parser.parse_args()

    scale, compare = OUT / ("scale-postgres" if args.postgres else "scale"), OUT / "compare"
    print(f"Scale: {args.orders:,} orders, {args.customers:,} customers, {args.products:,} products")
    if not (args.reuse and (scale / "sources" / "purchase.csv").exists()):
        measured = isolated(generate, scale / "sources", args.customers, args.products, args.orders,
                            LEAD["database" if args.postgres else "files"], args.history_days)
        report(f"generate sample ({measured['result']['purchase.csv']:,} lines, not counted)", measured)
    if args.postgres:
        measured = isolated(write_database, args.postgres, scale / "sources")
        report(f"write it into the database ({measured['result']['purchase']:,} lines, not counted)", measured)
    measured = isolated(pipeline, scale / "sources", scale / "warehouse.duckdb", args.postgres)
    for step, seconds in measured["result"].items():
        print(f"  {step:<42} {seconds:8.1f} s")
    for stage, steps in _stages(measured["result"]).items():
        print(f"  {stage:<42} {sum(steps):8.1f} s")
    report("whole job (build, audit, publish)", measured, TARGETS["pipeline"])
    whole_job = measured["seconds"]
    measured = isolated(rules_from_counts, scale / "warehouse.duckdb")
    report(f"rules from the window's counts ({measured['result']['rules']:,} rules)", measured, TARGETS["rules from counts"])
    print(f"  counts held (rows): {measured['result']['held']}")
    mined = isolated(our_rules, scale / "warehouse.duckdb", ("category", "product"))
    report("baseline: the same rules mined from every line", mined)
    print(f"  counts vs mining every line: {mined['seconds'] / measured['seconds']:.1f}x faster")
    tags = isolated(add_one_day, scale / "sources", scale / "warehouse.duckdb", args.postgres)["result"]
    measured = isolated(run_days, scale / "sources", scale / "warehouse.duckdb", tags, args.postgres)
    for step, seconds in measured["result"].items():
        print(f"  {step:<42} {seconds:8.1f} s")
    days = f"{tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}"
    source = "the database" if args.postgres else "the files"
    report(f"one day added to {source}: the run the sensor asks for, {days}", measured, TARGETS["daily"])
    print(f"  one day added vs the whole job from nothing (the baseline above): {whole_job / measured['seconds']:.1f}x faster")

    if args.no_mlxtend:
        return
    print(f"\nAgainst mlxtend at {args.compare_orders:,} orders x {args.compare_products:,} products (product and category level)")
    if not (args.reuse and (compare / "warehouse.duckdb").exists()):
        isolated(generate, compare / "sources", max(args.compare_orders // 16, 100), args.compare_products, args.compare_orders,
                 LEAD["files"])
        isolated(pipeline, compare / "sources", compare / "warehouse.duckdb")
    levels = ("category", "product")
    ours = isolated(our_rules, compare / "warehouse.duckdb", levels)
    theirs = isolated(mlxtend_rules, compare / "warehouse.duckdb", levels)
    report("our engine (DuckDB counts + mlxtend rules)", ours)
    report("mlxtend fpgrowth + association_rules", theirs)
    identical = sorted(ours["result"]) == sorted(theirs["result"])
    print(f"identical rules: {identical} ({len(ours['result']):,} rules)")
    print(f"speed-up: {theirs['seconds'] / ours['seconds']:.1f}x   memory ratio: {theirs['peak_gb'] / ours['peak_gb']:.1f}x")
    print(json.dumps({"identical": identical}))


if __name__ == "__main__":
    main()
