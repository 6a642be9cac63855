"""The whole pipeline, through the command line, on the generated sample (the CI data path)."""

import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from mlxtend.frequent_patterns import association_rules, fpgrowth

from product_affinity.cli import main
from product_affinity.consumer_aligned.baskets import ITEM, LEVELS, lines
from product_affinity.contract.odcs import source_tables
from product_affinity.publication import open_published, published_snapshot
from product_affinity.defs.resources import AffinitySettings
from tests.conftest import undeclared_tables

@pytest.fixture(scope="module")
def sample(sample_run):
    warehouse, truth, printed = sample_run
    with open_published(warehouse) as conn:  # what consumers read
        yield conn, truth | {"printed": printed}


def test_every_source_row_is_accepted_or_quarantined_for_the_planted_reason(sample):
    conn, truth = sample
    for t in source_tables():
        accepted = conn.execute(f"SELECT count(*) FROM {t.physical_name}").fetchone()[0]
        quarantined = dict(
            conn.execute(
                "SELECT reason, count(*) FROM source_aligned.quarantine WHERE source = ? GROUP BY reason",
                [t.source_file],
            ).fetchall()
        )
        assert quarantined == truth["defects"].get(t.source_file, {}), t.source_file
        assert accepted + sum(quarantined.values()) == truth["rows"][t.source_file], t.source_file


def test_quarantine_lines_point_at_the_offending_line_of_the_file(sample):
    # The sample is large enough for DuckDB to read in parallel batches, with unparseable lines
    # interleaved: each quarantined row's line must still be that row's line in the file.
    conn, truth = sample
    lines = (truth["directory"] / "purchase.csv").read_text().splitlines()
    quarantined = conn.execute(
        "SELECT line, reason, record FROM source_aligned.quarantine WHERE source = 'purchase.csv'"
    ).fetchall()
    assert len(quarantined) == sum(truth["defects"]["purchase.csv"].values())
    for line, reason, record in quarantined:
        if reason == "bad_type":  # unparseable: the raw line is kept
            assert lines[line - 1] == record
        else:
            row = json.loads(record)
            assert lines[line - 1].split(",")[:4] == [str(row[k]) for k in ("order_id", "line_number", "customer_id", "product_id")]


def test_output_ports_are_complete_and_keyed(sample):
    conn, _ = sample
    customers = conn.execute("SELECT count(*) FROM source_aligned.customer").fetchone()[0]
    assert conn.execute("SELECT count(*), count(DISTINCT customer_id) FROM consumer_aligned.customer_metrics").fetchone() == (
        customers,
        customers,
    )
    categories = conn.execute("SELECT count(DISTINCT category) FROM source_aligned.product").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM consumer_aligned.product_affinity_matrix").fetchone()[0] == categories * (categories - 1)
    score_range, ranks = conn.execute(
        """SELECT bool_and(score BETWEEN 0 AND 1), max(rank) FROM consumer_aligned.cross_sell_recommendations"""
    ).fetchone()
    assert score_range and ranks == AffinitySettings().recommendations_per_customer
    # the opportunity score is the first category recommendation's score
    mismatches = conn.execute(
        """SELECT count(*) FROM consumer_aligned.customer_metrics AS m
           LEFT JOIN consumer_aligned.cross_sell_recommendations AS r
             ON r.customer_id = m.customer_id AND r.level = 'category' AND r.rank = 1
           WHERE m.cross_sell_opportunity_score IS DISTINCT FROM coalesce(r.score, 0)"""
    ).fetchone()[0]
    assert mismatches == 0
    spend = conn.execute(
        """SELECT (SELECT sum(total_spend) FROM consumer_aligned.customer_metrics),
                  (SELECT sum(quantity * unit_price) FROM source_aligned.purchase)"""
    ).fetchone()
    assert spend[0] == spend[1]


@pytest.mark.parametrize("level", LEVELS)
def test_planted_affinities_rank_at_the_top_by_lift(sample, level):
    conn, truth = sample
    planted = {frozenset(map(str, pair)) for pair in truth["planted"][level]}
    ranked = conn.execute(
        """SELECT antecedents[1], consequents[1] FROM consumer_aligned.association_rules
           WHERE level = ? AND len(antecedents) = 1 AND len(consequents) = 1 ORDER BY lift DESC""",
        [level],
    ).fetchall()
    top = {frozenset(rule) for rule in ranked[: 2 * len(planted)]}  # lift is symmetric: both directions
    assert top == planted


