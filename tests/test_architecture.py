"""Issue 22: the arrows between ffx's packages, read from the source. No import circle (imports
inside functions count: a lazy import hides a circle, it does not remove it), nothing in the
pipeline reaching up into training, the model or the command line, the engine importing no stage,
worker modules cheap to import, and functions and modules of a readable size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "ffx"
LONGEST_FUNCTION = 80  # body lines (a typer command's option declarations are its signature)
LONGEST_MODULE = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.rglob("*.py")}


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The ffx modules a module imports, at any depth, leaving out `if TYPE_CHECKING:` blocks."""
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    return {name: imports(tree, set(trees)) - {name} for name, tree in trees.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_the_arrows_point_one_way() -> None:
    graph = import_graph()
    upward = ("ffx.train", "ffx.model", "ffx.apply", "ffx.cli", "ffx.data", "ffx.demo")
    wrong = {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if (module.startswith("ffx.pipeline") and target.startswith(upward))
        or (module.startswith("ffx.pipeline.engine") and target.startswith("ffx.pipeline.stages"))
        or (module.startswith("ffx.pipeline.workers") and target.startswith("ffx.pipeline.stages"))
        or (module.startswith("ffx.model") and target.startswith(("ffx.train", "ffx.apply", "ffx.cli")))
    }
    assert wrong == set()


def test_worker_modules_import_no_pyarrow_or_pydantic() -> None:
    workers = sorted(name for name in modules() if name.startswith("ffx.pipeline.workers."))
    assert len(workers) >= 4
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in workers)
        + "print(sorted(m for m in ('pyarrow', 'pydantic', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_functions_and_modules_stay_readable() -> None:
    long_functions, long_modules = [], []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > LONGEST_MODULE:
            long_modules.append((module_name(path), len(lines)))
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.end_lineno - node.body[0].lineno + 1
                if body > LONGEST_FUNCTION:
                    long_functions.append((f"{module_name(path)}.{node.name}", body))
    assert long_functions == [] and long_modules == []
