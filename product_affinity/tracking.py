"""Progress from inside a long step: what it is doing, how far it is, with counts a user recognises.

A step's events (progress.py) say which step runs, not how far it is: ingesting 33 million lines or
counting two years of baskets is one step of a minute or more. The domain code that does that work
reports it here, without knowing who shows it: `report` for work it counts itself (rules measured, 12
of 20), `watching` for DuckDB statements, whose own progress DuckDB measures (`query_progress`, read
by a thread while the statement runs). Nothing is measured or printed unless someone listens: the CLI's
progress display does (progress.StepProgress); a run in the Dagster UI, a test or a benchmark does not,
so they pay nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Work:
    what: str  # "purchase.csv: reading lines", "counting 731 days: product pairs"
    done: float
    total: float | None  # None: how much there is is not known yet
    unit: str = ""  # "%" for DuckDB's own measure, else what is counted ("rules", "days")

    def amount(self) -> str:
        if self.unit == "%":
            return f"{self.done:.0f}%"
        counted = f"{self.done:,.0f}" if self.total is None else f"{self.done:,.0f}/{self.total:,.0f}"
        return f"{counted} {self.unit}".rstrip()


Listener = Callable[[Work], None]
_listeners: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send every report made inside the block to `listener` (called in the reporting thread, or the watcher's)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report(what: str, done: float, total: float | None = None, unit: str = "") -> None:
    """`done` of `total` (unit) of the work named `what`; cheap when nobody listens."""
    if _listeners:
        work = Work(what, done, total, unit)
        for listener in list(_listeners):
            listener(work)


@contextmanager
def watching(conn: duckdb.DuckDBPyConnection, what: str) -> Iterator[None]:
    """Report, as `what`, the progress DuckDB measures of each statement run on `conn` inside the block.

    DuckDB tracks a statement's progress only with its progress bar on; it is switched on without printing, for this
    connection, only when someone listens. A watcher thread reads it every quarter second (query_progress is made to
    be called from another thread while the statement runs); -1 means no statement is running."""
    if not _listeners:
        yield
        return
    conn.execute("SET enable_progress_bar = true")
    conn.execute("SET enable_progress_bar_print = false")
    conn.execute("SET progress_bar_time = 0")
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(POLL_SECONDS):
            if (percent := conn.query_progress()) >= 0:
                report(what, percent, 100, "%")

    report(what, 0, 100, "%")
    watcher = threading.Thread(target=watch, name="duckdb-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
    report(what, 100, 100, "%")
