"""Benchmark: the REST (and GraphQL) API's latency and throughput on loopback at Instacart scale.

The API runs as a server process of its own (`product-affinity serve`, with one worker, then
two) on the published snapshot of benchmarks/out/scale; this process drives
it over keep-alive connections. For each query shape it prints latency one request at a time
(p50/p95/p99) and throughput and latency at --concurrency connections, against a baseline measured
in the same run: the very SQL the API compiles for that request, run directly on the snapshot with
DuckDB in a process of its own (one cursor per thread, fetched as Python rows). The ratio is what
HTTP, authentication, the policy engine, compilation, JSON and the audit log cost; shape g, a query
on a tiny table, shows that cost alone. CPU time per request (server, or the baseline's process)
is printed too: on a machine shared with other work it moves far less than wall time. Peak memory
is the server's peak RSS, every process of it summed. Targets (issue 4): p95 under 50 ms for a
grouped measure query (judged one request at a time) and 200 requests/s on 2 cores (at --concurrency).

Then the worst requests (issue 10): adversarial requests, valid or not (a body nested 480 deep,
100 filters of 1,000 values, ten GraphQL aliases of an ungrouped load, a huge ungrouped result,
the costliest grouped query), each sent alone while /health is asked every 20 ms; for each, how long
it held the server, the bytes it returned and the slowest /health meanwhile, against the targets
in product_affinity/request_limits.py: no request holds a worker more than 2 s, /health within 100 ms.

    python benchmarks/api.py --reuse     # the snapshot benchmarks/pipeline.py published, if there is one
    python benchmarks/api.py --orders 200000 --customers 20000 --products 5000 --seconds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline import OUT, generate, isolated, pipeline

TARGET_P95_MS, TARGET_RPS = 50, 200
PAGE = 100
PAGES = 16  # port reads cycle through this many offsets, spread evenly from the first page to the last
GRAPHQL_LOAD = "query Load($q: QueryInput!) { load(query: $q) { columns { name } rows policies snapshot } }"
CUSTOMERS_BY_REGION = {"measures": ["customer_360.customer_total_spend", "customer_360.customers"],
                       "dimensions": ["customer_360.region"]}


@dataclass(frozen=True)
class Shape:
    """One kind of request: a semantic query on POST /load or GraphQL, or pages of an output port."""

    label: str
    principal: str
    query: dict | None = None
    graphql: bool = False
    port: str | None = None
    offsets: tuple[int, ...] = (0,)
    cursors: tuple[str | None, ...] = ()  # port pages by cursor (after=) instead of offset

    def _page(self, i: int) -> tuple[int, str | None]:
        return (0, self.cursors[i % len(self.cursors)]) if self.cursors else (self.offsets[i % len(self.offsets)], None)

    def http(self, i: int) -> tuple[str, str, dict | None]:
        """Method, path and JSON body of the i-th request."""
        if self.port:
            offset, after = self._page(i)
            return "GET", f"/ports/{self.port}?limit={PAGE}&offset={offset}" + (f"&after={after}" if after else ""), None
        if self.graphql:
            return "POST", "/graphql", {"query": GRAPHQL_LOAD, "variables": {"q": self.query}}
        return "POST", "/load", self.query

    def rows(self, answer: dict) -> list[dict]:
        return answer["data"]["load"]["rows"] if self.graphql else answer["data"]

    def served(self, service, caller, i: int):
        """The same request answered by the DeliveryService in process (no HTTP)."""
        from product_affinity.semantic.query import Query

        if self.port:
            offset, after = self._page(i)
            return service.read_port(caller, self.port, PAGE, offset, "benchmark baseline", after)
        return service.load(caller, Query.model_validate(self.query), "benchmark baseline")


def shapes(warehouse: Path) -> list[Shape]:
    from product_affinity.publication import open_published
    from product_affinity.semantic.loader import model

    from product_affinity.delivery.service import _cursor

    port = "cross_sell_recommendations"
    root = model().cubes[model().port_view(port).root]
    with open_published(warehouse) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {root.table}").fetchone()[0]
        last = max(rows - PAGE, 0)
        offsets = tuple(round(k * last / (PAGES - 1)) for k in range(PAGES))
        keys = ", ".join(root.primary_key)
        cursors = tuple(None if offset == 0 else _cursor(list(conn.execute(  # the key of the row before each page
            f"SELECT {keys} FROM {root.table} ORDER BY {keys} LIMIT 1 OFFSET {offset - 1}").fetchone())) for offset in offsets)
    return [
        Shape("a customer_360 by region", "marta", CUSTOMERS_BY_REGION),
        Shape("b same, row-filtered (ana: Spain)", "ana", CUSTOMERS_BY_REGION),
        Shape("c sales total_spend by category", "marta", {"measures": ["sales.total_spend"], "dimensions": ["sales.category"]}),
        Shape("d sales total_spend by month", "marta", {"measures": ["sales.total_spend"], "timeDimensions": [
            {"dimension": "sales.purchased_at", "granularity": "month"}]}),
        Shape(f"e port page ({PAGE} of {rows:,} rows)", "storefront", port=port, offsets=offsets),
        Shape("h same pages by cursor (after=)", "storefront", port=port, cursors=cursors),
        Shape("f GraphQL load of (a)", "marta", CUSTOMERS_BY_REGION, graphql=True),
        # a grouped query over a 132-row table: what the API itself costs when the query costs next to nothing
        Shape("g tiny: 132-row category_affinity", "marta", {"measures": ["category_affinity.average_lift"],
                                                              "dimensions": ["category_affinity.category_1"]}),
    ]


# -- measuring ------------------------------------------------------------------------------------

def load_test(open_sender, seconds: float, concurrency: int) -> dict:
    """Send requests from `concurrency` threads for `seconds`; every latency, the errors and this process's CPU.

    `open_sender()` gives each thread its own (send, close): send(i) sends the i-th request and
    returns None, or what went wrong.
    """
    counter, deadline = itertools.count(), time.perf_counter() + seconds
    lock, latencies, errors = threading.Lock(), [], []

    def worker(_) -> None:
        send, close = open_sender()
        mine, failed = [], []
        try:
            while time.perf_counter() < deadline:
                i = next(counter)
                started = time.perf_counter()
                error = send(i)
                mine.append((time.perf_counter() - started) * 1000)
                if error:
                    failed.append(error)
        finally:
            close()
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    cpu, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"ms": latencies, "seconds": elapsed, "errors": errors, "client_cores": (time.process_time() - cpu) / elapsed}


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return cuts[49], cuts[94], cuts[98]


def measured(open_sender, seconds: float, warmup: float, concurrency: int, server: int | None = None) -> dict:
    """Warm up, then one request at a time, then `concurrency` at a time (with the cores each process of `server` used)."""
    load_test(open_sender, warmup, concurrency)
    found = {"one": load_test(open_sender, seconds, 1)}
    before = _cpu_seconds(_tree(server)) if server else {}
    found["many"] = load_test(open_sender, seconds, concurrency)
    if server:
        used = {pid: (cpu - before.get(pid, 0)) / found["many"]["seconds"] for pid, cpu in _cpu_seconds(_tree(server)).items()}
        found["server_cores"] = [round(cores, 2) for cores in used.values() if cores >= 0.01]
    return found


@contextmanager
def compiled_by_service():
    """Every statement the DeliveryService compiles while inside, so the baseline runs exactly the API's SQL."""
    import product_affinity.delivery.service as service

    seen, compile_query = [], service.compile_query

    def spy(*args, **kwargs):
        seen.append(compile_query(*args, **kwargs))
        return seen[-1]

    service.compile_query = spy
    try:
        yield seen
    finally:
        service.compile_query = compile_query


