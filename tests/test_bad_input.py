"""The bad-input catalogue: each deliberately broken source goes through the real pipeline (the CLI).

Every case must end in a clear message naming the file, line or column and the rule; the row
accounting must add up (rows in = accepted + quarantined); and the published outputs must either
stay exactly as they were (the run is refused) or hold none of the bad rows (they were quarantined).
"""

import hashlib
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import duckdb
import pytest

from product_affinity.cli import main
from product_affinity.contract import table
from product_affinity.publication import published_snapshot
from product_affinity.sources.sample import generate_sample

SIZE = dict(customers=300, products=150, orders=3_000)


@dataclass
class Outcome:
    code: int
    err: str
    warehouse: Path
    snapshot_before: Path
    digest_before: str

    @property
    def snapshot_after(self) -> Path:
        return published_snapshot(self.warehouse)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Clean sample sources, and a warehouse with a snapshot already published from them."""
    root = tmp_path_factory.mktemp("bad_input")
    sources = root / "clean"
    generate_sample(sources, **SIZE, end=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    warehouse = root / "warehouse.duckdb"
    with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
        assert main(["run", "--sources", str(sources), "--warehouse", str(warehouse)]) == 0
    return sources, warehouse


@pytest.fixture
def broken(clean, tmp_path):
    """A copy of the clean sources to break."""
    sources, _ = clean
    copy = tmp_path / "sources"
    shutil.copytree(sources, copy)
    return copy


def run(clean, sources: Path) -> Outcome:
    _, warehouse = clean
    before = published_snapshot(warehouse)
    digest_before = digest(before)
    err = StringIO()
    with redirect_stdout(StringIO()), redirect_stderr(err):
        code = main(["run", "--sources", str(sources), "--warehouse", str(warehouse)])
    return Outcome(code, err.getvalue(), warehouse, before, digest_before)


def append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def a_purchase(sources: Path) -> list[str]:
    """The fields of the first genuine purchase line, to derive a broken one from."""
    return (sources / "purchase.csv").read_text().splitlines()[1].split(",")


def data_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1


def assert_refused_and_published_unchanged(outcome: Outcome, *expected: str) -> None:
    assert outcome.code == 1
    for text in expected:
        assert text in outcome.err, outcome.err
    assert "consumers still read" in outcome.err
    assert outcome.snapshot_after == outcome.snapshot_before
    assert digest(outcome.snapshot_before) == outcome.digest_before


def assert_quarantined_and_accounted(outcome: Outcome, sources: Path, source: str, reason: str, line: int, column: str | None) -> str:
    """The run published; the bad line is in quarantine, named; the accounting of the file adds up."""
    assert outcome.code == 0, outcome.err
    assert outcome.snapshot_after != outcome.snapshot_before
    t = next(t for t in (table("customer"), table("product"), table("purchase")) if t.source_file == source)
    with duckdb.connect(str(outcome.snapshot_after), read_only=True) as conn:
        rows = conn.execute(
            "SELECT reason, column_name, detail FROM source_aligned.quarantine WHERE source = ? AND line = ?", [source, line]
        ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [(reason, column)]
        accepted = conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]
        quarantined = conn.execute("SELECT count(*) FROM source_aligned.quarantine WHERE source = ?", [source]).fetchone()[0]
    assert accepted + quarantined == data_lines(sources / source)
    assert f"{source}: " in outcome.err and reason in outcome.err  # the run's log names the file and the rule
    return rows[0][2]


def last_line(path: Path) -> int:
    return data_lines(path) + 1


def test_malformed_csv_row(clean, broken):
    append_line(broken / "purchase.csv", "99999991,1,3")  # too few fields
    detail = assert_quarantined_and_accounted(
        run(clean, broken), broken, "purchase.csv", "malformed_row", last_line(broken / "purchase.csv"), "product_id"
    )
    assert "Expected Number of Columns" in detail


def test_missing_column(clean, broken):
    path = broken / "product.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != 2) for line in lines) + "\n")
    assert_refused_and_published_unchanged(run(clean, broken), "product.csv: line 1 (header) lacks column(s) category")


def test_extra_column_is_ignored_and_named(clean, broken):
    path = broken / "product.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(f"{line},{'shelf' if i == 0 else 'A3'}" for i, line in enumerate(lines)) + "\n")
    outcome = run(clean, broken)
    assert outcome.code == 0, outcome.err
    assert "product.csv: ignored column(s) not in the contract: ('shelf',)" in outcome.err


def test_wrong_type(clean, broken):
    fields = a_purchase(broken)
    fields[0], fields[4] = "99999991", "three"
    append_line(broken / "purchase.csv", ",".join(fields))
    detail = assert_quarantined_and_accounted(run(clean, broken), broken, "purchase.csv", "bad_type", last_line(broken / "purchase.csv"), "quantity")
    assert '"three"' in detail


@pytest.mark.parametrize(("position", "reason", "column"), [(0, "missing_key", "order_id"), (3, "missing_value", "product_id")])
def test_null_keys(clean, broken, position, reason, column):
    fields = a_purchase(broken)
    fields[0] = "99999991" if position else fields[0]
    fields[position] = ""
    append_line(broken / "purchase.csv", ",".join(fields))
    assert_quarantined_and_accounted(run(clean, broken), broken, "purchase.csv", reason, last_line(broken / "purchase.csv"), column)


def test_duplicate_key(clean, broken):
    append_line(broken / "purchase.csv", ",".join(a_purchase(broken)))
    detail = assert_quarantined_and_accounted(
        run(clean, broken), broken, "purchase.csv", "duplicate_key", last_line(broken / "purchase.csv"), "order_id, line_number"
    )
    assert "appeared on an earlier line" in detail


@pytest.mark.parametrize(
    ("position", "value", "reason", "column", "explained"),
    [(4, "-2", "invalid_quantity", "quantity", "quantity -2 is not above 0"),
     (5, "-1.50", "invalid_unit_price", "unit_price", "unit_price -1.5 is not at least 0")],
)
def test_negative_quantity_or_price(clean, broken, position, value, reason, column, explained):
    fields = a_purchase(broken)
    fields[0], fields[position] = "99999991", value
    append_line(broken / "purchase.csv", ",".join(fields))
    outcome = run(clean, broken)
    detail = assert_quarantined_and_accounted(outcome, broken, "purchase.csv", reason, last_line(broken / "purchase.csv"), column)
    assert detail == explained
    with duckdb.connect(str(outcome.snapshot_after), read_only=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM source_aligned.purchase WHERE {column} < 0").fetchone() == (0,)


def test_future_timestamp(clean, broken):
    fields = a_purchase(broken)
    fields[0], fields[6] = "99999991", f"{datetime.now(UTC) + timedelta(days=3):%Y-%m-%d %H:%M:%S}"
    append_line(broken / "purchase.csv", ",".join(fields))
    assert_quarantined_and_accounted(run(clean, broken), broken, "purchase.csv", "future_timestamp", last_line(broken / "purchase.csv"), "purchased_at")


@pytest.mark.parametrize(("position", "reason", "column"), [(2, "unknown_customer", "customer_id"), (3, "unknown_product", "product_id")])
def test_unknown_customer_or_product(clean, broken, position, reason, column):
    fields = a_purchase(broken)
    fields[0], fields[position] = "99999991", "88888888"
    append_line(broken / "purchase.csv", ",".join(fields))
    detail = assert_quarantined_and_accounted(run(clean, broken), broken, "purchase.csv", reason, last_line(broken / "purchase.csv"), column)
    assert "88888888" in detail


def test_empty_file(clean, broken):
    (broken / "customer_info.csv").write_bytes(b"")
    assert_refused_and_published_unchanged(run(clean, broken), "customer_info.csv: file is empty")


def test_wrong_encoding_of_the_whole_file(clean, broken):
    path = broken / "product.csv"
    path.write_bytes(path.read_text().encode("utf-16"))
    assert_refused_and_published_unchanged(run(clean, broken), "product.csv: line 1 (header) is not valid UTF-8")


def test_wrong_encoding_of_a_line(clean, broken):
    fields = (broken / "customer_info.csv").read_text().splitlines()[1].split(",")
    fields[0], fields[9] = "99999991", "España"
    with (broken / "customer_info.csv").open("ab") as handle:  # one line written in Latin-1, not UTF-8
        handle.write((",".join(fields) + "\n").encode("latin-1"))
    assert_quarantined_and_accounted(
        run(clean, broken), broken, "customer_info.csv", "invalid_encoding", last_line(broken / "customer_info.csv"), "country"
    )


def test_stale_data_blocks_publication(clean, tmp_path):
    sources, _ = clean
    stale = tmp_path / "stale"
    generate_sample(stale, **SIZE, end=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=3))
    assert_refused_and_published_unchanged(
        run(clean, stale), "freshness_purchased_at", "Not materialized", "consumer_aligned/customer_metrics"
    )


def test_one_absurdly_large_basket(clean, broken):
    fields = a_purchase(broken)
    limit = int(table("purchase").custom["maxLinesPerOrder"])
    for line_number in range(1, limit * 4 + 1):
        fields[0], fields[1], fields[3] = "99999991", str(line_number), str(1 + line_number % SIZE["products"])
        append_line(broken / "purchase.csv", ",".join(fields))
    outcome = run(clean, broken)
    detail = assert_quarantined_and_accounted(outcome, broken, "purchase.csv", "oversized_order", last_line(broken / "purchase.csv"), "order_id")
    assert detail == f"order 99999991 has more than the {limit} lines an order may have"
    with duckdb.connect(str(outcome.snapshot_after), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM source_aligned.purchase WHERE order_id = 99999991").fetchone() == (0,)
