"""BG/NBD and Gamma-Gamma against their published results on the real CDNOW purchases, and the CLV backtest on them.

Published figures, all for the 1/10 sample of 2,357 customers shipped in tests/data/cdnow (README there), with a
39-week calibration (1997-01-01 to 1997-09-30) and time in weeks:
- BG/NBD r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, log-likelihood -9582.4 (Fader, Hardie and Lee 2005,
  "Counting your customers the easy way", Marketing Science 24(2)); a customer with x = 2, t_x = 30.43, T = 38.86
  is expected to make 1.226 purchases in the next 39 weeks (Hardie, "Implementing the BG/NBD model in Excel").
- Gamma-Gamma p = 6.25, q = 3.74, gamma = 15.44 on the 946 repeat buyers' average repeat spend (Fader, Hardie
  and Lee 2005, "RFM and CLV: using iso-value curves", JMR 42(4); Hardie 2013, "The Gamma-Gamma model of
  monetary value").
"""

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from product_affinity.business import clv_backtest
from product_affinity.consumer_aligned import clv
from product_affinity.publication import open_published

CDNOW = Path(__file__).resolve().parent / "data" / "cdnow"
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_DAYS = 273  # 1997-10-01 to 1998-06-30: the 39 weeks after the calibration
PUBLISHED_BG_NBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow():
    """The CDNOW sample's transactions as purchase lines (quantity 1, the amount as the price) in a DuckDB table."""
    lines = pd.read_csv(CDNOW / "CDNOW_sample.txt", sep=r"\s+", header=None, dtype={"date": str},
                        names=["customer_id", "sample_id", "date", "cds", "amount"])
    conn = duckdb.connect()
    conn.register("_lines", lines)
    conn.execute("""CREATE TABLE cdnow AS SELECT sample_id AS customer_id, strptime(date, '%Y%m%d') AS purchased_at,
                    1 AS quantity, CAST(amount AS DECIMAL(12, 2)) AS unit_price FROM _lines""")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def calibration(cdnow):
    return clv.summarise(cdnow, "cdnow", CALIBRATION_END)


def test_the_summary_of_the_transactions_matches_hardies(calibration):
    """The product's SQL summary (same-day purchases merged) gives Hardie's x, t_x, T and average repeat spend."""
    hardie = pd.read_csv(CDNOW / "cdnow_customers_summary_with_transactions.csv")
    ours = calibration.set_index("customer_id").loc[hardie["ID"]]
    assert len(calibration) == 2357
    assert (ours["x"].to_numpy() == hardie["x"].to_numpy()).all()
    for column, theirs in (("t_x", "t_x"), ("T", "T")):
        assert np.abs(ours[column].to_numpy() - hardie[theirs].to_numpy()).max() <= 0.005 + 1e-9  # they round to 0.01
    repeat = hardie["x"].to_numpy() > 0
    assert np.abs(ours["m"].to_numpy()[repeat] - hardie["zbar"].to_numpy()[repeat]).max() <= 0.005 + 1e-9
    assert ours["m"].isna().to_numpy()[~repeat].all()


def test_bg_nbd_reproduces_the_published_fit_on_cdnow(calibration):
    fitted = clv.BgNbd.fit(calibration["x"], calibration["t_x"], calibration["T"])
    for name, published in PUBLISHED_BG_NBD.items():
        assert getattr(fitted, name) == pytest.approx(published, rel=0.01), name
    assert fitted.log_likelihood(calibration["x"], calibration["t_x"], calibration["T"]) == pytest.approx(-9582.4, abs=0.05)


def test_bg_nbd_closed_forms_give_the_published_example():
    published = clv.BgNbd(**PUBLISHED_BG_NBD)
    assert published.expected_purchases(39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=5e-4)
    assert published.probability_alive([0], [0], [38.86])[0] == 1.0  # no repeat purchase: no dropout seen


def test_gamma_gamma_reproduces_the_published_fit_on_cdnow(calibration):
    repeat = calibration[calibration["x"] > 0]
    assert len(repeat) == 946
    fitted = clv.GammaGamma.fit(repeat["x"], repeat["m"])
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert getattr(fitted, name) == pytest.approx(published, rel=0.01), name


def test_the_discounted_value_is_the_spend_discounted_within_the_horizon(calibration):
    fitted = clv.fit(calibration)
    args = (calibration[c].to_numpy(dtype=float) for c in ("x", "t_x", "T", "m"))
    x, t_x, T, m = args
    undiscounted = clv.predict(fitted.purchases, fitted.values, x, t_x, T, m, 52.0, 0.0)
    discounted = clv.predict(fitted.purchases, fitted.values, x, t_x, T, m, 52.0, 0.10)
    assert undiscounted.discounted_value == pytest.approx(undiscounted.expected_spend, rel=1e-12)
    assert (discounted.expected_spend == undiscounted.expected_spend).all()
    # every dollar comes within the year, so it is discounted by less than a year's 10%, and by something
    spent = undiscounted.expected_spend > 0
    assert (discounted.discounted_value[spent] < undiscounted.expected_spend[spent]).all()
    assert (discounted.discounted_value[spent] > undiscounted.expected_spend[spent] / 1.10).all()
    assert ((0 < discounted.probability_alive) & (discounted.probability_alive <= 1)).all()


