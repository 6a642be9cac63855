"""Where code lives: no import cycles, no code in __init__.py, and the compiler above the policy engine.

Read from the source, not from a running interpreter, so a cycle hidden by import order still shows.
Only module-level imports count: an import inside a function is a deliberate late binding (the CLI's
commands import their engines when run, so that --help stays light).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "product_affinity"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports at module level."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("product_affinity"):
                imported.add(node.module)
                imported |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("product_affinity")}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def test_no_import_cycles():
    graph, state, cycles = top_level_imports(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else f"{module} -> {target}")
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_package_inits_hold_only_a_docstring():
    for init in PACKAGE.rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert not code, f"{init.relative_to(PACKAGE.parent)} holds code: move it to a module named for what it is"


def test_nothing_imports_the_definitions():
    """definitions.py assembles the Dagster wiring and is imported by nothing else (dg and the CLI load it by name)."""
    importers = [m for m, targets in top_level_imports().items() if "product_affinity.definitions" in targets]
    assert not importers
    late = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if p.name not in {"definitions.py", "cli.py"}
            and any(isinstance(n, ast.ImportFrom) and n.module == "product_affinity.definitions" for n in ast.walk(ast.parse(p.read_text())))]
    assert not late, f"these reach back up into definitions.py: {late}"


def test_the_semantic_model_depends_on_nothing_above_it():
    """Policies depend on the model, not the other way round (the compiler applies an Access it is given), and the
    delivery paths and the Dagster wiring sit on top of the model: nothing in semantic/ imports them."""
    graph = top_level_imports()
    above = ("product_affinity.governance", "product_affinity.delivery", "product_affinity.defs", "product_affinity.definitions")
    for module in (m for m in graph if m.startswith("product_affinity.semantic")):
        assert not {t for t in graph[module] if t.startswith(above)}, module


def test_domain_code_imports_no_dagster():
    """Ingestion, transforms, rules, metrics, business, quality, publication and delivery can be called and tested on a
    DuckDB connection: only the wiring (defs/, definitions.py) and the CLI that runs it import Dagster."""
    wiring = {PACKAGE / "definitions.py", PACKAGE / "cli.py", PACKAGE / "progress.py"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path in wiring or (PACKAGE / "defs") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "dagster" or n.startswith(("dagster.", "dagster_")) for n in names):
                offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert not offenders, f"domain modules importing Dagster: {sorted(set(offenders))}"
