"""`product-affinity generate | run | expectations | slo | serve | keys | publish-postgres`: the sample sources, the pipeline, its quality gates, its APIs and its Postgres port, from a terminal."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

# Only light modules at the top: `--help` must answer at once, so Dagster, DuckDB, pandas, mlxtend and the
# product's own modules that import them are imported inside the commands (a test holds every command to it).
from product_affinity.defaults import (DEFAULT_SIZE, DEFAULT_SOURCES, DEFAULT_WAREHOUSE, POSTGRES_STATEMENT_TIMEOUT,
                                       SAMPLE_HISTORY_DAYS, SAMPLE_SEED, SLO_RUNS, SOURCE_DSN_VARIABLE)


EXIT_CODES = """exit codes: 0 done; 1 the run published nothing, or an SLO failed; 2 the command could not do its work
(bad arguments, missing sources, a warehouse it cannot write, an unexpected error: its message says which)."""


class CommandError(Exception):
    """A command cannot do what was asked, for a reason the user can fix: printed as one message, no trace."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number; use a count above 0")
    return value


def timestamp(text: str) -> "datetime":
    """An end for the sample: an ISO date or date and time, read as UTC."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time (e.g. 2026-12-01 or "
                                         "2026-12-01T18:00:00)") from None


def generate(args: argparse.Namespace) -> int:
    """Write a new sample (to files, or into the database), or move an existing one by --add-days."""
    from datetime import UTC, datetime

    started = time.perf_counter()
    if args.add_days:
        return add_days(args)
    if args.end and args.end.replace(tzinfo=args.end.tzinfo or UTC) > datetime.now(UTC):
        raise CommandError(f"--end {args.end.isoformat()} is in the future: a sample ends now or earlier (the "
                           "pipeline quarantines purchases after the run started)")
    from product_affinity.sources.sample import generate_sample

    if args.postgres:
        import tempfile

        from product_affinity.sources.database import DatabaseSourceError, write_sample

        with tempfile.TemporaryDirectory() as folder:
            generate_sample(Path(folder), customers=args.customers, products=args.products, orders=args.orders,
                            seed=args.seed, end=args.end, history_days=args.history_days)
            try:
                written = write_sample(args.postgres, Path(folder), now=datetime.now(UTC).replace(tzinfo=None))
            except DatabaseSourceError as error:
                raise CommandError(str(error)) from None
        rows = ", ".join(f"{name} {count:,}" for name, count in written.rows.items())
        left = ", ".join(f"{name} {count:,}" for name, count in written.left_out.items() if count)
        print(f"Wrote the sample into the database in {time.perf_counter() - started:.1f}s: {rows}"
              + (f" (left out, as keyed typed tables cannot hold them: {left} file defect rows)" if left else ""))
        return 0
    truth = generate_sample(args.out, customers=args.customers, products=args.products, orders=args.orders,
                            seed=args.seed, end=args.end, history_days=args.history_days)
    rows = ", ".join(f"{name} {count:,}" for name, count in truth["rows"].items())
    print(f"Wrote sample sources to {args.out} in {time.perf_counter() - started:.1f}s: {rows}")
    return 0


def add_days(args: argparse.Namespace) -> int:
    from product_affinity.sources.sample import add_days_to_files

    try:
        if args.postgres:
            from product_affinity.sources.database import DatabaseSourceError, add_days as add_days_to_database

            try:
                added = add_days_to_database(args.postgres, args.add_days, seed=args.seed)
            except DatabaseSourceError as error:
                raise CommandError(str(error)) from None
            where = "the database"
        else:
            added = add_days_to_files(args.out, args.add_days, seed=args.seed)
            where = str(args.out)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None
    print(f"Added {added.days} day(s) after {added.first_new:%Y-%m-%d %H:%M:%S} to {where}: {len(added.lines):,} new "
          f"purchase lines (late lines of earlier orders included), {len(added.prices)} corrected prices, "
          f"{len(added.emails)} changed e-mails")
    return 0


def run(args: argparse.Namespace) -> int:
    database = args.postgres or os.environ.get(SOURCE_DSN_VARIABLE) or None
    check_can_run(args.sources, args.warehouse, database)
    from product_affinity.definitions import build_definitions
    from product_affinity.defs.publication import nothing_published
    from product_affinity.run_lock import WarehouseBusy, run_lock

    fan_out = FanOut(args.fan_out_days, args.sources, database) if args.fan_out_days else None
    defs = build_definitions(args.sources, args.warehouse, database=database)
    try:
        # Held from the plan on: the days to load are read from the warehouse, which another run may be writing.
        with run_lock(args.warehouse):
            days = partitions(args.days, args.sources, args.warehouse, database)
            if not fan_out:  # in process: the job's steps run under this hold
                return run_job(defs, args.warehouse, days, verbose=args.verbose, engine=args.engine)
        # A process per step: each step that opens the warehouse takes the lock in its own process, one at a time.
        return run_job(defs, args.warehouse, days, verbose=args.verbose, engine=args.engine, fan_out=fan_out)
    except WarehouseBusy as busy:
        print(f"{busy}\n{nothing_published(args.warehouse)}", file=sys.stderr)
        return 1


def partitions(days: tuple["date", "date"] | None, sources: Path, warehouse: Path, database: str | None) -> "Days":
    """The daily partitions a run loads: the days asked for, or every day of the sources and of the warehouse."""
    from datetime import UTC, datetime, timedelta

    from product_affinity.contract.odcs import table
    from product_affinity.partitions import Days, all_days

    first_day, today = table("purchase").first_partition_day, datetime.now(UTC).date()
    if days is None:
        return all_days(sources, warehouse, database, today)
    first, last = days
    if first < first_day or last > today:
        raise CommandError(f"--days {first}..{last} is outside the daily partitions, {first_day} (the contract's "
                           f"firstPartitionDay) to today, {today} (UTC)")
    return Days(first, last + timedelta(days=1))


def check_can_run(sources: Path, warehouse: Path, database: str | None = None) -> None:
    """Refuse before anything is written when the run could not work: no sources folder (a run would otherwise
    create an empty warehouse and fail in every ingestion step), a database source without dlt or not answering,
    or a warehouse this user cannot write."""
    if database:
        check_database(database)
    elif not sources.is_dir():
        raise CommandError(
            f"no sources folder at {sources}{' (it is a file)' if sources.exists() else ''}. "
            f"Write the sample there with `product-affinity generate --out {sources}`, "
            "or pass --sources FOLDER holding customer_info.csv, product.csv and purchase.csv."
        )
    folder = warehouse.parent
    if warehouse.exists() and not os.access(warehouse, os.W_OK):
        raise CommandError(
            f"the warehouse {warehouse} is read-only for this user. Make it writable "
            f"(chmod u+w {warehouse}) or pass --warehouse with a file you can write."
        )
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not os.access(existing, os.W_OK | os.X_OK) or not existing.is_dir():
        raise CommandError(
            f"cannot write the warehouse's folder {existing} (the run writes {warehouse}, its lock and "
            f"{folder / 'published'} there). Pass --warehouse with a path in a folder you can write."
        )


def check_database(dsn: str) -> None:
    try:
        import dagster_dlt  # noqa: F401  (only the database source needs it)
        import dlt  # noqa: F401
    except ImportError as error:
        raise CommandError(f"the database source needs dlt and dagster-dlt ({error}); install them with "
                           "`pip install -c constraints.txt -e '.[postgres]'`") from None
    from product_affinity.sources.database import DatabaseSourceError, watermark

    try:
        watermark(dsn)
    except DatabaseSourceError as error:
        raise CommandError(f"{error}. Write the sample there with `product-affinity generate --postgres DSN`, or "
                           f"unset {SOURCE_DSN_VARIABLE} and leave out --postgres to read the files") from None


@dataclass(frozen=True)
class FanOut:
    """A run whose counting is fanned out: chunks of `days` days, each a step in a process of its own. Each process
    rebuilds the job from the sources (`definitions.product_affinity_job`)."""

    days: int
    sources: Path
    database: str | None


def run_job(defs, warehouse: Path, days: "Days", verbose: bool = False, engine: str = "duckdb",
            fan_out: FanOut | None = None) -> int:
    """Run the product_affinity job of `defs` (Definitions) over the daily partitions `days` (one run, every
    unpartitioned asset rebuilt after them), counting with `engine`, in process, or, fanned out, a process per step:
    print the summary of the snapshot it published, or why it published nothing. Progress goes to stderr, one step
    at a time; Dagster's own log (with a trace for each failed step) only with `verbose`."""
    import tempfile

    import dagster as dg

    job = defs.resolve_job_def("product_affinity")
    # One "planned" event per asset for the run's range of days, not one per day (Dagster's switch; a failed run
    # then marks no partition failed, and the next run reloads them): thousands of events cost seconds.
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    # Recorded in the instance under DAGSTER_HOME (make exports dagster_home/), so `make dev` shows every run,
    # check result and metadata plot of the command line; without DAGSTER_HOME the run leaves no history (fanned
    # out, its steps' processes share a temporary instance on disk).
    with tempfile.TemporaryDirectory() as temporary:
        if os.environ.get("DAGSTER_HOME"):
            instance = dg.DagsterInstance.get()
        else:
            instance = dg.DagsterInstance.local_temp(temporary) if fan_out else dg.DagsterInstance.ephemeral()
        return _run(job, instance, warehouse, days, verbose, engine, fan_out)


