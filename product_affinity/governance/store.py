"""The governance store: API keys and the API's request counters, in one SQLite database next to the warehouse.

Why a database and not a JSON file: `keys issue`, `keys revoke` and every API worker change this
state at once, from several processes. Each change is one transaction that takes the write lock
before it reads (BEGIN IMMEDIATE), so no change is made on a stale read and none is lost; WAL mode
lets readers go on while one process writes, and they see the state before or after a change,
never half of it; a busy timeout makes writers queue instead of failing. SQLite is in the standard
library, so the store needs no server.

    data/governance/governance.sqlite3   (and its -wal and -shm files), mode 0600
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another's transaction before giving up
STORE_NAME = "governance.sqlite3"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        digest TEXT PRIMARY KEY,          -- SHA-256 of the key; the key itself is never stored
        key_id TEXT NOT NULL UNIQUE,
        principal TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        revoked_at TEXT                   -- set once, never cleared: a revocation cannot be undone
    )""",
    """CREATE TABLE IF NOT EXISTS imports (
        source TEXT NOT NULL,             -- a file imported once (the JSON key file of earlier versions)
        digest TEXT NOT NULL,             -- of its content: the same content is never imported twice
        imported_at TEXT NOT NULL,
        PRIMARY KEY (source, digest)
    )""",
    """CREATE TABLE IF NOT EXISTS requests_per_day (
        day TEXT NOT NULL,                -- UTC, YYYY-MM-DD
        principal TEXT NOT NULL,          -- '' for requests nobody authenticated
        outcome TEXT NOT NULL,
        requests INTEGER NOT NULL,
        total_ms REAL NOT NULL,
        max_ms REAL NOT NULL,
        PRIMARY KEY (day, principal, outcome)
    )""",
    """CREATE TABLE IF NOT EXISTS read_latency (
        view TEXT NOT NULL,               -- the latest successful reads of each view, a ring of slots
        slot INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        PRIMARY KEY (view, slot)
    )""",
    """CREATE TABLE IF NOT EXISTS read_latency_count (
        view TEXT PRIMARY KEY,
        reads INTEGER NOT NULL
    )""",
)


def governance_dir(warehouse: Path) -> Path:
    """Where a deployment's secrets and its audit trail live: next to its warehouse, never in git."""
    return Path(warehouse).parent / "governance"


def store_path(warehouse: Path) -> Path:
    return governance_dir(warehouse) / STORE_NAME


class GovernanceStore:
    """One connection per thread (sqlite3 connections are not shared across threads), opened on first use."""

    def __init__(self, warehouse: Path) -> None:
        self.path = store_path(warehouse)
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives its -wal and -shm files this mode too
            # isolation_level=None: the module opens no transaction of its own; `transaction` says where each begins.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            with _immediate(conn):
                for statement in SCHEMA:
                    conn.execute(statement)
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the lock from its first read; `durable` also syncs it to disk before it returns
        (a key issued or revoked survives a power cut; a request counter may not)."""
        conn = self.connection()
        if durable:
            conn.execute("PRAGMA synchronous = FULL")
        try:
            with _immediate(conn):
                yield conn
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def read_only(warehouse: Path) -> sqlite3.Connection | None:
    """A read-only connection to the store, or None when nothing has created it yet (a reader creates nothing)."""
    path = store_path(warehouse)
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn
