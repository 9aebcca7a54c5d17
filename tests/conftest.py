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
def vit_tiny_unfed():
    """(step, plan): vit tiny planned without a budget and not fed back (order
    and placement only), shared by the budget tests that start from its graph,
    order and candidates (one plan of vit in the default run, not three)."""
    import warnings

    import examples
    import olla_jax
    step = examples.get("vit", "tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        return step, olla_jax.plan(step.fn, *step.args, static_argnums=step.static_argnums,
                                   time_limit_s=3, feed_back=False)


@pytest.fixture(scope="session")
def planned_example():
    """``planned_example(name)``: (step, plan) of the example ``name`` at size
    tiny, planned once per session (fed back and verified, 3 s, its own static
    and donated arguments, on fresh copies of its arguments) for the tests
    that start from the same plan (tests/test_plan_examples.py,
    tests/test_budget_feeder.py)."""
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
