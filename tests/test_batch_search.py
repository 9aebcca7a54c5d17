"""largest_batch's search: the predicted bracket finds what bisection finds, in fewer probes,
and no mode probes what an earlier mode settled.  Figures are synthetic (nothing compiles)."""

from __future__ import annotations

import math
import random

import pytest

import olla_jax
from olla_jax import batch as batch_lib

CURVES = {
    "linear": lambda b: 3_000_000 + 500_000 * b,
    # Flat while the arguments dominate, then linear (as the mlp example's totals).
    "knee": lambda b: 166_500 + 132 * b + (0 if b < 40 else 1500 * (b - 40)),
    "convex": lambda b: 1_000_000 + 2_000 * b * b,
    "steps": lambda b: 1_000_000 + 300_000 * ((b + 7) // 8) * 8,
}


def predict(total, capacity, low=1, high=None, known=()):
    calls = []

    def probe(b):
        calls.append(b)
        return batch_lib._Point(b, total(b) <= capacity, total(b))
    return batch_lib._predict(probe, low, high, capacity, known), calls


def bisect(total, capacity, low=1, high=None):
    calls = []

    def fits(b):
        calls.append(b)
        return total(b) <= capacity
    return batch_lib._search(fits, low, high, low), calls


@pytest.mark.parametrize("name", sorted(CURVES))
def test_predict_finds_what_bisection_finds_in_fewer_probes(name):
    total = CURVES[name]
    rng = random.Random(name)
    ours = theirs = 0
    for _ in range(30):
        capacity = rng.randint(total(1), 30 * total(1))
        brute = max((b for b in range(1, 4000) if total(b) <= capacity), default=None)
        found, calls = predict(total, capacity)
        old, old_calls = bisect(total, capacity)
        assert found == old == brute, (capacity, calls)
        assert len(set(calls)) == len(calls), "a batch was probed twice"
        assert brute + 1 in calls   # the answer is next to a batch seen failing
        ours, theirs = ours + len(calls), theirs + len(old_calls)
    assert ours <= 0.9 * theirs, (ours, theirs)


def test_a_straight_line_needs_a_few_probes():
    # Two probes for a line, one per 8x growth before anything failed, two at the answer.
    for capacity in (4_000_000, 9_999_999, 64_000_000, 1_000_000_000):
        found, calls = predict(CURVES["linear"], capacity)
        assert found == (capacity - 3_000_000) // 500_000
        assert len(calls) <= 4 + math.log(found, batch_lib._GROWTH), calls


def test_bounds_and_known_points():
    total = CURVES["linear"]
    assert predict(total, 100 * 10**6, high=7) == (7, [1, 2, 7])
    assert predict(total, total(1) - 1) == (None, [1])
    assert predict(total, total(5), low=5) == (5, [5, 10, 6])   # one point: no line yet
    # A fit known without a figure (ours where XLA's plan fits): one more is probed first.
    found, calls = predict(total, total(20), known=[batch_lib._Point(20, True, None)])
    assert found == 20 and calls == [21]
    # Known figures are used, not probed again.
    known = [batch_lib._Point(10, True, total(10)), batch_lib._Point(12, True, total(12))]
    found, calls = predict(total, total(30), known=known)
    assert found == 30 and calls == [30, 31]


# ---- largest_batch with synthetic figures per mode --------------------------------

def fake_totals(monkeypatch, xla, olla, recompute, slow=()):
    """Each mode's total as a function of the batch (step.args[0]); recomputation
    at a batch in ``slow`` fits by memory but fails its step-time confirmation."""
    from types import SimpleNamespace
    monkeypatch.setattr(batch_lib, "_xla_total", lambda step, backend, cache=None: xla(step.args[0]))
    monkeypatch.setattr(batch_lib, "_xla_quick_total",
                        lambda step, backend, cache=None: xla(step.args[0]))
    monkeypatch.setattr(batch_lib, "_olla_plan", lambda step, backend, limit, quick=False: SimpleNamespace(
        batch=step.args[0], total_bytes=olla(step.args[0]), runs_total_bytes=olla(step.args[0])))

    def memory(plan, capacity, limit):
        total = recompute(plan.batch)
        return batch_lib._MemoryFit(total, total <= capacity, "memory", found=plan.batch)

    def confirm(plan, mem, step, capacity, step_time_limit):
        over = plan.batch in slow
        return mem.total, not over, ("recomputed, but step time 1.50 x XLA's" if over else
                                     "recomputed, step time 1.00 x XLA's")
    monkeypatch.setattr(batch_lib, "_recompute_memory", memory)
    monkeypatch.setattr(batch_lib, "_quick_differences", lambda *a: [])
    monkeypatch.setattr(batch_lib, "_recompute_confirm", confirm)

    def recompute_total(step, backend, limit, capacity, step_time_limit):   # search="bisect"
        b = step.args[0]
        total = recompute(b)
        return total, total <= capacity and b not in slow, "recomputed"
    monkeypatch.setattr(batch_lib, "_recompute_total", recompute_total)


def make_step(batch):
    return (lambda b: b), (batch,)


XLA = CURVES["linear"]
OLLA = lambda b: 3_000_000 + 400_000 * b   # noqa: E731
RECOMPUTE = lambda b: 3_000_000 + 300_000 * b   # noqa: E731
CAPACITY = 15_000_000   # xla 24, olla 30, recompute 40


@pytest.mark.parametrize("search", ["predict", "bisect"])
def test_both_searches_agree(monkeypatch, search):
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY,
                               modes=("xla", "olla", "recompute"), search=search)
    assert r.largest_batches == {"xla": 24, "olla": 30, "recompute": 40}
    assert [r.result(m).smallest_failing for m in ("xla", "olla", "recompute")] == [25, 31, 41]
    assert r.result("olla").total_bytes == OLLA(30)