def _run(job, instance, warehouse: Path, days: "Days", verbose: bool, engine: str, fan_out: FanOut | None) -> int:
    """run_job in `instance`, which outlives the run."""
    from product_affinity.progress import StepProgress
    from product_affinity.defs.partitions import range_tags
    from product_affinity.defs.publication import failure_report
    from product_affinity.publication import published_snapshot
    from product_affinity.summary import print_summary

    started, run_id = time.perf_counter(), str(uuid.uuid4())
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}},
                  "resources": {"settings": {"config": {"engine": engine}}}}
    # A step per op; the counting's map is a step per chunk, and none when it is not fanned out.
    chunks = len(days.chunks(fan_out.days)) if fan_out else 0
    with StepProgress(sum(1 for _ in job.graph.iterate_op_defs()) - 1 + chunks) as progress:
        if fan_out:
            result = _run_fanned_out(instance, warehouse, days, run_config, fan_out, progress)
        else:
            instance.add_event_listener(run_id, progress.on_event)
            result = job.execute_in_process(instance=instance, run_id=run_id, tags=range_tags(days),
                                            run_config=run_config, raise_on_error=False)
    if not result.success:
        print(failure_report(result, instance, warehouse), file=sys.stderr)
        _redraw_data_docs(result, warehouse)
        if not verbose:
            print("Run it again with --verbose to see Dagster's log, with the trace of each failed step.", file=sys.stderr)
        return 1
    snapshot = published_snapshot(warehouse)
    print(f"\nBuilt and audited every asset in {warehouse}, published {snapshot} in {time.perf_counter() - started:.1f}s\n")
    print_summary(snapshot)
    from product_affinity.defs.page import page_path

    print(f"Data product page: {page_path(warehouse)}")
    return 0


