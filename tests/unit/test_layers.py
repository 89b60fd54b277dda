"""The house's floors (docs/development.md, "Where code lives"): a module imports only from its
own floor or the floors below, the hub's process and the service process never import each
other, and no two modules import each other in a circle. Read from the source (ast), so an
import inside a function counts too."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOORS = [  # bottom first
    {"hub", "hub.units", "hub.courses", "hub.login_backoff", "hub.times", "hub.files", "hub.journal"},
    {"hub.gpus"},
    {"hub.usage"},
    {"hub.settings"},
    {"hub.common"},
    {"hub.hub_process", "hub.service_process"},
    {"hub.netguard"},
]
APART = {frozenset({"hub.hub_process", "hub.service_process"})}


def room(module: str) -> str:
    """The room a module lives in: the longest name of FLOORS that is it or contains it."""
    names = [n for floor in FLOORS for n in floor if module == n or module.startswith(n + ".")]
    return max(names, key=len)


def floor(name: str) -> int:
    return next(i for i, f in enumerate(FLOORS) if name in f)


def modules() -> dict[str, set[str]]:
    graph = {}
    for path in sorted((ROOT / "hub").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in imported if m == "hub" or m.startswith("hub.")}
    return graph


def resolve(name: str, graph: dict) -> str | None:
    """`from hub.x import y` names a module hub.x.y or an attribute of hub.x: the module it is."""
    while name and name not in graph:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_runs_up_a_floor_or_across_processes():
    graph = modules()
    wrong = []
    for module, imports in graph.items():
        here = room(module)
        for target in filter(None, (resolve(i, graph) for i in imports)):
            there = room(target)
            if floor(there) > floor(here) or (here != there and frozenset({here, there}) in APART):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that run up a floor or across processes:\n" + "\n".join(sorted(wrong))


def test_no_circle_between_modules():
    graph = modules()
    edges = {m: {t for t in map(lambda i: resolve(i, graph), imports) if t and t != m and not m.startswith(t + ".")}
             for m, imports in graph.items()}
    # a package's __init__ importing its own children is a face, not a circle
    seen, stack, circles = set(), [], []

    def visit(node, path):
        if node in path:
            circles.append(path[path.index(node):] + [node])
            return
        if node in seen:
            return
        path.append(node)
        for nxt in edges.get(node, ()):
            visit(nxt, path)
        path.pop()
        seen.add(node)

    for node in graph:
        visit(node, [])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_every_module_has_a_floor():
    for module in modules():
        assert room(module), module


def late_imports():
    """(file, line, text) of each import inside a function whose group has no reason: a comment
    on its line, or on the line just above the group of imports it belongs to."""
    found = []
    for path in sorted((ROOT / "hub").rglob("*.py")):
        lines = path.read_text().split("\n")
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                at = node.lineno - 1
                while at > 0 and lines[at - 1].strip().startswith(("import ", "from ")):
                    at -= 1  # the first line of this group of imports
                reason = "#" in lines[node.lineno - 1] or lines[at - 1].strip().startswith("#")
                if not reason:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_an_import_inside_a_function_says_why():
    """Imports belong at the top; one inside a function keeps a heavy or optional dependency out of a
    process (or waits for JupyterHub's own modules), and says so in a comment."""
    missing = late_imports()
    assert not missing, "imports inside functions without a reason:\n" + "\n".join(missing)