def test_predict_does_not_probe_what_an_earlier_mode_settled(monkeypatch):
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE)
    new = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY,   # (quick: below)
                                 modes=("xla", "olla", "recompute"), quick_xla=False)
    old = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY,
                                 modes=("xla", "olla", "recompute"), search="bisect")
    fit = {m: {p.batch for p in new.probes if p.mode == m and p.fits} for m in batch_lib.MODES}
    probed = {m: {p.batch for p in new.probes if p.mode == m} for m in batch_lib.MODES}
    assert not probed["olla"] & fit["xla"]          # ours fits wherever XLA's plan does
    assert not probed["recompute"] & fit["olla"]    # no recomputation where ours fits
    assert old.probe("olla", 24) is not None and old.probe("recompute", 30) is not None
    # Recomputation is bisected by memory alone (its totals sit at the capacity
    # wherever it fits: no line), then one batch is fed back, verified and timed.
    # (1.5 x XLA's batch is confirmed at once, the answer last.)
    assert len(new.probes) <= 0.8 * len(old.probes), (new.probes_table(), old.probes_table())
    timed = [p for p in new.probes if p.mode == "recompute" and "step time" in p.note]
    assert [p.batch for p in timed] == [36, 40]


def test_an_inferred_answer_says_so(monkeypatch):
    # Ours no better than XLA's, recomputation no better than ours.
    fake_totals(monkeypatch, XLA, XLA, XLA)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY,
                               modes=("xla", "olla", "recompute"))
    assert r.largest_batches == {"xla": 24, "olla": 24, "recompute": 24}
    assert [p.mode for p in r.probes if p.batch == 24] == ["xla", "xla"]   # quick, then full
    olla = r.result("olla")
    assert olla.total_bytes is None and "never above" in olla.note
    assert r.result("recompute").total_bytes is None


def test_a_step_that_ignores_the_batch_is_reported_without_compiling(monkeypatch):
    fake_totals(monkeypatch, lambda b: 10**6, OLLA, RECOMPUTE)
    with pytest.raises(ValueError, match="use its batch size"):
        olla_jax.largest_batch(make_step, capacity_bytes=10**9, modes=("xla",))


def test_an_unknown_search_is_refused():
    with pytest.raises(ValueError, match="search must be one of"):
        olla_jax.largest_batch(make_step, capacity_bytes=10**6, search="guess")


