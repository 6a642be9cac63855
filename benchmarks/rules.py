"""Benchmark: the rules engine from scratch against rusket and mlxtend, on identical baskets, with identical rules.

"From scratch" means from the purchase lines in the warehouse to scored product rules (pairs, the
product level's default `max_itemset_size` of 2). Every engine runs in a process of its own (spawned,
so its peak RSS, VmHWM from /proc, is its own: tracemalloc does not see native memory) and reads
the same DuckDB file:

- ours: `load_basket_items` + `mine_rules`, the code the association_rules asset runs;
- rusket: the lines into its streaming `FPMiner` (faster here than `rusket.fpgrowth` on a SciPy CSR
  matrix, which also needs the baskets and products renumbered first), then `rusket.association_rules`;
- mlxtend: the lines as a dense boolean baskets x items DataFrame, `fpgrowth` + `association_rules`.
  The dense array does not fit at 1M orders x 20k products, so mlxtend runs on a second, smaller
  data set, on which ours and rusket run again: every ratio is between engines run on the same
  baskets in the same run.

Thresholds are the same integer counts for every engine. Ours takes an exact count,
ceil(min_support * baskets); rusket and mlxtend take a float and compute ceil(min_support * n) in
floating point, so they are given (count - 0.5) / n, whose ceiling is that count and whose support
filter keeps exactly the itemsets in at least count baskets. Their confidence filter is a float
comparison that can drop a rule sitting exactly on the threshold, so they are given the threshold
less 1e-9 and the rules are then filtered on exact counts (support_count * den >= antecedent_count
* num), as ours does. rusket and mlxtend return every consequent size; the rules of one-item
consequents (ours, arules' convention) are kept. Rules are compared as exact tuples (antecedent,
consequent, support count, antecedent count, consequent count), counts recovered from support * n.

    python benchmarks/rules.py                       # 1M orders x 20k products; mlxtend at 200k x 3k
    python benchmarks/rules.py --orders 20000 --products 2000 --mlxtend-orders 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import resource
import statistics
import time
from fractions import Fraction
from pathlib import Path

OUT = Path(__file__).parent / "out" / "rules"
MIN_SUPPORT, MIN_CONFIDENCE = 0.002, 0.10  # the product level's defaults (AffinitySettings)
TARGETS = {"rusket": 1.0, "mlxtend": 15.0}  # speed-up of ours over each, issue 12


def generate(path: Path, orders: int, products: int, seed: int) -> int:
    """Instacart-like baskets into `path` (source_aligned.purchase and .product); return the line count.

    Product popularity is Zipf-like (weight 1/rank), a basket holds 1 + Poisson(9) draws (about 10
    distinct products), and a third of the baskets also take the companion of their first product
    (rank r -> rank r + 1 for the 500 most popular), so some pairs are much more than chance.
    """
    import duckdb
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, products + 1)
    sizes = 1 + rng.poisson(9, orders)
    basket = np.repeat(np.arange(1, orders + 1, dtype=np.int64), sizes)
    item = rng.choice(products, size=len(basket), p=weights / weights.sum()).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    takes = (rng.uniform(size=orders) < 1 / 3) & (item[first] < 500)
    basket = np.concatenate([basket, basket[first[takes]]])
    item = np.concatenate([item, item[first[takes]] + 1])
    lines = np.unique(basket * (1 << 32) + item + 1)  # distinct (order, product), product ids from 1
    order_id, product_id = lines >> 32, lines & 0xFFFFFFFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE SCHEMA source_aligned")
        conn.execute(
            """CREATE TABLE source_aligned.purchase AS
            SELECT o AS order_id, p AS product_id FROM (SELECT unnest($o) AS o, unnest($p) AS p)""",
            {"o": order_id, "p": product_id},
        )
        conn.execute(
            """CREATE TABLE source_aligned.product AS
            SELECT range + 1 AS product_id, 'product ' || (range + 1) AS product_name FROM range($n)""",
            {"n": products},
        )
    return len(lines)


def ours(path: Path) -> set:
    """The association_rules asset's product level: load_basket_items + mine_rules."""
    import duckdb

    from product_affinity.consumer_aligned.association_rules import Thresholds, min_count, mine_rules
    from product_affinity.consumer_aligned.baskets import basket_count, load_basket_items

    with duckdb.connect(str(path), read_only=True) as conn:
        baskets = basket_count(conn)
        basket_items, labels = load_basket_items(conn, "product", min_count(MIN_SUPPORT, baskets))
        rules = mine_rules(conn, basket_items, labels, "product", Thresholds(MIN_SUPPORT, MIN_CONFIDENCE, 2), baskets)
    return {
        (tuple(int(i) for i in a), tuple(int(i) for i in c), int(s), int(ac), int(cc))
        for a, c, s, ac, cc in zip(
            rules["antecedents"], rules["consequents"], rules["support_count"], rules["antecedent_count"], rules["consequent_count"]
        )
    }


