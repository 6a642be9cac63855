"""`product-affinity generate | run`: the sample sources and the whole pipeline, from a terminal."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from product_affinity.resources import DEFAULT_SOURCES, DEFAULT_WAREHOUSE


def generate(args: argparse.Namespace) -> int:
    from product_affinity.sources.sample import generate_sample

    started = time.perf_counter()
    truth = generate_sample(args.out, customers=args.customers, products=args.products, orders=args.orders, seed=args.seed)
    rows = ", ".join(f"{name} {count:,}" for name, count in truth["rows"].items())
    print(f"Wrote sample sources to {args.out} in {time.perf_counter() - started:.1f}s: {rows}")
    return 0


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    from product_affinity.definitions import build_definitions
    from product_affinity.summary import print_summary

    defs = build_definitions(args.sources, args.warehouse)
    started = time.perf_counter()
    result = defs.resolve_job_def("product_affinity").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                cause = error.cause or error
                print(f"FAILED {event.step_key}: {cause.message.strip()}", file=sys.stderr)
        return 1
    print(f"\nMaterialized every asset into {args.warehouse} in {time.perf_counter() - started:.1f}s\n")
    print_summary(args.warehouse)
    return 0


def main(argv: list[str] | None = None) -> int:
    from product_affinity.sources.sample import DEFAULT_SIZE

    parser = argparse.ArgumentParser(prog="product-affinity", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write the seeded sample sources (customer_info, product, purchase)")
    gen.add_argument("--out", type=Path, default=DEFAULT_SOURCES, help="folder to write (default: %(default)s)")
    for name, default in DEFAULT_SIZE.items():
        gen.add_argument(f"--{name}", type=int, default=default, help=f"number of {name} (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=generate)

    run_ = commands.add_parser("run", help="materialize every asset in process and print a summary")
    run_.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="folder with the source files (default: %(default)s)")
    run_.add_argument("--warehouse", type=Path, default=DEFAULT_WAREHOUSE, help="DuckDB file to write (default: %(default)s)")
    run_.set_defaults(func=run)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
