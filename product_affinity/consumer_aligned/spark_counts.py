"""The spark engine: the per-day counts, the rules' reduce and the customer aggregates on Spark, from Parquet files
any worker can read (day_files).

The queries are daily_counts' SELECTs and customer_aggregates.sql, written once in DuckDB's dialect and translated
by SQLGlot (`spark_sql`): there is no second copy to drift. The map reads the lines of the run's days from
`<root>/lines/day=…` and writes each per-day counts table as `<root>/<table>/day=…`; DuckDB then loads
those days into the counts file and keeps the window's totals as it does for its own counts (the duckdb engine's
reduce, and the record of which days' files are current). The job's rules come from the reduce on Spark
(`reduce`): the per-day files of the window's days summed on Spark, only the frequent itemsets brought back to the
driver. The customer aggregates (`customer_aggregates`) are computed on Spark from every day's lines and written as
Parquet, which the customer_metrics port's query reads in place of DuckDB's aggregates.

Here Spark runs in local mode in this process (pyspark, the `spark` extra, and Java 17 or later); the
same code reaches a cluster when the session is one of the cluster's (docs/operations/scale-out.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import sqlglot
from pyspark.sql import SparkSession

from product_affinity.consumer_aligned import customer_metrics, daily_counts, day_files
from product_affinity.consumer_aligned.association_rules import RULE_COLUMNS, Thresholds
from product_affinity.partitions import Days


CUSTOMER_AGGREGATES = "customer_aggregates"  # one row per customer who bought, under <root>/, replaced by each run


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


REMOTE = "SPARK_REMOTE"  # pyspark's own variable for Spark Connect: the server the session is a client of


def session(master: str = "local[*]", driver_memory: str = "2g") -> SparkSession:
    """This process's Spark session (the running one if there is one: a JVM starts once, in about ten seconds).

    With SPARK_REMOTE set (`sc://spark-connect:15002`, a cluster's Spark Connect server; `local[2]` starts one in this
    process), the session is a Spark Connect client: every query's scans, joins and shuffles run on the server, and
    what stays in the step is the driver's part (SQLGlot's translation, the frequent itemsets brought back, the
    rules). Otherwise Spark runs in local mode in this process: the driver is the only executor, so its memory is
    Spark's. Either way a shuffle needs as many partitions as there are cores here, not Spark's 200 (each would write
    its own small file per day), and days are UTC, as the partitions are."""
    remote = os.environ.get(REMOTE)
    if not (remote or "").startswith("sc://") and (missing := java_missing()):  # local mode, or a local server
        raise SparkUnavailable(missing)
    if remote:
        builder = SparkSession.builder.remote(remote)
    else:
        builder = (SparkSession.builder.master(master).config("spark.driver.memory", driver_memory)
                   .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false"))
    spark = (
        builder.appName("product-affinity")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 1)))
        .getOrCreate()
    )
    if not remote:
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def described(spark: SparkSession) -> str:
    """How the session reaches Spark, as the run's metadata says it: a Spark Connect client, or local mode."""
    return "Spark Connect" if type(spark).__module__.startswith("pyspark.sql.connect") else "local mode"


def count_lines(spark: SparkSession, root: day_files.Root, days: Days, category_itemset_size: int) -> None:
    """The map on Spark: the per-day counts of `days` from the lines' Parquet files under `root`, written beside them
    (a day with no lines left loses its counts' folders)."""
    with day_files.staging(root) as staged:
        folders = day_files.held(root, day_files.LINES, days)
        if folders:
            lines = spark.read.option("basePath", str(day_files.join(root, day_files.LINES))).parquet(*map(str, folders))
            lines.createOrReplaceTempView("day_lines")
            held, counted = daily_counts.counting_sql("day_lines", category_itemset_size)
            frames = [spark.sql(spark_sql(sql)).persist() for sql in held.values()]
            for name, frame in zip(held, frames):
                frame.createOrReplaceTempView(name)
            for name, sql in counted.items():  # one task, and one file, per day and table
                spark.sql(spark_sql(sql)).repartition("day").write.partitionBy("day").parquet(str(day_files.join(staged, name)))
            for frame in frames:
                frame.unpersist()
        for name in daily_counts.COUNTED:
            day_files.replace_days(staged, root, name, days)


