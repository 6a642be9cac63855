"""The bad-input catalogue: each deliberately broken source goes through the real pipeline.

Every case must end in a clear message naming the file, line or column and the rule; the row
accounting must add up (rows in = accepted + quarantined); and the published outputs must either
stay exactly as they were (the run is refused) or hold none of the bad rows (they were quarantined).

Where the whole job adds nothing, a case runs only the job's source-aligned assets and their checks
(the same job, a subset of its assets: a second or two instead of a whole run). The rows that are
quarantined go into one broken copy of the sources, each on its own line with its own order id, so
one subset run serves every quarantine case (and the extra column); each case still asserts its own
line, reason and column. The two refused files share a second subset run, each step failing on its
own. Two cases run the whole job through the CLI (marked slow), to show a refused run leaves the
published snapshot untouched.
"""

import hashlib
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from product_affinity.cli import main
from product_affinity.contract.odcs import source_tables, table
from product_affinity.defs.publication import failure_report
from product_affinity.publication import published_snapshot
from product_affinity.sources.sample import generate_sample
from tests.conftest import copy_of_sample_run, source_aligned_run

# Two weeks of history, not two years: a run plans and logs every daily partition of the purchases, and the catalogue
# needs lines to break, not days.
SIZE = dict(customers=300, products=150, orders=3_000, history_days=14)
SOURCES = {t.source_file: t for t in source_tables()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1


def append_line(path: Path, line: str) -> int:
    """Append one line; return its line number in the file (the header is line 1)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return data_lines(path) + 1


def a_purchase(sources: Path) -> list[str]:
    """The fields of the first genuine purchase line, to derive a broken one from."""
    return (sources / "purchase.csv").read_text().splitlines()[1].split(",")


@pytest.fixture(scope="module")
def clean_sources(tmp_path_factory) -> Path:
    sources = tmp_path_factory.mktemp("bad_input") / "clean"
    generate_sample(sources, **SIZE, end=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    return sources


def copy_of(clean_sources: Path, directory: Path) -> Path:
    shutil.copytree(clean_sources, directory)
    return directory


# ---- the source-aligned subset of the job ------------------------------------------------------


@dataclass
class Subset:
    success: bool
    log: str  # every message the run logged, and the failure report (what `product-affinity run` prints)
    warehouse: Path


def run_source_aligned(sources: Path, warehouse: Path) -> Subset:
    """The source-aligned subset of the job on a fresh warehouse, with what it logged."""
    instance = dg.DagsterInstance.ephemeral()
    result = source_aligned_run(sources, warehouse, instance)
    messages = [record.user_message for record in instance.all_logs(result.run_id)]
    if not result.success:
        messages.append(failure_report(result, instance, warehouse))
    return Subset(result.success, "\n".join(messages), warehouse)


@dataclass(frozen=True)
class Bad:
    source: str
    line: int
    reason: str
    column: str | None
    detail: str  # the quarantine's detail contains this


def break_in_every_way(sources: Path) -> dict[str, Bad]:
    """Append one bad line per case (each with its own order id) to a copy of clean sources."""
    purchases, good = sources / "purchase.csv", a_purchase(sources)
    cases, order_id = {}, iter(range(99_999_901, 99_999_999))

    def purchase(case: str, changes: dict[int, str], reason: str, column: str | None, detail: str = "") -> None:
        fields = list(good)
        fields[0] = str(next(order_id))
        for position, value in changes.items():
            fields[position] = value
        cases[case] = Bad("purchase.csv", append_line(purchases, ",".join(fields)), reason, column, detail)

    cases["malformed row"] = Bad(
        "purchase.csv", append_line(purchases, f"{next(order_id)},1,3"), "malformed_row", "product_id", "Expected Number of Columns"
    )
    purchase("wrong type", {4: "three"}, "bad_type", "quantity", '"three"')
    purchase("null key", {0: ""}, "missing_key", "order_id")
    purchase("null value", {3: ""}, "missing_value", "product_id")
    cases["duplicate key"] = Bad(
        "purchase.csv", append_line(purchases, ",".join(good)), "duplicate_key", "order_id, line_number", "appeared on an earlier line"
    )
    purchase("negative quantity", {4: "-2"}, "invalid_quantity", "quantity", "quantity -2 is not above 0")
    purchase("negative price", {5: "-1.50"}, "invalid_unit_price", "unit_price", "unit_price -1.5 is not at least 0")
    purchase("future timestamp", {6: f"{datetime.now(UTC) + timedelta(days=3):%Y-%m-%d %H:%M:%S}"}, "future_timestamp", "purchased_at")
    purchase("unknown customer", {2: "88888888"}, "unknown_customer", "customer_id", "88888888")
    purchase("unknown product", {3: "88888888"}, "unknown_product", "product_id", "88888888")

    limit, oversized = int(table("purchase").custom["maxLinesPerOrder"]), next(order_id)
    for line_number in range(1, limit * 4 + 1):
        fields = list(good)
        fields[0], fields[1], fields[3] = str(oversized), str(line_number), str(1 + line_number % SIZE["products"])
        last = append_line(purchases, ",".join(fields))
    cases["absurdly large basket"] = Bad(
        "purchase.csv", last, "oversized_order", "order_id", f"order {oversized} has more than the {limit} lines an order may have"
    )

    customers = sources / "customer_info.csv"
    fields = customers.read_text().splitlines()[1].split(",")
    fields[0], fields[9] = "99999991", "España"
    with customers.open("ab") as handle:  # one line written in Latin-1, not UTF-8
        handle.write((",".join(fields) + "\n").encode("latin-1"))
    cases["wrong encoding of a line"] = Bad("customer_info.csv", data_lines(customers) + 1, "invalid_encoding", "country", "")

    products = sources / "product.csv"  # and a column the contract does not know, ignored and named
    lines = products.read_text().splitlines()
    products.write_text("\n".join(f"{line},{'shelf' if i == 0 else 'A3'}" for i, line in enumerate(lines)) + "\n")
    return cases


@pytest.fixture(scope="module")
def catalogue(clean_sources, tmp_path_factory) -> tuple[Subset, Path, dict[str, Bad]]:
    """Every quarantine case in one broken copy of the sources, through one source-aligned run."""
    root = tmp_path_factory.mktemp("catalogue")
    sources = copy_of(clean_sources, root / "sources")
    cases = break_in_every_way(sources)
    return run_source_aligned(sources, root / "warehouse.duckdb"), sources, cases


@pytest.mark.parametrize(
    "case",
    ["malformed row", "wrong type", "null key", "null value", "duplicate key", "negative quantity", "negative price",
     "future timestamp", "unknown customer", "unknown product", "absurdly large basket", "wrong encoding of a line"],
)
def test_a_bad_line_is_quarantined_naming_its_file_line_column_and_rule(catalogue, case):
    outcome, _, cases = catalogue
    bad = cases[case]
    assert outcome.success, outcome.log
    with duckdb.connect(str(outcome.warehouse), read_only=True) as conn:
        rows = conn.execute(
            "SELECT reason, column_name, detail FROM source_aligned.quarantine WHERE source = ? AND line = ?", [bad.source, bad.line]
        ).fetchall()
    assert [(reason, column) for reason, column, _ in rows] == [(bad.reason, bad.column)]
    assert bad.detail in rows[0][2]
    assert f"{bad.source}: " in outcome.log and bad.reason in outcome.log  # the run's log names the file and the rule


def test_rows_in_are_accepted_plus_quarantined_and_no_bad_row_is_accepted(catalogue):
    outcome, sources, cases = catalogue
    with duckdb.connect(str(outcome.warehouse), read_only=True) as conn:
        for source, t in SOURCES.items():
            accepted = conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]
            quarantined = conn.execute("SELECT count(*) FROM source_aligned.quarantine WHERE source = ?", [source]).fetchone()[0]
            assert accepted + quarantined == data_lines(sources / source), source
        assert conn.execute("SELECT count(*) FROM source_aligned.purchase WHERE quantity <= 0 OR unit_price < 0").fetchone() == (0,)
        oversized = int(cases["absurdly large basket"].detail.split()[1])
        assert conn.execute("SELECT count(*) FROM source_aligned.purchase WHERE order_id = ?", [oversized]).fetchone() == (0,)


def test_extra_column_is_ignored_and_named(catalogue):
    outcome, _, _ = catalogue
    assert outcome.success, outcome.log
    assert "product.csv: ignored column(s) not in the contract: ('shelf',)" in outcome.log


@pytest.fixture(scope="module")
def refused(clean_sources, tmp_path_factory) -> Subset:
    """An empty customer file and a product file in UTF-16, through one source-aligned run: each step fails on its own."""
    root = tmp_path_factory.mktemp("refused")
    sources = copy_of(clean_sources, root / "sources")
    (sources / "customer_info.csv").write_bytes(b"")
    path = sources / "product.csv"
    path.write_bytes(path.read_text().encode("utf-16"))
    return run_source_aligned(sources, root / "warehouse.duckdb")


def test_empty_file_is_refused_naming_it(refused):
    assert not refused.success
    assert "customer_info.csv: file is empty" in refused.log


def test_wrong_encoding_of_the_whole_file_is_refused_naming_it(refused):
    assert not refused.success
    assert "product.csv: line 1 (header) is not valid UTF-8" in refused.log


# ---- the whole job, through the CLI: a refused run leaves the published snapshot untouched --------


@pytest.fixture(scope="module")
def published(sample_run, tmp_path_factory) -> Path:
    """A warehouse with a snapshot already published (a copy of the session's sample run: which sources it was built
    from does not matter to a run that is refused)."""
    return copy_of_sample_run(sample_run, tmp_path_factory.mktemp("published"))[1]


def assert_refused_and_published_unchanged(warehouse: Path, sources: Path, *expected: str) -> None:
    before = published_snapshot(warehouse)
    digest_before = digest(before)
    err = StringIO()
    with redirect_stdout(StringIO()), redirect_stderr(err):
        code = main(["run", "--sources", str(sources), "--warehouse", str(warehouse)])
    assert code == 1
    for text in (*expected, "consumers still read"):
        assert text in err.getvalue(), err.getvalue()
    assert published_snapshot(warehouse) == before
    assert digest(before) == digest_before


@pytest.mark.slow
def test_missing_column_refuses_the_run_and_leaves_the_published_snapshot(published, clean_sources, tmp_path):
    sources = copy_of(clean_sources, tmp_path / "sources")
    path = sources / "product.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != 2) for line in lines) + "\n")
    assert_refused_and_published_unchanged(published, sources, "product.csv: line 1 (header) lacks column(s) category")


@pytest.mark.slow
def test_stale_data_blocks_publication(published, tmp_path):
    stale = tmp_path / "stale"
    generate_sample(stale, **SIZE, end=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=3))
    assert_refused_and_published_unchanged(
        published, stale, "freshness_purchased_at", "Not materialized", "consumer_aligned/customer_metrics"
    )
