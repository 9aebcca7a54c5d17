"""Test session set-up shared by every test file."""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# The examples package lives at the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Property tests draw the same examples on every run, so CI cannot turn red on
# a draw it never made before; OLLA_HYPOTHESIS=explore draws fresh ones.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("OLLA_HYPOTHESIS", "repeatable"))


class _RecentCaptures(dict):
    """The session's shared compiles, the ``SHARED_COMPILES`` most recent only
    (each holds an executable: the whole suite's would not fit in memory)."""

    def __getitem__(self, key):
        value = self.pop(key)     # a hit moves to the end (most recent)
        super().__setitem__(key, value)
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        while len(self) > SHARED_COMPILES:
            del self[next(iter(self))]


SHARED_COMPILES = 48


@pytest.fixture(scope="session", autouse=True)
def shared_compiles():
    """One XLA:CPU compile per module for the whole session (``capture``'s
    ``sharing_compiles``, as ``olla_jax.batch`` uses it): tests that plan or
    capture the same step with the same options (vit tiny, cnn_adam tiny,
    the small steps) compile it once, not once per test; the dumps and figures
    are XLA's own either way, except the HLO's source locations, which are
    those of the first caller: a test that compares HLO text across captures
    compiles them in a ``sharing_compiles()`` of its own (as
    test_batch_recompute_search's figures-only test does).  A context of its
    own (``sharing_compiles`` within a test, a thread, a child process)
    compiles afresh, as tests/capture/test_sharing_compiles.py checks."""
    from olla_jax.capture import record
    store = record.CompileStore(captures=_RecentCaptures())
    with record.sharing_compiles(store):
        yield store


@pytest.fixture(autouse=True)
def no_plans_of_other_tests():
    """Each test starts with an empty ``plan_memo`` (budgeted plan() calls of
    earlier tests on the same step would otherwise compete with its own)."""
    from olla_jax import plan_memo
    plan_memo.clear()
    yield
    plan_memo.clear()


@pytest.fixture(scope="session")
def planned_example():
    """``planned_example(name)``: (step, plan) of the example ``name`` at size
    tiny, planned once per session (fed back and verified, 3 s, its own static
    and donated arguments, on fresh copies of its arguments) for the tests
    that start from the same plan: vit by the budget tests (test_budget,
    test_budget_in_place, test_budget_deadline), lstm by test_plan_examples
    and test_budget_feeder."""
    import warnings

    import jax

    import examples
    import olla_jax
    plans = {}

    def planned(name: str):
        if name not in plans:
            step = examples.get(name, "tiny")
            fresh = jax.tree_util.tree_map(
                lambda x: jax.numpy.array(x, copy=True) if isinstance(x, jax.Array) else x,
                step.args)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", olla_jax.PlanWarning)
                plans[name] = step, olla_jax.plan(
                    step.fn, *fresh, static_argnums=step.static_argnums,
                    donate_argnums=step.donate_argnums, time_limit_s=3)
        return plans[name]
    return planned


@pytest.fixture(scope="session")
def vit_tiny(planned_example):
    """(graph, our order, recomputation candidates) of vit tiny's session plan,
    where the budget search's tests start (test_budget_deadline,
    test_budget_model_orders)."""
    from olla_jax import budget
    _, plan = planned_example("vit")
    graph = plan.graph
    order = plan.layout.order if plan.layout is not None else graph.xla_order
    return graph, order, budget.candidates(graph, plan.capture)
