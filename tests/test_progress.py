"""Progress inside long steps: what ingestion, counting and the checks report, and how the CLI shows it."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta

import duckdb
import pytest

from product_affinity import progress, tracking
from product_affinity.consumer_aligned import daily_counts
from product_affinity.partitions import Days, file_days
from product_affinity.source_aligned.cleaning import ingest
from product_affinity.sources.sample import generate_sample

END = datetime(2026, 6, 30, 12)


@pytest.fixture
def reports(monkeypatch):
    """Every report made while the test runs, DuckDB's progress read every 10 ms (a short statement still shows some)."""
    monkeypatch.setattr(tracking, "POLL_SECONDS", 0.01)
    seen: list[tracking.Work] = []
    with tracking.listening(seen.append):
        yield seen


def test_duckdbs_own_progress_of_a_statement_is_reported_rising_to_100(conn, reports):
    with tracking.watching(conn, "summing"):
        conn.execute("SELECT sum(hash(range)) FROM range(200_000_000)").fetchone()
    percents = [w.done for w in reports]
    assert all(w.what == "summing" and w.unit == "%" for w in reports)
    assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(percents)
    assert any(0 < p < 100 for p in percents), "no report while the statement ran"


def test_with_nobody_listening_duckdb_is_left_as_it_was(conn):
    with tracking.watching(conn, "summing"):
        conn.execute("SELECT 1").fetchone()
    assert conn.execute("SELECT current_setting('enable_progress_bar_print')").fetchone() == (True,)  # DuckDB's default


def test_ingestion_and_counting_report_their_stages_with_the_counts_known(tmp_path, reports):
    sources = tmp_path / "sources"
    generate_sample(sources, customers=100, products=40, orders=800, end=END, history_days=10)
    lines = (sources / "purchase.csv").read_text().count("\n") - 1
    first, last = file_days(sources)
    days = Days(first, last + timedelta(days=1))
    with duckdb.connect() as conn:
        for name in ("customer", "product"):
            ingest(conn, sources, name, END)
        ingest(conn, sources, "purchase", END, days)
        daily_counts.attach(conn, tmp_path / "w.counts.duckdb")
        daily_counts.count_days(conn, days, 3, None)
        unparsed = conn.execute("SELECT count(*) FROM source_aligned.quarantine WHERE source = 'purchase.csv' AND reason IN "
                                "('bad_type', 'invalid_encoding', 'malformed_row')").fetchone()[0]
    parsed = lines - unparsed
    stages = list(dict.fromkeys(w.what for w in reports))  # in the order they started
    purchase = [s for s in stages if s.startswith("purchase.csv: ")]
    assert purchase == [
        "purchase.csv: reading lines",
        f"purchase.csv: {parsed:,} lines parsed, judging {purchase[1].split('judging ')[1]}",
        f"purchase.csv: {parsed:,} lines parsed, looking for repeated keys",
        f"purchase.csv: writing the accepted lines of {days}",
    ]
    assert re.fullmatch(r"\d+ rules", purchase[1].split("judging ")[1])
    counting = [s for s in stages if s.startswith(f"counting {days}: ")]
    assert [s.split(": ")[1] for s in counting[-4:]] == [f"{kind} per day" for kind in ("baskets", "product items", "product pairs", "category itemsets")]
    assert "the window's totals: product pairs" in stages
    assert all([w for w in reports if w.what == stage][-1].done == 100 for stage in stages)  # each ran to its end


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_shows_the_steps_work_with_its_count_beside_the_steps():
    screen = Terminal()
    with progress.StepProgress(12, stream=screen) as shown:
        tracking.report("core.purchase: 3/20 rules measured, reconciling rows_reconcile", 3, 20, "rules")
        shown._bar.refresh()
    drawn = screen.getvalue()
    assert "core.purchase: 3/20 rules measured, reconciling rows_reconcile" in drawn and "3/20 rules" in drawn
    assert "0/12 steps" in drawn


def test_a_pipe_gets_a_line_on_the_work_only_after_a_silence(monkeypatch):
    log = io.StringIO()
    with progress.StepProgress(12, stream=log):
        tracking.report("purchase.csv: reading lines", 40, 100, "%")  # just started: nothing to fill
        assert log.getvalue() == ""
        monkeypatch.setattr(progress, "PLAIN_SILENCE_SECONDS", 0.0)
        tracking.report("purchase.csv: reading lines", 45, 100, "%")
    assert log.getvalue() == "    ... purchase.csv: reading lines: 45%\n"
    tracking.report("after the run", 1, 2)  # nobody listens once the run's display is closed
    assert log.getvalue().count("\n") == 1


def test_lines_printed_at_once_by_the_run_and_a_watcher_stay_whole(monkeypatch):
    """A pipe gets the steps' lines from the run's thread and the work's from a DuckDB watcher's thread: printed at the
    same moment, each stays a line of its own. print() writes a line and its end apart, and a write to a pipe can let
    the other thread run in between (here a stream whose write yields, as a blocking one does)."""
    import threading
    import time
    from types import SimpleNamespace

    class Pipe(io.StringIO):
        def write(self, text: str) -> int:
            written = super().write(text)
            time.sleep(0)  # the other thread's turn
            return written

    def event(kind: str, step: str):
        flags = {"is_step_start": kind == "start", "is_step_success": kind == "success", "is_step_failure": False,
                 "is_step_skipped": False}
        return SimpleNamespace(dagster_event=SimpleNamespace(step_key=step, **flags), timestamp=0.0)

    monkeypatch.setattr(progress, "PLAIN_SILENCE_SECONDS", 0.0)
    log = Pipe()
    with progress.StepProgress(1000, stream=log) as shown:
        def work():
            for i in range(500):
                tracking.report(f"rows {i}", i, 1000)

        watcher = threading.Thread(target=work)
        watcher.start()
        for i in range(250):
            shown.on_event(event("start", f"step_{i}"))
            shown.on_event(event("success", f"step_{i}"))
        watcher.join()
    lines = log.getvalue().splitlines()
    whole = re.compile(r"\[\d+/1000\] step_\d+ (\.\.\.|done in 0\.0s \(run \d+s\))|    \.\.\. rows \d+: [\d,]+/1,000")
    assert [line for line in lines if not whole.fullmatch(line)] == []
    assert sum(line.startswith("[") for line in lines) == 500  # every step's two lines (a work line is left out when
    # a step's line was printed after it was reported: not silent then)
