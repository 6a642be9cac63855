"""Per-day counts and the window's totals, on a small generated sample loaded a day range at a time."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from itertools import combinations

import fsspec
import numpy as np

import pytest

from product_affinity.consumer_aligned import daily_counts as counts
from product_affinity.consumer_aligned import day_files
from product_affinity.consumer_aligned import affinity_matrix, pair_counts
from product_affinity.consumer_aligned.association_rules import Thresholds, mine_all_levels
from product_affinity.partitions import Days, file_days
from product_affinity.source_aligned.cleaning import ingest
from product_affinity.sources.sample import generate_sample

END = datetime(2026, 6, 30, 12)
THRESHOLDS = {"category": Thresholds(0.01, 0.1, 3), "product": Thresholds(0.005, 0.1, 2)}


@pytest.fixture
def loaded(conn, tmp_path):
    """The sample's customers, products and every purchase day loaded; the counts file attached, empty."""
    sources = tmp_path / "sources"
    generate_sample(sources, customers=200, products=60, orders=2_000, end=END, history_days=60)
    for name in ("customer", "product"):
        ingest(conn, sources, name, END)
    first, last = file_days(sources)
    days = Days(first, last + timedelta(days=1))
    ingest(conn, sources, "purchase", END, days)
    counts.attach(conn, tmp_path / "w.counts.duckdb")
    return conn, days


def recent_lines(conn, days: int) -> str:
    latest = conn.execute("SELECT max(purchased_at)::DATE FROM source_aligned.purchase").fetchone()[0]
    conn.execute(f"CREATE OR REPLACE TEMP VIEW recent AS FROM source_aligned.purchase WHERE purchased_at >= DATE '{latest - timedelta(days=days - 1)}'")
    return "recent"


def test_rules_from_days_counted_apart_equal_mining_all_the_lines(loaded):
    conn, days = loaded
    middle = days.first + timedelta(days=20)
    counts.count_days(conn, Days(middle, days.end), 3, None)  # the later days first, then the earlier ones
    counts.count_days(conn, Days(days.first, middle), 3, None)
    counts.count_days(conn, Days(middle, middle + timedelta(days=5)), 3, None)  # recounted: subtracted, then added
    assert counts.window_baskets(conn) == conn.execute("SELECT count(DISTINCT order_id) FROM source_aligned.purchase").fetchone()[0]
    from_counts = counts.rules_from_counts(conn, THRESHOLDS)
    assert len(from_counts) > 0
    assert from_counts.equals(mine_all_levels(conn, THRESHOLDS))


def test_the_affinity_matrix_is_every_day_counted_whatever_the_rules_window(loaded):
    """The matrix is summed from the per-day counts of all history, not from the rules' window totals: the same rows
    as counting each category's and each pair's baskets in the lines."""
    conn, days = loaded
    counts.count_days(conn, days, 2, window_days=10)
    everything = conn.execute("SELECT count(DISTINCT order_id) FROM source_aligned.purchase").fetchone()[0]
    assert counts.window_baskets(conn) < everything  # the rules see ten days, the matrix sixty
    rounded = "category_1, category_2, round(support, 12), round(confidence, 12), round(lift, 12), baskets_with_both::BIGINT AS baskets_with_both"
    conn.execute(f"CREATE TEMP TABLE from_counts AS SELECT {rounded} FROM ({affinity_matrix.affinity_matrix_sql(conn)})")
    conn.execute(f"""CREATE TEMP TABLE from_lines AS SELECT {rounded} FROM (
        WITH basket AS (SELECT DISTINCT p.order_id, pr.category FROM source_aligned.purchase AS p
                        JOIN source_aligned.product AS pr USING (product_id)),
        item AS (SELECT category, count(*) AS baskets FROM basket GROUP BY category),
        pair AS (SELECT a.category AS category_1, b.category AS category_2, count(*) AS together
                 FROM basket AS a JOIN basket AS b ON a.order_id = b.order_id AND a.category <> b.category GROUP BY ALL)
        SELECT x.category AS category_1, y.category AS category_2, coalesce(together, 0) / {everything} AS support,
               coalesce(together, 0) / x.baskets AS confidence, coalesce(together, 0) / x.baskets / (y.baskets / {everything}) AS lift,
               coalesce(together, 0) AS baskets_with_both
        FROM item AS x JOIN item AS y ON x.category <> y.category
        LEFT JOIN pair ON pair.category_1 = x.category AND pair.category_2 = y.category)""")
    assert conn.execute("SELECT count(*) FROM from_lines WHERE baskets_with_both > 0").fetchone()[0] > 10
    for one, other in (("from_counts", "from_lines"), ("from_lines", "from_counts")):
        assert conn.execute(f"SELECT count(*) FROM (FROM {one} EXCEPT ALL FROM {other})").fetchone()[0] == 0