def _run_fanned_out(instance, warehouse: Path, days: "Days", run_config: dict, fan_out: FanOut, progress):
    """The job in a process per step, the counting in chunks of `fan_out.days` days. The steps log their events from
    their own processes, into `instance` (on disk), so the progress follows the run's event log, read as it grows."""
    import threading

    import dagster as dg

    from product_affinity.defs.partitions import range_tags

    job = dg.build_reconstructable_job("product_affinity.definitions", "product_affinity_job",
                                       reconstructable_args=(str(fan_out.sources), str(warehouse), fan_out.database))
    run_config = {**run_config, "execution": {"config": {"multiprocess": {}}}}
    run_config["resources"]["settings"]["config"]["fan_out_days"] = fan_out.days
    marker = {"product-affinity/cli-run": str(uuid.uuid4())}  # finds the run execute_job creates
    ended = threading.Event()
    follower = threading.Thread(target=_follow, args=(instance, marker, progress, ended), daemon=True)
    follower.start()
    try:
        return dg.execute_job(job, instance=instance, tags={**range_tags(days), **marker}, run_config=run_config)
    finally:
        ended.set()
        follower.join()


def _follow(instance, marker: dict[str, str], progress, ended, every: float = 0.5) -> None:
    """Hand each event of the run tagged `marker` to `progress`, as they are stored, until `ended` (then the rest)."""
    import dagster as dg

    run_id, cursor = None, None
    while True:
        last = ended.is_set()
        if run_id is None:
            found = instance.get_run_records(dg.RunsFilter(tags=marker), limit=1)
            run_id = found[0].dagster_run.run_id if found else None
        if run_id is not None:
            stored = instance.get_records_for_run(run_id, cursor=cursor)
            for record in stored.records:
                progress.on_event(record.event_log_entry)
            cursor = stored.cursor
        if last:
            return
        ended.wait(every)


