"""A real API server for attacker tests: `product-affinity serve` in a process of its own on a free loopback port.

In-process test clients share the test's event loop and thread, so they cannot show what a heavy
request does to everyone else; a server of its own can: /health is asked while the heavy request
is in flight, over a connection of its own.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from product_affinity.request_limits import STATEMENT_TIMEOUT_ENV
from tests.servers import free_port, serving

HEALTH_WAIT_S = 1.0  # generous: the promise is 100 ms; a server whose event loop is held misses it by seconds


@contextmanager
def live_server(warehouse: Path, log: Path, statement_timeout_s: float | None = None):
    """The API on `warehouse` in a subprocess (one worker); yields its base URL, stops it after."""
    port = free_port()
    env = {**os.environ, **({STATEMENT_TIMEOUT_ENV: str(statement_timeout_s)} if statement_timeout_s else {})}
    argv = [sys.executable, "-m", "product_affinity.cli", "serve", "--warehouse", str(warehouse), "--port", str(port),
            "--workers", "1"]
    with serving(argv, port, log, ready="/health", env=env) as url:
        yield url


def while_in_flight(send, url: str) -> tuple[object, list[int]]:
    """Send a heavy request from a thread and ask /health three times while it is in flight (or just after, when
    it is refused at once); return its response and /health's status codes. A /health that does not answer within
    HEALTH_WAIT_S raises httpx.ReadTimeout: the server let one request hold everyone."""
    answer: list = []
    heavy = threading.Thread(target=lambda: answer.append(send()))
    heavy.start()
    health = []
    try:
        for _ in range(3):
            time.sleep(0.1)
            health.append(httpx.get(f"{url}/health", timeout=HEALTH_WAIT_S).status_code)
    finally:
        heavy.join()
    return answer[0], health