def test_the_affinity_matrix_is_refused_when_a_day_was_counted_without_pairs(loaded):
    conn, days = loaded
    counts.count_days(conn, days, 1, None)
    with pytest.raises(counts.CountsError, match="needs pairs of categories.*recount them"):
        affinity_matrix.affinity_matrix_sql(conn)


def test_the_per_day_pairs_counted_in_numpy_are_the_rows_of_the_pairs_query(loaded):
    """The duckdb engine counts pairs in NumPy; the pairs query stays the definition (Spark runs it). Same rows; a
    product on two lines of an order counts once."""
    conn, days = loaded
    conn.execute("INSERT INTO source_aligned.purchase SELECT * REPLACE (line_number + 1000 AS line_number) "
                 "FROM source_aligned.purchase USING SAMPLE 50 ROWS")
    conn.execute(f"CREATE TEMP VIEW day_lines AS {counts.lines_sql('source_aligned.purchase', 'source_aligned.product', days)}")
    conn.execute(f"CREATE TEMP TABLE product_lines AS {counts.product_lines_sql('day_lines')}")
    conn.execute("CREATE TEMP TABLE numpy_pairs (day DATE, item_a BIGINT, item_b BIGINT, baskets BIGINT)")
    written = pair_counts.insert_day_pairs(conn, "product_lines", "numpy_pairs")
    query = counts.product_pairs_sql("product_lines")
    assert written == conn.execute(f"SELECT count(*) FROM ({query})").fetchone()[0] > 1_000
    for one, other in (("numpy_pairs", f"({query})"), (f"({query})", "numpy_pairs")):
        assert conn.execute(f"SELECT count(*) FROM (FROM {one} EXCEPT ALL FROM {other})").fetchone()[0] == 0


@pytest.mark.parametrize("width", [60, 70_000])
def test_pairs_are_counted_day_by_day_in_32_bits_or_64(width):
    """A pair of a day is keyed in 32 bits up to 65,536 products, in 64 above; either way every day's pairs are
    counted on their own, a day with no basket of two products has none, and the result is ascending by day and
    pair, as a count by hand of the same random baskets says."""
    rng = np.random.default_rng(7)
    baskets = {}  # (day, basket) -> its distinct items
    for basket in range(3_000):
        day = int(rng.integers(0, 9)) if basket else 4  # day 4: one basket of one item, then others
        size = 1 if basket == 0 else int(rng.integers(1, 7))
        baskets[(day, basket)] = sorted(set(rng.choice([0, 1, 2, 3, width - 2, width - 1], size=size).tolist()))
    baskets[(9, 3_000)] = [5]  # day 9: a single basket of one product, so no pair
    lines = sorted((day, basket, item) for (day, basket), items in baskets.items() for item in items)
    day, basket, item = (np.array(column) for column in zip(*lines))
    expected = Counter((d, a, b) for (d, _), items in baskets.items() for a, b in combinations(items, 2))
    days, pairs, counted, bits = pair_counts.count_pairs(day.astype(np.int32), basket, item.astype(np.int32), width)
    assert pairs.dtype == (np.uint32 if width <= 65_536 else np.uint64)
    mask = (1 << bits) - 1
    got = [(int(d), int(p) >> bits, int(p) & mask, int(c)) for d, p, c in zip(days, pairs, counted)]
    assert got == sorted((d, a, b, c) for (d, a, b), c in expected.items())
    assert 9 not in set(days.tolist()) and {d for d, _, _, _ in got} == set(range(9))


