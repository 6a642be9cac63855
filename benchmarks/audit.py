"""Benchmark: the audit (every asset check of the job) at Instacart scale, against its budget and the sampled audit before.

Builds the warehouse benchmarks/pipeline.py builds (benchmarks/out/scale; `--reuse` keeps one built
earlier), then runs only the job's asset checks on it (the per-table quality checks and the rollup
checks), twice, each time in a fresh Python process:

- baseline: the code at --baseline (default: the last commit whose audit sampled: a 250,000-row
  reservoir sample validated by Great Expectations, the support of 100 sampled product rules),
  exported with `git archive` under benchmarks/out/ and put first on PYTHONPATH;
- this tree: every rule measured by DuckDB on every row, the support of every rule recounted.

For each it prints every check step's time (Dagster's event log), the audit's total (the sum of the
steps: the time they add to a run), the process's peak RSS (VmHWM) and which checks failed (none
should: both audit the same clean build), then the ratio against the baseline and the 15 s budget.
Where the code draws the Great Expectations Data Docs in a step of their own after the checks (the
quality/data_docs asset), that step runs too and its time is printed on its own line, outside the
audit's total; code that drew them inside each check step paid for them in the steps.

    python benchmarks/audit.py --reuse               # the warehouse `make bench` built, if there is one
    python benchmarks/audit.py --orders 200000 --customers 20000 --products 5000 --no-baseline
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from pipeline import OUT, generate, isolated, pipeline

BUDGET_SECONDS = 15  # the whole audit at Instacart scale (issue 13)
DOCS_STEP = "quality__data_docs"  # the step drawing the Data Docs from the checks' results: not a check, timed apart
BASELINE = "82968ca"  # the last commit whose audit validated a sample and recounted 100 sampled product rules
ROOT = Path(__file__).resolve().parent.parent


def _peak_gb() -> float:
    """This process's peak resident memory: VmHWM, which (unlike ru_maxrss) is not inherited across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    raise RuntimeError("no VmHWM in /proc/self/status")


