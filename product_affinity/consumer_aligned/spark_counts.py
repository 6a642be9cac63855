"""The per-day counts and the rules' reduce on Spark, from Parquet files any worker can read (day_files).

The queries are daily_counts' SELECTs, written once in DuckDB's dialect and translated by SQLGlot
(`spark_sql`): there is no second copy to drift. The map reads the lines of the run's days from
`<root>/lines/day=…` and writes each per-day counts table as `<root>/<table>/day=…`; DuckDB then loads
those days into the counts file and keeps the window's totals as it does for its own counts, so every
step after the counts runs unchanged. The reduce (`rules`) sums the per-day files on Spark and brings
back to the driver only the frequent itemsets.

Here Spark runs in local mode in this process (pyspark, the `spark` extra, and Java 17 or later); the
same code reaches a cluster when the session is one of the cluster's (docs/operations/scale-out.md).
"""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import sqlglot
from pyspark.sql import SparkSession

from product_affinity.consumer_aligned import daily_counts, day_files
from product_affinity.consumer_aligned.association_rules import Thresholds
from product_affinity.partitions import Days


class SparkUnavailable(RuntimeError):
    """The spark engine was asked for where Spark cannot start (no Java)."""


def spark_sql(sql: str) -> str:
    """A SELECT in DuckDB's dialect, as Spark SQL."""
    (translated,) = sqlglot.transpile(sql, read="duckdb", write="spark")
    return translated


def java_missing() -> str | None:
    """Why Spark cannot start here, or None: pyspark starts a JVM, found through JAVA_HOME or on the PATH."""
    home = os.environ.get("JAVA_HOME")
    if (home and (Path(home) / "bin" / "java").exists()) or shutil.which("java"):
        return None
    return "Spark needs Java 17 or later (JAVA_HOME, or java on the PATH): apt-get install openjdk-17-jre-headless"


def session(master: str = "local[*]", driver_memory: str = "2g") -> SparkSession:
    """This process's Spark session (the running one if there is one: a JVM starts once, in about ten seconds).

    In local mode the driver is the only executor, so its memory is Spark's, and a shuffle needs as many partitions as
    there are cores, not Spark's 200 (each would write its own small file per day); days are UTC, as the partitions are."""
    if missing := java_missing():
        raise SparkUnavailable(missing)
    spark = (
        SparkSession.builder.master(master)
        .appName("product-affinity")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 1)))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def count_lines(spark: SparkSession, root: Path, days: Days, category_itemset_size: int) -> None:
    """The map on Spark: the per-day counts of `days` from the lines' Parquet files under `root`, written beside them
    (a day with no lines left loses its counts' folders)."""
    with day_files.staging(root) as staged:
        folders = day_files.held(root, day_files.LINES, days)
        if folders:
            lines = spark.read.option("basePath", str(Path(root) / day_files.LINES)).parquet(*map(str, folders))
            lines.createOrReplaceTempView("day_lines")
            held, counted = daily_counts.counting_sql("day_lines", category_itemset_size)
            frames = [spark.sql(spark_sql(sql)).persist() for sql in held.values()]
            for name, frame in zip(held, frames):
                frame.createOrReplaceTempView(name)
            for name, sql in counted.items():  # one task, and one file, per day and table
                spark.sql(spark_sql(sql)).repartition("day").write.partitionBy("day").parquet(str(staged / name))
            for frame in frames:
                frame.unpersist()
        for name in daily_counts.COUNTED:
            day_files.replace_days(staged, root, name, days)


def count_days(
    conn: duckdb.DuckDBPyConnection,
    root: Path,
    days: Days,
    category_itemset_size: int,
    window_days: int | None,
    spark: SparkSession | None = None,
) -> daily_counts.Counted:
    """daily_counts.count_days with Spark as the engine: the warehouse's lines of `days` exported as Parquet, counted
    by Spark, and the counts loaded back into the counts file, where the window's totals are kept."""
    daily_counts.export_lines(conn, root, days)
    count_lines(spark or session(), root, days, category_itemset_size)
    return daily_counts.count_days(conn, days, category_itemset_size, window_days, counted_in=root)


def rules(
    spark: SparkSession,
    root: Path,
    thresholds: dict[str, Thresholds],
    conn: duckdb.DuckDBPyConnection,
    since: date | None = None,
) -> pd.DataFrame:
    """The reduce on Spark: every itemset's total over the days under `root` (from `since`, or all), then the rules.

    Only the frequent itemsets reach the driver; labels come from the products on `conn`."""
    for name in daily_counts.COUNTED:
        frame = spark.read.parquet(str(Path(root) / name))
        (frame.where(frame.day >= since) if since else frame).createOrReplaceTempView(name)
    spark.sql(spark_sql("SELECT day, 1 AS sign FROM day_baskets")).createOrReplaceTempView("window_days")
    for kind in daily_counts.KEYS:
        spark.sql(spark_sql(daily_counts.totals_sql(kind, f"day_{kind}", "window_days"))).createOrReplaceTempView(f"total_{kind}")
    baskets = spark.sql(spark_sql("SELECT coalesce(sum(baskets), 0) FROM day_baskets")).first()[0]
    return daily_counts.rules_from_totals(lambda sql: spark.sql(spark_sql(sql)).toPandas(), int(baskets), thresholds, conn,
                                          totals="total_")
