"""One pipeline run at a time per working warehouse: `<warehouse>.lock`, held from the run's plan to its end.

DuckDB's own lock on the warehouse file lasts only while a step has the file open, so without this lock a second run
could write between a first run's steps (and publish a mix of both), and even a second run that only reads the
warehouse to plan its days would hold DuckDB's lock for a moment: a step of the first run opening the file then
fails. So a run takes this lock before it opens the warehouse at all, and a second run is refused before it does.
The operating system releases the lock when the process ends, even on kill -9.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WarehouseBusy(RuntimeError):
    """Another pipeline run, or another process, holds the working warehouse."""


_HELD: dict[Path, int] = {}  # the locks this process holds: lock file -> its descriptor


@contextmanager
def run_lock(warehouse: Path | str) -> Iterator[None]:
    """Hold `<warehouse>.lock` for the block, with this process's PID in it, or raise WarehouseBusy naming the
    process that holds it. A block inside another that holds it already runs under that hold (the command line
    holds it from its plan on, and the job's steps run inside in the same process)."""
    lock = Path(f"{warehouse}.lock").resolve()
    if lock in _HELD:
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode().strip() or "unknown"
        os.close(fd)
        raise WarehouseBusy(
            f"{warehouse} is being written by another pipeline run (PID {holder} holds the lock {Path(f'{warehouse}.lock')}); "
            "run again once it has finished. Readers are not affected: they read the published snapshot."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[lock] = fd
    try:
        yield
    finally:
        del _HELD[lock]
        os.close(fd)