def baseline(warehouse: Path, shapes: list[Shape], seconds: float, warmup: float, concurrency: int) -> dict:
    """Per shape: the API's compiled SQL run directly on the snapshot with DuckDB, and the service's answer to compare."""
    from product_affinity.delivery.service import DeliveryService
    from product_affinity.governance.policies import principal
    from product_affinity.governance.credentials import Caller
    from product_affinity.publication import open_published

    service, found = DeliveryService(warehouse), {}
    conn = open_published(warehouse)
    for shape in shapes:
        caller = Caller(principal(shape.principal), "baseline")
        with compiled_by_service() as compiled:
            answers = [shape.served(service, caller, i) for i in range(len(shape.cursors or shape.offsets))]

        def open_cursor():
            cursor = conn.cursor()

            def send(i: int) -> None:
                statement = compiled[i % len(compiled)]
                cursor.execute(statement.sql, statement.params).fetchall()

            return send, cursor.close

        found[shape.label] = {**measured(open_cursor, seconds, warmup, concurrency), "rows": answers[0].rows}
    conn.close()
    return found


# -- the server -----------------------------------------------------------------------------------

def _tree(root: int) -> list[int]:
    """`root` and every process descended from it."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree = [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    ticks, used = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


def _peak_rss_gb(pids: list[int]) -> float:
    """Peak resident memory (VmHWM) of the processes, summed."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return total / 1024**2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(warehouse: Path, workers: int, log: Path):
    """The API in a process of its own, on a free loopback port; yields (base URL, process id)."""
    port, bin_dir = _free_port(), Path(sys.executable).parent
    command = [str(bin_dir / "product-affinity"), "serve", "--warehouse", str(warehouse), "--port", str(port),
               "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(url, process, log)
        yield url, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer {url}/health within 120 s:\n{log.read_text()}")


def http_sender(url: str, key: str, shape: Shape):
    """open_sender for load_test: one keep-alive connection per thread."""
    import httpx

    def open_sender():
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300)

        def send(i: int) -> str | None:
            method, path, body = shape.http(i)
            answer = client.request(method, path, json=body)
            if answer.status_code != 200 or (shape.graphql and answer.json().get("errors")):
                return f"{answer.status_code} {answer.text[:300]}"
            return None

        return send, client.close

    return open_sender


