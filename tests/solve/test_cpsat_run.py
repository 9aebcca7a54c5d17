"""cpsat_run: a failure inside OR-Tools is "no answer", and the planner goes
on with its fallbacks instead of stopping."""

from __future__ import annotations

import warnings

import pytest
from ortools.sat.python import cp_model

import jax
import numpy as np

import olla_jax
from olla_jax.solve import cpsat_run
from small_steps import mlp_args, mlp_step


def _model():
    m = cp_model.CpModel()
    x = m.new_int_var(0, 10, "x")
    m.add(x >= 3)
    m.minimize(x)
    return m, x


def test_solve_sets_its_limits_and_answers():
    m, x = _model()
    solver, status = cpsat_run.solve(m, 0.0, workers=0, seed=3, cp_model_probing_level=0)
    assert status == cp_model.OPTIMAL and solver.value(x) == 3
    assert solver.parameters.max_time_in_seconds == pytest.approx(0.01)
    assert solver.parameters.num_workers == 1 and solver.parameters.random_seed == 3
    assert solver.parameters.cp_model_probing_level == 0


def _failing(monkeypatch):
    calls = []

    def fail(self, model, *args, **kwargs):
        calls.append(model)
        raise IndexError("absl::btree_map::at")   # what OR-Tools 9.15 raised in a window
    monkeypatch.setattr(cp_model.CpSolver, "solve", fail)
    return calls


def test_a_solver_failure_is_no_answer(monkeypatch):
    _failing(monkeypatch)
    _, status = cpsat_run.solve(_model()[0], 1.0)
    assert status == cp_model.UNKNOWN


def test_the_planner_survives_cpsat_failing_everywhere(monkeypatch):
    args = mlp_args(0)
    calls = _failing(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # not "the solver failed; XLA's plan kept"
        plan = olla_jax.plan(mlp_step, *args, time_limit_s=3.0, engine="cpsat")
    assert calls, "the planner never reached CP-SAT: the test tests nothing"
    assert not any("fail" in n for n in plan.notes), plan.notes
    got, want = plan.compiled(*args), jax.jit(mlp_step)(*args)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