def test_counting_a_chunk_of_days_at_a_time_gives_the_counts_of_one_go(loaded, tmp_path, monkeypatch):
    """count_days commits a chunk of days at a time; cut into one-day chunks (a day with no lines included) or counted
    at once, every per-day table and every total holds the same rows."""
    conn, days = loaded
    conn.execute("DELETE FROM source_aligned.purchase WHERE CAST(purchased_at AS DATE) = $day",
                 {"day": days.first + timedelta(days=10)})
    counts.count_days(conn, days, 3, None)
    conn.execute(f"DETACH {counts.SCHEMA}")
    counts.attach(conn, tmp_path / "chunked.counts.duckdb")
    monkeypatch.setattr(counts, "CHUNK_LINES", 1)
    counted = counts.count_days(conn, days, 3, None)
    assert counted.days == (days.end - days.first).days - 1
    conn.execute(f"ATTACH '{tmp_path / 'w.counts.duckdb'}' AS whole (READ_ONLY)")
    for name in counts.size(conn):
        assert conn.execute(f"SELECT count(*) FROM whole.{name}").fetchone()[0] > 0
        for one, other in ((f"whole.{name}", f"{counts.SCHEMA}.{name}"), (f"{counts.SCHEMA}.{name}", f"whole.{name}")):
            assert conn.execute(f"SELECT count(*) FROM (FROM {one} EXCEPT ALL FROM {other})").fetchone()[0] == 0, name


def test_a_trailing_window_subtracts_the_days_that_age_out(loaded):
    conn, days = loaded
    counts.count_days(conn, days, 3, None)
    conn.execute("BEGIN")
    counts.sync_window(conn, 30)
    conn.execute("COMMIT")
    assert counts.rules_from_counts(conn, THRESHOLDS).equals(mine_all_levels(conn, THRESHOLDS, recent_lines(conn, 30)))
    conn.execute("BEGIN")
    counts.sync_window(conn, None)  # back to all history: the days come back in
    conn.execute("COMMIT")
    assert counts.rules_from_counts(conn, THRESHOLDS).equals(mine_all_levels(conn, THRESHOLDS))


def test_counts_of_days_no_longer_in_the_warehouse_are_dropped(loaded):
    conn, days = loaded
    counts.count_days(conn, days, 3, None)
    gone = days.first + timedelta(days=3)
    conn.execute("DELETE FROM source_aligned.purchase WHERE CAST(purchased_at AS DATE) = ?", [gone])
    counts.count_days(conn, Days(days.last, days.end), 3, None)  # a run of the last day only
    assert conn.execute("SELECT count(*) FROM counts.day_baskets WHERE day = ?", [gone]).fetchone()[0] == 0
    assert counts.rules_from_counts(conn, THRESHOLDS).equals(mine_all_levels(conn, THRESHOLDS))


def test_rules_before_a_day_from_the_counts_equal_mining_the_lines_before_it_or_are_not_given(loaded):
    """The backtest's rules before its cut-off, from the counts: the window's totals less the days from the cut-off
    on equal mining the lines before it. Not given (None, so the backtest mines the lines) when the window leaves out
    days before the cut-off, when the counts lag the lines, or when they were counted for smaller itemsets."""
    conn, days = loaded
    counts.count_days(conn, days, 3, None)
    cutoff = days.first + timedelta(days=40)
    conn.execute(f"CREATE TEMP VIEW before AS FROM source_aligned.purchase WHERE purchased_at < DATE '{cutoff}'")
    mined = mine_all_levels(conn, THRESHOLDS, "before")
    assert len(mined) > 0 and not mined.equals(mine_all_levels(conn, THRESHOLDS))
    assert counts.rules_before(conn, THRESHOLDS, cutoff, "before").equals(mined)

    conn.execute("BEGIN")
    counts.sync_window(conn, 30)  # a trailing window: the totals leave out days before the cut-off
    conn.execute("COMMIT")
    assert counts.rules_before(conn, THRESHOLDS, cutoff, "before") is None
    conn.execute("BEGIN")
    counts.sync_window(conn, None)
    conn.execute("COMMIT")

    conn.execute("INSERT INTO source_aligned.purchase SELECT * REPLACE (order_id + 10000000 AS order_id) "
                 f"FROM source_aligned.purchase WHERE purchased_at < DATE '{cutoff}' LIMIT 3")  # lines not counted yet
    assert counts.rules_before(conn, THRESHOLDS, cutoff, "before") is None
    counts.count_days(conn, days, 2, None)  # counted again, for category itemsets of two at most
    assert counts.rules_before(conn, THRESHOLDS, cutoff, "before") is None
    counts.count_days(conn, days, 3, None)
    assert counts.rules_before(conn, THRESHOLDS, cutoff, "before").equals(mine_all_levels(conn, THRESHOLDS, "before"))