def test_a_missed_budget_says_what_held_it():
    from types import SimpleNamespace
    plan = SimpleNamespace(argument_bytes=3 * 2**20, output_bytes=2**20, alias_bytes=2**20,
                           graph=None, notes=("placed", "recomputation found nothing that lowers "
                                              "the peak (0 values qualified)"))
    note = batch_lib._why_not_met(SimpleNamespace(plan=plan, least_bytes=5 * 2**20))
    assert "least 5.00 MiB" in note and "arguments + outputs 3.00 MiB" in note
    assert "0 values qualified" in note
    assert batch_lib._why_not_met(SimpleNamespace(least_bytes=1)) == ""


def test_a_recomputing_plan_is_timed_again_on_concrete_arguments():
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp
    fast = jax.jit(lambda x: x + 1)
    slow = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + x)
    result = SimpleNamespace(step_time_ratio=99.0, compiled=SimpleNamespace(executable=slow),
                             xla_compiled=SimpleNamespace(executable=fast))
    x = jnp.ones((256, 256))
    timed = batch_lib._retimed(result, batch_lib._Step(None, (x,), (), ()))
    assert timed.ratio != 99.0 and timed.ratio > 1.0 and "fastest of 30" in timed.how
    abstract = batch_lib._Step(None, (jax.ShapeDtypeStruct((4,), jnp.float32),), (), ())
    assert batch_lib._retimed(result, abstract).ratio == 99.0   # nothing to run: its own figure
    assert batch_lib._retimed(SimpleNamespace(step_time_ratio=None), abstract) is None


@pytest.mark.parametrize("slow, answer", [({40, 39}, 38), (set(range(31, 41)), 30),
                                           (set(), 40)])
def test_recompute_over_the_step_time_limit_bisects_down(monkeypatch, slow, answer):
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE, slow=slow)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY,
                               modes=("xla", "olla", "recompute"))
    assert r.largest("recompute") == answer
    # The memory boundary (41 fails) is found first, then the confirmations bisect below it.
    assert r.probe("recompute", 41) is not None and not r.probe("recompute", 41).fits
    confirmations = [p for p in r.probes if p.mode == "recompute" and "step time" in p.note]
    assert len(confirmations) <= 1 + math.ceil(math.log2(40 - 30 + 1)), r.probes_table()


def test_xla_searches_by_figures_only_compiles_and_compiles_its_answer_in_full(monkeypatch):
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE)
    full = []
    monkeypatch.setattr(batch_lib, "_xla_total",
                        lambda step, backend, cache=None: full.append(step.args[0]) or XLA(step.args[0]))
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=("xla", "olla"))
    assert r.largest_batches == {"xla": 24, "olla": 30} and r.result("xla").smallest_failing == 25
    assert sorted(full) == [24, 25]   # the search itself by the quick figures
    assert r.probe("xla", 24).note == "" and r.result("xla").total_bytes == XLA(24)
    assert any("figures only" in p.note for p in r.probes)
    full.clear()   # a batch that is an edge whatever it gives is compiled in full only
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=("xla",), low=23, high=25)
    assert r.largest("xla") == 24
    assert sorted(p.batch for p in r.probes if "figures only" not in p.note) == [24, 25]
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=("xla",), low=24, high=25)
    assert r.largest("xla") == 24 and [p.note for p in r.probes] == ["", ""]   # both edges


def test_xla_searches_on_by_full_compiles_where_the_quick_figures_disagree(monkeypatch):
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE)
    # The quick figure is low by a batch's worth: it would answer 25, where 25 does not fit.
    monkeypatch.setattr(batch_lib, "_xla_quick_total",
                        lambda step, backend, cache=None: XLA(step.args[0]) - 500_000)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=("xla",))
    assert r.largest("xla") == 24 and r.result("xla").smallest_failing == 25
    assert r.probe("xla", 24).note == "" and r.probe("xla", 25).note == ""
    assert any("disagreed" in n for n in r.notes)