def count_days(
    conn: duckdb.DuckDBPyConnection,
    root: day_files.Root,
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


def _read(spark: SparkSession, root: day_files.Root, name: str, folders: list[day_files.Root] | None):
    """Table `name` under `root` as a Spark frame: the day folders `folders`, or every day there is (None)."""
    if folders is None:
        return spark.read.parquet(str(day_files.join(root, name)))
    return spark.read.option("basePath", str(day_files.join(root, name))).parquet(*map(str, folders))


def _no_rows(spark: SparkSession, kind: str):
    """An empty per-day counts table of `kind` (no day has such itemsets), typed as the counts file types it."""
    columns = ", ".join(f"CAST(NULL AS {daily_counts.TYPES[k]}) AS {k}" for k in daily_counts.KEYS[kind])
    return spark.sql(spark_sql(f"SELECT CAST(NULL AS DATE) AS day, {columns}, CAST(NULL AS BIGINT) AS baskets WHERE 1 = 0"))


def rules(
    spark: SparkSession,
    root: day_files.Root,
    thresholds: dict[str, Thresholds],
    conn: duckdb.DuckDBPyConnection,
    folders: dict[str, list[day_files.Root]] | None = None,
) -> pd.DataFrame:
    """The reduce on Spark: every itemset's total over the day folders `folders` of each per-day counts table under
    `root` (or every day there is), then the rules.

    Only the frequent itemsets reach the driver; labels come from the products on `conn`."""
    for name in daily_counts.COUNTED:
        held = None if folders is None else folders[name]
        frame = _read(spark, root, name, held) if held is None or held else _no_rows(spark, name.removeprefix("day_"))
        frame.createOrReplaceTempView(name)
    spark.sql(spark_sql("SELECT day, 1 AS sign FROM day_baskets")).createOrReplaceTempView("window_days")
    for kind in daily_counts.KEYS:
        spark.sql(spark_sql(daily_counts.totals_sql(kind, f"day_{kind}", "window_days"))).createOrReplaceTempView(f"total_{kind}")
    baskets = spark.sql(spark_sql("SELECT coalesce(sum(baskets), 0) FROM day_baskets")).first()[0]
    return daily_counts.rules_from_totals(lambda sql: spark.sql(spark_sql(sql)).toPandas(), int(baskets), thresholds, conn,
                                          totals="total_")


def reduce(
    conn: duckdb.DuckDBPyConnection, root: day_files.Root, thresholds: dict[str, Thresholds], spark: SparkSession | None = None
) -> pd.DataFrame:
    """The job's rules on the spark engine: the reduce on Spark over the per-day count files of the rules' window (the
    days the counts file's window holds, `rules_window_days`), each file current (daily_counts.current_files: a day
    the duckdb engine counted last is exported from the counts file first)."""
    daily_counts.check_counted(conn, thresholds)
    folders = daily_counts.current_files(conn, root, daily_counts.COUNTED, daily_counts.WINDOW_DAYS,
                                         daily_counts.export_counts)
    if not folders["day_baskets"]:
        return pd.DataFrame(columns=RULE_COLUMNS)
    return rules(spark or session(), root, thresholds, conn, folders)


def customer_aggregates(
    conn: duckdb.DuckDBPyConnection, root: day_files.Root, window_days: int, spark: SparkSession | None = None
) -> str | None:
    """The customer aggregates on Spark (customer_aggregates.sql, translated) from the lines' files of every day the
    warehouse holds, written as Parquet under `<root>/customer_aggregates/`: the relation that reads them, for the
    customer_metrics port's query (None when the warehouse holds no line)."""
    folders = daily_counts.current_files(conn, root, [day_files.LINES], daily_counts.line_days_sql(), daily_counts.export_lines)
    if not folders[day_files.LINES]:
        return None
    spark = spark or session()
    _read(spark, root, day_files.LINES, folders[day_files.LINES]).createOrReplaceTempView("all_lines")
    target = day_files.join(root, CUSTOMER_AGGREGATES)
    with day_files.staging(root) as staged:
        written = day_files.join(staged, CUSTOMER_AGGREGATES)
        spark.sql(spark_sql(customer_metrics.aggregates_sql("all_lines", window_days))).write.parquet(str(written))
        day_files.replace_folder(written, target)
    day_files.register(conn, root)  # the port's query reads them on `conn`
    return "read_parquet('" + str(day_files.join(target, "*.parquet")).replace("'", "''") + "')"
