"""`product-affinity generate | run | expectations | slo | serve | keys | publish-postgres`: the sample sources, the pipeline, its quality gates, its APIs and its Postgres port, from a terminal."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from product_affinity.quality.suites import EXPECTATIONS_DIR
from product_affinity.resources import DEFAULT_SOURCES, DEFAULT_WAREHOUSE


def generate(args: argparse.Namespace) -> int:
    from product_affinity.sources.sample import generate_sample

    started = time.perf_counter()
    truth = generate_sample(args.out, customers=args.customers, products=args.products, orders=args.orders, seed=args.seed)
    rows = ", ".join(f"{name} {count:,}" for name, count in truth["rows"].items())
    print(f"Wrote sample sources to {args.out} in {time.perf_counter() - started:.1f}s: {rows}")
    return 0


def run(args: argparse.Namespace) -> int:
    from product_affinity.definitions import build_definitions

    return run_job(build_definitions(args.sources, args.warehouse), args.warehouse)


def run_job(defs, warehouse: Path) -> int:
    """Run the product_affinity job of `defs` (Definitions) in process: print the summary of the snapshot it
    published, or why it published nothing."""
    import dagster as dg

    from product_affinity.publication import failure_report, published_snapshot
    from product_affinity.summary import print_summary

    started, instance = time.perf_counter(), dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("product_affinity").execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )
    if not result.success:
        print(failure_report(result, instance, warehouse), file=sys.stderr)
        return 1
    snapshot = published_snapshot(warehouse)
    print(f"\nBuilt and audited every asset in {warehouse}, published {snapshot} in {time.perf_counter() - started:.1f}s\n")
    print_summary(snapshot)
    from product_affinity.page.assets import page_path

    print(f"Data product page: {page_path(warehouse)}")
    return 0


def expectations(args: argparse.Namespace) -> int:
    from product_affinity.contract import checked_tables
    from product_affinity.quality.suites import write_suites

    written = write_suites(args.out, checked_tables())
    print(f"Wrote {len(written)} Great Expectations suites generated from the contract to {args.out}")
    return 0


def slo(args: argparse.Namespace) -> int:
    """Print the SLO report (and write it as JSON and JUnit XML); exit 1 when an SLO fails, 2 when the warehouse cannot be read."""
    from product_affinity.quality import report

    try:
        built = report.build(args.warehouse, args.runs)
    except report.WarehouseUnavailable as error:
        print(f"Cannot read the SLO results: {error}", file=sys.stderr)
        return 2
    print(report.text(built))
    for path, render in ((args.json, report.as_json), (args.junit, report.as_junit)):
        if path:
            path.write_text(render(built), encoding="utf-8")
    return 1 if built.failed else 0


def serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from product_affinity.delivery.rest import WAREHOUSE_ENV

    os.environ[WAREHOUSE_ENV] = str(args.warehouse.resolve())  # each worker process builds its app from it
    uvicorn.run("product_affinity.delivery.rest:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning")
    return 0


def keys(args: argparse.Namespace) -> int:
    from product_affinity.governance import AccessDenied
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

    from product_affinity.delivery import postgres
    from product_affinity.publication import NothingPublished

    waited_for: set[int] = set()

    def busy(readers: list[postgres.Reader]) -> None:
        if {r.pid for r in readers} - waited_for:
            waited_for.update(r.pid for r in readers)
            print(f"Waiting for readers to end their transactions: {'; '.join(map(str, readers))}", file=sys.stderr)

    try:
        done = postgres.publish(args.warehouse, args.dsn, args.role_prefix, args.wait, busy)
    except postgres.ReadersBusy as error:
        print(f"Not published: {error}", file=sys.stderr)
        return 1
    except (NothingPublished, postgres.PublishError, psycopg.Error) as error:
        print(f"Cannot publish to PostgreSQL: {error}", file=sys.stderr)
        return 2
    print(postgres.summary(done))
    return 0


def main(argv: list[str] | None = None) -> int:
    from product_affinity.delivery.postgres import DSN_VARIABLE, FALLBACK_DSN
    from product_affinity.sources.sample import DEFAULT_SIZE

    parser = argparse.ArgumentParser(prog="product-affinity", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write the seeded sample sources (customer_info, product, purchase)")
    gen.add_argument("--out", type=Path, default=DEFAULT_SOURCES, help="folder to write (default: %(default)s)")
    for name, default in DEFAULT_SIZE.items():
        gen.add_argument(f"--{name}", type=int, default=default, help=f"number of {name} (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=generate)

    run_ = commands.add_parser("run", help="materialize and audit every asset in process, publish a snapshot, print a summary")
    run_.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="folder with the source files (default: %(default)s)")
    run_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="DuckDB file to write (default: %(default)s)")
    run_.set_defaults(func=run)

    exp = commands.add_parser("expectations", help="regenerate the Great Expectations suites from the data contract")
    exp.add_argument("--out", type=Path, default=EXPECTATIONS_DIR, help="folder to write (default: %(default)s)")
    exp.set_defaults(func=expectations)

    slo_ = commands.add_parser("slo", help="print the SLO report: targets, latest observations, attainment, error budget")
    slo_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="DuckDB file the runs wrote (default: %(default)s)")
    slo_.add_argument("--runs", type=int, default=30, help="attainment over the last N runs (default: %(default)s)")
    slo_.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    slo_.add_argument("--junit", type=Path, help="also write the report as JUnit XML to this file (a failing SLO is a <failure>)")
    slo_.set_defaults(func=slo)

    serve_ = commands.add_parser("serve", help="serve the REST and GraphQL APIs on the published snapshot")
    serve_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="working warehouse whose snapshot to serve (default: %(default)s)")
    serve_.add_argument("--host", default="127.0.0.1")
    serve_.add_argument("--port", type=int, default=8000)
    serve_.add_argument("--workers", type=int, default=1,
                        help="worker processes (default: %(default)s; one already uses every core, as DuckDB runs each query on all)")
    serve_.set_defaults(func=serve)

    keys_ = commands.add_parser("keys", help="issue, list or revoke API keys (only their digests are stored, in governance.sqlite3)")
    keys_.add_argument("action", choices=["issue", "list", "revoke"])
    keys_.add_argument("principal", nargs="?", help="issue: the principal (policies.yaml); revoke: the key id")
    keys_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="keys live next to this warehouse (default: %(default)s)")
    keys_.set_defaults(func=keys)

    pg = commands.add_parser("publish-postgres", help="publish the snapshot into PostgreSQL for BI tools, under the same policies as the API")
    pg.add_argument("--dsn", help=f"database to publish into, created if missing (default: ${DSN_VARIABLE} or {FALLBACK_DSN})")
    pg.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="working warehouse whose snapshot to publish (default: %(default)s)")
    pg.add_argument("--role-prefix", default="pa_", help="prefix of the Postgres roles, which are cluster-wide (default: %(default)s)")
    pg.add_argument("--wait", type=float, default=300.0, help="seconds to wait for readers' open transactions (default: %(default)s)")
    pg.set_defaults(func=publish_postgres)

    args = parser.parse_args(argv)
    if args.command == "keys" and args.action != "list" and not args.principal:
        parser.error(f"keys {args.action} needs a {'principal' if args.action == 'issue' else 'key id'}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
