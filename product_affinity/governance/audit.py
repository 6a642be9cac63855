"""The audit log: every query any delivery path answered or refused, one JSON line each.

Who asked (principal and key id), when, through which path, what (the query as received), the
outcome (ok, denied, invalid, error), how many rows came back, which policies applied (groups,
masked members, row filters with their values) and how long it took. Lines are appended with a
single write on a file opened O_APPEND, so concurrent API workers never interleave them; read it
with DuckDB: `FROM read_json('data/governance/audit.jsonl')`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from product_affinity.governance.credentials import governance_dir


def audit_path(warehouse: Path) -> Path:
    return governance_dir(warehouse) / "audit.jsonl"


class AuditLog:
    def __init__(self, warehouse: Path) -> None:
        self.path = audit_path(warehouse)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, *, principal: str | None, key_id: str | None, path: str, request: Any, outcome: str,
               rows: int | None = None, policies: dict | None = None, view: str | None = None,
               detail: str | None = None, snapshot: str | None = None, duration_ms: float | None = None) -> None:
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
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
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def entries(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.path.read_text().split("\n") if line]  # not splitlines: U+2028 may be data
        except FileNotFoundError:
            return []
