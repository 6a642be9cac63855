"""The first hour with the CLI, tried as a new user would, each in its own process as a terminal runs it.

`--help` must not load the heavy libraries (it took 10 s when it imported Dagster to read default paths);
the errors a newcomer meets first print a short message naming the cause and what to do, not a
trace, and refuse before writing anything.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from product_affinity.sources.sample import generate_sample
from tests.servers import free_port

HEAVY = ("dagster", "pandas", "mlxtend", "duckdb")
SUBCOMMANDS = ("generate", "run", "expectations", "slo", "serve", "keys", "publish-postgres")


def probed(argv: list[str], report: str, before: str = "", timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the CLI as `product-affinity` does, in a fresh interpreter, after the statements `before`; at exit, even
    after SystemExit, print the Python expression `report` to stderr."""
    script = "\n".join(["import atexit, sys", before, f"atexit.register(lambda: print({report}, file=sys.stderr))",
                        "from product_affinity.cli import main", f"sys.argv = ['product-affinity', *{argv!r}]",
                        "sys.exit(main())"])
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


# Which heavy libraries the command had loaded.
LOADED = f"'LOADED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules)"
# Every database DuckDB was asked to open.
RECORD_OPENS = """import duckdb
opened, real = [], duckdb.connect
def connect(database=":memory:", *args, **kwargs):
    opened.append(str(database))
    return real(database, *args, **kwargs)
duckdb.connect = connect"""


def cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "product_affinity.cli", *argv], capture_output=True, text=True,
                          cwd=cwd, env=os.environ | {"PYTHONUNBUFFERED": "1"}, timeout=300)