def _lines(path: Path) -> dict:
    """The purchase lines as two arrays; repeated (order, product) lines are left in, as ours leaves them to its counting."""
    import duckdb

    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute("SELECT order_id, product_id FROM source_aligned.purchase").fetchnumpy()


def _exact(rules, n: int, columns) -> set:
    """Rules of one-item consequents as exact count tuples, with the exact confidence filter."""
    confidence = Fraction(str(MIN_CONFIDENCE))
    found = set()
    for a, c, s, sa, sc in zip(
        rules["antecedents"], rules["consequents"], rules["support"], rules["antecedent support"], rules["consequent support"]
    ):
        counts = round(s * n), round(sa * n), round(sc * n)
        if len(c) == 1 and counts[0] * confidence.denominator >= counts[1] * confidence.numerator:
            found.add((tuple(sorted(int(columns[i]) for i in a)), tuple(int(columns[i]) for i in c), *counts))
    return found


def rusket_rules(path: Path) -> set:
    """rusket's fastest path we found: its streaming FPMiner (it drops repeated lines itself) fed the raw order ids and,
    as item columns, the product ids themselves (they are small integers here, so no renumbering is needed)."""
    import numpy as np
    import rusket

    from product_affinity.consumer_aligned.association_rules import min_count

    lines = _lines(path)
    miner = rusket.FPMiner(n_items=int(lines["product_id"].max()) + 1)
    miner.add_chunk(lines["order_id"].astype(np.int64), lines["product_id"].astype(np.int32))
    n = miner.n_transactions
    minimum = min_count(MIN_SUPPORT, n)
    itemsets = miner.mine(min_support=(minimum - 0.5) / n, max_len=2, use_colnames=False)
    rules = rusket.association_rules(itemsets, num_itemsets=n, metric="confidence", min_threshold=MIN_CONFIDENCE - 1e-9)
    return _exact(rules, n, np.arange(miner.n_items))


def mlxtend_rules(path: Path) -> set:
    """mlxtend's documented path: a dense one-hot baskets x products DataFrame, fpgrowth, association_rules."""
    import numpy as np
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    from product_affinity.consumer_aligned.association_rules import min_count

    lines = _lines(path)
    rows, _ = pd.factorize(lines["order_id"])
    columns, products = pd.factorize(lines["product_id"])
    n = int(rows.max()) + 1
    onehot = np.zeros((n, len(products)), dtype=bool)
    onehot[rows, columns] = True
    minimum = min_count(MIN_SUPPORT, n)
    itemsets = fpgrowth(pd.DataFrame(onehot, copy=False), min_support=(minimum - 0.5) / n, max_len=2)
    rules = association_rules(itemsets, num_itemsets=n, metric="confidence", min_threshold=MIN_CONFIDENCE - 1e-9)
    return _exact(rules, n, products)


