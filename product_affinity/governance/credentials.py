"""API keys and the masking key: the secrets of a deployment, kept next to its warehouse, never in git.

An API key is shown once, when it is issued; only its SHA-256 digest is stored (keys are 256
random bits, so a fast digest is as safe as a slow one and lets a request be checked in
microseconds). The masking key salts the `hash` mask, so a hashed e-mail cannot be reversed by
hashing candidate addresses.

    data/governance/governance.sqlite3   table api_keys: digest, key_id, principal, issued_at, revoked_at (store.py)
    data/governance/masking.key          random, mode 0600
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from product_affinity.governance.policies import principal
from product_affinity.governance.store import GovernanceStore, governance_dir
from product_affinity.semantic.access import Principal

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
    revoked_at: str | None = None


def _digest(key: str) -> str:
    return _digest_bytes(key.encode())


def _digest_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


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


class KeyFileError(ValueError):
    """The JSON key file of an earlier version cannot be imported."""


class KeyStore:
    """API keys in the governance store: issued, revoked and checked in transactions, so concurrent `keys issue`,
    `keys revoke` and API workers never lose a key, undo a revocation or read a half-written state."""

    def __init__(self, warehouse: Path) -> None:
        self.store = GovernanceStore(warehouse)
        self.legacy = governance_dir(warehouse) / "keys.json"
        self._import_legacy()

    def _import_legacy(self) -> None:
        """Earlier versions kept keys in keys.json: import it once (the same content is never imported twice, so a key
        revoked since stays revoked), then rename it keys.json.imported."""
        try:
            content = self.legacy.read_bytes()
        except FileNotFoundError:
            return
        try:
            entries = json.loads(content)
            rows = [(digest, e["key_id"], e["principal"], e["issued_at"]) for digest, e in entries.items()]
        except (ValueError, AttributeError, TypeError, KeyError) as error:
            raise KeyFileError(f"{self.legacy}: not a key file of an earlier version ({type(error).__name__}: {error}); "
                               "fix it or move it away") from None
        with self.store.transaction(durable=True) as conn:
            done = conn.execute("SELECT 1 FROM imports WHERE source = ? AND digest = ?", [self.legacy.name, _digest_bytes(content)])
            if done.fetchone() is None:
                conn.executemany("INSERT OR IGNORE INTO api_keys (digest, key_id, principal, issued_at) VALUES (?, ?, ?, ?)", rows)
                conn.execute("INSERT INTO imports VALUES (?, ?, ?)", [self.legacy.name, _digest_bytes(content), _now()])
        try:
            self.legacy.replace(self.legacy.with_name("keys.json.imported"))
        except FileNotFoundError:
            pass  # another process imported it at the same time and renamed it first

    def issue(self, name: str) -> str:
        """A new key for the principal `name` (which policies.yaml must declare); the only time it is shown."""
        principal(name)  # refuses an unknown principal
        while True:
            key_id = secrets.token_hex(4)
            key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            try:
                with self.store.transaction(durable=True) as conn:
                    conn.execute("INSERT INTO api_keys (digest, key_id, principal, issued_at) VALUES (?, ?, ?, ?)",
                                 [_digest(key), key_id, name, _now()])
                return key
            except sqlite3.IntegrityError:
                continue  # the key id is taken (1 in 4 billion per key held): draw another

    def revoke(self, key_id: str) -> bool:
        """Revoke the key `key_id`: True if it was valid until now. A revoked key stays in the store, marked."""
        with self.store.transaction(durable=True) as conn:
            changed = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", [_now(), key_id])
            return changed.rowcount == 1

    def issued(self) -> list[IssuedKey]:
        """Every key issued, revoked ones included, oldest first."""
        rows = self.store.connection().execute(
            "SELECT key_id, principal, issued_at, revoked_at FROM api_keys ORDER BY issued_at, key_id").fetchall()
        return [IssuedKey(*row) for row in rows]

    def authenticate(self, key: str) -> Caller | None:
        """Who holds `key`, or None when nobody does or it is revoked. The key is looked up by its digest: comparing
        digests leaks nothing an attacker can use, as they cannot choose a key with a given digest."""
        row = self.store.connection().execute(
            "SELECT principal, key_id FROM api_keys WHERE digest = ? AND revoked_at IS NULL", [_digest(key)]).fetchone()
        return None if row is None else Caller(principal(row[0]), row[1])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def masking_key(warehouse: Path) -> str:
    """The deployment's key for the `hash` mask, created on first use."""
    path = governance_dir(warehouse) / "masking.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        _write_private(path, secrets.token_hex(32) + "\n")
        return path.read_text().strip()
