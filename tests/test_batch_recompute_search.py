"""largest_batch's recomputation search: bisected by memory alone from 1.5 x XLA's batch, capped
by the working-set floor, the answer alone fed back, verified and timed; the whole call's time
limit; and the benchmark's worker reporting a signal instead of vanishing.  Figures are
synthetic (nothing compiles) except in the slow test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import olla_jax
from olla_jax import batch as batch_lib

XLA = lambda b: 3_000_000 + 500_000 * b         # noqa: E731
OLLA = lambda b: 3_000_000 + 400_000 * b        # noqa: E731
RECOMPUTE = lambda b: 3_000_000 + 300_000 * b   # noqa: E731
CAPACITY = 15_000_000   # xla 24, olla 30, recompute 40
MODES = ("xla", "olla", "recompute")


def make_step(batch):
    return (lambda b: b), (batch,)


class Fake:
    """The probes' hooks, counting what each batch cost."""

    def __init__(self, monkeypatch, slow=()):
        self.plans, self.memory, self.confirmed, self.full = [], [], [], []
        self.memory_again = []
        self.slow = set(slow)
        for name in ("_xla_total", "_xla_quick_total"):
            monkeypatch.setattr(batch_lib, name, lambda step, backend, cache=None: XLA(step.args[0]))
        monkeypatch.setattr(batch_lib, "_olla_plan", self.olla_plan)
        monkeypatch.setattr(batch_lib, "_quick_differences", lambda *a: [])
        monkeypatch.setattr(batch_lib, "_recompute_memory", self.recompute_memory)
        monkeypatch.setattr(batch_lib, "_recompute_confirm", self.recompute_confirm)

    def olla_plan(self, step, backend, limit, quick=False):
        b = step.args[0]
        (self.plans if quick else self.full).append(b)
        return SimpleNamespace(batch=b, total_bytes=OLLA(b), runs_total_bytes=OLLA(b), quick=quick)

    def recompute_memory(self, plan, capacity, limit):
        again = not plan.quick and plan.batch in self.plans   # the confirmation's full plan
        (self.memory_again if again else self.memory).append(plan.batch)
        total = RECOMPUTE(plan.batch)
        return batch_lib._MemoryFit(total, total <= capacity, "memory", found=plan.batch)

    def recompute_confirm(self, plan, memory, step, capacity, step_time_limit):
        self.confirmed.append(plan.batch)
        over = plan.batch in self.slow
        return memory.total, not over, f"step time {1.5 if over else 1.0:.2f} x XLA's"


def test_only_1_5_x_xla_s_batch_and_the_answer_are_fed_back_verified_and_timed(monkeypatch):
    fake = Fake(monkeypatch)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES)
    assert r.largest("recompute") == 40 and r.result("recompute").smallest_failing == 41
    assert fake.confirmed == [36, 40]   # 1.5 x XLA's 24 at once, then the answer
    assert 36 == fake.memory[0]                       # 1.5 x XLA's 24 is asked first
    # Ours at a batch is planned once (from figures-only compiles) and shared by the
    # olla probe and recomputation; only what is fed back is planned again in full, and
    # 25, which XLA's search compiled in full (its answer's edge), from those compiles.
    assert len(fake.plans) == len(set(fake.plans)) and fake.full == [25, 36, 40]
    assert fake.memory_again == [36, 40]   # recomputation searched again on them
    assert r.probe("recompute", 40).note.startswith("step time")   # the confirmation's
    assert any(p.note.startswith("memory only") for p in r.probes if p.batch == 40)


def test_a_slow_answer_bisects_the_confirmations_below_it(monkeypatch):
    fake = Fake(monkeypatch, slow=range(35, 41))
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES)
    assert r.largest("recompute") == 34
    assert fake.confirmed[:2] == [36, 40] and len(fake.confirmed) <= 6, fake.confirmed
    assert r.result("recompute").smallest_failing == 35


def test_the_working_set_floor_caps_the_search(monkeypatch):
    fake = Fake(monkeypatch)
    seen = {}

    def reach(make, capacity, *, backend, batches, low, time_s, cache, quick=None):
        seen.update(batches=batches, time_s=time_s)
        return batch_lib.Reach(33, 34, (), True, 0.0)
    monkeypatch.setattr(batch_lib, "reachable_batch", reach)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES,
                               reach_time_s=30.0)
    assert r.reach is not None and r.reach.batch == 33
    assert seen["batches"][1:] == (24, 36)   # XLA's answer and 1.5 x it, computed first
    assert r.largest("recompute") == 33 and max(fake.memory) == 33
    assert "working-set floor" in r.result("recompute").note
    assert fake.confirmed == [33]
    assert 36 not in fake.memory and len(fake.memory) <= 3   # 1.5 x is past the floor