def audit(sources: Path, warehouse: Path) -> dict:
    """Run every asset check of the job on the built warehouse (no asset is built); step times from the event log."""
    import dagster as dg

    import product_affinity
    from product_affinity.definitions import build_definitions

    defs = build_definitions(sources, warehouse)
    instance = dg.DagsterInstance.ephemeral()
    # The Data Docs, where the code has a step of their own for them (drawn after the checks, from their results):
    # run too, so the run does what a pipeline run does, and timed apart from the audit.
    docs = [key for key in defs.resolve_asset_graph().get_all_asset_keys() if key == dg.AssetKey(DOCS_STEP.split("__"))]
    started = time.perf_counter()
    result = dg.materialize([*defs.assets, *defs.asset_checks], selection=dg.AssetSelection.all_asset_checks() | dg.AssetSelection.assets(*docs),
                            resources=defs.resources, instance=instance, raise_on_error=False)
    seconds = time.perf_counter() - started
    steps = [e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.step_key]
    begun = {e.step_key: e.timestamp for e in steps if e.dagster_event.event_type_value == "STEP_START"}
    ended = {e.step_key: e.timestamp - begun[e.step_key] for e in steps
             if e.dagster_event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")}
    failed = sorted(f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed)
    return {"steps": ended, "seconds": seconds, "peak_gb": _peak_gb(), "failed": failed,
            "checks": len(result.get_asset_check_evaluations()), "code": str(Path(product_affinity.__file__).parent.parent)}


def baseline_tree(ref: str) -> Path:
    """The code at `ref`, exported once under benchmarks/out/."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = OUT / f"baseline-{sha[:10]}"
    if not (tree / "product_affinity").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, check=True, capture_output=True).stdout
        archive_path = tree / "code.tar"
        archive_path.write_bytes(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(tree, filter="data")
        archive_path.unlink()
    return tree


def measured(code: Path, sources: Path, warehouse: Path) -> dict:
    """audit() in a fresh interpreter that imports product_affinity from `code`."""
    env = os.environ | {"PYTHONPATH": str(code)}
    child = subprocess.run([sys.executable, __file__, "--child", str(sources), str(warehouse)], env=env, capture_output=True, text=True)
    if child.returncode:
        raise SystemExit(f"the audit with the code in {code} failed:\n{child.stderr[-3000:]}")
    found = json.loads(child.stdout.strip().splitlines()[-1])
    if Path(found["code"]) != code.resolve():
        raise SystemExit(f"the audit meant to run the code in {code} ran {found['code']}")
    return found


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=3_400_000)
    parser.add_argument("--customers", type=int, default=206_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--reuse", action="store_true", help="reuse the warehouse (or the sources) of an earlier run")
    parser.add_argument("--baseline", default=BASELINE, help=f"git commit whose audit is the baseline (default {BASELINE})")
    parser.add_argument("--no-baseline", action="store_true", help="time this tree's audit only")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("SOURCES", "WAREHOUSE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(audit(*args.child)))
        return

    scale = OUT / "scale"
    sources, warehouse = scale / "sources", scale / "warehouse.duckdb"
    if not (args.reuse and warehouse.exists()):
        if not (args.reuse and (sources / "purchase.csv").exists()):
            print(f"Generating {args.orders:,} orders, {args.customers:,} customers, {args.products:,} products", flush=True)
            isolated(generate, sources, args.customers, args.products, args.orders)
        print("Building the warehouse (the whole job, once)", flush=True)
        isolated(pipeline, sources, warehouse)
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        lines = conn.execute("SELECT count(*) FROM source_aligned.purchase").fetchone()[0]
    print(f"Warehouse {warehouse}: {lines:,} purchase lines; {os.cpu_count()} cores, load average {_load()}\n", flush=True)

    runs = {}
    if not args.no_baseline:
        runs[f"baseline {args.baseline}{' (sampled)' if args.baseline == BASELINE else ''}"] = measured(baseline_tree(args.baseline), sources, warehouse)
    runs["this tree (exact)"] = measured(ROOT, sources, warehouse)

    names = list(runs)
    steps = sorted({step for run in runs.values() for step in run["steps"]} - {DOCS_STEP}, key=lambda s: (not s.endswith("_quality"), s))
    print(f"{'check step':<52}" + "".join(f"{name:>32}" for name in names))
    for step in steps:
        print(f"{step:<52}" + "".join(f"{run['steps'][step]:>30.1f} s" if step in run["steps"] else f"{'-':>32}" for run in runs.values()))
    totals = {name: sum(t for step, t in run["steps"].items() if step != DOCS_STEP) for name, run in runs.items()}
    print(f"{'= audit: the check steps together':<52}" + "".join(f"{totals[name]:>30.1f} s" for name in names))
    print(f"{'  the Data Docs (' + DOCS_STEP + ', after the checks)':<52}"
          + "".join(f"{run['steps'][DOCS_STEP]:>30.1f} s" if DOCS_STEP in run["steps"] else f"{'in the checks':>32}" for run in runs.values()))
    print(f"{'  the run, start to end (Dagster overhead included)':<52}" + "".join(f"{run['seconds']:>30.1f} s" for run in runs.values()))
    print(f"{'  peak memory (the process)':<52}" + "".join(f"{run['peak_gb']:>29.2f} GB" for run in runs.values()))
    print(f"{'  checks / failed':<52}" + "".join(f"{run['checks']:>25} / {len(run['failed'])}" for run in runs.values()))
    for name, run in runs.items():
        if run["failed"]:
            print(f"  {name} failed: {', '.join(run['failed'])}")
    exact = totals[names[-1]]
    verdict = "met" if exact <= BUDGET_SECONDS else "MISSED"
    print(f"\nexact audit {exact:.1f} s against the budget of {BUDGET_SECONDS} s: {verdict}", end="")
    if len(names) == 2:
        print(f"; {totals[names[0]] / exact:.2f}x the speed of the {names[0]} audit ({totals[names[0]]:.1f} s)", end="")
    print(f"\nload average at the end {_load()} (a shared machine: compare the two runs, not the absolute times alone)")


if __name__ == "__main__":
    main()