def test_the_typical_spend_over_the_counted_baskets_equals_the_lines_own(loaded):
    """The recommendations port divides an item's spend by the baskets it is in, summed from the per-day counts
    (item_baskets_sql), not counted DISTINCT in the lines again: the same rows, bit for bit. Counts that lag the
    lines (a day's product counts missing) change the expected values."""
    from product_affinity.consumer_aligned import recommendations

    conn, days = loaded
    counts.count_days(conn, days, 3, None)
    conn.register("_mined", mine_all_levels(conn, THRESHOLDS))
    conn.execute(f"CREATE SCHEMA consumer_aligned; CREATE TABLE {recommendations.RULES} AS FROM _mined")

    def recommended(**kwargs) -> list[tuple]:
        return sorted(conn.execute(recommendations.build(conn, 3, **kwargs)).fetchall())

    from_lines = recommended()
    assert {row[1] for row in from_lines} == {"category", "product"}
    assert recommended(item_baskets=counts.item_baskets_sql) == from_lines
    conn.execute(f"DELETE FROM {counts.SCHEMA}.day_product_items WHERE day = (SELECT max(day) FROM {counts.SCHEMA}.day_product_items)")
    lagging = recommended(item_baskets=counts.item_baskets_sql)
    assert [row[:7] for row in lagging] == [row[:7] for row in from_lines] and lagging != from_lines


def test_settings_the_counts_cannot_serve_are_refused(loaded):
    conn, days = loaded
    counts.count_days(conn, days, 2, None)
    with pytest.raises(counts.CountsError, match="counted up to 2"):
        counts.rules_from_counts(conn, THRESHOLDS)
    with pytest.raises(counts.CountsError, match="at most 2"):
        counts.rules_from_counts(conn, {**THRESHOLDS, "category": Thresholds(0.01, 0.1, 2), "product": Thresholds(0.005, 0.1, 3)})


def test_the_spark_engines_files_of_the_window_hold_the_counts_of_their_days(loaded, tmp_path):
    """current_files: the window's days with no current files under a root are exported from the counts file and
    recorded; asked again, nothing is exported; a day recounted here is forgotten, and exported again when asked for."""
    conn, days = loaded
    root = tmp_path / "partitions"
    counts.count_days(conn, days, 3, 30)
    exported = []

    def export(conn, root, missing):
        exported.append(missing)
        counts.export_counts(conn, root, missing)

    files = counts.current_files(conn, root, counts.COUNTED, counts.WINDOW_DAYS, export)
    first, last, held = conn.execute("SELECT min(day), max(day), count(*) FROM counts.window_days").fetchone()
    window = Days(first, last + timedelta(days=1))
    assert exported == [window] and first > days.first
    for name in counts.COUNTED:
        assert len(files[name]) == held, name
        columns = ", ".join(c for (c,) in conn.execute(f"SELECT column_name FROM (DESCRIBE counts.{name})").fetchall())
        for a, b in ((f"({counts.parquet_days_sql(root, name, window)})", f"counts.{name}"),
                     (f"counts.{name}", f"({counts.parquet_days_sql(root, name, window)})")):
            only = conn.execute(f"""SELECT count(*) FROM (SELECT {columns} FROM {a} WHERE day >= $first
                EXCEPT ALL SELECT {columns} FROM {b} WHERE day >= $first)""", {"first": first}).fetchone()[0]
            assert only == 0, (name, a)
    assert counts.current_files(conn, root, counts.COUNTED, counts.WINDOW_DAYS, export) == files
    assert len(exported) == 1  # every file of the window is current
    recounted = Days(days.last, days.end)
    counts.count_days(conn, recounted, 3, 30)
    assert counts.current_files(conn, root, counts.COUNTED, counts.WINDOW_DAYS, export) == files
    assert exported[1:] == [recounted]