def test_hints_bracket_each_answer_in_two_probes(monkeypatch):
    fake = Fake(monkeypatch)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES,
                               hints={"xla": 24, "olla": 30, "recompute": 40})
    assert r.largest_batches == {"xla": 24, "olla": 30, "recompute": 40}
    assert [p.batch for p in r.probes if p.mode == "xla"] == [24, 25]
    assert [p.batch for p in r.probes if p.mode == "olla"] == [30, 31]
    assert fake.memory == [36, 40, 41] and fake.confirmed == [36, 40]
    # A wrong hint costs probes, not the answer.
    Fake(monkeypatch)
    wrong = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES,
                                   hints={"xla": 5, "olla": 90, "recompute": 37})
    assert wrong.largest_batches == {"xla": 24, "olla": 30, "recompute": 40}
    with pytest.raises(ValueError, match="hints"):
        olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, hints={"xla": 0})


def test_the_whole_call_s_time_gives_lower_bounds_said_so(monkeypatch):
    Fake(monkeypatch)
    clock = [0.0]
    monkeypatch.setattr(batch_lib, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    def slow_xla(step, backend, cache=None):
        clock[0] += 10.0   # every XLA probe takes 10 s
        return XLA(step.args[0])
    monkeypatch.setattr(batch_lib, "_xla_total", slow_xla)
    monkeypatch.setattr(batch_lib, "_xla_quick_total", slow_xla)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES, time_s=25.0)
    xla = r.result("xla")
    assert not xla.complete and "call's 25 s" in xla.note
    # at 0 and 10 s; one at 20 s would end at 30 s, past the call's 25 (it once ran)
    assert len([p for p in r.probes if p.mode == "xla"]) == 2
    assert clock[0] <= 25.0
    # the other modes' probes take no time here: they may end within the call's
    assert all(x.complete or "call's 25 s" in x.note for x in r.results)


@pytest.mark.parametrize("bad, match", [(dict(time_s=0), "time_s"),
                                        (dict(step_time_limit=0.9), "step_time_limit"),
                                        (dict(reach_time_s=-1), "reach_time_s"),
                                        (dict(reach_target=1.0), "reach_target"),
                                        (dict(time_limit_s="5"), "time_limit_s")])
def test_bad_limits_are_refused_before_any_compile(bad, match):
    with pytest.raises(ValueError, match=match):
        olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, **bad)


REPO = Path(__file__).resolve().parents[1]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu",
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def test_a_terminated_worker_writes_a_row_that_says_so(tmp_path):
    """A SIGTERM from outside (resnet18's worker exited -15 with no row) is a row with the reason."""
    out = tmp_path / "row.json"
    code = ("import os, signal, time, sys\n"
            "from benchmarks import batch\n"
            "batch.run_one = lambda name, args, started=None: (os.kill(os.getpid(), signal.SIGTERM), "
            "time.sleep(30))\n"
            f"batch.worker(batch.parse_args(['--worker=mlp', '--worker_out={out}']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())
    assert row["model"] == "mlp" and "SIGTERM" in row["error"]


def test_the_search_stops_itself_before_the_worker_is_killed():
    code = ("import time\nfrom benchmarks import batch\n"
            "print(batch.model_time_s(batch.parse_args(['--model_timeout_s=480'])),"
            " batch.model_time_s(batch.parse_args(['--model_timeout_s=480', '--time_s=100'])),"
            " batch.model_time_s(batch.parse_args([])),"
            " batch.time_left(batch.parse_args(['--time_s=480']), time.monotonic() - 100),"
            " batch.time_left(batch.parse_args(['--time_s=480']), time.monotonic() - 900))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    own, given, none, left, late = map(float, done.stdout.split())
    assert 0 < own < 480 and given == 100 and none == 0
    assert 370 < left <= 380 and late == 1.0   # counted from the worker's start


def test_the_table_reads_the_confirmation_s_step_time(tmp_path):
    machine = {"nproc": 2, "memory": "1 GiB", "cpu": "x", "python": "3", "jax": "0", "jaxlib": "0"}
    probes = [{"mode": "recompute", "batch": 30, "total": 10, "fits": True, "seconds": 1.0,
               "note": "memory only: fits by the plan's figures"},
              {"mode": "recompute", "batch": 30, "total": 10, "fits": True, "seconds": 1.0,
               "note": "recomputed 3 values, verified, step time 0.97 x XLA's (fastest of 30)"}]
    row = {"model": "m", "capacity": 2 ** 20, "largest": {"xla": 20, "olla": 20, "recompute": 30},
           "probes": probes, "seconds": 1.0}
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"meta": {"command": "python -m benchmarks.batch", "machine": machine,
                                         "date": "today", "load_start": "1", "load_end": "1"},
                                "rows": [row]}))
    done = subprocess.run([sys.executable, "-m", "benchmarks.batch", f"--render={path}"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in (tmp_path / "run.md").read_text().splitlines() if x.startswith("| m |"))
    assert "0.97 x XLA's" in line and "1.50" in line


@pytest.mark.slow
def test_a_real_recomputation_is_planned_by_memory_then_confirmed():
    """On a compiled step: the memory probe's plan is what gets fed back and timed."""
    import examples
    from olla_jax.capture.base import Backend
    cpu = Backend.parse("cpu")
    # The benchmark's mlp: capacity 4 x XLA's total at its own batch (8); at batch 520
    # order and placement do not fit it, recomputing two values did (batch_cpu_suite_v2).
    own = batch_lib._step_of(examples.make("mlp", "tiny"), 8)
    capacity = 4 * batch_lib._xla_total(own, cpu)
    step = batch_lib._step_of(examples.make("mlp", "tiny", 520), 520)
    plan = batch_lib._olla_plan(step, cpu, 3.0)
    assert plan.runs_total_bytes > capacity
    fit = batch_lib._recompute_memory(plan, capacity, 5.0)
    if not fit.fits:
        pytest.skip(f"no recomputation found within 5 s here: {fit.note}")
    assert fit.found is not None and fit.total <= capacity
    total, fits, note = batch_lib._recompute_confirm(plan, fit, step, capacity, 100.0)
    assert fits and total <= capacity and "verified, step time" in note, note
    _, slow_fits, slow_note = batch_lib._recompute_confirm(plan, fit, step, capacity, 1.0)
    assert ("step time" in slow_note) and (slow_fits == ("> 1.0" not in slow_note))


def test_full_plan_probes_plan_every_batch_once_in_full(monkeypatch):
    fake = Fake(monkeypatch)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES, quick_plans=False)
    assert r.largest("recompute") == 40 and fake.plans == []
    assert len(fake.full) == len(set(fake.full)) and {36, 40} <= set(fake.full)


