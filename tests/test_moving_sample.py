"""The moving sample in files (`generate --add-days`) and the sensor on the source files, on real files."""

from __future__ import annotations

from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from product_affinity.cli import main
from product_affinity.defs.sensors import source_files_sensor
from product_affinity.sources.sample import (EMAIL_CHANGES, LATE_LINES, PRICE_CORRECTIONS, TIMESTAMP_FORMAT,
                                             add_days_to_files, generate_sample)

SMALL = dict(customers=300, products=60, orders=3000)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@pytest.fixture
def sample(tmp_path) -> Path:
    """A small sample that ended 36 hours ago, so one more day fits before now."""
    generate_sample(tmp_path / "sources", end=now() - timedelta(hours=36), **SMALL)
    return tmp_path / "sources"


def purchases(directory: Path) -> pl.DataFrame:
    return pl.read_csv(directory / "purchase.csv", infer_schema=False)


def cli(*args: str) -> tuple[int, str, str]:
    with redirect_stdout(StringIO()) as out, redirect_stderr(StringIO()) as err:
        try:
            code = main(list(args))
        except SystemExit as refused:  # argparse refuses a bad argument this way
            code = refused.code
    return code, out.getvalue(), err.getvalue()


def test_a_day_added_to_files_moves_the_sample_with_updates_and_late_lines(sample):
    before, customers_before = purchases(sample), pl.read_csv(sample / "customer_info.csv", infer_schema=False)
    latest = pl.Series(before["purchased_at"]).str.strptime(pl.Datetime, TIMESTAMP_FORMAT, strict=False).max()

    code, out, err = cli("generate", "--out", str(sample), "--add-days", "1")

    assert code == 0, err
    after = purchases(sample)
    times = after["purchased_at"].str.strptime(pl.Datetime, TIMESTAMP_FORMAT, strict=False)
    new_day = after.filter((times > latest) & (times <= latest + timedelta(days=1)))
    assert new_day.height > 0 and times.max() <= latest + timedelta(days=1)
    assert f"{len(after) - len(before):,} new purchase lines" in out
    # Nothing duplicated: every key once, the old rows kept (but for corrected prices), in their order.
    assert after.select("order_id", "line_number").is_duplicated().sum() == before.select("order_id", "line_number").is_duplicated().sum()
    assert after.head(len(before)).drop("unit_price").equals(before.drop("unit_price"))
    corrected = after.head(len(before))["unit_price"] != before["unit_price"]
    assert corrected.sum() == PRICE_CORRECTIONS
    # Late lines: new keys in orders that already existed, dated before the new day.
    old_orders = before["order_id"].unique().implode()
    late = after.tail(len(after) - len(before)).filter(pl.col("order_id").is_in(old_orders))
    assert late.height == LATE_LINES
    assert (late["purchased_at"].str.strptime(pl.Datetime, TIMESTAMP_FORMAT) < latest).all()
    changed = pl.read_csv(sample / "customer_info.csv", infer_schema=False)["email"] != customers_before["email"]
    assert changed.sum() == EMAIL_CHANGES


def test_adding_days_refuses_what_it_cannot_do(sample, tmp_path):
    code, _, err = cli("generate", "--out", str(sample), "--add-days", "3")  # would end after now
    assert code == 2 and "after now" in err and "add at most 1 day(s)" in err
    code, _, err = cli("generate", "--out", str(tmp_path / "nothing"), "--add-days", "1")
    assert code == 2 and "purchase.csv" in err and "not found" in err
    code, _, err = cli("generate", "--out", str(sample), "--add-days", "0")
    assert code == 2 and "not a positive whole number" in err
    code, _, err = cli("generate", "--out", str(tmp_path / "x"), "--end", (now() + timedelta(days=1)).isoformat())
    assert code == 2 and "in the future" in err
    code, _, err = cli("generate", "--out", str(tmp_path / "x"), "--end", "yesterday")
    assert code == 2 and "not an ISO date" in err
    with pytest.raises(ValueError, match="days must be a positive"):
        add_days_to_files(sample, 0)


def test_the_files_sensor_sees_a_new_day(sample):
    sensor = source_files_sensor(sample, database=False)
    first = sensor.evaluate_tick(dg.build_sensor_context(cursor=None))
    assert len(first.run_requests) == 1  # a first look: everything is new
    quiet = sensor.evaluate_tick(dg.build_sensor_context(cursor=first.cursor))
    assert quiet.run_requests == [] and "no source file changed" in quiet.skip_message

    assert cli("generate", "--out", str(sample), "--add-days", "1")[0] == 0
    moved = sensor.evaluate_tick(dg.build_sensor_context(cursor=quiet.cursor))
    assert len(moved.run_requests) == 1
    assert moved.run_requests[0].tags["product_affinity/changed"] == "customer_info.csv,purchase.csv"
    assert moved.run_requests[0].run_key != first.run_requests[0].run_key
    skipped = source_files_sensor(sample, database=True).evaluate_tick(dg.build_sensor_context(cursor=None))
    assert skipped.run_requests == [] and "database_watermark" in skipped.skip_message


def test_the_watermark_sensor_skips_when_the_sources_are_files():
    from product_affinity.defs.sensors import database_watermark_sensor

    tick = database_watermark_sensor(None).evaluate_tick(dg.build_sensor_context(cursor=None))
    assert tick.run_requests == [] and "source_files_changed" in tick.skip_message
