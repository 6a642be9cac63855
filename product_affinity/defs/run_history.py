"""The Dagster instance's run history on SQLite, as Dagster stores it, written in fewer and cheaper transactions.

A run records an event per step start, log line, check result and materialization, and a run over daily partitions
one materialization per asset and day: a run over two years records about 1,500 (the purchase lines and their counts,
731 days each). Dagster's SQLite event log creates and disposes a SQLAlchemy engine for every statement, so each one
is compiled again, and stores a batch of events one by one: about 11 ms an event here, half of `make run` on the
sample (21.6 s of run, 2,051 events). Here an engine is kept per database file (its compiled statements with it),
and the materializations of one output over many partitions, which Dagster hands over as a batch, are written in one
transaction per file: the same rows in the same files (`make dev`, `dagster` and any SQLite instance read them as
Dagster's own), and the sample's run takes 10.8 s.

The engines keep their connections open (a pool per file, the run's own and the index's kept, older runs' files
closed) and commit without waiting for the disk (`PRAGMA synchronous=NORMAL`; Dagster puts the files in WAL mode).
Closing the last connection to a WAL file checkpoints it, and a commit at SQLite's default waits for an fsync: the
two took 2.5 s of the 4.6 s a day's run at Instacart scale spent storing its 589 events one by one. What NORMAL
gives up, in WAL mode, is only the last commits before a power cut or an OS crash (never the file's consistency):
run history, not data, and a run cut off that way is failed and re-run anyway. What follows a run's log live (make
dev's webserver) watches the run's file, which a commit in WAL mode no longer changes until a checkpoint: the watch
here wakes on the write-ahead log too (`RunFileWatch`).

`dagster_home/dagster.yaml` names `RunHistoryInstance` as the instance class (Dagster's `instance_class` setting); it
takes Dagster's defaults for everything else. Dagster's in-memory instances (tests' `DagsterInstance.ephemeral()`)
are untouched. The classes override private parts of Dagster's SQLite event log (`_connect`, and the index writes a
batch reuses), as Dagster 1.13.27 has them (pinned in constraints.txt): tests/test_run_history.py compares the history
written here with Dagster's own, so an upgrade that changes them fails there first.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from dagster import DagsterInstance
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.engine import Engine
from watchdog.observers import Observer

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "dagster_home" / "dagster.yaml"  # `make` exports its folder
BATCH_EVENTS = 1000  # materializations written per transaction (Dagster's DAGSTER_EVENT_BATCH_SIZE overrides it)
RUN_FILES_OPEN = 4  # runs' files whose connections stay open, the latest used (a webserver reads many runs)


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log (one file per run, plus the index of asset events), with an engine kept per file and
    a batch of asset events written in one transaction per file."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._db_lock = threading.RLock()  # held per connection, as Dagster's lock is; reentrant for a batch's nesting

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The file's engine, made once: its connections stay open in its pool. The index's is kept; of the runs'
        files, the RUN_FILES_OPEN used last. Called under the lock."""
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = create_engine(self.conn_string_for_shard(shard), connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False})  # used by one thread at a time: the lock
            sqlalchemy_events.listen(engine, "connect", _commit_without_fsync)
        self._engines[shard] = engine  # the most recently used last
        runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
        for name in runs[:-RUN_FILES_OPEN]:
            self._engines.pop(name).dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        """Dagster's, on the file's kept engine (see the module docstring)."""
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        """Dagster's (asked before many of an event's writes), on the index's kept engine."""
        with self._db_lock:
            engine = self._engine(INDEX_SHARD_NAME)
            with engine.connect() as conn:
                return bool(engine.dialect.has_table(conn, table_name))

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """What store_event does for each event, for a batch of one run's asset events: their rows in the run's file,
        and in the index with their tags and the assets' latest state, a transaction per file. Anything else (Dagster
        batches only asset events today) is stored event by event."""
        if len({event.run_id for event in events}) != 1 or not all(
            event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS for event in events
        ):
            for event in events:
                self.store_event(event)
            return
        inserts = [self.prepare_insert_event(event) for event in events]
        # The index's transaction inside the run file's: a batch the index refuses leaves neither written, and Dagster
        # then stores its events one by one (InstanceEventMethods.handle_new_event), with no row twice.
        with self.run_connection(events[0].run_id) as run_conn:
            for insert in inserts:
                run_conn.execute(insert)
            with self.index_transaction() as conn:
                event_ids = [conn.execute(insert).inserted_primary_key[0] for insert in inserts]
                self._store_asset_event_tags(conn, events, event_ids)
                for event, event_id in zip(events, event_ids):
                    self._store_asset_event(conn, event, event_id)

    def watch(self, run_id: str, cursor: str | None, callback) -> None:
        """Dagster's (a watch of the run's file, in a thread), woken by its write-ahead log too (`RunFileWatch`)."""
        if not self._obs:
            self._obs = Observer()
            self._obs.start()
        watch = RunFileWatch(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (watch, self._obs.schedule(watch, self._base_dir, recursive=True))

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


class RunFileWatch(SqliteEventLogStorageWatchdog):
    """Dagster's watch of a run's file (what follows a run's log live: make dev's webserver, a sensor on run events),
    woken also when the file's write-ahead log changes. In WAL mode a commit writes the log, not the file, and the
    file changes only at a checkpoint: with each connection closed after use, the last one's close checkpointed; with
    the connections kept, a follower would wait for SQLite's automatic checkpoint (every 1,000 pages)."""

    @property
    def patterns(self) -> list[str]:
        return [self._log_path, f"{self._log_path}-wal"]

    def on_modified(self, event) -> None:
        self._process_log()


class RunHistoryStorage(DagsterSqliteStorage):
    """Dagster's default storage (runs, events, schedules in SQLite files under the instance's folder), with the
    batched event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._event_log_storage = BatchedSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> RunHistoryStorage:
        return cls(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData:
        return _data(BatchedSqliteEventLogStorage, _event_logs_directory(self.base_dir))


class RunHistoryInstance(DagsterInstance):
    """Dagster's instance on its default SQLite storage under DAGSTER_HOME, the run history written as above."""

    @classmethod
    def config_schema(cls) -> Mapping:
        return {}

    @classmethod
    def config_defaults(cls, base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        return {**InstanceRef.config_defaults(base_dir), "storage": _data(RunHistoryStorage, base_dir),
                "event_log_storage": _data(BatchedSqliteEventLogStorage, _event_logs_directory(base_dir))}

    def _get_event_batch_size(self) -> int:
        return int(os.environ.get("DAGSTER_EVENT_BATCH_SIZE", BATCH_EVENTS))


def configured_like_the_project(home: Path) -> Path:
    """`home` made a Dagster instance folder configured as the project's dagster_home/ (this module's instance class
    included), for the runs of tests and benchmarks, which must not land in the project's own history."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_CONFIG, home)
    return home


def _commit_without_fsync(dbapi_connection, _record) -> None:
    """Each new connection commits to the WAL without an fsync (see the module docstring)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _data(cls: type, base_dir: str) -> ConfigurableClassData:
    return ConfigurableClassData(cls.__module__, cls.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False))