def test_a_root_in_object_storage_holds_what_a_local_folder_holds(loaded, tmp_path):
    """The files by day under a root given as a URL (here fsspec's in-memory file system, which like object storage
    has no folders, only keys): the lines exported, counted from the files by DuckDB (the fanned-out map) and loaded
    give the counts of the warehouse's own count; a day whose lines all left loses its folders there."""
    conn, days = loaded
    root = f"memory://{uuid.uuid4().hex}/partitions"
    fs = fsspec.filesystem("memory")
    try:
        counts.export_lines(conn, root, days)
        counts.count_files(root, days, 3)
        counts.count_days(conn, days, 3, None, counted_in=root)
        emptied = days.first + timedelta(days=7)
        conn.execute("DELETE FROM source_aligned.purchase WHERE CAST(purchased_at AS DATE) = $day", {"day": emptied})
        again = Days(emptied, emptied + timedelta(days=2))
        counts.export_lines(conn, root, again)
        counts.count_files(root, again, 3)
        counts.count_days(conn, again, 3, None, counted_in=root)
        for name in (day_files.LINES, *counts.COUNTED):
            assert not fs.exists(str(day_files.day_folder(root, name, emptied))), name
            assert fs.isdir(str(day_files.day_folder(root, name, emptied + timedelta(days=1)))), name
        assert not fs.exists(f"{root}/_staging") or not fs.ls(f"{root}/_staging")
        conn.execute(f"DETACH {counts.SCHEMA}")
        conn.execute(f"ATTACH '{tmp_path / 'w.counts.duckdb'}' AS from_files (READ_ONLY)")
        counts.attach(conn, tmp_path / "in_warehouse.counts.duckdb")
        counts.count_days(conn, days, 3, None)
        for name in counts.size(conn):
            assert conn.execute(f"SELECT count(*) FROM from_files.{name}").fetchone()[0] > 0
            for one, other in ((f"from_files.{name}", f"{counts.SCHEMA}.{name}"), (f"{counts.SCHEMA}.{name}", f"from_files.{name}")):
                assert conn.execute(f"SELECT count(*) FROM (FROM {one} EXCEPT ALL FROM {other})").fetchone()[0] == 0, name
    finally:
        fs.rm(root.split("/partitions")[0], recursive=True)


def test_a_count_stopped_between_chunks_leaves_right_totals_and_the_next_run_finishes(loaded, tmp_path, monkeypatch):
    """count_days commits a chunk at a time: a recount of every day, after a third of the orders were taken away,
    stopped in its third chunk leaves totals that are the sum of the counts of the days the window lists (the new
    counts of the two chunks recounted, the old counts of the days not recounted yet); run again, the counts equal a
    count in one go."""
    conn, days = loaded
    counts.count_days(conn, days, 3, None)
    conn.execute("DELETE FROM source_aligned.purchase WHERE order_id % 3 = 0")  # every day's counts change
    monkeypatch.setattr(counts, "CHUNK_LINES", 300)  # a day or two a chunk
    real, calls = pair_counts.insert_day_pairs, []

    def failing_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(pair_counts, "insert_day_pairs", failing_third)
    with pytest.raises(RuntimeError, match="killed"):
        counts.count_days(conn, days, 3, None)
    in_window = conn.execute(f"SELECT count(*) FROM {counts.SCHEMA}.window_days").fetchone()[0]
    counted = conn.execute(f"SELECT count(*) FROM {counts.SCHEMA}.day_baskets").fetchone()[0]
    assert in_window == counted  # the chunks recounted stay in the totals, netted: the rest were never taken out
    assert conn.execute(f"SELECT count(*) FROM {counts.SCHEMA}.total_product_pairs").fetchone()[0] > 0
    for kind, keys in counts.KEYS.items():
        key_list = ", ".join(keys)
        summed = f"""SELECT {key_list}, sum(baskets) AS baskets FROM {counts.SCHEMA}.day_{kind}
            SEMI JOIN {counts.SCHEMA}.window_days USING (day) GROUP BY ALL"""
        for one, other in ((f"{counts.SCHEMA}.total_{kind}", f"({summed})"), (f"({summed})", f"{counts.SCHEMA}.total_{kind}")):
            assert conn.execute(f"SELECT count(*) FROM (SELECT {key_list}, baskets FROM {one} EXCEPT ALL "
                                f"SELECT {key_list}, baskets FROM {other})").fetchone()[0] == 0, kind
    monkeypatch.setattr(pair_counts, "insert_day_pairs", real)
    counts.count_days(conn, days, 3, None)
    conn.execute(f"DETACH {counts.SCHEMA}")
    conn.execute(f"ATTACH '{tmp_path / 'w.counts.duckdb'}' AS resumed (READ_ONLY)")
    counts.attach(conn, tmp_path / "in_one_go.counts.duckdb")
    monkeypatch.setattr(counts, "CHUNK_LINES", counts.CHUNK_LINES * 10**6)
    counts.count_days(conn, days, 3, None)
    for name in counts.size(conn):
        for one, other in ((f"resumed.{name}", f"{counts.SCHEMA}.{name}"), (f"{counts.SCHEMA}.{name}", f"resumed.{name}")):
            assert conn.execute(f"SELECT count(*) FROM (FROM {one} EXCEPT ALL FROM {other})").fetchone()[0] == 0, name


