"""API keys under concurrent change: several processes issue and revoke keys at once while a client keeps calling the API.

The break (issue 10): `keys issue` and `keys revoke` read, changed and rewrote one JSON file with no
lock, so issued keys stopped working, revocations came back and a half-written file gave valid
callers a 500. Here no issued key may be lost, no revocation undone, and every call with a valid
key answers 200, however the changes interleave.
"""

import json
import multiprocessing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from product_affinity.governance.credentials import KeyStore

WRITERS, KEYS_EACH = 4, 25


def _issue_and_revoke(warehouse: Path, start, results) -> None:
    """Issue KEYS_EACH keys through the real KeyStore, revoking every other one as soon as it is issued; report the keys
    kept, those revoked, and what went wrong (a revocation that found no key, an exception)."""
    kept, revoked, failures = [], [], []
    start.wait()
    try:
        store = KeyStore(warehouse)
        for i in range(KEYS_EACH):
            key = store.issue("storefront")
            if i % 2 == 0:
                kept.append(key)
            elif store.revoke(key.split("_")[1]):
                revoked.append(key)
            else:
                failures.append(f"revoking {key.split('_')[1]} found no valid key")
    except Exception as error:  # reported, not raised: the test must see it, not wait for a result that never comes
        failures.append(f"{type(error).__name__}: {error}")
    results.put((kept, revoked, failures))


def _call_while_keys_change(warehouse: Path, key: str, start, done, statuses) -> None:
    """Call GET /meta with a key issued before the changes began, until the writers are done: every status seen."""
    from product_affinity.delivery.rest import create_app

    seen: dict[int, int] = {}
    with TestClient(create_app(warehouse), raise_server_exceptions=False) as client:
        start.wait()
        while not done.is_set():
            status = client.get("/meta", headers={"Authorization": f"Bearer {key}"}).status_code
            seen[status] = seen.get(status, 0) + 1
    statuses.put(seen)


@pytest.mark.slow
def test_concurrent_issues_and_revocations_lose_no_key_undo_no_revocation_and_break_no_caller(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"  # keys need no published data: /meta reads the policies only
    steady = KeyStore(warehouse).issue("marta")
    context = multiprocessing.get_context("spawn")  # fresh interpreters: real separate processes, as `keys` commands are
    start, done = context.Barrier(WRITERS + 1), context.Event()  # the caller starts calling when the writers start writing
    results, statuses = context.Queue(), context.Queue()
    caller = context.Process(target=_call_while_keys_change, args=(warehouse, steady, start, done, statuses))
    writers = [context.Process(target=_issue_and_revoke, args=(warehouse, start, results)) for _ in range(WRITERS)]
    for process in [caller, *writers]:
        process.start()
    outcomes = [results.get(timeout=600) for _ in writers]
    done.set()
    seen = statuses.get(timeout=600)
    for process in [caller, *writers]:
        process.join(timeout=60)
        assert process.exitcode == 0
    kept = [key for k, _, _ in outcomes for key in k]
    revoked = [key for _, r, _ in outcomes for key in r]
    assert [f for _, _, f in outcomes for f in f] == []
    assert len(kept) == WRITERS * (KEYS_EACH + 1) // 2 and len(revoked) == WRITERS * (KEYS_EACH // 2)
    store = KeyStore(warehouse)
    lost = [key.split("_")[1] for key in kept if store.authenticate(key) is None]
    undone = [key.split("_")[1] for key in revoked if store.authenticate(key) is not None]
    assert lost == [] and undone == []
    assert set(seen) == {200} and sum(seen.values()) > 0, f"statuses seen by a valid caller while keys changed: {seen}"
    listed = {k.key_id: k for k in store.issued()}
    assert all(listed[key.split("_")[1]].revoked_at for key in revoked)
    assert len(listed) == len(kept) + len(revoked) + 1


def test_the_api_says_a_missing_key_is_required_and_a_wrong_or_revoked_key_is_not_valid(tmp_path):
    from product_affinity.delivery.rest import create_app

    warehouse = tmp_path / "warehouse.duckdb"
    store = KeyStore(warehouse)
    revoked = store.issue("marta")
    assert store.revoke(revoked.split("_")[1]) and not store.revoke(revoked.split("_")[1])
    with TestClient(create_app(warehouse)) as client:
        missing = client.get("/meta")
        wrong = client.get("/meta", headers={"Authorization": "Bearer pa_00000000_not-a-key"})
        gone = client.post("/graphql", json={"query": "{ meta }"}, headers={"X-API-Key": revoked})
    assert missing.status_code == wrong.status_code == gone.status_code == 401
    assert missing.json()["error"].startswith("an API key is required")
    assert wrong.json()["error"].startswith("the API key is not valid") and gone.json()["error"].startswith("the API key is not valid")


def test_a_json_key_file_of_an_earlier_version_is_imported_once_and_a_revocation_since_holds(tmp_path):
    from product_affinity.governance.credentials import _digest

    warehouse = tmp_path / "warehouse.duckdb"
    legacy = tmp_path / "governance" / "keys.json"
    legacy.parent.mkdir()
    keys = {"pa_1234abcd_old-secret-one": "1234abcd", "pa_5678ef00_old-secret-two": "5678ef00"}
    content = json.dumps({_digest(k): {"key_id": i, "principal": "ana", "issued_at": "2026-01-01T00:00:00+00:00"}
                          for k, i in keys.items()})
    legacy.write_text(content)
    store = KeyStore(warehouse)
    assert all(store.authenticate(k).principal.name == "ana" for k in keys)
    assert not legacy.exists() and (legacy.parent / "keys.json.imported").read_text() == content
    assert store.revoke("1234abcd")
    legacy.write_text(content)  # the same old file put back: it is not imported again, the revocation holds
    store = KeyStore(warehouse)
    assert store.authenticate("pa_1234abcd_old-secret-one") is None and store.authenticate("pa_5678ef00_old-secret-two")
    legacy.write_text("{not json")
    with pytest.raises(ValueError, match="keys.json: not a key file"):
        KeyStore(warehouse)


def test_keys_are_stored_as_digests_only_and_readable_by_the_owner_only(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    keys = [KeyStore(warehouse).issue(name) for name in ("marta", "ana", "storefront")]
    stored = list((tmp_path / "governance").glob("governance.sqlite3*"))
    assert stored and all(f.stat().st_mode & 0o077 == 0 for f in stored)
    content = b"".join(f.read_bytes() for f in stored)
    assert not any(key.split("_", 2)[2].encode() in content for key in keys)  # pa_<key id>_<secret>: no secret stored
