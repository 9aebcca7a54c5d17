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