LEAF = {"member": "sales.quantity", "operator": "gt", "values": [1]}
UNGROUPED = {"dimensions": ["sales.customer_id", "sales.product_name", "sales.purchased_at", "sales.country",
                            "sales.category", "sales.channel"], "ungrouped": True, "limit": 50_000}
ADVERSARIAL = [  # label, path, JSON body as text (json.dumps recurses too deep for the first)
    ("body nested 480 deep", "/load",
     '{"measures": ["sales.lines"], "filters": [' + '{"or": [' * 480 + json.dumps(LEAF) + "]}" * 480 + "]}"),
    ("100 filters x 1,000 values", "/load", json.dumps({"measures": ["sales.lines"], "filters": [
        {"member": "sales.customer_id", "operator": "equals", "values": list(range(1_000))} for _ in range(100)]})),
    ("GraphQL: 10 aliases of an ungrouped load", "/graphql", json.dumps({
        "query": "query($q: QueryInput!) { " + " ".join(f"a{i}: load(query: $q) {{ rows }}" for i in range(10)) + " }",
        "variables": {"q": UNGROUPED}})),
    ("ungrouped: 50,000 rows x 6 columns", "/load", json.dumps(UNGROUPED)),
    ("every customer by every product", "/load", json.dumps({
        "measures": ["sales.purchases", "sales.buyers", "sales.spend_per_customer"],
        "dimensions": ["sales.customer_id", "sales.product_name"], "limit": 50_000})),
]


