"""The package's shape: data flows one way through its stages.

An import graph over olla_jax/ read from the source (imports inside functions
included, since a cycle hidden in a function is still a cycle), then: no cycles;
the solver knows nothing of jax or of the stages around it; the independent
checker shares no code with the solver or the memory model it checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "olla_jax"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imported(name: str, path: Path) -> set[str]:
    """Every name imported anywhere in ``path``, absolute (a module, or a name in one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # ``from olla_jax import calls`` names olla_jax.calls, ``from olla_jax.plan
            # import Plan`` names olla_jax.plan.Plan (resolved to olla_jax.plan below)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """olla_jax module -> the olla_jax modules it imports."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        targets = set()
        for imported in _imported(name, path):
            # ``from olla_jax.x import f``: the edge goes to olla_jax.x (f is no module)
            while imported and imported not in mods:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_imports_inside_functions():
    graph = import_graph()
    # checked.py imports olla_jax.apply.feed_back inside a function only
    assert "olla_jax.apply.feed_back" in graph["olla_jax.checked"]
    assert "olla_jax.calls" in graph["olla_jax.capture.record"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (move shared code to a module both import): " + "; ".join(
        " <-> ".join(c) for c in found)


def _all_imports(prefix: str) -> dict[str, set[str]]:
    return {name: _imported(name, path) for name, path in _modules().items()
            if name == prefix or name.startswith(prefix + ".")}


def _offending(imports: dict[str, set[str]], banned: tuple[str, ...]) -> list[str]:
    return sorted(f"{name} imports {target}" for name, targets in imports.items()
                  for target in targets
                  if any(target == b or target.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("banned", ["jax", "jaxlib", "olla_jax.graph", "olla_jax.capture",
                                    "olla_jax.apply"])
def test_solver_imports_no_jax_nor_stages_around_it(banned):
    offending = _offending(_all_imports("olla_jax.solve"), (banned,))
    assert not offending, offending


def test_checker_shares_nothing_with_solver_or_model():
    offending = _offending(_all_imports("olla_jax.check"), ("olla_jax.solve", "olla_jax.graph.model"))
    assert not offending, offending


# Test files that test a benchmark's own code, and so import it: test_autotune.py
# checks benchmarks/gpu_device.py's autotune text helpers against its recorded
# results; test_check.py runs benchmarks/fuzz_plans.py's mutation campaign,
# whose worker is a child ``python -m benchmarks.fuzz_plans --worker``.
BENCHMARK_TESTS = {"test_autotune.py", "test_check.py"}


def test_tests_import_nothing_from_benchmarks():
    """Helpers the tests need live under tests/ (``tests/_fuzz.py``), not in benchmarks/."""
    tests = ROOT / "tests"
    offending = sorted(
        f"{path.relative_to(ROOT)} imports {target}"
        for path in tests.rglob("*.py") if path.name not in BENCHMARK_TESTS
        for target in _imported(path.stem, path)
        if target == "benchmarks" or target.startswith("benchmarks."))
    assert not offending, offending
    assert all((tests / name).exists() for name in BENCHMARK_TESTS)
