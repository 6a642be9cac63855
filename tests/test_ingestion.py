"""Source files -> source-aligned tables: typing, normalisation, quarantine and row accounting."""

from collections import Counter
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from product_affinity.contract.odcs import source_tables, table
from product_affinity.partitions import Days
from product_affinity.source_aligned.cleaning import ingest
from product_affinity.sources.files import SourceError
from tests.conftest import PRODUCTS, customer, write_sources

NOW = datetime(2026, 1, 1)


def quarantine(conn, source):
    return conn.execute(
        "SELECT line, reason, column_name FROM source_aligned.quarantine WHERE source = ? ORDER BY line", [source]
    ).fetchall()


def ingest_all(conn, directory):
    return [ingest(conn, directory, t.name, NOW) for t in source_tables()]


def test_customers_are_typed_normalised_and_deduplicated(conn, tmp_path):
    write_sources(
        tmp_path,
        customers=[
            "1, Ann ,Lee, Ann.Lee@Example.COM ,+1-555-0100,1980,Master,Married,50000.00,usa,2024-01-01 10:00:00",
            customer(2, country="ES"),
            customer(2, country="ES"),  # exact duplicate
            customer("", country="Spain"),  # no key
            "3,Cy,Oh,c@x.com,+1,nineteen,PhD,Single,40000,Spain,2024-01-02 10:00:00",  # birth_year not a number
            customer(4, country=" españa "),
        ],
        products=PRODUCTS,
        purchases=[],
    )
    result = ingest(conn, tmp_path, "customer", NOW)

    assert (result.accepted, result.rows_in) == (3, 6)
    assert result.quarantined == {"bad_type": 1, "duplicate_key": 1, "missing_key": 1}
    assert quarantine(conn, "customer_info.csv") == [
        (4, "duplicate_key", "customer_id"),
        (5, "missing_key", "customer_id"),
        (6, "bad_type", "birth_year"),
    ]
    rows = conn.execute(
        "SELECT customer_id, first_name, email, country, birth_year FROM source_aligned.customer ORDER BY 1"
    ).fetchall()
    assert rows == [
        (1, "Ann", "ann.lee@example.com", "United States", 1980),
        (2, "Ann", "c2@example.com", "Spain", 1980),
        (4, "Ann", "c4@example.com", "Spain", 1980),
    ]


def test_purchase_rules_quarantine_each_bad_line_with_its_reason(conn, tmp_path):
    good = "10,1,1,1,2,10.00,2025-01-10 09:00:00,web,false"
    write_sources(
        tmp_path,
        customers=[customer(1)],
        products=PRODUCTS,
        purchases=[
            good,                                                 # line 2
            good,                                                 # 3: duplicate (order_id, line_number)
            "11,1,99,1,1,10.00,2025-01-10 09:00:00,web,false",    # 4: unknown customer
            "11,2,1,99,1,10.00,2025-01-10 09:00:00,web,false",    # 5: unknown product
            "11,3,1,2,-1,20.00,2025-01-10 09:00:00,web,false",    # 6: negative quantity
            "11,4,1,2,1,-20.00,2025-01-10 09:00:00,web,false",    # 7: negative price
            "11,5,1,3,1,5.00,2026-06-01 00:00:00,web,false",      # 8: after the run started
            '11,6,1,3,two,"5,00",2025-01-10 09:00:00,web,false',  # 9: not numbers
            "11,7,1,3",                                           # 10: too few columns
            ",8,1,3,1,5.00,2025-01-10 09:00:00,web,false",        # 11: no order_id
            "11,9,,3,1,5.00,2025-01-10 09:00:00,web,false",       # 12: no customer_id
            "12,1,1,3,1,5.00,2025-01-11 09:00:00, Store ,true",   # 13: accepted, channel normalised
        ],
    )
    results = ingest_all(conn, tmp_path)
    purchase = results[-1]

    assert purchase.rows_in == 12
    assert purchase.accepted == 2
    assert quarantine(conn, "purchase.csv") == [
        (3, "duplicate_key", "order_id, line_number"),
        (4, "unknown_customer", "customer_id"),
        (5, "unknown_product", "product_id"),
        (6, "invalid_quantity", "quantity"),
        (7, "invalid_unit_price", "unit_price"),
        (8, "future_timestamp", "purchased_at"),
        (9, "bad_type", "quantity"),
        (10, "malformed_row", "quantity"),  # the first column the line lacks
        (11, "missing_key", "order_id"),
        (12, "missing_value", "customer_id"),
    ]
    assert conn.execute("SELECT order_id, channel, deal FROM source_aligned.purchase ORDER BY 1").fetchall() == [
        (10, "web", False),
        (12, "store", True),
    ]