def worst_requests(url: str, key: str) -> list[dict]:
    """Each adversarial request alone, with /health asked every 20 ms from another connection while it runs."""
    import httpx

    found = []
    for label, path, body in ADVERSARIAL:
        done, health = threading.Event(), []

        def poll() -> None:  # at least once, even when the request is refused before the first answer
            with httpx.Client(base_url=url, timeout=30) as client:
                while True:
                    started = time.perf_counter()
                    client.get("/health")
                    health.append((time.perf_counter() - started) * 1000)
                    if done.wait(0.02):
                        return

        poller = threading.Thread(target=poll)
        poller.start()
        started = time.perf_counter()
        answer = httpx.post(url + path, content=body, timeout=300,
                            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        held = time.perf_counter() - started
        done.set()
        poller.join()
        error = answer.text
        if answer.headers.get("content-type", "").startswith("application/json"):
            error = answer.json().get("error") or "; ".join(e["message"] for e in answer.json().get("errors") or [])
        found.append({"label": label, "status": answer.status_code, "held_s": held, "bytes": len(answer.content),
                      "health_ms": max(health), "error": str(error or "")[:90]})
    return found


def _worst_report(worst: list[dict]) -> str:
    from product_affinity.request_limits import TARGET_HEALTH_MS, TARGET_HELD_S

    lines = [f"{'worst requests (adversarial)':<42} {'status':>6} {'held s':>7} {'bytes':>11} {'/health max ms':>14}  verdict"]
    for w in worst:
        verdict = [f"held {'ok' if w['held_s'] <= TARGET_HELD_S else 'MISSED'}",
                   f"/health {'ok' if w['health_ms'] <= TARGET_HEALTH_MS else 'MISSED'}"]
        lines.append(f"{w['label']:<42} {w['status']:>6} {w['held_s']:7.2f} {w['bytes']:>11,} {w['health_ms']:14.1f}  "
                     f"{', '.join(verdict)}  {w['error']}")
    top = max(worst, key=lambda w: w["held_s"])
    lines.append(f"worst: {top['label']} held the server {top['held_s']:.2f} s (target {TARGET_HELD_S:g} s); slowest /health "
                 f"meanwhile {max(w['health_ms'] for w in worst):.1f} ms (target {TARGET_HEALTH_MS} ms)")
    return "\n".join(lines)


def benchmark_server(warehouse: Path, workers: int, keys: dict[str, str], shapes: list[Shape], args) -> dict:
    """Every shape against one server; per shape its timings and the server's CPU use, then its peak memory."""
    import httpx

    found = {}
    with server(warehouse, workers, OUT / f"api-server-{workers}.log") as (url, pid):
        for shape in shapes:
            method, path, body = shape.http(0)
            answer = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {keys[shape.principal]}"},
                                   timeout=300)
            timing = measured(http_sender(url, keys[shape.principal], shape), args.seconds, args.warmup, args.concurrency, pid)
            found[shape.label] = {**timing, "rows": shape.rows(answer.json()) if answer.status_code == 200 else None}
        found["worst"] = worst_requests(url, keys["steward"])
        found["peak_gb"] = _peak_rss_gb(_tree(pid))
    return found


# -- the report -----------------------------------------------------------------------------------

def _cpu_ms(timing: dict) -> float:
    """CPU per request at concurrency: the server's (or, for the baseline, the DuckDB process's) CPU time / requests."""
    many = timing["many"]
    cores = sum(timing["server_cores"]) if "server_cores" in timing else many["client_cores"]
    return cores * many["seconds"] * 1000 / len(many["ms"])


def _line(label: str, timing: dict, reference: dict | None = None) -> str:
    one, many = timing["one"], timing["many"]
    p50, p95, p99 = percentiles(one["ms"])
    m50, m95, m99 = percentiles(many["ms"])
    rps = len(many["ms"]) / many["seconds"]
    line = (f"{label:<36} {p50:7.1f} {p95:7.1f} {p99:7.1f} {len(one['ms']):5d} | {rps:6.1f} {m50:7.1f} {m95:7.1f} {m99:7.1f}"
            f" | {_cpu_ms(timing):7.1f}")
    if reference is None:
        return f"{line} {many['client_cores']:11.2f}"
    server = "+".join(f"{c:.2f}" for c in timing["server_cores"]) or "0"
    ref_rps = len(reference["many"]["ms"]) / reference["many"]["seconds"]
    ratios = f"{p50 / percentiles(reference['one']['ms'])[0]:5.1f}x {ref_rps / rps:5.1f}x {_cpu_ms(timing) / _cpu_ms(reference):5.1f}x"
    verdict = [f"p95 {'ok' if p95 < TARGET_P95_MS else 'MISSED'}", f"req/s {'ok' if rps >= TARGET_RPS else 'MISSED'}"]
    errors = one["errors"] + many["errors"]
    if errors:
        verdict.append(f"{len(errors)} ERRORS, first: {errors[0]}")
    return f"{line} {server:>11} {many['client_cores']:5.2f} | {ratios}  {', '.join(verdict)}"