def test_a_quick_compile_unlike_the_full_one_is_said_and_the_search_goes_on_in_full(monkeypatch):
    fake = Fake(monkeypatch)
    compared = []   # (batch, quick plans made by then)

    def differ(plan, step, backend, cache):
        compared.append((plan.batch, len(fake.plans)))
        return ["buffer_assignment_text"]
    monkeypatch.setattr(batch_lib, "_quick_differences", differ)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES)
    assert r.largest("recompute") == 40 and r.largest("olla") == 30
    assert any("differs from the full compile (buffer_assignment_text)" in n for n in r.notes)
    (batch, made), = compared                    # compared once: ours' answer (30)
    assert batch == 30 and len(fake.plans) == made   # no figures-only plan after it
    assert {30, 31, 36, 40} <= set(fake.full)
    assert "figures-only" in [p for p in r.probes if p.mode == "olla" and p.batch == 30][0].note


def test_a_figures_only_compile_has_the_full_compile_s_module_and_buffer_assignment():
    """What the quick plans rest on, on a real step: LLVM -O0 changes the code,
    not the module or buffer assignment a plan is built from; a change is found."""
    import dataclasses

    import examples
    from olla_jax.capture.record import capture, sharing_compiles
    step = batch_lib._step_of(examples.make("mlp", "tiny"), 8)
    # both compiled here (not the session's shared compile of another test:
    # the HLO's source locations would be that test's)
    with sharing_compiles():
        full = capture(step.fn, *step.args, scheduler="memory")
        quick = capture(step.fn, *step.args, scheduler="memory",
                        compiler_options=dict(batch_lib.QUICK_OPTIONS))
    assert quick.executable != full.executable   # other code, compiled otherwise
    assert batch_lib._compile_differences(quick, full) == []
    moved = dataclasses.replace(quick, buffer_assignment_text=quick.buffer_assignment_text + " ")
    assert batch_lib._compile_differences(moved, full) == ["buffer_assignment_text"]


def test_ours_fitting_without_recomputation_at_the_answer_is_planned_again_in_full(monkeypatch):
    fake = Fake(monkeypatch)
    memory = fake.recompute_memory

    def fits_as_ours(plan, capacity, limit):   # ours alone fits there: nothing recomputed
        fit = memory(plan, capacity, limit)
        return batch_lib._MemoryFit(fit.total, fit.fits, "fits without recomputation (ours)")
    monkeypatch.setattr(batch_lib, "_recompute_memory", fits_as_ours)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=MODES)
    assert r.largest("recompute") == 40 and fake.confirmed == []   # nothing fed back
    assert 40 in fake.full and 40 in fake.memory_again   # but planned again in full
    assert "planned again from full compiles" in r.probes[-1].note or any(
        "planned again from full compiles" in p.note for p in r.probes if p.batch == 40)