def _same_counts(conn, tmp_path, days: Days, size: int = 3) -> None:
    """Every per-day table and every total of the counts equals a count of `days` from nothing (EXCEPT ALL both ways)."""
    fresh = tmp_path / "fresh.counts.duckdb"
    fresh.unlink(missing_ok=True)
    conn.execute(f"DETACH {counts.SCHEMA}")
    counts.attach(conn, fresh)
    counts.count_days(conn, days, size, None)
    conn.execute(f"DETACH {counts.SCHEMA}")
    counts.attach(conn, tmp_path / "w.counts.duckdb")
    conn.execute(f"ATTACH '{fresh}' AS fresh (READ_ONLY)")
    try:
        for name in [*counts.size(conn), "day_contents"]:
            assert conn.execute(f"SELECT count(*) FROM fresh.{name}").fetchone()[0] > 0, name
            for one, other in ((f"fresh.{name}", f"{counts.SCHEMA}.{name}"), (f"{counts.SCHEMA}.{name}", f"fresh.{name}")):
                assert conn.execute(f"SELECT count(*) FROM (FROM {one} EXCEPT ALL FROM {other})").fetchone()[0] == 0, name
    finally:
        conn.execute("DETACH fresh")


def test_a_rerun_recounts_only_the_days_whose_baskets_changed(loaded, tmp_path):
    """Counting a range again recounts the days whose baskets changed since they were counted (a late line in an order,
    a product moved to another category), not the days where only a price changed or nothing did; the counts then
    equal a count from nothing."""
    conn, days = loaded
    assert counts.count_days(conn, days, 3, None).recounted == (days.end - days.first).days  # a first count: every day
    assert counts.count_days(conn, days, 3, None).recounted == 0  # nothing changed
    late, repriced = days.first + timedelta(days=12), days.first + timedelta(days=30)
    conn.execute("""INSERT INTO source_aligned.purchase SELECT order_id, 99, customer_id,
        (SELECT max(product_id) FROM source_aligned.product), 1, 1.00, purchased_at, channel, deal
        FROM source_aligned.purchase WHERE CAST(purchased_at AS DATE) = $day LIMIT 1""", {"day": late})  # a late line
    conn.execute("UPDATE source_aligned.purchase SET unit_price = unit_price + 1 WHERE CAST(purchased_at AS DATE) = $day",
                 {"day": repriced})
    counted = counts.count_days(conn, days, 3, None)
    assert counted.recounted == 1
    assert conn.execute("SELECT count(*) FROM counts.day_product_items WHERE day = $day AND item = "
                        "(SELECT max(product_id) FROM source_aligned.product)", {"day": late}).fetchone()[0] == 1
    _same_counts(conn, tmp_path, days)

    moved = conn.execute("SELECT product_id FROM source_aligned.purchase GROUP BY ALL ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    conn.execute("UPDATE source_aligned.product SET category = 'Moved here' WHERE product_id = $id", {"id": moved})
    holding = conn.execute("SELECT count(DISTINCT CAST(purchased_at AS DATE)) FROM source_aligned.purchase WHERE product_id = $id",
                           {"id": moved}).fetchone()[0]
    assert counts.count_days(conn, days, 3, None).recounted == holding  # the days of its baskets, for their categories
    _same_counts(conn, tmp_path, days)
    assert counts.count_days(conn, days, 2, None).recounted == (days.end - days.first).days  # another itemset size
    _same_counts(conn, tmp_path, days, size=2)