@pytest.mark.parametrize("line_number", [0, 62, 63, 1000, -1])  # a mask of 63 bits holds 0 to 62; the rest are grouped
def test_a_repeated_key_is_found_whatever_its_line_number(conn, tmp_path, line_number):
    """Repeated keys are found by a bit mask of line numbers per order where they fit in it, by grouping the whole key
    where they do not: a repeat is quarantined either way, and distinct lines of one order, or of two orders with
    the same line numbers, are not."""
    def line(order: int, number: int, product: int) -> str:
        return f"{order},{number},1,{product},1,10.00,2025-01-10 09:00:00,web,false"

    write_sources(tmp_path, customers=[customer(1)], products=PRODUCTS, purchases=[
        line(10, line_number, 1),      # line 2
        line(10, line_number + 1, 2),  # 3: the same order, another line
        line(11, line_number, 1),      # 4: another order, the same line number
        line(10, line_number, 3),      # 5: repeats line 2's key
        line(12, 5, 1),                # 6
    ])
    purchase = ingest_all(conn, tmp_path)[-1]
    assert quarantine(conn, "purchase.csv") == [(5, "duplicate_key", "order_id, line_number")]
    assert purchase.accepted == 4


def test_a_load_of_one_day_judges_repeated_keys_as_a_load_of_everything(conn, tmp_path):
    """Loading days, only the rows whose key is one of the days' keys are grouped; a row outside the days still counts
    as the first of its key. So a day's row repeating a key first seen on another day is quarantined, and a day's row
    whose key was first seen on a rejected row is accepted, exactly as a load of everything judges them."""
    write_sources(
        tmp_path,
        customers=[customer(1)],
        products=PRODUCTS,
        purchases=[
            "10,1,1,1,2,10.00,2025-01-10 09:00:00,web,false",  # line 2: day 10, accepted
            "10,1,1,1,2,10.00,2025-01-12 09:00:00,web,false",  # 3: day 12, repeats line 2's key
            "11,1,99,1,1,10.00,2025-01-10 09:00:00,web,false",  # 4: day 10, unknown customer
            "11,1,1,2,1,10.00,2025-01-12 09:00:00,web,false",  # 5: day 12, its key first on a rejected row: accepted
            "12,1,1,3,1,5.00,2025-01-12 09:00:00,web,false",  # 6: day 12, accepted
            "12,1,1,3,1,5.00,2025-01-11 09:00:00,web,false",  # 7: day 11, repeats line 6's key
        ],
    )
    day_12 = Days(date(2025, 1, 12), date(2025, 1, 13))

    def judged(connection) -> tuple[list, list]:
        return (connection.execute("""SELECT order_id, line_number FROM source_aligned.purchase
                                      WHERE CAST(purchased_at AS DATE) = '2025-01-12' ORDER BY ALL""").fetchall(),
                connection.execute("""SELECT line, reason FROM source_aligned.quarantine
                                      WHERE partition_day = '2025-01-12' ORDER BY ALL""").fetchall())

    ingest_all(conn, tmp_path)
    with duckdb.connect() as one_day:
        for name in ("customer", "product"):
            ingest(one_day, tmp_path, name, NOW)
        ingest(one_day, tmp_path, "purchase", NOW, day_12)
        assert judged(one_day) == judged(conn) == ([(11, 1), (12, 1)], [(3, "duplicate_key")])
        assert one_day.execute("SELECT count(*) FROM source_aligned.quarantine WHERE reason = 'duplicate_key'").fetchone() == (1,)


def test_a_load_of_days_holding_every_row_judges_as_a_load_of_everything(conn, tmp_path):
    """A run over all history loads a range of days that holds every row; its repeated keys are then found by grouping
    every key (the shortcut ingest takes), and the accepted lines and the quarantine are those of a load of everything."""
    write_sources(
        tmp_path,
        customers=[customer(1)],
        products=PRODUCTS,
        purchases=[
            "10,1,1,1,2,10.00,2025-01-10 09:00:00,web,false",  # line 2: accepted
            "10,1,1,1,2,10.00,2025-01-12 09:00:00,web,false",  # 3: repeats line 2's key
            "11,1,99,1,1,10.00,2025-01-10 09:00:00,web,false",  # 4: unknown customer
            "11,1,1,2,1,10.00,2025-01-12 09:00:00,web,false",  # 5: its key first on a rejected row: accepted
            "12,1,1,3,1,5.00,2025-01-11 09:00:00,web,false",  # 6: accepted
            "12,1,1,3,1,5.00,2025-01-11 09:00:00,web,false",  # 7: repeats line 6's key, same day
        ],
    )

    def loaded(connection) -> tuple[list, list]:
        return (connection.execute("SELECT * FROM source_aligned.purchase ORDER BY ALL").fetchall(),
                connection.execute("SELECT * FROM source_aligned.quarantine ORDER BY ALL").fetchall())

    ingest_all(conn, tmp_path)
    with duckdb.connect() as every_day:
        for name in ("customer", "product"):
            ingest(every_day, tmp_path, name, NOW)
        ingest(every_day, tmp_path, "purchase", NOW, Days(date(2025, 1, 10), date(2025, 1, 13)))
        assert loaded(every_day) == loaded(conn)
        assert [(line, reason) for _, line, reason, *_ in loaded(every_day)[1]] == [
            (3, "duplicate_key"), (4, "unknown_customer"), (7, "duplicate_key")]