def test_xla_quick_figures_are_xlas_own():
    import jax.numpy as jnp
    cache = batch_lib.CaptureCache()
    cpu = batch_lib.Backend.parse("cpu")
    for n in (8, 64):
        step = batch_lib._Step(lambda x: jnp.tanh(x @ x.T) @ x, (jnp.ones((n, 32)),), (), ())
        assert cache.quick_total(step, cpu) == cache.xla_total(step, cpu)


def test_an_over_limit_step_time_is_timed_again_and_the_median_round_counts(monkeypatch):
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp
    from olla_jax.apply import timing
    rounds = iter([1.30, 1.02, 1.05])
    calls = []

    def fake_ratio(a, b, args, repeats):
        calls.append(repeats)
        r = next(rounds)
        return SimpleNamespace(ratio=r, ratio_of_minima=r)
    monkeypatch.setattr(timing, "time_ratio", fake_ratio)
    exe = SimpleNamespace(executable=jax.jit(lambda x: x))
    result = SimpleNamespace(step_time_ratio=None, compiled=exe, xla_compiled=exe)
    step = batch_lib._Step(None, (jnp.ones(4),), (), ())
    timed = batch_lib._retimed(result, step, 1.10)
    assert len(calls) == 3 and timed.ratio == 1.05 and "median of 3 rounds" in timed.how
    calls.clear()
    rounds = iter([1.05])
    assert batch_lib._retimed(result, step, 1.10).ratio == 1.05 and len(calls) == 1
    rounds = iter([1.30, 1.25, 1.02])
    assert batch_lib._retimed(result, step, 1.10).ratio == 1.25   # one lucky round is not enough


def test_xla_cut_short_counts_its_figures_only_fits(monkeypatch):
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE)
    clock = [0.0]
    monkeypatch.setattr(batch_lib.time, "monotonic", lambda: clock[0])

    def quick(step, backend, cache=None):
        clock[0] += 10.0
        return XLA(step.args[0])
    monkeypatch.setattr(batch_lib, "_xla_quick_total", quick)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=("xla",), time_s=25.0)
    xla = r.result("xla")
    assert not xla.complete and xla.largest_batch is not None and XLA(xla.largest_batch) <= CAPACITY
    assert "figures-only" in xla.note


def test_ours_cut_short_while_comparing_its_edge_says_what_is_left(monkeypatch):
    """Out of time after ours found its edge by figures-only plans (30 fits, 31
    does not) but before 31's full compile was compared: the note says so, not
    that larger batches were not all tried (once said beside '31 does not fit')."""
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE)
    clock = [0.0]
    monkeypatch.setattr(batch_lib.time, "monotonic", lambda: clock[0])

    def slow_compare(*args):
        clock[0] += 1000.0
        return []
    monkeypatch.setattr(batch_lib, "_quick_differences", slow_compare)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=("xla", "olla"),
                               time_s=100.0)
    ours = r.result("olla")
    assert not ours.complete and ours.largest_batch == 30 and ours.smallest_failing == 31
    assert "not all tried" not in ours.note and "bracketed" not in ours.note, ours.note
    assert "batch 30 fits and 31 does not, by plans of figures-only compiles at 31 not yet " \
           "compared with full compiles" in ours.note, ours.note


def test_no_probe_starts_that_the_longest_of_its_kind_would_carry_past_time_s(monkeypatch):
    """A probe, once started, runs to its end: one started just before ``time_s``
    ran the call past it (286 s for time_s=240 on a UNet step).  A probe of a
    kind now starts only where the longest of that kind so far would end in time."""
    fake_totals(monkeypatch, XLA, OLLA, RECOMPUTE)
    clock = [0.0]
    monkeypatch.setattr(batch_lib.time, "monotonic", lambda: clock[0])
    planned = batch_lib._olla_plan

    def slow_plan(*args, **kwargs):
        clock[0] += 30.0
        return planned(*args, **kwargs)
    monkeypatch.setattr(batch_lib, "_olla_plan", slow_plan)
    r = olla_jax.largest_batch(make_step, capacity_bytes=CAPACITY, modes=("xla", "olla"),
                               time_s=100.0)
    assert clock[0] <= 100.0, clock[0]
    ours = r.result("olla")
    assert not ours.complete and ours.largest_batch is not None, ours.note
