"""The audit log: every query any delivery path answered or refused, one JSON line each.

Who asked (principal and key id), when, through which path, what (the query as received), the
outcome (ok, denied, invalid, error), how many rows came back, which policies applied (groups,
masked members, row filters with their values) and how long it took. One file per UTC day, so
the log rotates itself and old days can be archived or dropped whole. Lines are appended with a
single write on a file opened O_APPEND, so concurrent API workers never interleave them; read
them with DuckDB: `FROM read_json('data/governance/audit/*.jsonl')`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from product_affinity.governance.credentials import governance_dir


def audit_dir(warehouse: Path) -> Path:
    return governance_dir(warehouse) / "audit"


class AuditLog:
    def __init__(self, warehouse: Path) -> None:
        self.directory = audit_dir(warehouse)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def record(self, *, principal: str | None, key_id: str | None, path: str, request: Any, outcome: str,
               rows: int | None = None, policies: dict | None = None, view: str | None = None,
               detail: str | None = None, snapshot: str | None = None, duration_ms: float | None = None) -> None:
        at = datetime.now(UTC)
        entry = {
            "at": at.isoformat(timespec="milliseconds"),
            "principal": principal,
            "key_id": key_id,
            "path": path,
            "view": view,
            "request": request,
            "outcome": outcome,
            "rows": rows,
            "policies": policies,
            "snapshot": snapshot,
            "duration_ms": None if duration_ms is None else round(duration_ms, 2),
            "detail": detail,
        }
        line = (json.dumps(entry, default=str, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.directory / f"{at:%Y-%m-%d}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def entries(self, last: int | None = None) -> list[dict]:
        """Every entry, oldest first; with `last`, only the newest `last` (reading back from the newest day)."""
        days = []
        for day in sorted(self.directory.glob("*.jsonl"), reverse=True):
            days.insert(0, [line for line in day.read_text().split("\n") if line])  # not splitlines: U+2028 may be data
            if last and sum(map(len, days)) >= last:
                break
        lines = [line for day in days for line in day]
        return [json.loads(line) for line in (lines[-last:] if last else lines)]