def test_quarantine_detail_names_the_value(conn, tmp_path):
    write_sources(
        tmp_path,
        customers=[customer(1)],
        products=PRODUCTS,
        purchases=["11,3,1,2,-3,20.00,2025-01-10 09:00:00,web,false", "11,4,1,42,1,20.00,2025-01-10 09:00:00,web,false"],
    )
    ingest_all(conn, tmp_path)
    details = [row[0] for row in conn.execute("SELECT detail FROM source_aligned.quarantine ORDER BY line").fetchall()]
    assert details == ["quantity -3 is not above 0", "product_id 42 is not in product"]


def test_an_oversized_order_is_quarantined_whole(conn, tmp_path):
    limit = int(table("purchase").custom["maxLinesPerOrder"])
    bulk = [f"20,{n},1,{1 + n % 3},1,5.00,2025-01-10 09:00:00,web,false" for n in range(1, limit + 2)]
    write_sources(tmp_path, customers=[customer(1)], products=PRODUCTS, purchases=["10,1,1,1,2,10.00,2025-01-10 09:00:00,web,false", *bulk])
    purchase = ingest_all(conn, tmp_path)[-1]
    assert (purchase.accepted, purchase.quarantined) == (1, {"oversized_order": limit + 1})
    detail = conn.execute("SELECT any_value(detail) FROM source_aligned.quarantine").fetchone()[0]
    assert detail == f"order 20 has more than the {limit} lines an order may have"


def test_reingesting_replaces_rather_than_appends(conn, tmp_path):
    write_sources(tmp_path, customers=[customer(1), customer(1)], products=PRODUCTS, purchases=[])
    ingest(conn, tmp_path, "customer", NOW)
    ingest(conn, tmp_path, "customer", NOW)
    assert conn.execute("SELECT count(*) FROM source_aligned.customer").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM source_aligned.quarantine").fetchone() == (1,)


def test_missing_column_is_an_error_naming_file_and_column(conn, tmp_path):
    write_sources(tmp_path, customers=[], products=PRODUCTS, purchases=[])
    path = tmp_path / "product.csv"
    path.write_text("product_id,product_name,subcategory,list_price\n1,Rioja,Red,10.00\n")
    with pytest.raises(SourceError, match=r"product\.csv: line 1 \(header\) lacks column\(s\) category"):
        ingest(conn, tmp_path, "product", NOW)


def test_extra_columns_are_ignored_and_reported(conn, tmp_path):
    write_sources(tmp_path, customers=[], products=[], purchases=[])
    (tmp_path / "product.csv").write_text(
        "product_id,shelf,product_name,category,subcategory,list_price\n1,A3,Rioja,Wines,Red,10.00\n"
    )
    result = ingest(conn, tmp_path, "product", NOW)
    assert (result.accepted, result.ignored_columns) == (1, ("shelf",))


@pytest.mark.parametrize("content", [b"", b"\xff\xfeproduct_id"])
def test_empty_or_undecodable_file_is_an_error(conn, tmp_path, content):
    write_sources(tmp_path, customers=[], products=[], purchases=[])
    (tmp_path / "product.csv").write_bytes(content)
    with pytest.raises(SourceError, match=r"product\.csv"):
        ingest(conn, tmp_path, "product", NOW)


def test_missing_file_is_an_error(conn, tmp_path):
    with pytest.raises(SourceError, match=r"customer_info\.csv: source file not found"):
        ingest(conn, tmp_path, "customer", NOW)


def stage(warehouse: Path, purchase_values: str, purchases: list[tuple]) -> None:
    """The staging file of `warehouse` as dlt leaves it: one customer, one product, and `purchases`, each row inserted
    as `purchase_values` (the contract's purchase columns in order, parameters where a row gives them)."""
    from product_affinity.sources.staging import staging_database

    with duckdb.connect(str(staging_database(warehouse))) as staged:
        staged.execute("CREATE SCHEMA staging")
        for name in ("customer", "product", "purchase"):
            t = table(name)
            staged.execute(f"CREATE TABLE staging.{t.source_file.removesuffix('.csv')} "
                           f"({', '.join(f'{c.name} {c.type}' for c in t.columns)})")
        staged.execute("INSERT INTO staging.customer_info (customer_id, email, signup_at) VALUES (1, 'a@example.com', '2024-01-01')")
        staged.execute("INSERT INTO staging.product (product_id, product_name, category, list_price) VALUES (1, 'Tea', 'Drinks', 2.5)")
        staged.executemany(f"INSERT INTO staging.purchase VALUES {purchase_values}", purchases)