ENGINES = {"ours": ours, "rusket": rusket_rules, "mlxtend": mlxtend_rules}
# Imported before the clock starts: the interpreter's and the libraries' start-up are no engine's work.
IMPORTS = {
    "ours": ["duckdb", "pandas", "product_affinity.consumer_aligned.association_rules"],
    "rusket": ["duckdb", "numpy", "rusket", "product_affinity.consumer_aligned.association_rules"],
    "mlxtend": ["duckdb", "pandas", "mlxtend.frequent_patterns", "product_affinity.consumer_aligned.association_rules"],
}


def _child(queue, name: str, path: Path) -> None:
    for module in IMPORTS[name]:
        importlib.import_module(module)
    started = time.perf_counter()
    try:
        rules = ENGINES[name](path)
    except BaseException as failure:  # the parent waits on the queue: tell it, rather than leave it waiting
        queue.put({"failure": f"{name}: {failure!r}"})
        raise
    seconds = time.perf_counter() - started
    queue.put({"seconds": seconds, "peak_gb": _peak_kb() / 1024**2, "rules": rules})


def _peak_kb() -> int:
    """This process's peak resident memory in kB. Linux keeps ru_maxrss across exec, so a spawned child would
    report its parent's peak when that was higher; VmHWM belongs to the process's own address space."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def isolated(name: str, path: Path) -> dict:
    """Run one engine in a fresh process: its time excludes the interpreter's start, its peak RSS is its own."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, name, path))
    process.start()
    outcome = queue.get()
    process.join()
    if "failure" in outcome:
        raise SystemExit(f"engine failed: {outcome['failure']}")
    return outcome


def compare(path: Path, engines: tuple[str, ...], repeat: int) -> dict[str, dict]:
    """Each engine `repeat` times, interleaved so a busy spell on the shared machine hits all of them; best time kept."""
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for _ in range(repeat):
        for name in engines:
            runs[name].append(isolated(name, path))
    best = {}
    for name, outcomes in runs.items():
        times = [o["seconds"] for o in outcomes]
        best[name] = {
            "seconds": min(times),
            "median": statistics.median(times),
            "peak_gb": max(o["peak_gb"] for o in outcomes),
            "rules": outcomes[0]["rules"],
            "same_every_run": all(o["rules"] == outcomes[0]["rules"] for o in outcomes),
        }
    return best


def report(title: str, results: dict[str, dict]) -> bool:
    print(f"\n{title}")
    baseline = results["ours"]
    identical = True
    for name, r in results.items():
        same = r["rules"] == baseline["rules"] and r["same_every_run"]
        identical &= same
        line = f"  {name:<8} {r['seconds']:7.2f} s (median {r['median']:6.2f} s)  {r['peak_gb']:5.2f} GB peak  {len(r['rules']):>6,} rules"
        if name != "ours":
            ratio = r["seconds"] / baseline["seconds"]
            line += f"  ours is {ratio:5.2f}x faster (target >= {TARGETS[name]:g}x: {'met' if ratio >= TARGETS[name] else 'MISSED'})"
            line += f"  identical rules: {same}"
        print(line, flush=True)
    return identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--mlxtend-orders", type=int, default=200_000, help="0 skips mlxtend")
    parser.add_argument("--mlxtend-products", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each engine; the best time counts")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    identical = True
    main_set = OUT / f"baskets_{args.orders}x{args.products}.duckdb"
    lines = generate(main_set, args.orders, args.products, args.seed)
    results = compare(main_set, ("ours", "rusket"), args.repeat)
    identical &= report(f"{args.orders:,} orders, {args.products:,} products, {lines:,} lines (best of {args.repeat})", results)
    if args.mlxtend_orders:
        small = OUT / f"baskets_{args.mlxtend_orders}x{args.mlxtend_products}.duckdb"
        lines = generate(small, args.mlxtend_orders, args.mlxtend_products, args.seed)
        results = compare(small, ("ours", "rusket", "mlxtend"), args.repeat)
        identical &= report(
            f"{args.mlxtend_orders:,} orders, {args.mlxtend_products:,} products, {lines:,} lines, where mlxtend's dense array fits",
            results,
        )
    print(f"\nidentical rules in every comparison: {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