def _redraw_data_docs(result, warehouse: Path) -> None:
    """A run stopped before its Data Docs step (a blocking check failed, downstream nothing ran): draw them here, from
    the results its checks recorded, so they show the failures that stopped it."""
    from product_affinity.defs.quality import DATA_DOCS_KEY
    from product_affinity.quality.data_docs import redraw

    if DATA_DOCS_KEY in {event.asset_key for event in result.get_asset_materialization_events()} or not warehouse.exists():
        return
    try:
        print(f"Data Docs of the checks recorded: {redraw(warehouse)}", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - the run's own failure is what the command reports
        print(f"The Data Docs could not be drawn: {type(error).__name__}: {error}", file=sys.stderr)


def expectations(args: argparse.Namespace) -> int:
    from product_affinity.contract.odcs import checked_tables
    from product_affinity.quality.suites import EXPECTATIONS_DIR, write_suites

    args.out = args.out or EXPECTATIONS_DIR
    written = write_suites(args.out, checked_tables())
    print(f"Wrote {len(written)} Great Expectations suites generated from the contract to {args.out}")
    return 0


def slo(args: argparse.Namespace) -> int:
    """Print the SLO report (and write it as JSON and JUnit XML); exit 1 when an SLO fails, 2 when there is nothing to report.

    It reads the published snapshot only, never the working warehouse: a run in progress holds no
    lock on it and shows no half-built table, and the report cannot make a run fail by taking DuckDB's lock.
    """
    from product_affinity.publication import NothingPublished, published_snapshot
    from product_affinity.quality import report

    try:
        built = report.build(args.warehouse, args.runs, read_from=published_snapshot(args.warehouse))
    except (NothingPublished, report.WarehouseUnavailable) as error:
        print(f"No SLO report: {error}", file=sys.stderr)
        return 2
    print(report.text(built))
    for path, render in ((args.json, report.as_json), (args.junit, report.as_junit)):
        if path:
            path.write_text(render(built), encoding="utf-8")
    return 1 if built.failed else 0


def serve(args: argparse.Namespace) -> int:
    """Serve the APIs; say first where, and on which snapshot, or warn that there is none to serve yet.

    SIGTERM and SIGINT stop the server whatever the process that started it left them as: a parent that ignores them
    (a test worker after an in-process Dagster run was seen to) passes that on, and until uvicorn installs its own
    handlers, a server told to stop while it loads its app would otherwise run on."""
    import signal

    import uvicorn

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from product_affinity.delivery.rest import WAREHOUSE_ENV
    from product_affinity.publication import NothingPublished, published_snapshot

    try:
        print(f"Serving the snapshot {published_snapshot(args.warehouse)} (a newer publication is served as soon as "
              "a run makes it)", flush=True)
    except NothingPublished:
        print(f"WARNING: nothing has been published from {args.warehouse} yet, so the data endpoints answer 503 "
              "until then: run `product-affinity run` (it publishes a snapshot, which is then served without a restart).",
              file=sys.stderr, flush=True)
    url = f"http://{args.host}:{args.port}"
    print(f"REST API on {url} (docs {url}/docs), GraphQL on {url}/graphql; {args.workers} worker(s). Ctrl+C stops.",
          flush=True)
    os.environ[WAREHOUSE_ENV] = str(args.warehouse.resolve())  # each worker process builds its app from it
    uvicorn.run("product_affinity.delivery.rest:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning")
    return 0


def keys(args: argparse.Namespace) -> int:
    from product_affinity.semantic.access import AccessDenied
    from product_affinity.governance.credentials import KeyStore

    store = KeyStore(args.warehouse)
    if args.action == "issue":
        try:
            print(store.issue(args.principal))
        except AccessDenied as error:
            print(f"Cannot issue a key: {error} (principals are declared in product_affinity/governance/policies.yaml)",
                  file=sys.stderr)
            return 2
    elif args.action == "revoke":
        if not store.revoke(args.principal):
            print(f"No key with id {args.principal}", file=sys.stderr)
            return 2
    else:
        for key in store.issued():
            print(f"{key.key_id}  {key.principal}  issued {key.issued_at}" + (f"  revoked {key.revoked_at}" if key.revoked_at else ""))
    return 0


def publish_postgres(args: argparse.Namespace) -> int:
    """Publish the published snapshot into PostgreSQL; exit 1 when readers kept it from swapping in, 2 when it could not start."""
    import psycopg

    from product_affinity.delivery import postgres, postgres_common, postgres_swap
    from product_affinity.publication import NothingPublished

    waited_for: set[int] = set()

    def busy(readers: list[postgres_swap.Reader]) -> None:
        if {r.pid for r in readers} - waited_for:
            waited_for.update(r.pid for r in readers)
            print(f"Waiting for readers to end their transactions: {'; '.join(map(str, readers))}", file=sys.stderr)

    try:
        done = postgres.publish(args.warehouse, args.dsn, args.role_prefix, args.wait, busy, args.statement_timeout)
    except postgres_common.ReadersBusy as error:
        print(f"Not published: {error}", file=sys.stderr)
        return 1
    except (NothingPublished, postgres_common.PublishError, psycopg.Error) as error:
        print(f"Cannot publish to PostgreSQL: {error}", file=sys.stderr)
        return 2
    print(postgres.summary(done))
    return 0


def day_range(text: str) -> tuple["date", "date"]:
    """`FIRST` or `FIRST..LAST`: ISO days, both included."""
    from datetime import date

    try:
        first, _, last = text.partition("..")
        days = date.fromisoformat(first), date.fromisoformat(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day or a range of days (e.g. 2026-12-01 or "
                                         "2026-11-25..2026-12-01)") from None
    if days[1] < days[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: the last day {days[1]} is before the first {days[0]}")
    return days


def main(argv: list[str] | None = None) -> int:
    """Parse, run the command; an error the user can fix is one message (exit 2), any other error one line
    naming it and `--verbose`, which shows the trace (exit 1)."""
    parser = argparse.ArgumentParser(prog="product-affinity", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log and the trace of errors")
    verbose = argparse.ArgumentParser(add_help=False)  # accepted after the command too, as users type it
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show Dagster's log and the trace of errors")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[verbose], **kwargs)

    gen = command("generate", help="write the seeded sample sources (customer_info, product, purchase)")
    gen.add_argument("--out", type=Path, default=DEFAULT_SOURCES, help="folder to write (default: %(default)s)")
    for name, default in DEFAULT_SIZE.items():
        gen.add_argument(f"--{name}", type=positive_int, default=default, help=f"number of {name} (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=SAMPLE_SEED,
                     help="seed of every random draw: the same seed and --end give the same sample (default: %(default)s)")
    gen.add_argument("--end", type=timestamp, help="UTC date-time of the sample's last day (default: now)")
    gen.add_argument("--history-days", type=positive_int, default=SAMPLE_HISTORY_DAYS, metavar="N",
                     help="days of purchases up to --end, one daily partition each (default: %(default)s)")
    gen.add_argument("--postgres", metavar="DSN", help="write into (or, with --add-days, move) the sample in this "
                     "PostgreSQL database (tables customer_info, product, purchase) instead of files")
    gen.add_argument("--add-days", type=positive_int, metavar="N", help="add the orders of N new days after the latest "
                     "purchase to the existing sample (plus a few corrected prices, changed e-mails, late lines)")
    gen.set_defaults(func=generate)

    run_ = command("run", help="materialize and audit every asset in process, publish a snapshot, print a summary")
    run_.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="folder with the source files (default: %(default)s)")
    run_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="DuckDB file to write (default: %(default)s)")
    run_.add_argument("--postgres", metavar="DSN", help="read the sources from this PostgreSQL database, loaded "
                      f"incrementally, instead of --sources (default: ${SOURCE_DSN_VARIABLE} if set, else the files)")
    run_.add_argument("--days", type=day_range, metavar="FIRST[..LAST]", help="load and count only these daily "
                      "partitions of the purchases, then rebuild what depends on them (default: every day, from the "
                      "contract's first partition to today)")
    run_.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb", help="what computes the per-day counts, "
                      "the rules' reduce and the customer aggregates: DuckDB in this process, or Spark from Parquet "
                      "files by day (needs the spark extra and Java; "
                      "default: %(default)s)")
    run_.add_argument("--fan-out-days", type=positive_int, metavar="N", help="count the days in chunks of N days, "
                      "each a step in a process of its own, at most one per core at once (the steps that write the "
                      "warehouse still run one at a time), from Parquet files by day beside the warehouse "
                      "(default: one step counts every day, in the warehouse)")
    run_.set_defaults(func=run)

    exp = command("expectations", help="regenerate the Great Expectations suites from the data contract")
    exp.add_argument("--out", type=Path, help="folder to write (default: expectations/ in the project)")
    exp.set_defaults(func=expectations)

    slo_ = command("slo", help="print the SLO report: targets, latest observations, attainment, error budget")
    slo_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE,
                      help="working warehouse whose published snapshot to report on (default: %(default)s)")
    slo_.add_argument("--runs", type=int, default=SLO_RUNS, help="attainment over the last N runs (default: %(default)s)")
    slo_.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    slo_.add_argument("--junit", type=Path, help="also write the report as JUnit XML to this file (a failing SLO is a <failure>)")
    slo_.set_defaults(func=slo)

    serve_ = command("serve", help="serve the REST and GraphQL APIs on the published snapshot")
    serve_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="working warehouse whose snapshot to serve (default: %(default)s)")
    serve_.add_argument("--host", default="127.0.0.1")
    serve_.add_argument("--port", type=int, default=8000)
    serve_.add_argument("--workers", type=int, default=1,
                        help="worker processes (default: %(default)s; one already uses every core, as DuckDB runs each query on all)")
    serve_.set_defaults(func=serve)

    keys_ = command("keys", help="issue, list or revoke API keys (only their digests are stored, in governance.sqlite3)")
    keys_.add_argument("action", choices=["issue", "list", "revoke"])
    keys_.add_argument("principal", nargs="?", help="issue: the principal (policies.yaml); revoke: the key id")
    keys_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="keys live next to this warehouse (default: %(default)s)")
    keys_.set_defaults(func=keys)

    pg = command("publish-postgres", help="publish the snapshot into PostgreSQL for BI tools, under the same policies as the API")
    pg.add_argument("--dsn", help="database to publish into, created if missing "
                                  "(default: $PRODUCT_AFFINITY_POSTGRES_DSN, else a local database product_affinity)")
    pg.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="working warehouse whose snapshot to publish (default: %(default)s)")
    pg.add_argument("--role-prefix", default="pa_", help="prefix of the Postgres roles, which are cluster-wide (default: %(default)s)")
    pg.add_argument("--wait", type=float, default=300.0, help="seconds to wait for readers' open transactions (default: %(default)s)")
    pg.add_argument("--statement-timeout", type=float, default=POSTGRES_STATEMENT_TIMEOUT,
                    help="seconds a login's statement may run before the server cancels it (default: %(default)s)")
    pg.set_defaults(func=publish_postgres)

    args = parser.parse_args(argv)
    if args.command == "keys" and args.action != "list" and not args.principal:
        parser.error(f"keys {args.action} needs a {'principal' if args.action == 'issue' else 'key id'}")
    try:
        return args.func(args)
    except CommandError as error:
        print(f"product-affinity {args.command}: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.verbose:
            raise
        cause = "".join(traceback.format_exception_only(error)).strip().splitlines()
        print(f"product-affinity {args.command} failed: {cause[-1] if cause else type(error).__name__}\n"
              "Run it again with --verbose to see the trace.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