def load_staged(conn, warehouse: Path, days: Days | None):
    """The staged customers and products, then the staged purchases of `days` (all when None); purchase's result."""
    from product_affinity.source_aligned.cleaning import ingest_scan
    from product_affinity.sources.staging import staged_scan

    for name in ("customer", "product", "purchase"):
        result = ingest_scan(conn, staged_scan(conn, warehouse, name), name, NOW, days if name == "purchase" else None)
    return result


@pytest.mark.parametrize("days", [None, Days(date(2025, 1, 10), date(2025, 1, 12))])
def test_a_staged_tables_quarantined_rows_are_numbered_in_key_order(tmp_path, days):
    """A table staged from the database is read in its own order (new and updated rows land at its end), and its
    quarantined rows are numbered by their place in key order, as if it were a file sorted by key (line 2 the first):
    rows on lesser orders, then the order's lines with lesser line numbers. Checked against the staged rows sorted."""
    import random

    from product_affinity.sources.staging import staging_database

    rows = [(order, number, 1 if (order + number) % 7 else 99, 1 if (order * number) % 5 else 0)
            for order in (3, 10, 11, 250, 1000) for number in range(1, 9)]  # unknown customer 99, quantity 0
    rows += [(None, 1, 1, 1)]  # no order: placed after every keyed row, as ORDER BY places a NULL
    random.Random(4).shuffle(rows)
    warehouse = tmp_path / "w.duckdb"
    stage(warehouse, "(?, ?, ?, 1, ?, 2.50, '2025-01-10 09:00:00', 'web', false)", rows)
    with duckdb.connect(str(staging_database(warehouse)), read_only=True) as staged:
        expected = staged.execute("""SELECT 1 + row_number() OVER (ORDER BY order_id, line_number), order_id, line_number
            FROM staging.purchase QUALIFY customer_id = 99 OR quantity < 1 OR order_id IS NULL ORDER BY 1""").fetchall()
    assert rows != sorted(rows, key=lambda r: (r[0] is None, r[0] or 0, r[1]))  # staged out of key order
    with duckdb.connect(str(warehouse)) as conn:
        assert load_staged(conn, warehouse, days).rows_in == len(rows)
        found = conn.execute("""SELECT line, json_extract(record, '$.order_id')::BIGINT, json_extract(record, '$.line_number')::INTEGER
            FROM source_aligned.quarantine WHERE source = 'purchase.csv' ORDER BY line""").fetchall()
    assert found == expected


def test_a_day_loaded_from_a_staged_table_is_judged_as_a_load_of_everything(tmp_path):
    """Loading days from a staged table, only the days' rows are read; an order's size and a quarantined line's place
    in key order still count every staged row. An order with one line more than allowed, its lines over two days, is
    oversized on either day, and a day's rejected rows keep the lines a load of everything gives them."""
    limit = int(table("purchase").custom["maxLinesPerOrder"])
    rows = [(20, number, 1, f"2025-01-{10 if number <= limit // 2 else 11} 09:00:00") for number in range(1, limit + 2)]
    rows += [(order, number, 99 if number % 2 else 1, f"2025-01-{10 + (order + number) % 3} 09:00:00")
             for order in (3, 30, 31) for number in range(1, 6)]  # unknown customer 99 on every day
    rows.reverse()  # staged out of key order

    def load(warehouse: Path, days: Days | None) -> tuple[list, list]:
        stage(warehouse, "(?, ?, ?, 1, 1, 2.50, ?, 'web', false)", rows)
        with duckdb.connect(str(warehouse)) as conn:
            load_staged(conn, warehouse, days)
            return (conn.execute("SELECT * FROM source_aligned.purchase WHERE purchased_at::DATE = '2025-01-11' ORDER BY ALL").fetchall(),
                    conn.execute("""SELECT line, reason, record FROM source_aligned.quarantine
                                    WHERE partition_day = '2025-01-11' OR partition_day IS NULL ORDER BY ALL""").fetchall())

    (tmp_path / "all").mkdir()
    (tmp_path / "day").mkdir()
    everything = load(tmp_path / "all" / "w.duckdb", None)
    one_day = load(tmp_path / "day" / "w.duckdb", Days(date(2025, 1, 11), date(2025, 1, 12)))
    assert one_day == everything
    reasons = Counter(reason for _, reason, _ in one_day[1])
    assert reasons["oversized_order"] == limit + 1 - limit // 2 and reasons["unknown_customer"] > 0
    assert len(one_day[0]) > 0