def mlxtend_reference(conn, level: str, *min_confidences: float) -> list[pd.DataFrame]:
    """mlxtend's own path on the same accepted baskets: one-hot and fpgrowth (the costly part) once, then
    association_rules at each confidence threshold."""
    settings = AffinitySettings().thresholds(level)
    baskets = conn.execute(f"SELECT DISTINCT p.order_id, CAST({ITEM[level]} AS VARCHAR) AS item FROM {lines()}").df()
    rows, orders = pd.factorize(baskets["order_id"])
    columns, items = pd.factorize(baskets["item"])
    onehot = np.zeros((len(orders), len(items)), dtype=bool)  # one row per basket, one column per item
    onehot[rows, columns] = True
    itemsets = fpgrowth(pd.DataFrame(onehot, columns=items), min_support=settings.min_support, use_colnames=True,
                        max_len=settings.max_itemset_size)
    found = []
    for min_confidence in min_confidences:
        rules = association_rules(itemsets, num_itemsets=len(orders), metric="confidence", min_threshold=min_confidence)
        if settings.max_consequent_size is not None:  # mlxtend gives every consequent size; ours follows arules by default
            rules = rules[rules["consequents"].map(len) <= settings.max_consequent_size]
        found.append(keyed(rules))
    return found


def keyed(rules: pd.DataFrame) -> pd.DataFrame:
    """Index rules by (sorted antecedents, sorted consequents)."""
    keys = [(tuple(sorted(a)), tuple(sorted(c))) for a, c in zip(rules["antecedents"], rules["consequents"])]
    return rules.set_axis(pd.Index(keys, tupleize_cols=False), axis=0)


@pytest.mark.parametrize("level", LEVELS)
def test_rules_equal_mlxtend_fpgrowth_and_association_rules(sample, level):
    conn, _ = sample
    min_confidence = AffinitySettings().thresholds(level).min_confidence
    ours = conn.execute("SELECT * FROM consumer_aligned.association_rules WHERE level = ?", [level]).df()
    ours = keyed(ours)
    assert len(ours) > 10

    # mlxtend compares confidence as a float, so a rule exactly on the threshold (96/960 = 0.10 is
    # 0.09999999999999999 once divided as supports) can be lost; ours compares exact counts.
    strict, expected = mlxtend_reference(conn, level, min_confidence, min_confidence - 1e-12)
    assert set(strict.index) <= set(ours.index)
    on_threshold = ours[~ours.index.isin(strict.index)]
    exact = Fraction(str(min_confidence))
    assert (on_threshold["support_count"] * exact.denominator == on_threshold["antecedent_count"] * exact.numerator).all()

    # with that float rounding allowed for, mlxtend finds exactly our rules, with the same metrics
    assert set(ours.index) == set(expected.index)
    metrics = {"antecedent_support": "antecedent support", "consequent_support": "consequent support", "support": "support",
               "confidence": "confidence", "lift": "lift", "leverage": "leverage", "conviction": "conviction"}
    for column, theirs in metrics.items():
        pd.testing.assert_series_equal(
            ours[column].sort_index(), expected[theirs].sort_index(), check_names=False, rtol=0, atol=1e-9
        )


def test_run_prints_a_summary_with_the_strongest_affinities(sample):
    _, truth = sample
    out = truth["printed"]
    assert "Strongest category affinities" in out and "Top cross-sell opportunities" in out
    strongest = out.split("Strongest category affinities")[1].split("Strongest product rules")[0]
    assert any(a in strongest and b in strongest for a, b in truth["planted"]["category"])


def test_run_fails_naming_the_missing_source_file(tmp_path, capsys):
    """A sources folder without the files (a missing folder is refused before the run: tests/test_cli.py)."""
    (tmp_path / "empty").mkdir()
    assert main(["run", "--sources", str(tmp_path / "empty"), "--warehouse", str(tmp_path / "w.duckdb")]) == 1
    err = capsys.readouterr().err
    assert "customer_info.csv: source file not found" in err
    assert f"Nothing from this run was published, and nothing has been published from {tmp_path / 'w.duckdb'} yet." in err



def test_command_line_runs_are_recorded_in_the_dagster_instance(sample_run):
    """`make dev` shows the history of `make run`: the run, its materializations and its check results are in
    the instance under DAGSTER_HOME, not in a throwaway one."""
    import dagster as dg

    from tests.conftest import SAMPLE_HOME

    with dg.DagsterInstance.from_config(str(sample_run[0].parent / SAMPLE_HOME)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="product_affinity", statuses=[dg.DagsterRunStatus.SUCCESS]))
        assert runs, "no successful product_affinity run recorded"
        snapshot = instance.get_latest_materialization_event(dg.AssetKey(["publication", "snapshot"]))
        assert snapshot is not None and snapshot.run_id in {r.run_id for r in runs}
        # The run that published, with its check results.
        checks = instance.get_records_for_run(snapshot.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        assert len(checks) > 10


def test_the_snapshot_holds_the_ports_and_nothing_a_step_left_behind(sample_run):
    """Every table in the published snapshot is one the contract, the semantic model's rollups or the SLO results
    declare (a step's working table written to the warehouse file would be published with it)."""
    warehouse, _, _ = sample_run
    assert undeclared_tables(published_snapshot(warehouse)) == set()
    with open_published(warehouse) as conn:
        held = {name for (name,) in conn.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall()}
    assert {"consumer_aligned.recommendation_backtest", "source_aligned.purchase"} <= held
