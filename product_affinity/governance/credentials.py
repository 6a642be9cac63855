"""API keys and the masking key: the secrets of a deployment, kept next to its warehouse, never in git.

An API key is shown once, when it is issued; only its SHA-256 digest is stored (keys are 256
random bits, so a fast digest is as safe as a slow one and lets a request be checked in
microseconds). The masking key salts the `hash` mask, so a hashed e-mail cannot be reversed by
hashing candidate addresses.

    data/governance/keys.json      {digest: {key_id, principal, issued_at}}, mode 0600
    data/governance/masking.key    random, mode 0600
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from product_affinity.semantic.access import Principal

from product_affinity.governance.policies import principal

KEY_PREFIX = "pa"


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the principal and the id of the key they used."""

    principal: Principal
    key_id: str


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    principal: str
    issued_at: str


def governance_dir(warehouse: Path) -> Path:
    return Path(warehouse).parent / "governance"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f"{path.name}.partial")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staged, path)


class KeyStore:
    def __init__(self, warehouse: Path) -> None:
        self.path = governance_dir(warehouse) / "keys.json"
        self._cache: tuple[int, dict[str, dict]] | None = None

    def _load(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def issue(self, name: str) -> str:
        """A new key for the principal `name` (which policies.yaml must declare); the only time it is shown."""
        principal(name)  # refuses an unknown principal
        key_id = secrets.token_hex(4)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        keys = self._load()
        keys[_digest(key)] = {"key_id": key_id, "principal": name, "issued_at": datetime.now(UTC).isoformat(timespec="seconds")}
        _write_private(self.path, json.dumps(keys, indent=2) + "\n")
        return key

    def revoke(self, key_id: str) -> bool:
        keys = self._load()
        kept = {digest: entry for digest, entry in keys.items() if entry["key_id"] != key_id}
        _write_private(self.path, json.dumps(kept, indent=2) + "\n")
        return len(kept) < len(keys)

    def issued(self) -> list[IssuedKey]:
        return [IssuedKey(**entry) for entry in self._load().values()]

    def authenticate(self, key: str) -> Caller | None:
        """Who holds `key`, or None. Keys are compared by digest, in constant time; the file is re-read when it changes."""
        digest = _digest(key)
        for known, entry in self._current().items():
            if hmac.compare_digest(known, digest):
                return Caller(principal(entry["principal"]), entry["key_id"])
        return None

    def _current(self) -> dict[str, dict]:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, self._load())
        return self._cache[1]


def masking_key(warehouse: Path) -> str:
    """The deployment's key for the `hash` mask, created on first use."""
    path = governance_dir(warehouse) / "masking.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        _write_private(path, secrets.token_hex(32) + "\n")
        return path.read_text().strip()
