"""Servers the tests start in processes of their own: a free loopback port, and a process serving on it.

A process of its own, not a thread of the test's: CPython 3.11 builds ASTs with state shared across threads, and
pytest's assertion rewriter builds one for every module of a pytest plugin's package imported after it starts (anyio,
which the apps import lazily, is one), so a server thread importing while the test's thread compiles can fail with
`SystemError: AST constructor recursion depth mismatch` (python/cpython#106905).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(argv: list[str], port: int, log: Path, ready: str, env: dict[str, str] | None = None,
            start_s: float = 120) -> Iterator[str]:
    """Run `argv` (a server on loopback `port`) writing to `log`; yield its URL once GET `ready` answers 200; stop its
    process group after (SIGTERM). A server that exits or does not answer within `start_s` fails with its log."""
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_s
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the server did not start:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}{ready}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
