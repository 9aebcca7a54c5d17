"""largest_batch's time and compile savings, and the working-set floor of the batch question:
XLA's compiles shared between modes, a mode cut short says its answer is a lower bound, and
``reachable_batch`` bounds what any plan of the step's kernels can fit."""

from __future__ import annotations

import pytest

import olla_jax
from olla_jax import batch as batch_lib
from olla_jax.capture import capture
from tests.small_steps import make_batch_mlp as make_mlp
from olla_jax.capture.base import Backend

CPU = Backend.parse("cpu")


def xla_total(batch: int) -> int:
    """Compiled here, without the cache."""
    caps = [capture(make_mlp(batch)[0], *make_mlp(batch)[1], scheduler=s)
            for s in ("default", "memory")]
    return min(caps, key=lambda c: c.memory.temp).memory.total


def test_plan_reuses_the_compiles_xla_s_probe_made_and_plans_the_same():
    step = batch_lib._step_of(make_mlp(40), 40)
    cache = batch_lib.CaptureCache()
    cache.xla_total(step, CPU)
    assert (cache.hits, cache.misses) == (0, 2)
    with cache.shared_with_plan():
        shared = batch_lib._olla_total(step, CPU, 1.0)
    assert (cache.hits, cache.misses) == (2, 2)   # both schedulers, not compiled again
    alone = batch_lib._olla_total(step, CPU, 1.0)   # the context is gone: plan compiles itself
    assert cache.hits == 2 and shared == alone


XLA = lambda b: 3_000_000 + 500_000 * b   # noqa: E731
OLLA = lambda b: 3_000_000 + 400_000 * b   # noqa: E731
CAPACITY = 15_000_000   # xla 24, olla 30


def test_a_mode_out_of_time_gives_a_lower_bound_and_xla_is_never_cut(monkeypatch):
    monkeypatch.setattr(batch_lib, "_xla_total", lambda step, backend, cache=None: XLA(step.args[0]))
    monkeypatch.setattr(batch_lib, "_xla_quick_total",
                        lambda step, backend, cache=None: XLA(step.args[0]))
    from types import SimpleNamespace
    monkeypatch.setattr(batch_lib, "_olla_plan", lambda step, backend, limit, quick=False: SimpleNamespace(
        total_bytes=OLLA(step.args[0])))
    monkeypatch.setattr(batch_lib, "_quick_differences", lambda *a: [])
    r = olla_jax.largest_batch(lambda b: ((lambda x: x), (b,)), capacity_bytes=CAPACITY,
                               modes=("xla", "olla"), mode_time_s=1e-9)
    assert r.largest("xla") == 24 and r.result("xla").complete
    olla = r.result("olla")
    assert not olla.complete and olla.largest_batch == 24   # what XLA's plan settled, no probe
    assert "stopped after" in olla.note and "batch 24 fits" in olla.note
    assert [p for p in r.probes if p.mode == "olla"] == []
    full = olla_jax.largest_batch(lambda b: ((lambda x: x), (b,)), capacity_bytes=CAPACITY,
                                  modes=("xla", "olla"))
    assert full.largest("olla") == 30 and full.result("olla").complete
    with pytest.raises(ValueError, match="mode_time_s"):
        olla_jax.largest_batch(make_mlp, capacity_bytes=CAPACITY, mode_time_s=0)


def test_predict_starts_from_a_known_failure():
    # A failure known before any probe (the floor search passes 1.5 x XLA's batch first).
    total = lambda b: 3_000_000 + 500_000 * b   # noqa: E731
    capacity = total(30)
    calls = []

    def probe(b):
        calls.append(b)
        return batch_lib._Point(b, total(b) <= capacity, total(b))
    known = [batch_lib._Point(10, True, total(10)), batch_lib._Point(45, False, total(45))]
    assert batch_lib._predict(probe, 1, None, capacity, known) == 30
    assert 10 not in calls and 45 not in calls and 31 in calls


def test_reachable_batch_is_where_the_floor_stops_fitting():
    capacity = xla_total(24)
    cache = batch_lib.CaptureCache()
    reach = batch_lib.reachable_batch(make_mlp, capacity, batches=(24,), cache=cache)
    assert reach.complete and reach.batch is not None and reach.batch >= 24
    at = reach.point(reach.batch)
    assert at.floor_total <= capacity and at.floor_temp <= at.xla_temp
    above = batch_lib.floor_point(batch_lib._step_of(make_mlp(reach.batch + 1), 0), CPU,
                                  batch_lib.CaptureCache(), reach.batch + 1)
    assert above.floor_total > capacity and reach.smallest_failing == reach.batch + 1
    assert above.io_bytes > at.io_bytes   # the batch's data grows with it
    # Out of time before the first batch: nothing computed, said so.
    cut = batch_lib.reachable_batch(make_mlp, capacity, batches=(24,), time_s=1e-9,
                                    cache=batch_lib.CaptureCache())
    assert not cut.complete