def test_the_clv_backtest_on_cdnows_39_week_holdout(cdnow):
    """Calibrated on the first 39 weeks, the models predict the next 39 weeks' purchases within 15% and spend
    within 20%, and do better than each customer repeating their calibration rate, in total and per customer."""
    rows, fitted = clv_backtest.backtest(cdnow, "cdnow", HOLDOUT_DAYS)
    got = rows.set_index(["predictor", "measure"])
    assert got["cutoff_at"].iloc[0] == pd.Timestamp("1997-10-01") and got["holdout_weeks"].iloc[0] == 39
    assert (got["customers"] == 2357).all() and fitted.problems == ()
    model, naive = got.loc["bg_nbd_gamma_gamma"], got.loc["naive_calibration_rate"]
    assert abs(model.loc["orders", "total_error_percent"]) <= 15
    assert abs(model.loc["spend", "total_error_percent"]) <= 20
    for measure in clv_backtest.MEASURES:
        assert abs(model.loc[measure, "total_error_percent"]) < abs(naive.loc[measure, "total_error_percent"])
        assert model.loc[measure, "mean_absolute_error"] < naive.loc[measure, "mean_absolute_error"]
    # the actual figures are recounted here from the lines, independently of the backtest's SQL
    holdout = cdnow.execute("""SELECT count(DISTINCT (customer_id, CAST(purchased_at AS DATE))), sum(unit_price)::DOUBLE
                               FROM cdnow WHERE purchased_at > DATE '1997-09-30'""").fetchone()
    assert (model.loc["orders", "actual"], model.loc["spend", "actual"]) == pytest.approx(holdout)


@pytest.mark.parametrize("x, t_x, T, message", [
    ([1, 2], [3.0, 5.0], [4.0, 4.0], "t_x must not exceed T: row 1"),
    ([1, -1], [1.0, 1.0], [2.0, 2.0], "x must be >= 0: row 1"),
    ([1, 1], [1.0, 0.0], [2.0, 2.0], "needs t_x > 0: row 1"),
    ([1, 1], [1.0, np.nan], [2.0, 2.0], "t_x must be finite: row 1"),
])
def test_bad_summaries_are_refused_naming_the_row(x, t_x, T, message):
    with pytest.raises(ValueError, match=message):
        clv.BgNbd.fit(x * 3, t_x * 3, T * 3)
    with pytest.raises(ValueError, match=message):
        clv.BgNbd(**PUBLISHED_BG_NBD).probability_alive(x, t_x, T)


def test_too_little_history_is_reported_not_fitted():
    fitted = clv.fit(pd.DataFrame({"customer_id": [1, 2], "x": [1, 0], "t_x": [2.0, 0.0], "T": [3.0, 1.0],
                                   "m": [10.0, None], "average_purchase_value": [10.0, 5.0]}))
    assert fitted.purchases is None and fitted.values is None
    assert "BG/NBD needs at least 4 customers" in fitted.problems[0] and "Gamma-Gamma needs" in fitted.problems[1]


# ---- on the generated sample, through the pipeline ---------------------------------------------

def test_on_the_sample_bg_nbd_recovers_the_generators_purchase_process(sample_run):
    """The generator's buyers follow BG/NBD (ground_truth.json: purchase_process), on a clock that runs with the
    calendar's order volume (seasons and 30% growth, so within about +-25% of real weeks); the fit on the accepted
    purchases, in real weeks, must find the rate's shape, the mean weekly rate and the mean dropout within 30%."""
    warehouse, truth, _ = sample_run
    with open_published(warehouse) as conn:
        last_day = conn.execute("SELECT CAST(max(purchased_at) AS DATE) FROM source_aligned.purchase").fetchone()[0]
        summary = clv.summarise(conn, "source_aligned.purchase", last_day)
    fitted = clv.BgNbd.fit(summary["x"], summary["t_x"], summary["T"])
    planted = truth["purchase_process"]
    assert fitted.r == pytest.approx(planted["r"], rel=0.3)
    assert fitted.r / fitted.alpha == pytest.approx(planted["r"] / planted["alpha"], rel=0.3)
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(planted["a"] / (planted["a"] + planted["b"]), rel=0.3)


def test_on_the_sample_the_clv_backtest_beats_the_naive_baseline(sample_run):
    warehouse, _, _ = sample_run
    with open_published(warehouse) as conn:
        rows = conn.execute("SELECT * FROM consumer_aligned.clv_backtest").df().set_index(["predictor", "measure"])
        metrics = conn.execute("""SELECT count(*) FILTER (WHERE orders > 0 AND probability_alive IS NULL),
                                         count(*) FILTER (WHERE predicted_customer_lifetime_value > expected_spend),
                                         count(*) FILTER (WHERE orders > 0) FROM consumer_aligned.customer_metrics""").fetchone()
    assert set(rows.index) == {(p, m) for p in clv_backtest.PREDICTORS for m in clv_backtest.MEASURES}
    assert (rows["customers"] > 1000).all()
    model, naive = rows.loc["bg_nbd_gamma_gamma"], rows.loc["naive_calibration_rate"]
    for measure in clv_backtest.MEASURES:
        assert abs(model.loc[measure, "total_error_percent"]) < abs(naive.loc[measure, "total_error_percent"]), measure
        assert model.loc[measure, "mean_absolute_error"] < naive.loc[measure, "mean_absolute_error"], measure
    missing, over, buyers = metrics
    assert buyers > 1000 and missing == 0 and over == 0  # every buyer predicted; discounting never adds value
