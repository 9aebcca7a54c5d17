"""Random small JAX programs through ``olla_jax.plan``, end to end.

Programs come from the grammar in ``tests/_fuzz.py`` (elementwise ops,
matmul, reductions, broadcasting, reshapes and transposes, ``lax.cond``,
``lax.scan``, ``fori_loop``, ``while_loop``, scatter ``.at[].add/set``,
gather, ``dynamic_update_slice``, ``dynamic_slice``, concatenation, sort,
argmax; with and without ``donate_argnums``), seeded so that every failure
names the seed that reproduces it::

    import _fuzz as fuzz  # tests/_fuzz.py
    spec = fuzz.random_program(random.Random("program-test-7"), seed=7, must_use=(fuzz.OPS[7 % 20],))
    print(fuzz.run_program(spec))

The promises checked for every program: when ``plan.verified`` the outputs of
``plan.compiled`` are bit-identical to ``jax.jit(fn)``'s (and so they are
when it fell back: it is then XLA's own executable); a plan that is not
verified has a note saying why; nothing but olla_jax's documented error types
escapes ``plan``.  The default run plans 20 programs (one per op of the grammar;
about 1-2 minutes on two cores); ``-m slow`` plans 150.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import warnings

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

import olla_jax
import _fuzz as fuzz


def _spec(tag: str, k: int, **kw) -> fuzz.ProgramSpec:
    rng = random.Random(f"program-{tag}-{k}")
    return fuzz.random_program(rng, seed=k, must_use=(fuzz.OPS[k % len(fuzz.OPS)],), **kw)


def _campaign(tag: str, count: int, time_limit_s: float, max_ops: int = 6):
    specs = [_spec(tag, k, max_ops=max_ops) for k in range(count)]
    # every op of the grammar is used, with and without donation
    used = {name for s in specs for name, _ in s.ops}
    assert used == set(fuzz.OPS), set(fuzz.OPS) - used
    assert {s.donate for s in specs} == {True, False}
    outcomes = [fuzz.run_program(s, time_limit_s=time_limit_s) for s in specs]
    status = collections.Counter(o.status for o in outcomes)
    reasons = collections.Counter(o.reason for o in outcomes if o.status == "fell back")
    print(f"\nrandom programs ({tag}): tried {len(outcomes)}, verified {status['verified']}, "
          f"fell back {status['fell back']}, documented errors {status['error']}, "
          f"FAILED {status['FAILED']}")
    for reason, n in reasons.most_common():
        print(f"  fell back: {n:3d}  {reason}")
    rejected = [o for o in outcomes if o.checker_rejects_xla]
    print(f"  the checker rejects XLA's own plan (a false positive): {len(rejected)}")
    for o in outcomes:
        if o.status in ("error", "FAILED"):
            print(f"  {o.status}: {o.spec.describe()}: {o.reason} {o.failures}")
    return outcomes


def _assert_promises(outcomes):
    failed = [(o.spec.describe(), o.failures) for o in outcomes if o.failures]
    assert not failed, failed
    # The checker accepts XLA's own order and placement of every program.
    refused = [(o.spec.describe(), o.checker_rejects_xla) for o in outcomes if o.checker_rejects_xla]
    assert not refused, refused
    # A valid program must not be refused by capture either.
    errors = [(o.spec.describe(), o.reason) for o in outcomes if o.status == "error"]
    assert not errors, errors
    for o in outcomes:
        if o.status == "fell back":
            assert o.notes and o.reason != "NO NOTE", o.spec.describe()


def test_random_programs():
    outcomes = _campaign("test", 20, time_limit_s=2.0)
    _assert_promises(outcomes)
    # The campaign must exercise the whole pipeline, not only fallbacks.
    assert sum(o.status == "verified" for o in outcomes) >= 3


@pytest.mark.slow
def test_random_programs_large():
    outcomes = _campaign("slow", 150, time_limit_s=2.0, max_ops=10)
    _assert_promises(outcomes)


# ---------------------------------------------------------------------------
# the checks themselves can fail


def test_bit_identical_sees_every_bit():
    x = np.array([1.0, -0.0, np.nan], np.float32)
    assert fuzz.bit_identical((x,), (x.copy(),)) == ""
    assert fuzz.bit_identical((x,), (np.array([1.0, 0.0, np.nan], np.float32),))    # -0.0 vs 0.0
    assert fuzz.bit_identical((x,), (np.nextafter(x, np.float32(2)),))              # one ulp
    nan2 = x.copy()
    nan2.view(np.uint32)[2] ^= 1                                                     # NaN payload
    assert fuzz.bit_identical((x,), (nan2,))
    assert fuzz.bit_identical((x,), (x.astype(np.float64),))
    assert fuzz.bit_identical((x,), (x, x))


def test_run_program_reports_wrong_outputs(monkeypatch):
    """A plan whose executable computes something else is a failure."""
    spec = _spec("test", 1)
    real_plan = olla_jax.plan

    def wrong_plan(fn, *args, **kw):
        plan = real_plan(fn, *args, **kw)
        wrong = jax.jit(lambda *a: jax.tree.map(lambda v: v + 1, fn(*a)))
        return dataclasses.replace(plan, compiled=wrong)

    monkeypatch.setattr(olla_jax, "plan", wrong_plan)
    outcome = fuzz.run_program(spec, time_limit_s=1.0)
    assert outcome.status == "FAILED"
    assert "differs from jax.jit" in outcome.failures[0]


def test_run_program_reports_undocumented_exceptions(monkeypatch):
    def broken(*args, **kw):
        raise KeyError("internal")

    monkeypatch.setattr(olla_jax, "plan", broken)
    outcome = fuzz.run_program(_spec("test", 2), time_limit_s=1.0)
    assert outcome.status == "FAILED"
    assert "undocumented KeyError" in outcome.failures[0]


# ---------------------------------------------------------------------------
# found by this fuzzing


def test_tuple_table_temp_allocation_is_planned_consistently():
    def f(x):
        return jnp.argmax(x, axis=1).astype(jnp.float32), x * 2

    x = jnp.ones((8, 3), jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(f, x, time_limit_s=1.0)
    # Either the plan is applied, or it falls back for a reason other than a
    # disagreement between the model and the rewrite about what may change:
    # the model refuses such a temp allocation before anything is solved.
    assert not any("rewrite refused" in n for n in plan.notes), plan.notes
    assert plan.verified or plan.planned_temp_bytes >= plan.xla_best_temp_bytes



def test_checker_accepts_xlas_own_plan_with_donation():
    def f(x, w):
        y = lax.cond(w.sum() > 0, lambda v: jnp.sin(v) * 2, lambda v: jnp.cos(v) + 1, x)
        return y, w, y

    args = (jnp.ones((4, 16), jnp.float32), jnp.ones((16, 16), jnp.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(f, *args, time_limit_s=1.0, donate_argnums=(0,))
    assert fuzz.xla_plan_rejection(plan) == ""
    assert not any("checker rejected" in n for n in plan.notes), plan.notes