@pytest.mark.parametrize("argv", [["--help"], *([command, "--help"] for command in SUBCOMMANDS)], ids=" ".join)
def test_help_loads_none_of_the_heavy_libraries(argv):
    done = probed(argv, LOADED, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: product-affinity" in done.stdout
    loaded = done.stderr.rsplit("LOADED:", 1)[1].strip()
    assert loaded == "", f"`product-affinity {' '.join(argv)}` imported {loaded}"


def test_every_command_is_probed():
    """A command added to the CLI without being added above would escape the --help test."""
    usage = cli("--help").stdout
    assert f"{{{','.join(SUBCOMMANDS)}}}" in usage


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "sources"
    generate_sample(folder, customers=200, products=100, orders=1_000, history_days=60)  # each day is a partition a run records
    return folder


def assert_short(done: subprocess.CompletedProcess, code: int, *expected: str, most: int = 6) -> None:
    err = done.stderr
    assert done.returncode == code, err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= most, err
    for text in expected:
        assert text in err


def test_a_missing_sources_folder_is_one_message_and_creates_no_warehouse(tmp_path):
    warehouse = tmp_path / "out" / "warehouse.duckdb"
    done = cli("run", "--sources", str(tmp_path / "nowhere"), "--warehouse", str(warehouse))
    assert_short(done, 2, f"no sources folder at {tmp_path / 'nowhere'}", "product-affinity generate --out", most=1)
    assert not warehouse.exists() and not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--orders", "--customers", "--products"])
@pytest.mark.parametrize("value", ["-5", "0", "many"])
def test_generate_refuses_a_count_that_is_not_positive_naming_the_argument(tmp_path, flag, value):
    done = cli("generate", "--out", str(tmp_path / "sample"), flag, value)
    assert_short(done, 2, f"argument {flag}: ", value)
    assert not (tmp_path / "sample").exists()


@pytest.fixture
def read_only(tmp_path):
    """A warehouse file this process cannot write: chmod for a user, the immutable attribute for root (who ignores modes)."""
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(b"")
    if os.geteuid() != 0:
        warehouse.chmod(0o444)
        yield warehouse
        return
    if subprocess.run(["chattr", "+i", str(warehouse)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without `chattr +i`: no way to make a file read-only for root")
    try:
        yield warehouse
    finally:
        subprocess.run(["chattr", "-i", str(warehouse)], check=True)


def test_a_read_only_warehouse_is_one_message_naming_it(sources, read_only):
    done = cli("run", "--sources", str(sources), "--warehouse", str(read_only))
    assert_short(done, 2, f"the warehouse {read_only} is read-only", "--warehouse", most=1)
    assert read_only.stat().st_size == 0
    assert not Path(f"{read_only}.lock").exists() and not (read_only.parent / "published").exists()


@pytest.mark.slow
def test_a_run_on_a_locked_warehouse_is_a_short_report_naming_the_holder_and_never_opens_it(sources, tmp_path):
    """Another run holds the warehouse's lock (here this test process, as a run does between two steps: the lock held,
    the file closed): the second run says so in a few lines, and never opens the file, not even read-only to plan its
    days. Opened at that moment, it made the first run's next step fail to open the file (seen in the kill test)."""
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as conn:  # a warehouse holding days, which a run's plan would read
        conn.execute("CREATE SCHEMA source_aligned")
        conn.execute("CREATE TABLE source_aligned.purchase AS SELECT TIMESTAMP '2026-01-01 10:00:00' AS purchased_at")
    written = warehouse.read_bytes()
    lock = os.open(f"{warehouse}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
        argv = ["run", "--sources", str(sources), "--warehouse", str(warehouse)]
        done = probed(argv, "'OPENED:' + '|'.join(opened)", before=RECORD_OPENS)
    finally:
        os.close(lock)
    done.stderr, opened = done.stderr.rsplit("OPENED:", 1)
    assert_short(done, 1, f"is being written by another pipeline run (PID {os.getpid()} holds the lock",
                 "Nothing from this run was published", most=2)
    assert str(warehouse) not in opened and warehouse.read_bytes() == written
    verbose = cli("run", "--verbose", "--sources", str(tmp_path / "nowhere"), "--warehouse", str(warehouse))
    assert verbose.returncode == 2 and "no sources folder" in verbose.stderr


@pytest.mark.slow
def test_verbose_shows_the_trace_of_an_unexpected_error(tmp_path):
    """An error no message was written for: one line and the hint without --verbose, the trace with it."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    argv = ("expectations", "--out", str(not_a_folder / "suites"))
    assert_short(cli(*argv), 2, "product-affinity expectations failed: ", "--verbose", most=2)
    verbose = cli(*argv, "--verbose")
    assert verbose.returncode != 0 and "Traceback (most recent call last)" in verbose.stderr


def ignoring_stop_signals() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def serve_first_line(warehouse, port: int, started_ignoring_signals: bool = False) -> tuple[str, str]:
    """`serve` in its own process: the first line it prints, and all it wrote to stderr once stopped (SIGTERM as soon
    as the line is read, while it is still loading its app)."""
    server = subprocess.Popen([sys.executable, "-m", "product_affinity.cli", "serve", "--warehouse", str(warehouse),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONUNBUFFERED": "1"},
                              preexec_fn=ignoring_stop_signals if started_ignoring_signals else None)
    try:
        first = server.stdout.readline()
    finally:
        server.terminate()
        _, err = server.communicate(timeout=60)
    return first, err


def test_serve_stops_on_sigterm_even_when_started_ignoring_it(tmp_path):
    """A parent that ignores SIGTERM and SIGINT passes that on; the server must stop all the same (it ran on, and the
    test waiting for it timed out, in suite runs where an earlier test had left the worker ignoring them)."""
    _, err = serve_first_line(tmp_path / "warehouse.duckdb", free_port(), started_ignoring_signals=True)
    assert "nothing has been published" in err


@pytest.mark.slow
def test_serve_says_where_it_listens_and_warns_when_nothing_is_published(tmp_path):
    warehouse, port = tmp_path / "warehouse.duckdb", free_port()
    listening, err = serve_first_line(warehouse, port)
    assert f"REST API on http://127.0.0.1:{port} (docs http://127.0.0.1:{port}/docs), GraphQL on http://127.0.0.1:{port}/graphql" in listening
    assert f"WARNING: nothing has been published from {warehouse} yet" in err and "product-affinity run" in err


@pytest.mark.slow
def test_a_run_reports_each_step_with_counts_and_serve_names_the_snapshot_it_published(sources, tmp_path):
    """Piped (not a terminal), a run prints one line as each step starts and one as it ends, numbered out of all steps."""
    import re

    from product_affinity.publication import published_snapshot

    warehouse = tmp_path / "warehouse.duckdb"
    done = cli("run", "--sources", str(sources), "--warehouse", str(warehouse))
    assert done.returncode == 0, done.stderr
    ended = re.findall(r"^\[(\d+)/(\d+)\] (\S+) done in \d+\.\ds \(run \d+s\)$", done.stderr, re.MULTILINE)
    started = re.findall(r"^\[\d+/\d+\] (\S+) \.\.\.$", done.stderr, re.MULTILINE)
    total = int(ended[0][1])
    # The run's whole progress in the message: a CI run once saw the last step's line missing (30 of 31), not since.
    assert [int(n) for n, _, _ in ended] == list(range(1, total + 1)) and {t for _, t, _ in ended} == {str(total)}, done.stderr
    assert sorted(started) == sorted(step for _, _, step in ended), done.stderr
    assert {"source_aligned__purchase", "consumer_aligned__association_rules", "publication__snapshot"} <= set(started)
    assert "Traceback" not in done.stderr and "DEBUG" not in done.stderr and " - INFO - " not in done.stderr

    serving, err = serve_first_line(warehouse, free_port())
    assert serving.startswith(f"Serving the snapshot {published_snapshot(warehouse)} ")
    assert "WARNING" not in err
