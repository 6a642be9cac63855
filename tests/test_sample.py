"""The sample generator: reproducible files with the promised shape, and the answers it records are true."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from product_affinity.contract.odcs import tables
from product_affinity.reference import COUNTRY_SPELLINGS
from product_affinity.defaults import DEFAULT_SIZE, SAMPLE_SEED
from product_affinity.sources.sample import CATEGORIES, generate_sample

END = datetime(2025, 6, 30, 12, 0, 0)
SMALL = dict(customers=300, products=150, orders=3_000)
FILES = ("customer_info.csv", "product.csv", "purchase.csv", "ground_truth.json")
TIMESTAMP = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
PRICE = r"^\d+\.\d{2}$"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("small")
    return directory, generate_sample(directory, **SMALL, end=END)


def read(directory: Path, name: str) -> pl.DataFrame:
    """A source file exactly as written: every value as text, empty as null."""
    return pl.read_csv(directory / name, infer_schema=False)


def genuine_purchases(directory: Path, orders: int) -> pl.DataFrame:
    """Genuine order lines, typed: defect rows live under order_ids past the genuine ones."""
    lines = read(directory, "purchase.csv").filter(pl.col("order_id").cast(pl.Int64) <= orders)
    return lines.with_columns(pl.col("order_id", "line_number", "customer_id", "product_id", "quantity").cast(pl.Int64),
                              pl.col("unit_price").cast(pl.Float64),
                              pl.col("purchased_at").str.to_datetime("%Y-%m-%d %H:%M:%S"))


def test_same_arguments_give_byte_identical_files(small, tmp_path):
    directory, _ = small
    generate_sample(tmp_path / "again", **SMALL, end=END)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (directory / name).read_bytes(), name
    generate_sample(tmp_path / "other", **SMALL, end=END, seed=8)
    assert (tmp_path / "other" / "purchase.csv").read_bytes() != (directory / "purchase.csv").read_bytes()


def test_headers_and_row_counts_match_ground_truth(small):
    directory, truth = small
    headers = {t.source_file: t.column_names for t in tables().values() if t.source_file}  # as the contract declares
    assert len(headers) == 3
    for name, header in headers.items():
        frame = read(directory, name)
        assert frame.columns == header
        assert len(frame) == truth["rows"][name]
    assert json.loads((directory / "ground_truth.json").read_text()) == truth
    assert truth["parameters"] == dict(**SMALL, seed=SAMPLE_SEED, end="2025-06-30T12:00:00", history_days=730, defects=True)


def test_catalogue_covers_every_category_with_unique_readable_names(small, tmp_path):
    directory, _ = small
    big = generate_sample(tmp_path, customers=20, products=50_000, orders=200, end=END, defects=False)
    for products, path in ((SMALL["products"], directory), (big["parameters"]["products"], tmp_path)):
        catalogue = read(path, "product.csv")
        assert catalogue["product_id"].cast(pl.Int64).to_list() == list(range(1, products + 1))
        assert catalogue["product_name"].n_unique() == products
        assert not catalogue["product_name"].str.contains("  |^ | $").any()
        assert set(catalogue["category"]) == set(CATEGORIES)
        assert catalogue["list_price"].str.contains(PRICE).all()
    prices = catalogue.group_by("category").agg(pl.col("list_price").cast(pl.Float64).median())
    priciest = set(prices.sort("list_price", descending=True)["category"].head(2))
    assert priciest == {"Gold", "Wines"}


def test_customers_are_plausible_and_sign_up_before_ordering(small):
    directory, truth = small
    customers = read(directory, "customer_info.csv").filter(pl.col("customer_id").is_not_null()).unique(
        maintain_order=True)
    assert customers["customer_id"].cast(pl.Int64).to_list() == list(range(1, SMALL["customers"] + 1))
    clean_email = customers["email"].str.strip_chars().str.to_lowercase()
    assert clean_email.str.contains(r"^[a-z]+\.[a-z]+\d+@[a-z.]+$").all()
    assert 0 < (clean_email != customers["email"]).mean() < 0.08
    assert customers["phone"].str.contains(r"^\+1-555-\d{4}$").all()
    assert customers["birth_year"].cast(pl.Int64).is_between(1940, 2006).all()
    assert set(customers["education"]) <= {"Basic", "2n Cycle", "Graduation", "Master", "PhD"}
    assert set(customers["marital_status"]) <= {"Single", "Married", "Together", "Divorced", "Widow"}
    assert customers["income"].str.contains(PRICE).all()
    spelling = {s.lower(): name for name, spellings in COUNTRY_SPELLINGS.items() for s in spellings}
    countries = customers["country"].str.strip_chars().str.to_lowercase()
    assert countries.is_in(list(spelling)).all()
    assert 0.6 < customers["country"].is_in(list(COUNTRY_SPELLINGS)).mean() < 0.95

    first_order = genuine_purchases(directory, SMALL["orders"]).group_by("customer_id").agg(
        first=pl.col("purchased_at").min())
    signed_up = customers.select(pl.col("customer_id").cast(pl.Int64),
                                 signup=pl.col("signup_at").str.to_datetime("%Y-%m-%d %H:%M:%S"))
    buyers = signed_up.join(first_order, on="customer_id")
    assert (buyers["signup"] < buyers["first"]).all()
    assert 0.02 < 1 - len(buyers) / SMALL["customers"] < 0.08


def test_orders_are_consistent_baskets_in_time_order(small):
    directory, truth = small
    lines = genuine_purchases(directory, SMALL["orders"])
    assert len(lines) == truth["rows"]["purchase.csv"] - sum(truth["defects"]["purchase.csv"].values())
    orders = lines.group_by("order_id").agg(
        lines=pl.len(), products=pl.col("product_id").n_unique(), last_line=pl.col("line_number").max(),
        times=pl.col("purchased_at").n_unique(), buyers=pl.col("customer_id").n_unique(),
        placed=pl.col("purchased_at").first()).sort("order_id")
    assert orders["order_id"].to_list() == list(range(1, SMALL["orders"] + 1))
    assert (orders["lines"] == orders["products"]).all() and (orders["lines"] == orders["last_line"]).all()
    assert (orders["times"] == 1).all() and (orders["buyers"] == 1).all()
    assert orders["placed"].is_sorted()
    assert orders["placed"].min() > END - timedelta(days=730)
    assert END - timedelta(hours=1) < orders["placed"].max() <= END
    assert 8.9 < orders["lines"].mean() < 9.9 and orders["lines"].min() == 1 and orders["lines"].max() <= 50
    assert (lines["quantity"] == 1).mean() > 0.7 and lines["quantity"].is_between(1, 6).all()
    assert set(lines["channel"]) == {"web", "store", "catalog"}

    prices = lines.join(read(directory, "product.csv").select(
        pl.col("product_id").cast(pl.Int64), pl.col("list_price").cast(pl.Float64)), on="product_id")
    full, deal = prices.filter(pl.col("deal") == "false"), prices.filter(pl.col("deal") == "true")
    assert (full["unit_price"] == full["list_price"]).all()
    assert 0.05 < len(deal) / len(prices) < 0.2
    assert (deal["unit_price"] / deal["list_price"]).is_between(0.69, 0.91).all()
    assert read(directory, "purchase.csv")["unit_price"].str.contains(PRICE).mean() > 0.99


def test_defects_are_extra_rows_counted_exactly(small):
    directory, truth = small
    customers = read(directory, "customer_info.csv")
    duplicated = customers.filter(pl.col("customer_id").is_not_null() & ~pl.struct(pl.all()).is_first_distinct())
    assert truth["defects"]["customer_info.csv"] == {
        "duplicate_key": len(duplicated), "missing_key": customers["customer_id"].null_count()}
    assert min(truth["defects"]["customer_info.csv"].values()) >= 2

    known_customers = customers["customer_id"].drop_nulls().cast(pl.Int64).implode()
    known_products = read(directory, "product.csv")["product_id"].cast(pl.Int64).implode()
    extra = read(directory, "purchase.csv").filter(pl.col("order_id").cast(pl.Int64) > SMALL["orders"])
    quantity = pl.col("quantity").cast(pl.Int64, strict=False)
    reasons = extra.select(
        unknown_customer=~pl.col("customer_id").cast(pl.Int64).is_in(known_customers),
        unknown_product=~pl.col("product_id").cast(pl.Int64).is_in(known_products),
        invalid_quantity=quantity <= 0,
        bad_type=quantity.is_null() | pl.col("unit_price").cast(pl.Float64, strict=False).is_null(),
    )
    assert (reasons.sum_horizontal() == 1).all(), "each extra row breaks exactly one rule"
    assert reasons.sum().row(0, named=True) == truth["defects"]["purchase.csv"]
    lines = truth["rows"]["purchase.csv"] - len(extra)
    assert all(n == round(0.002 * lines) for n in truth["defects"]["purchase.csv"].values())
    assert extra["order_id"].n_unique() == len(extra)
    placed = extra["purchased_at"].str.to_datetime("%Y-%m-%d %H:%M:%S")
    assert placed.min() > END - timedelta(days=730) and placed.max() <= END
    position = read(directory, "purchase.csv").with_row_index()["order_id"].cast(pl.Int64) > SMALL["orders"]
    assert position.arg_true().max() > 0.5 * truth["rows"]["purchase.csv"] > position.arg_true().min()


def test_defects_can_be_switched_off(tmp_path):
    truth = generate_sample(tmp_path, customers=50, products=40, orders=200, end=END, defects=False)
    assert truth["defects"] == {"customer_info.csv": {}, "product.csv": {}, "purchase.csv": {}}
    assert len(read(tmp_path, "customer_info.csv")) == 50
    assert read(tmp_path, "purchase.csv")["order_id"].cast(pl.Int64).max() == 200


def test_end_defaults_to_now_so_the_data_is_fresh(tmp_path):
    before = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    truth = generate_sample(tmp_path, customers=20, products=30, orders=50)
    end = datetime.fromisoformat(truth["parameters"]["end"])
    assert before <= end <= datetime.now(timezone.utc).replace(tzinfo=None)
    latest = read(tmp_path, "purchase.csv")["purchased_at"].str.to_datetime("%Y-%m-%d %H:%M:%S").max()
    assert end - timedelta(hours=1) < latest <= end


def pair_lifts(baskets: pl.DataFrame, item: str, orders: int) -> pl.DataFrame:
    """Lift of every pair of items bought together: P(A and B) / (P(A) P(B)), a basket being an order."""
    baskets = baskets.select("order_id", item).unique()
    support = baskets.group_by(item).agg(alone=pl.len() / orders)
    return (baskets.join(baskets, on="order_id", suffix="_b").filter(pl.col(item) < pl.col(f"{item}_b"))
            .group_by(item, f"{item}_b").agg(together=pl.len() / orders)
            .join(support, on=item)
            .join(support.rename({item: f"{item}_b", "alone": "alone_b"}), on=f"{item}_b")
            .with_columns(lift=pl.col("together") / pl.col("alone") / pl.col("alone_b")))


@pytest.mark.parametrize("seed", [7, 1, 2, 3])
def test_planted_affinities_have_the_highest_lifts(tmp_path, seed):
    truth = generate_sample(tmp_path, **DEFAULT_SIZE, seed=seed, end=END)
    lines = genuine_purchases(tmp_path, DEFAULT_SIZE["orders"]).join(
        read(tmp_path, "product.csv").with_columns(pl.col("product_id").cast(pl.Int64)), on="product_id")
    orders = DEFAULT_SIZE["orders"]

    def planted(item: str, pairs: list) -> pl.Expr:
        keys = [sorted(pair) for pair in pairs]
        return pl.concat_list(item, f"{item}_b").is_in(keys)

    categories = pair_lifts(lines, "category", orders).with_columns(planted=planted("category",
                                                                                   truth["planted"]["category"]))
    assert categories.filter("planted").height == 3
    assert categories.filter("planted")["lift"].min() > categories.filter(~pl.col("planted"))["lift"].max()
    assert categories.filter(~pl.col("planted"))["lift"].max() < 1.15, "unrelated categories are not complements"

    products = (pair_lifts(lines, "product_id", orders).filter(pl.col("together") >= 0.002)
                .with_columns(planted=planted("product_id", truth["planted"]["product"])))
    assert products.filter("planted").height == 5
    assert products.filter("planted")["lift"].min() > products.filter(~pl.col("planted"))["lift"].max()
