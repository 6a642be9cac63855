"""Per-day product pair counts in NumPy: in how many of a day's baskets each pair of products occurs, every pair.

The per-day pairs are most of the daily counts: two years at Instacart scale hold 182.6 million of them, about 5.5 a
purchase line, where the whole window has 48.7 million distinct pairs. DuckDB's self-join of a basket's products,
grouped by (day, product, product), spends most of its time on a hash table as large as its result. Here DuckDB hands
over the lines sorted by (basket, product), NumPy pairs each position with the later positions of its basket (the
occurrence counting of the rules engine, association_rules.count_itemsets), packs a pair of a day into one integer
(day, product number and product number in bit fields) and counts the keys by sorting them; DuckDB unpacks the
counted keys as it inserts them (shifts and two joins to the product ids, on both cores). daily_counts.count_days
gives it a chunk of days at a time, so memory is a chunk's.

The result is the same rows `daily_counts.product_pairs_sql` selects (tests/test_daily_counts.py compares them): that
text stays the map's definition for engines that run SQL (Spark, through SQLGlot).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

NUMBERS = "_pair_products"


def insert_day_pairs(conn: duckdb.DuckDBPyConnection, product_lines: str, target: str) -> int:
    """Insert into `target` (day, item_a, item_b, baskets) the per-day pair counts of `product_lines` (distinct
    (day, order_id, product_id) rows, an order on one day); return the rows inserted."""
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE {NUMBERS} AS
        SELECT product_id, (row_number() OVER (ORDER BY product_id) - 1)::INTEGER AS n
        FROM (SELECT DISTINCT product_id FROM {product_lines})"""
    )
    try:
        products, first = conn.execute(f"SELECT (SELECT count(*) FROM {NUMBERS}), min(day) FROM {product_lines}").fetchone()
        if first is None:
            return 0
        lines = conn.execute(
            f"""SELECT date_diff('day', $first, l.day)::INTEGER AS day, l.order_id, p.n
            FROM {product_lines} AS l JOIN {NUMBERS} AS p USING (product_id) ORDER BY l.order_id, p.n""",
            {"first": first},
        ).fetchnumpy()
        pairs, baskets, bits = count_pairs(lines["day"], lines["order_id"], lines["n"], products)
        del lines
        conn.register("_counted_pairs", pa.table({"pair": pairs, "baskets": baskets}))
        try:
            return conn.execute(
                f"""INSERT INTO {target} BY NAME
                SELECT $first + (c.pair >> $day_shift)::INTEGER AS day, a.product_id AS item_a, b.product_id AS item_b,
                       c.baskets
                FROM _counted_pairs AS c JOIN {NUMBERS} AS a ON a.n = (c.pair >> $bits) & $mask
                JOIN {NUMBERS} AS b ON b.n = c.pair & $mask""",
                {"first": first, "day_shift": 2 * bits, "bits": bits, "mask": (1 << bits) - 1},
            ).fetchone()[0]
        finally:
            conn.unregister("_counted_pairs")
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {NUMBERS}")


def count_pairs(day: np.ndarray, basket: np.ndarray, item: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per (day, item_a, item_b), item_a < item_b, the number of baskets holding both, from lines sorted by (basket,
    item) with no item twice in a basket; items are numbers below `width`. Returns the pairs packed as
    `day << 2 * bits | item_a << bits | item_b`, ascending (so by day, a, b), their counts, and `bits`.

    Packing in bit fields rather than as `(day * width + a) * width + b` leaves the unpacking to shifts and masks:
    NumPy's 64-bit division took a fifth of the counting."""
    empty = np.zeros(0, dtype=np.int64)
    bits = max(int(width - 1).bit_length(), 1)
    if len(item) == 0:
        return empty, empty, bits
    days = int(day.max()) + 1
    if days.bit_length() + 2 * bits > 63:
        raise ValueError(f"{days} days of {width:,} products: a pair of a day does not fit a 64-bit key; count fewer days at once")
    new_basket = np.empty(len(basket), dtype=bool)
    new_basket[0] = True
    np.not_equal(basket[1:], basket[:-1], out=new_basket[1:])
    starts = np.flatnonzero(new_basket)
    sizes = np.diff(np.append(starts, len(item)))
    left = np.repeat(starts + sizes, sizes) - np.arange(1, len(item) + 1)  # later positions in the same basket
    first_of_pair = ((day.astype(np.int64) << bits) | item) << bits
    keys = np.empty(int(left.sum()), dtype=np.int64)  # one per pair of positions: filled in place, not concatenated
    positions, d, filled = np.flatnonzero(left > 0), 1, 0
    while len(positions):
        np.add(first_of_pair[positions], item[positions + d], out=keys[filled:filled + len(positions)])
        filled += len(positions)
        positions = positions[left[positions] > d]
        d += 1
    if not len(keys):  # no basket with two products
        return empty, empty, bits
    return (*_counted(keys), bits)


def _counted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys, ascending, and how often each occurs. NumPy's sort of 64-bit integers is vectorised (6.5
    million keys in 0.13 s here); np.unique(return_counts=True) took 0.9 s for the same keys with NumPy 2.4."""
    keys.sort()
    first = np.empty(len(keys), dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.empty(len(starts), dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1] = len(keys) - starts[-1]
    return keys[starts], counts
