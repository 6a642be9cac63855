"""What a run is doing, shown in the terminal while it runs: the current step, how far it is inside, an estimate.

A large run spends up to a minute in one step (ingesting, counting the rules, validating); Dagster's
own console log says nothing in between and, when a step fails, prints its whole trace. The CLI
therefore listens to the run's events itself and shows one thing per step, and to the work the step
reports from inside (tracking.py: lines read, rules measured, days counted, DuckDB's own progress of a
long statement). On a terminal: two rich progress bars, steps done/total and the step's current work,
each with elapsed and estimated time left. Otherwise (a pipe, a scheduler's log): one plain line when a
step starts and one when it ends, with times, and a line on the work in progress whenever nothing was
printed for PLAIN_SILENCE_SECONDS. Dagster's own log is kept for `--verbose`.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import ExitStack
from typing import TextIO

from product_affinity import tracking

PLAIN_SILENCE_SECONDS = 5.0  # a log without a terminal is never silent longer than this while work is reported


class StepProgress:
    """Turns the STEP_START / STEP_SUCCESS / STEP_FAILURE events of one run into progress output.

    Used as a context manager around the run, and registered with
    `instance.add_event_listener(run_id, progress.on_event)` before the run starts.
    """

    def __init__(self, total_steps: int, stream: TextIO | None = None):
        stream = stream or sys.stderr  # looked up now, so a redirected stderr (a test, a wrapper) gets the progress
        self.total, self.stream, self.done = total_steps, stream, 0
        self.started: dict[str, float] = {}
        self.run_started = time.perf_counter()
        self.last_printed = time.perf_counter()
        self._work: str | None = None  # what the running step reported last
        self._bar = None
        self._listening = ExitStack()
        self._printing = threading.Lock()
        if stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=Console(file=stream),
                                 transient=True)
            self._task = self._bar.add_task("starting", total=total_steps, amount=f"0/{total_steps} steps")
            self._work_task = self._bar.add_task("", total=None, amount="", visible=False)

    def __enter__(self) -> StepProgress:
        self._listening.enter_context(tracking.listening(self.on_work))
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._listening.close()
        if self._bar is not None:
            self._bar.stop()

    def on_work(self, work: tracking.Work) -> None:
        """tracking listener: the running step's work, from the step's thread or a DuckDB watcher's."""
        started = work.what != self._work
        self._work = work.what
        if self._bar is None:
            now = time.perf_counter()
            if now - self.last_printed >= PLAIN_SILENCE_SECONDS:
                self._print(f"    ... {work.what}: {work.amount()}")
            return
        if started:  # new work: its own elapsed time and estimate
            self._bar.reset(self._work_task, total=work.total, completed=work.done, description=f"  {work.what}",
                            amount=work.amount(), visible=True)
        else:
            self._bar.update(self._work_task, total=work.total, completed=work.done, amount=work.amount())

    def on_event(self, entry) -> None:
        """Dagster event listener: called synchronously for each event of the run (in-process executor), or as the
        run's event log is read (steps in processes of their own). A step's time is its events' (when they were
        logged, not read)."""
        event = entry.dagster_event
        if event is None or event.step_key is None:
            return
        step, now = event.step_key, time.perf_counter()
        if event.is_step_start:
            self.started[step] = entry.timestamp
            self._show(f"[{self.done + 1}/{self.total}] {step} ...", running=step, ended=False)
        elif event.is_step_success or event.is_step_failure or event.is_step_skipped:
            self.done += 1
            outcome = "done" if event.is_step_success else "FAILED" if event.is_step_failure else "skipped"
            took = entry.timestamp - self.started.pop(step, entry.timestamp)
            self._show(f"[{self.done}/{self.total}] {step} {outcome} in {took:.1f}s "
                       f"(run {now - self.run_started:.0f}s)", running=next(iter(self.started), None), ended=True)

    def _print(self, line: str) -> None:
        """One whole line at a time: the run's thread (steps) and a DuckDB watcher's (work) both print, and print()
        writes a line and its end apart, so two lines printed at once came out as one line and a bare newline."""
        with self._printing:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_printed = time.perf_counter()

    def _show(self, line: str, running: str | None, ended: bool) -> None:
        """Plain: every line. Terminal: finished steps scroll above the bars, which name the step running now and its work."""
        self._work = None
        if self._bar is None:
            self._print(line)
            return
        if ended:
            self._bar.console.print(line, highlight=False)
        self._bar.update(self._task, completed=self.done, description=running or "", amount=f"{self.done}/{self.total} steps")
        self._bar.update(self._work_task, visible=False)
