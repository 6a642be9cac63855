"""Benchmark: the counts' map and reduce on DuckDB and on Spark (local mode) at 1x, 2x and 4x a base size, with
Spark MLlib's FPGrowth on the same baskets as the anchor for distributed rule mining.

Instacart-like baskets (benchmarks/rules.py's generator: Zipf-like products, about ten per basket, companion
pairs), spread evenly over `--days` days, with one of 21 categories per product, in a warehouse as the
pipeline leaves it. Per scale, in this process, each step timed on its own:

- export: the warehouse's lines as Parquet by day (daily_counts.export_lines, what the spark engine runs first);
- map: the per-day counts of every day, from the lines' Parquet files to the counts' Parquet files, with
  daily_counts' SELECTs run by DuckDB and, translated by SQLGlot, by Spark (spark_counts.count_lines);
- reduce: the totals over every day and the rules at both levels, from the counts' files: on DuckDB the days
  loaded into the counts file and the totals summed there (count_days, then rules_from_counts, the duckdb engine's
  reduce), on Spark the totals summed on Spark and only the frequent itemsets brought to the driver
  (spark_counts.rules, which the spark engine's job runs over its window's files);
- FPGrowth: the same lines grouped into baskets, pyspark.ml.fpm.FPGrowth, its association rules.

The two maps must write the same rows, the two reduces the same rules, and FPGrowth's rules between two
products must be ours (exact count tuples, as benchmarks/rules.py compares them; FPGrowth takes a float
support, given as (count - 0.5) / n, and mines every itemset size, since it has no size limit). Times are
per million purchase lines, so linear growth shows as a flat column; peak memory is this process's (DuckDB)
and the JVM's (Spark), each the highest so far.

    python benchmarks/spark.py                                   # 20k orders x 5k products over 14 days: 1x 2x 4x
    python benchmarks/spark.py --orders 250000 --scales 1 2 4 8 --driver-memory 8g
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rules import generate  # noqa: E402  (the baskets benchmarks/rules.py mines)

from product_affinity.consumer_aligned import daily_counts, day_files, spark_counts  # noqa: E402
from product_affinity.consumer_aligned.association_rules import min_count  # noqa: E402
from product_affinity.defs.resources import AffinitySettings  # noqa: E402
from product_affinity.partitions import Days  # noqa: E402

OUT = Path(__file__).parent / "out" / "spark"
FIRST_DAY = date(2026, 1, 1)
CATEGORIES = 21
SETTINGS = AffinitySettings()
THRESHOLDS = {level: SETTINGS.thresholds(level) for level in ("category", "product")}
SIZE = SETTINGS.category_max_itemset_size


def warehouse(path: Path, orders: int, products: int, days: int, seed: int) -> int:
    """The generated baskets as source_aligned.purchase (order_id, product_id, purchased_at: orders in id order over
    `days` days) and source_aligned.product (with a category); return the line count."""
    lines = generate(path, orders, products, seed)
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            f"""CREATE OR REPLACE TABLE source_aligned.purchase AS
            SELECT order_id, product_id,
                   TIMESTAMP '{FIRST_DAY}' + to_days(CAST((order_id - 1) * {days} // {orders} AS INTEGER))
                                           + to_seconds(order_id % 86400) AS purchased_at
            FROM source_aligned.purchase"""
        )
        conn.execute(
            f"""CREATE OR REPLACE TABLE source_aligned.product AS
            SELECT *, 'category ' || lpad(CAST(product_id % {CATEGORIES} AS VARCHAR), 2, '0') AS category
            FROM source_aligned.product"""
        )
    return lines


def duckdb_map(conn: duckdb.DuckDBPyConnection, lines_root: Path, out: Path, days: Days) -> None:
    """The map on DuckDB as Spark runs it: the lines' Parquet files in, the counts' Parquet files out, same SELECTs."""
    conn.execute(f"CREATE OR REPLACE TEMP VIEW day_lines AS {daily_counts.parquet_days_sql(lines_root, day_files.LINES, days)}")
    held, counted = daily_counts.counting_sql("day_lines", SIZE)
    for name, sql in held.items():
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
    out.mkdir(parents=True, exist_ok=True)
    for name, sql in counted.items():
        conn.execute(f"COPY ({sql}) TO '{out / name}' (FORMAT parquet, PARTITION_BY (day))")


def duckdb_reduce(conn: duckdb.DuckDBPyConnection, counted: Path, days: Days, counts_file: Path):
    """The spark engine's reduce in the pipeline: the days' counts loaded from Parquet, summed into the totals, rules;
    and the rows the counts hold (what the reduce shuffles on a cluster)."""
    daily_counts.attach(conn, counts_file)
    daily_counts.count_days(conn, days, SIZE, None, counted_in=counted)
    rules = daily_counts.rules_from_counts(conn, THRESHOLDS)
    held = daily_counts.size(conn)
    conn.execute(f"DETACH {daily_counts.SCHEMA}")
    return rules, held


def fpgrowth(spark, lines_root: Path) -> set:
    """MLlib's FPGrowth on the baskets of the lines' files: its rules between two products, as exact count tuples."""
    from pyspark.ml.fpm import FPGrowth
    from pyspark.sql import functions as F

    t = THRESHOLDS["product"]
    baskets = spark.read.parquet(str(lines_root)).groupBy("order_id").agg(F.collect_set("product_id").alias("items")).cache()
    n = baskets.count()
    minimum = min_count(t.min_support, n)
    model = FPGrowth(itemsCol="items", minSupport=(minimum - 0.5) / n, minConfidence=t.min_confidence - 1e-9).fit(baskets)
    frequent = {frozenset(items): freq for items, freq in model.freqItemsets.where(F.size("items") <= 2).collect()}
    confidence = Fraction(str(t.min_confidence))
    found = set()
    for a, c in model.associationRules.where((F.size("antecedent") == 1) & (F.size("consequent") == 1)).select("antecedent", "consequent").collect():
        counts = frequent[frozenset(a + c)], frequent[frozenset(a)], frequent[frozenset(c)]
        if counts[0] * confidence.denominator >= counts[1] * confidence.numerator:
            found.add(((int(a[0]),), (int(c[0]),), *counts))
    baskets.unpersist()
    return found


def product_rules(rules) -> set:
    product = rules[rules["level"] == "product"]
    return {
        (tuple(int(i) for i in a), tuple(int(i) for i in c), int(s), int(ac), int(cc))
        for a, c, s, ac, cc in zip(product["antecedents"], product["consequents"], product["support_count"],
                                   product["antecedent_count"], product["consequent_count"])
    }


def same_rows(conn: duckdb.DuckDBPyConnection, a: str, b: str) -> bool:
    return all(conn.execute(f"SELECT count(*) FROM (FROM {x} EXCEPT ALL FROM {y})").fetchall() == [(0,)] for x, y in ((a, b), (b, a)))


def same_counts(conn: duckdb.DuckDBPyConnection, a: Path, b: Path, days: Days) -> bool:
    return all(same_rows(conn, f"({daily_counts.parquet_days_sql(a, name, days)})", f"({daily_counts.parquet_days_sql(b, name, days)})")
               for name in daily_counts.COUNTED)


def peak_gb(pid: int | str = "self") -> float:
    """Peak resident memory of a process (VmHWM): this one, or Spark's JVM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def timed(step, *args):
    started = time.perf_counter()
    result = step(*args)
    return time.perf_counter() - started, result


def one_scale(spark, scale: int, args) -> dict:
    orders = args.orders * max(scale, 1)
    folder = OUT / f"{scale}x"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = folder / "warehouse.duckdb"
    lines = warehouse(path, orders, args.products, args.days, args.seed)
    days = Days(FIRST_DAY, FIRST_DAY + timedelta(days=args.days))
    spark_root, duckdb_root = folder / "spark", folder / "duckdb"
    r = {"scale": scale, "orders": orders, "lines": lines}
    with duckdb.connect(str(path)) as conn:
        r["export"], _ = timed(daily_counts.export_lines, conn, spark_root, days)
        lines_root = spark_root / day_files.LINES
        r["map duckdb"], _ = timed(duckdb_map, conn, spark_root, duckdb_root, days)
        r["reduce duckdb"], (ours_duckdb, r["held"]) = timed(duckdb_reduce, conn, duckdb_root, days, folder / "duckdb.counts.duckdb")
        r["peak duckdb"] = peak_gb()
        r["map spark"], _ = timed(spark_counts.count_lines, spark, spark_root, days, SIZE)
        r["reduce spark"], ours_spark = timed(spark_counts.rules, spark, spark_root, THRESHOLDS, conn)
        r["same counts"] = same_counts(conn, duckdb_root, spark_root, days)
        conn.register("ours_duckdb", ours_duckdb)
        conn.register("ours_spark", ours_spark)
        r["same rules"] = same_rows(conn, "ours_duckdb", "ours_spark")
    r["rules"] = len(ours_duckdb)
    if args.fpgrowth:
        r["fpgrowth"], anchor = timed(fpgrowth, spark, lines_root)
        r["same as fpgrowth"] = anchor == product_rules(ours_spark)
        r["pair rules"] = len(anchor)
    r["peak spark"] = peak_gb(spark.sparkContext._gateway.proc.pid)
    return r


def report(r: dict) -> None:
    per_m = r["lines"] / 1e6
    print(f"\n{r['scale']}x: {r['orders']:,} orders, {r['lines']:,} lines over the days, {r['rules']:,} rules", flush=True)
    for step in ("export", "map duckdb", "map spark", "reduce duckdb", "reduce spark", "fpgrowth"):
        if step in r:
            print(f"  {step:<14} {r[step]:8.2f} s  {r[step] / per_m:8.2f} s per M lines", flush=True)
    held = r["held"]
    print(f"  product pair rows: {held['day_product_pairs']:,} per-day ({held['day_product_pairs'] / r['lines']:.2f} per line), "
          f"{held['total_product_pairs']:,} in the totals; category itemset rows: {held['day_category_itemsets']:,} per-day, "
          f"{held['total_category_itemsets']:,} in the totals", flush=True)
    print(f"  spark/duckdb: map {r['map spark'] / r['map duckdb']:.1f}x, reduce {r['reduce spark'] / r['reduce duckdb']:.1f}x;"
          f"  identical counts: {r['same counts']}, identical rules: {r['same rules']}", flush=True)
    if "fpgrowth" in r:
        ours = {engine: r[f"map {engine}"] + r[f"reduce {engine}"] for engine in ("duckdb", "spark")}
        print(f"  FPGrowth takes {r['fpgrowth'] / ours['spark']:.1f}x ours on Spark (map + reduce), "
              f"{r['fpgrowth'] / (ours['duckdb'] + r['export']):.1f}x ours on DuckDB (export + map + reduce); "
              f"{r['pair rules']:,} product pair rules, identical: {r['same as fpgrowth']}", flush=True)
    print(f"  peak memory: {r['peak duckdb']:.2f} GB this process (DuckDB), {r['peak spark']:.2f} GB the JVM (Spark)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000, help="orders at 1x (default: %(default)s)")
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=14, help="days the orders are spread over (partitions)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--driver-memory", default="4g", help="Spark's memory in local mode (default: %(default)s)")
    parser.add_argument("--no-fpgrowth", dest="fpgrowth", action="store_false", help="leave MLlib's FPGrowth out")
    args = parser.parse_args()

    started = time.perf_counter()
    spark = spark_counts.session(driver_memory=args.driver_memory)
    print(f"Spark {spark.version} in local mode ({spark.sparkContext.defaultParallelism} cores) started in "
          f"{time.perf_counter() - started:.1f} s (not counted below)", flush=True)
    # The JVM's first queries load classes and compile; a long-running cluster has done so. Warm it (and DuckDB) up
    # on a small scale first, untimed, so the scales below compare steady work.
    started = time.perf_counter()
    one_scale(spark, 0, argparse.Namespace(**{**vars(args), "orders": 2_000, "fpgrowth": False}))
    print(f"warmed up on 2,000 orders in {time.perf_counter() - started:.1f} s (not counted below)", flush=True)
    results = []
    for scale in args.scales:
        results.append(one_scale(spark, scale, args))
        report(results[-1])
    print("\nseconds per million lines (flat = linear):")
    columns = ["export", "map duckdb", "map spark", "reduce duckdb", "reduce spark", *(["fpgrowth"] if args.fpgrowth else [])]
    print(f"  {'scale':>5} {'lines':>11} " + " ".join(f"{c:>14}" for c in columns))
    for r in results:
        print(f"  {r['scale']:>4}x {r['lines']:>11,} " + " ".join(f"{r[c] / (r['lines'] / 1e6):>14.2f}" for c in columns))
    identical = all(r["same counts"] and r["same rules"] and r.get("same as fpgrowth", True) for r in results)
    print(f"\nidentical counts and rules in every comparison: {identical}")
    spark.stop()
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