def _header(concurrency: int, api: bool) -> str:
    top = f"{'':<36} {'one request at a time (ms)':<32}| {f'at concurrency {concurrency}':<38}| {'CPU':<7}"
    sub = f"{'shape':<36} {'p50':>7} {'p95':>7} {'p99':>7} {'n':>5} | {'req/s':>6} {'p50':>7} {'p95':>7} {'p99':>7} | {'ms/req':>7}"
    if not api:
        return f"{top} {'cores used':>11}\n{sub} {'by DuckDB':>11}"
    return (f"{top} {'cores used by':>17} | API / baseline\n"
            f"{sub} {'server':>11} {'client':>5} | {'p50':>6} {'req/s':>6} {'CPU':>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=3_400_000)
    parser.add_argument("--customers", type=int, default=206_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--reuse", action="store_true", help="reuse the published snapshot (or the sources) of an earlier run")
    parser.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2],
                        help="uvicorn worker counts to measure, comma-separated (default: 1,2)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent connections for throughput (default: 8)")
    parser.add_argument("--seconds", type=float, default=8, help="seconds per shape and phase (default: 8)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per shape (default: 2)")
    parser.add_argument("--shapes", default="abcdefgh", help="which query shapes, by letter (default: all, abcdefgh)")
    args = parser.parse_args()

    from product_affinity.governance.audit import AuditLog
    from product_affinity.governance.credentials import KeyStore
    from product_affinity.publication import NothingPublished, published_snapshot

    scale = OUT / "scale"
    warehouse = scale / "warehouse.duckdb"
    try:
        reused = args.reuse and published_snapshot(warehouse).exists()
    except NothingPublished:
        reused = False
    if not reused:
        if not (args.reuse and (scale / "sources" / "purchase.csv").exists()):
            print(f"Generating {args.orders:,} orders, {args.customers:,} customers, {args.products:,} products")
            isolated(generate, scale / "sources", args.customers, args.products, args.orders)
        isolated(pipeline, scale / "sources", warehouse)
    cases = [shape for shape in shapes(warehouse) if shape.label[0] in args.shapes]
    print(f"Snapshot {published_snapshot(warehouse)} ({published_snapshot(warehouse).stat().st_size / 1024**3:.2f} GB)"
          f"{' reused' if reused else ''}; {os.cpu_count()} cores")
    print(f"Each shape: {args.warmup:g} s warm-up, {args.seconds:g} s one at a time, {args.seconds:g} s at concurrency "
          f"{args.concurrency}.\n"
          "CPU ms/req: CPU time per request at concurrency (server processes, or the baseline's DuckDB process), which "
          "the other work on a shared machine disturbs far less than wall time.\n")

    reference = isolated(baseline, warehouse, cases, args.seconds, args.warmup, args.concurrency)
    print(f"Baseline: the API's compiled SQL on the snapshot, DuckDB in-process ({reference['peak_gb']:.2f} GB peak)")
    print(_header(args.concurrency, api=False))
    for shape in cases:
        print(_line(shape.label, reference["result"][shape.label]), flush=True)

    store, audit = KeyStore(warehouse), AuditLog(warehouse)
    earlier = {issued.key_id for issued in store.issued()}
    keys = {name: store.issue(name) for name in sorted({s.principal for s in cases} | {"steward"})}  # steward: worst requests
    try:
        for workers in args.workers:
            audited = len(audit.entries())
            found = benchmark_server(warehouse, workers, keys, cases, args)
            how = f"product-affinity serve --workers {workers}"
            print(f"\nAPI, {workers} worker{'s' if workers > 1 else ''} ({how}), {found['peak_gb']:.2f} GB peak RSS (server)")
            print(_header(args.concurrency, api=True))
            sent = 0
            for shape in cases:
                timing = found[shape.label]
                print(_line(shape.label, timing, reference["result"][shape.label]), flush=True)
                sent += sum(len(timing[phase]["ms"]) for phase in ("one", "many"))
            identical = [s.label[0] for s in cases if found[s.label]["rows"] == reference["result"][s.label]["rows"]]
            written = len(audit.entries()) - audited
            print(f"same rows as the service in process: {', '.join(identical) or 'none'} of {len(cases)} shapes; "
                  f"audit log: {written:,} entries for {sent:,} measured requests (plus warm-up)")
            print(_worst_report(found["worst"]), flush=True)
    finally:
        for issued in store.issued():
            if issued.key_id not in earlier:
                store.revoke(issued.key_id)
    from product_affinity.request_limits import TARGET_HEALTH_MS, TARGET_HELD_S

    print(f"\nTargets: p95 < {TARGET_P95_MS} ms one at a time, {TARGET_RPS} req/s at concurrency {args.concurrency} on "
          f"{os.cpu_count()} cores. API / baseline: p50 one at a time, req/s (x fewer), CPU per request. "
          f"Worst requests: none holds a worker more than {TARGET_HELD_S:g} s, valid or not; /health answers within "
          f"{TARGET_HEALTH_MS} ms while each runs.")


if __name__ == "__main__":
    main()
