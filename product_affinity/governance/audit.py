"""The audit log: one bounded JSON line for every request the APIs answered or refused, and for every Postgres publication.

An entry says when, which HTTP method and path (never the query string), the status code sent and
the outcome it means, who asked (principal and key id), which service operations ran and on which
view, what was asked (the query as JSON text), how many rows came back, which policies applied,
the snapshot read, how long the server took and why a request was refused. Every field is cut to
a size (FIELD_LIMITS), so no entry exceeds MAX_ENTRY_BYTES whatever a client sends, and every value
is a string, a number or null, so DuckDB reads every line with one flat schema:

    FROM read_json('data/governance/audit/*.jsonl')

The query and the policies are JSON text (`request::JSON`, `policies::JSON ->> 'row_filters'`): a
nested object of any depth would make DuckDB's reader refuse the whole file.

Files are named per UTC day and part, `YYYY-MM-DD.NNNN.jsonl`: a part that reaches `file_bytes` is
followed by the next, and when the folder would exceed `total_bytes` the oldest files are removed.
Lines are appended with a single write on a file opened O_APPEND, so concurrent API workers never
interleave them. What the SLOs need from the log (requests per day, principal and outcome; the
latency of the latest reads of each view) is counted in the governance store as each entry is
written, so nothing re-reads the log to measure them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from product_affinity.governance.store import GovernanceStore, governance_dir, read_only

log = logging.getLogger(__name__)

FIELDS = ("at", "method", "path", "status", "outcome", "principal", "key_id", "operation", "operations", "view", "request",
          "rows", "policies", "snapshot", "duration_ms", "detail")
FIELD_LIMITS = {"method": 32, "path": 256, "outcome": 32, "principal": 64, "key_id": 64, "operation": 64, "view": 64,
                "request": 2_048, "policies": 2_048, "snapshot": 128, "detail": 512}  # in UTF-8 bytes, as JSON
MAX_ENTRY_BYTES = 8_192  # the limits above and the fixed fields add up to less

FILE_BYTES_ENV, TOTAL_BYTES_ENV = "PRODUCT_AFFINITY_AUDIT_FILE_BYTES", "PRODUCT_AFFINITY_AUDIT_TOTAL_BYTES"
DEFAULT_FILE_BYTES, DEFAULT_TOTAL_BYTES = 64 * 2**20, 1 * 2**30
RECENT_READS = 1_000  # latencies kept per view, for the api_latency SLO
FILE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl$")  # without a part: the one file per day of earlier versions

OUTCOME_RANK = {"ok": 0, "unavailable": 1, "invalid": 2, "denied": 3, "unauthenticated": 4, "error": 5, "aborted": 6}


def audit_dir(warehouse: Path) -> Path:
    return governance_dir(warehouse) / "audit"


@dataclass
class AuditedRequest:
    """What the handlers of one HTTP request tell the audit log, which writes it as one entry when the response starts."""

    method: str
    path: str
    operations: list[dict] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (outcome, message) of refusals sent with status 200 (GraphQL)
    principal: str | None = None
    key_id: str | None = None

    def outcome(self, status: int) -> str:
        if status == 401:
            return "unauthenticated"
        if status == 403:
            return "denied"
        if status == 503:
            return "unavailable"
        if status >= 500:
            return "error"
        if status >= 400:
            return "invalid"
        worst = [o["outcome"] for o in self.operations] + [outcome for outcome, _ in self.errors]
        return max(worst, key=OUTCOME_RANK.__getitem__, default="ok")

    def entry(self, status: int, outcome: str, duration_ms: float, request: str | None, detail: str | None) -> dict:
        """The entry: the first operation refused (or the first one) speaks for the request; rows add up."""
        refused = [o for o in self.operations if o["outcome"] != "ok"]
        first = (refused or self.operations or [{}])[0]
        rows = [o["rows"] for o in self.operations if o.get("rows") is not None]
        return {
            "method": self.method, "path": self.path, "status": status, "outcome": outcome,
            "principal": self.principal, "key_id": self.key_id, "operation": first.get("path"),
            "operations": len(self.operations), "view": first.get("view"),
            "request": first.get("request", request), "rows": sum(rows) if rows else None, "policies": first.get("policies"),
            "snapshot": first.get("snapshot"), "duration_ms": duration_ms,
            "detail": first.get("detail") or (self.errors[0][1] if self.errors else detail),
        }


audited_request: ContextVar[AuditedRequest | None] = ContextVar("audited_request", default=None)


class AuditLog:
    def __init__(self, warehouse: Path, file_bytes: int | None = None, total_bytes: int | None = None) -> None:
        self.directory = audit_dir(warehouse)
        self.file_bytes = file_bytes or _size_from_environment(FILE_BYTES_ENV, DEFAULT_FILE_BYTES)
        self.total_bytes = total_bytes or _size_from_environment(TOTAL_BYTES_ENV, DEFAULT_TOTAL_BYTES)
        if self.total_bytes < 2 * self.file_bytes:
            raise ValueError(f"the audit log's total size ({TOTAL_BYTES_ENV}={self.total_bytes}) must be at least twice a "
                             f"file's ({FILE_BYTES_ENV}={self.file_bytes}): the cap removes whole files")
        self.store = GovernanceStore(warehouse)
        self._lock = threading.Lock()
        self._current: tuple[str, int] | None = None  # (day, part) this process appends to
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def record(self, *, principal: str | None, key_id: str | None, path: str, request: Any, outcome: str,
               rows: int | None = None, policies: dict | None = None, view: str | None = None,
               detail: str | None = None, snapshot: str | None = None, duration_ms: float | None = None) -> None:
        """One operation of the delivery service. Inside an HTTP request it joins that request's one entry (the
        middleware writes it with the status code sent); outside one (a Postgres publication) it is written now."""
        operation = {"path": path, "view": view, "request": request, "outcome": outcome, "rows": rows, "policies": policies,
                     "snapshot": snapshot, "detail": detail}
        current = audited_request.get()
        if current is not None:
            current.operations.append(operation)
            if principal is not None:
                self.identify(principal, key_id)
            return
        self.write({**operation, "operation": None, "principal": principal, "key_id": key_id, "method": None,
                    "status": None, "operations": 1, "duration_ms": duration_ms})

    @staticmethod
    def identify(principal: str, key_id: str | None) -> None:
        """Name who asked in the entry of the HTTP request being served, whatever it goes on to do (no-op outside one)."""
        current = audited_request.get()
        if current is not None:
            current.principal, current.key_id = principal, key_id

    @staticmethod
    def refused(outcome: str, message: str) -> None:
        """A refusal the response carries with status 200 (a GraphQL error), for the entry's outcome (no-op outside a request)."""
        current = audited_request.get()
        if current is not None:
            current.errors.append((outcome, message))

    def write(self, entry: dict) -> dict:
        """Append one entry, bounded, to the log and count it; returns what was written."""
        at = datetime.now(UTC)
        bounded = bound({**entry, "at": at.isoformat(timespec="milliseconds")})
        self._append(at.strftime("%Y-%m-%d"), (json.dumps(bounded, ensure_ascii=False) + "\n").encode())
        try:
            self._count(at.strftime("%Y-%m-%d"), bounded)
        except sqlite3.Error:  # the line is the record; a counter missed only makes the SLOs see one request fewer
            log.exception("could not count an audit entry in %s", self.store.path)
        return bounded

    def _append(self, day: str, line: bytes) -> None:
        with self._lock:
            part = self._current[1] if self._current and self._current[0] == day else self._last_part(day)
            while True:
                fd = os.open(self.directory / f"{day}.{part:04d}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                size = os.fstat(fd).st_size
                if size == 0 or size + len(line) <= self.file_bytes:
                    break
                os.close(fd)
                part += 1
            try:
                if size == 0:
                    self._cap(keep=f"{day}.{part:04d}.jsonl")
                os.write(fd, line)
            finally:
                os.close(fd)
            self._current = (day, part)

    def _last_part(self, day: str) -> int:
        parts = [int(m.group(2)) for p in self.directory.glob(f"{day}.*.jsonl") if (m := FILE_NAME.match(p.name)) and m.group(2)]
        return max(parts, default=0)

    def _cap(self, keep: str) -> None:
        """Remove the oldest files until the folder, with a whole new part, stays within total_bytes."""
        files = []
        for path in self.files():
            try:
                files.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue  # another worker removed it
        total = sum(size for _, size in files) + self.file_bytes
        for path, size in files:
            if total <= self.total_bytes or path.name == keep:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _count(self, day: str, entry: dict) -> None:
        ms = entry["duration_ms"] or 0.0
        with self.store.transaction() as conn:
            conn.execute("""INSERT INTO requests_per_day VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT DO UPDATE SET
                            requests = requests + 1, total_ms = total_ms + excluded.total_ms, max_ms = max(max_ms, excluded.max_ms)""",
                         [day, entry["principal"] or "", entry["outcome"], ms, ms])
            if entry["status"] == 200 and entry["outcome"] == "ok" and entry["view"]:
                reads = conn.execute("""INSERT INTO read_latency_count VALUES (?, 1)
                                        ON CONFLICT DO UPDATE SET reads = reads + 1 RETURNING reads""", [entry["view"]]).fetchone()[0]
                conn.execute("INSERT OR REPLACE INTO read_latency VALUES (?, ?, ?)", [entry["view"], reads % RECENT_READS, ms])

    def files(self) -> list[Path]:
        """The log's files, oldest first."""
        def order(path: Path) -> tuple[str, int]:
            m = FILE_NAME.match(path.name)
            return m.group(1), int(m.group(2)) if m.group(2) else -1
        return sorted((p for p in self.directory.glob("*.jsonl") if FILE_NAME.match(p.name)), key=order)

    def entries(self) -> list[dict]:
        """Every entry, oldest first, with `request` and `policies` decoded from their JSON text where whole (a cut one
        stays text). For tests and small logs: DuckDB reads a large one."""
        entries = []
        for path in self.files():
            for line in path.read_text(encoding="utf-8").split("\n"):  # not splitlines: U+2028 may be data
                if line:
                    entry = json.loads(line)
                    for name in ("request", "policies"):
                        if isinstance(entry.get(name), str):
                            try:
                                entry[name] = json.loads(entry[name])
                            except ValueError:
                                pass
                    entries.append(entry)
        return entries


def bound(entry: dict) -> dict:
    """The entry with every field a string, number or null, cut to its limit."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = entry.get(name)
        if name in ("request", "policies") and value is not None and not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False, default=str)
        if name == "duration_ms" and value is not None:
            value = round(float(value), 2)
        out[name] = _cut(value, FIELD_LIMITS[name]) if name in FIELD_LIMITS and value is not None else value
    return out


def _cut(value: Any, limit: int) -> str:
    """`value` as text whose JSON encoding (quotes included) takes at most `limit` bytes, marked when cut."""
    text = str(value)
    if _json_bytes(text) <= limit:
        return text
    keep = limit
    while keep > 0:
        cut = f"{text[:keep]}…[cut from {len(text):,} chars]"
        if _json_bytes(cut) <= limit:
            return cut
        keep = keep * 3 // 4
    text = text[:limit]  # a limit too small for the mark: cut without it
    while _json_bytes(text) > limit:
        text = text[:-1]
    return text


def _json_bytes(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode())


def recent_read_durations(warehouse: Path, view: str) -> list[float]:
    """The server time, in ms, of the latest RECENT_READS successful API reads of `view`, as counted when they were audited;
    empty when no API has served this warehouse (nothing is created to find that out)."""
    conn = read_only(warehouse)
    if conn is None:
        return []
    try:
        return [row[0] for row in conn.execute("SELECT duration_ms FROM read_latency WHERE view = ?", [view]).fetchall()]
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    finally:
        conn.close()


def _size_from_environment(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < MAX_ENTRY_BYTES:
        raise ValueError(f"{name}={value!r}: a whole number of bytes of at least {MAX_ENTRY_BYTES} is required")
    return int(value)
