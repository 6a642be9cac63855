"""The Postgres port: Swapping the newly loaded tables in: waiting for the readers' locks without making them queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from product_affinity.delivery.postgres_common import ReadersBusy


@dataclass(frozen=True)
class Reader:
    """A session holding a lock on the published relations: what a publication waits for."""

    pid: int
    role: str | None
    application: str
    state: str
    since: datetime | None

    def __str__(self) -> str:
        since = f" since {self.since:%Y-%m-%d %H:%M:%S}" if self.since else ""
        return f"pid {self.pid} ({self.role or 'a server process'}, {self.application or 'no application name'}, {self.state}{since})"


def _readers(pg: psycopg.Connection, schemas: list[str]) -> list[Reader]:
    found = pg.execute(
        """SELECT DISTINCT a.pid, a.usename, a.application_name, a.state, a.xact_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE l.locktype = 'relation' AND l.granted AND a.pid <> pg_backend_pid()
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND n.nspname = ANY(%s)
           ORDER BY a.pid""", [schemas]).fetchall()
    return [Reader(*row) for row in found]


def _swap(pg: psycopg.Connection, schemas: list[str], apply: Callable[[], None], wait: float,
          on_busy: Callable[[list[Reader]], None] | None) -> int:
    """Run `apply` holding every relation of `schemas` exclusively; the number of attempts it took.

    The locks are taken NOWAIT: a reader's open transaction makes the attempt fail at once (and undoes
    it) instead of making the publisher queue, which would make every later reader queue behind it.
    """
    deadline, pause, attempt = time.monotonic() + wait, 0.05, 0
    while True:
        attempt += 1
        try:
            with pg.transaction():  # a savepoint: a refused lock undoes this attempt alone, not the load
                held = pg.execute("""SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
                                     JOIN pg_namespace n ON n.oid = c.relnamespace
                                     WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'v', 'p')""", [schemas]).fetchall()
                if held:
                    pg.execute(f"LOCK TABLE {', '.join(r for (r,) in held)} IN ACCESS EXCLUSIVE MODE NOWAIT")
                apply()
            return attempt
        except psycopg.errors.LockNotAvailable:
            readers = _readers(pg, schemas)
            if time.monotonic() + pause > deadline:
                raise ReadersBusy(
                    f"readers kept the published views in open transactions for more than {wait:g}s: "
                    f"{'; '.join(map(str, readers)) or 'they have just finished'}. Nothing changed; try again, or end them "
                    "(SELECT pg_terminate_backend(pid))") from None
            if on_busy:
                on_busy(readers)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

