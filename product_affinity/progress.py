"""What a run is doing, shown in the terminal while it runs: the current step, steps done out of all, an estimate.

A large run spends up to a minute in one step (ingesting, counting the rules, validating); Dagster's
own console log says nothing in between and, when a step fails, prints its whole trace. The CLI
therefore listens to the run's events itself and shows one thing per step: on a terminal a rich
progress bar (steps done/total, elapsed, estimated time left) with the step running now; otherwise
(a pipe, a scheduler's log) one plain line when a step starts and one when it ends, with times.
Dagster's own log is kept for `--verbose`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


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
        self._bar = None
        if stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("left"), TimeRemainingColumn(), console=Console(file=stream), transient=True)
            self._task = self._bar.add_task("starting", total=total_steps)

    def __enter__(self) -> StepProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def on_event(self, entry) -> None:
        """Dagster event listener: called synchronously for each event of the run (in-process executor)."""
        event = entry.dagster_event
        if event is None or event.step_key is None:
            return
        step, now = event.step_key, time.perf_counter()
        if event.is_step_start:
            self.started[step] = now
            self._show(f"[{self.done + 1}/{self.total}] {step} ...", running=step, ended=False)
        elif event.is_step_success or event.is_step_failure or event.is_step_skipped:
            self.done += 1
            outcome = "done" if event.is_step_success else "FAILED" if event.is_step_failure else "skipped"
            took = now - self.started.pop(step, now)
            self._show(f"[{self.done}/{self.total}] {step} {outcome} in {took:.1f}s "
                       f"(run {now - self.run_started:.0f}s)", running=next(iter(self.started), None), ended=True)

    def _show(self, line: str, running: str | None, ended: bool) -> None:
        """Plain: every line. Terminal: finished steps scroll above the bar, which names the step running now."""
        if self._bar is None:
            print(line, file=self.stream, flush=True)
            return
        if ended:
            self._bar.console.print(line, highlight=False)
        self._bar.update(self._task, completed=self.done, description=running or "")
