"""The package's shape: data flows one way through its stages.

An import graph over olla_jax/ read from the source (imports inside functions
included, since a cycle hidden in a function is still a cycle), then: no cycles;
no stage imports a later one (capture < graph < solve < strategy < check <
apply < the surface); the solver knows nothing of jax or of the stages around
it; the independent checker shares no code with the solver or the memory model
it checks.  Imports under ``if TYPE_CHECKING:`` never run, so they make no
cycle; they still count for the stage order (a type from a later stage is
still a dependency on it).
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


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for stmt in node.body:
                found.update(id(n) for n in ast.walk(stmt)
                             if isinstance(n, (ast.Import, ast.ImportFrom)))
    return found


def _imported(name: str, path: Path, *, types: bool = True, source: str | None = None) -> set[str]:
    """Every name imported anywhere in ``path``, absolute (a module, or a name in one);
    ``types=False`` leaves out the imports under ``if TYPE_CHECKING:``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    skip = set() if types else _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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


def import_graph(*, types: bool = False) -> dict[str, set[str]]:
    """olla_jax module -> the olla_jax modules it imports (at run time unless ``types``)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        targets = set()
        for imported in _imported(name, path, types=types):
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


def test_type_checking_imports_make_no_cycle_but_count_for_layering():
    source = ("from typing import TYPE_CHECKING\nimport olla_jax.errors\n"
              "if TYPE_CHECKING:\n    from olla_jax.plan import Plan\n")
    path = PACKAGE / "strategy.py"
    assert _imported("olla_jax.strategy", path, source=source, types=False) == {
        "olla_jax.errors", "typing.TYPE_CHECKING"}
    assert "olla_jax.plan.Plan" in _imported("olla_jax.strategy", path, source=source)


# The stages in the order data flows through them; a module may import its own
# stage and earlier ones only.  Every module of the package is named here (a new
# one must be placed).  Ground floor: shared by every stage, importing no stage.
STAGES = (
    ("ground", ("olla_jax.errors", "olla_jax.protos", "olla_jax.dumps", "olla_jax.envelope",
                "olla_jax.jax_compat", "olla_jax.jaxpr_walk",
                "olla_jax.progress", "olla_jax.flops", "olla_jax.sizes",
                # the problems the graph poses and the solver reads: plain data, imports
                # nothing (the graph builds them, so they sit below both)
                "olla_jax.solve.problem")),
    ("capture", ("olla_jax.capture", "olla_jax.calls")),
    ("graph", ("olla_jax.graph",)),
    ("solve", ("olla_jax.solve",)),
    ("strategy", ("olla_jax.strategy",)),
    ("check", ("olla_jax.check",)),
    ("apply", ("olla_jax.apply",)),
    ("surface", ("olla_jax.checked", "olla_jax.result", "olla_jax.report", "olla_jax.saved",
                 "olla_jax.plan", "olla_jax.plan_memo", "olla_jax.budget", "olla_jax.gpu_budget", "olla_jax.xla_remat",
                 "olla_jax.batch", "olla_jax.offload", "olla_jax.scan_remat", "olla_jax.program_remat",
                 "olla_jax.xla_seed",
                 "olla_jax.donation", "olla_jax.placement", "olla_jax.decorator",
                 "olla_jax.cli", "olla_jax.__main__", "olla_jax")),
)
# (importer, imported) pairs allowed to go up a stage, each with its reason.  None now.
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {}


def stage_of(module: str) -> int:
    """The index in STAGES of ``module``: its longest matching prefix (exact names first)."""
    best, rank = -1, None
    for k, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or (prefix != "olla_jax" and module.startswith(prefix + "."))) \
                    and len(prefix) > best:
                best, rank = len(prefix), k
    if rank is None:
        raise KeyError(f"{module} is in no stage: add it to STAGES in tests/test_architecture.py")
    return rank


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({STAGES[stage_of(a)][0]}) imports {b} ({STAGES[stage_of(b)][0]})"
                  for a, targets in graph.items() for b in targets
                  if stage_of(b) > stage_of(a) and (a, b) not in UPWARD_EXCEPTIONS)


def test_every_module_has_a_stage():
    for module in _modules():
        stage_of(module)
    assert STAGES[stage_of("olla_jax.solve.problem")][0] == "ground"
    assert STAGES[stage_of("olla_jax.solve.joint")][0] == "solve"
    assert STAGES[stage_of("olla_jax.capture.record")][0] == "capture"


def test_stage_order_finds_an_upward_import():
    assert upward({"olla_jax.capture.record": {"olla_jax.apply.executable"},
                   "olla_jax.apply.executable": {"olla_jax.envelope"}}) == [
        "olla_jax.capture.record (capture) imports olla_jax.apply.executable (apply)"]


def test_no_stage_imports_a_later_one():
    """capture < graph < solve < strategy < check < apply < surface, type-only imports
    included; exceptions are listed in UPWARD_EXCEPTIONS with their reason."""
    found = upward(import_graph(types=True))
    assert not found, "imports from a stage to a later one: " + "; ".join(found)
    graph = import_graph(types=True)
    for (a, b), reason in UPWARD_EXCEPTIONS.items():
        assert b in graph[a] and reason, f"stale exception {a} -> {b}: remove it"


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
    offending = _offending(_all_imports("olla_jax.check"), ("olla_jax.solve", "olla_jax.graph"))
    assert not offending, offending


# Test files that test a benchmark's own code, and so import it: test_autotune.py
# checks benchmarks/gpu_device.py's autotune text helpers against its recorded
# results; test_check.py runs benchmarks/fuzz_plans.py's mutation campaign,
# whose worker is a child ``python -m benchmarks.fuzz_plans --worker``;
# test_scale_capture.py checks benchmarks/scale_capture.py's reading of XLA's pass log;
# test_suite_gap.py checks benchmarks/suite.py's split of the gap (placement's or the order's);
# test_scale_room.py checks benchmarks/scale_room.py's figures on a small captured step;
# test_offload_plan_benchmark.py checks benchmarks/offload_plan.py's table.
# test_gpu_budget_benchmark_offload.py checks benchmarks/gpu_budget.py --offload=1's table,
# test_gpu_budget_benchmark_program.py its --program_remat=1 table,
# test_gpu_budget_benchmark_levers.py its count of points met per lever and --render,
# test_program_cost_benchmark.py benchmarks/program_cost.py's phases.
BENCHMARK_TESTS = {"test_autotune.py", "test_check.py", "test_scale_capture.py",
                   "test_suite_gap.py", "test_scale_room.py", "test_offload_plan_benchmark.py",
                   "test_gpu_budget_benchmark_offload.py", "test_gpu_budget_benchmark_program.py",
                   "test_gpu_budget_benchmark_levers.py", "test_program_cost_benchmark.py"}


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


def test_graph_model_has_what_the_joint_model_reads():
    """solve/joint.py describes the graph it reads by protocols (the solver imports no
    graph); the graph's classes must have every member those protocols name."""
    import dataclasses
    import typing

    from olla_jax.graph import model
    from olla_jax.solve import joint

    def members(protocol):
        return {n for n in vars(protocol) if not n.startswith("_")}

    for protocol, cls in ((joint.JointGraph, model.ScheduleGraph), (joint.JointUnit, model.Unit),
                          (joint.JointValue, model.Value),
                          (joint.JointAllocation, model.Allocation)):
        assert typing.get_origin(protocol) is None and members(protocol)
        have = {f.name for f in dataclasses.fields(cls)} | set(dir(cls))
        missing = members(protocol) - have
        assert not missing, f"{cls.__name__} lacks {sorted(missing)} of {protocol.__name__}"


def test_test_files_have_unique_basenames():
    # tests/ has no packages: pytest imports each test file by its basename, and
    # two alike (tests/test_joint.py beside tests/solve/test_joint.py) stop the
    # whole suite at collection
    seen: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}


# jax internals that move between releases: read in olla_jax/jax_compat.py only
# (jax's private modules, how an equation of a jaxpr is bound).
JAX_INTERNALS = ("jax._src", "get_bind_params", ".ctx.manager")


def test_jax_internals_only_in_jax_compat():
    used = sorted(f"{name}: {what}" for name, path in _modules().items()
                  if name != "olla_jax.jax_compat"
                  for what in JAX_INTERNALS if what in path.read_text())
    assert not used, f"jax internals outside olla_jax/jax_compat.py: {used}"