def test_the_benchmark_says_when_the_target_is_out_of_reach(tmp_path):
    """``benchmarks.batch --render`` on a synthetic run (tests import nothing of benchmarks)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    mib = 2 ** 20

    def row(name, floor_at_target):
        points = [{"batch": 1, "io": 2 * mib, "xla_temp": 1 * mib, "floor_temp": mib // 2,
                   "where": "dot.1"},
                  {"batch": 10, "io": 3 * mib, "xla_temp": 10 * mib, "floor_temp": 5 * mib,
                   "where": "dot.1"},
                  {"batch": 15, "io": 3 * mib + mib // 2, "xla_temp": 15 * mib,
                   "floor_temp": floor_at_target, "where": "dot.1"}]
        return {"model": name, "capacity": 13 * mib, "largest": {"xla": 10, "olla": 10,
                                                                  "recompute": 11},
                "probes": [], "seconds": 1.0, "reach": {
                    "batch": 12, "smallest_failing": 13, "complete": True, "seconds": 1.0,
                    "target_batch": 15, "points": points}}
    machine = {"nproc": 2, "memory": "1 GiB", "cpu": "x", "python": "3", "jax": "0", "jaxlib": "0"}
    run = {"meta": {"command": "python -m benchmarks.batch --target=1.5", "machine": machine,
                    "date": "today", "load_start": "1", "load_end": "1"},
           "rows": [row("tight", 10 * mib), row("roomy", 8 * mib)]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-m", "benchmarks.batch", f"--render={path}"], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "run.md").read_text()
    tight = next(line for line in text.splitlines() if line.startswith("| tight | 10 |"))
    roomy = next(line for line in text.splitlines() if line.startswith("| roomy | 10 |"))
    # At batch 15: 3.5 MiB of arguments + outputs and 10 MiB of floor > 13 MiB; 8 MiB fits.
    assert "out of reach" in tight and "dot.1 alone 10.00 MiB" in tight
    assert "not ruled out" in roomy and "1.20 x" in roomy
    assert "out of reach for any plan of these kernels on 1 of 2 (tight)" in text



# benchmarks/batch.py's own helpers, run in a child (tests import nothing from benchmarks/).
_BENCH_CHECKS = {
    "private_tmp": """
import os, tempfile
from benchmarks import batch as bench
before = tempfile.gettempdir()
with bench.private_tmp() as folder:
    assert tempfile.gettempdir() == folder and os.environ["TMPDIR"] == folder
    left = tempfile.mkdtemp(prefix="olla_jax_dump_")   # as a worker killed mid-compile leaves
assert not os.path.exists(left) and not os.path.exists(folder)
assert tempfile.gettempdir() == before
""",
    "hints": """
import json, os, sys
from benchmarks import batch as bench
rows = [{"model": "m", "largest": {"xla": 10, "olla": 12}, "complete": {"xla": False, "olla": True}},
        {"model": "m", "largest": {"xla": 16, "olla": 14}, "complete": {"xla": False, "olla": True}},
        {"model": "m", "largest": {"xla": 8}, "complete": {"xla": True}}]
paths = []
for i, row in enumerate(rows):
    paths.append(os.path.join(sys.argv[1], f"{i}.json"))
    with open(paths[-1], "w") as f:
        json.dump({"rows": [row]}, f)
assert bench.hints_for("m", ",".join(paths[:2]), 2) == {"xla": 8, "olla": 6}
assert bench.hints_for("m", ",".join(paths), 2) == {"xla": 4, "olla": 6}
""",
    "probe_kinds": """
from benchmarks import batch as bench
quick = [{"probes": [{"mode": "xla", "note": "figures only (LLVM -O0, no dumps)"},
                     {"mode": "olla", "note": "planned from figures-only compiles (LLVM -O0)"}]}]
full = [{"probes": [{"mode": "xla", "note": ""}, {"mode": "recompute", "note": "memory only: x"}]}]
assert bench.probe_kinds(quick, {}) == ("quick", "quick")
assert bench.probe_kinds(full, {}) == ("full", "full")
assert bench.probe_kinds(full, {"xla_probes": "quick"}) == ("quick", "full")
"""}


def _bench_check(name: str, *argv: str) -> None:
    import os
    import pathlib
    import subprocess
    import sys
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _BENCH_CHECKS[name], *argv], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_workers_temporary_files_are_removed_with_their_folder():
    _bench_check("private_tmp")


def test_hints_prefer_a_complete_answer_and_else_take_the_largest_lower_bound(tmp_path):
    _bench_check("hints", str(tmp_path))


def test_the_rendered_header_says_how_the_probes_compiled_from_the_flags_or_the_probes():
    _bench_check("probe_kinds")
