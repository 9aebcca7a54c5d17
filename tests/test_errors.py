"""One error hierarchy: every error olla_jax defines is an ``olla_jax.OllaJaxError``
and keeps its builtin base, so ``except ValueError`` code keeps working."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import jax.numpy as jnp

import olla_jax
from olla_jax.errors import OllaJaxError

# Modules run as programs (importing them runs them) are left out.
_PROGRAMS = {"olla_jax.__main__", "olla_jax.apply.child"}


def _public_errors() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(olla_jax.__path__, "olla_jax."):
        if info.name in _PROGRAMS:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and not issubclass(obj, Warning) and not name.startswith("_")
                    and obj.__module__.startswith("olla_jax")):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_public_error_is_an_olla_jax_error():
    errors = _public_errors()
    # the discovery itself must see the errors (a walk that found nothing proves nothing)
    assert "olla_jax.capture.record.CaptureError" in errors
    assert "olla_jax.saved.PlanFileError" in errors
    outside = sorted(name for name, cls in errors.items()
                     if not issubclass(cls, OllaJaxError))
    assert not outside, f"errors that do not subclass olla_jax.OllaJaxError: {outside}"


@pytest.mark.parametrize("name, builtin", [
    ("CaptureError", RuntimeError), ("PlanFileError", ValueError), ("BudgetNotMet", ValueError)])
def test_public_errors_keep_their_builtin_base(name, builtin):
    cls = getattr(olla_jax, name)
    assert issubclass(cls, OllaJaxError) and issubclass(cls, builtin)
    assert olla_jax.OllaJaxError is OllaJaxError


def test_twin_names_are_distinct_with_old_names_kept():
    from olla_jax.apply import executable
    from olla_jax.capture import gpu
    from olla_jax.graph import layout

    assert gpu.CaptureError is gpu.GpuCaptureError
    assert issubclass(gpu.GpuCaptureError, olla_jax.CaptureError)
    assert executable.LayoutError is executable.ExecutableFormatError
    assert executable.ExecutableFormatError is not layout.LayoutError
    with pytest.raises(OllaJaxError, match="not a serialized XLA:CPU executable"):
        executable.decode(b"not an executable")


def test_budget_not_met_states_a_small_budget_readably():
    """A few-KiB budget of a small step is said in KiB, not as '0.00 MiB'; why
    recomputation stopped is in the error, not given once more as a warning."""
    import warnings
    step = lambda w, x: jnp.tanh(x @ w).sum()   # noqa: E731
    with warnings.catch_warnings(record=True) as said, \
            pytest.raises(olla_jax.BudgetNotMet) as err:
        warnings.simplefilter("always")
        olla_jax.plan(step, jnp.ones((32, 32)), jnp.ones((16, 32)), memory_budget=3000,
                      time_limit_s=1, verify_trials=2)
    first = str(err.value).splitlines()[0]
    assert "over the budget of 2.9 KiB" in first, first
    assert "0.00 MiB" not in first
    assert "olla_jax recomputation: arguments and outputs alone take" in first, first
    assert not [w for w in said if issubclass(w.category, olla_jax.PlanWarning)], \
        [str(w.message) for w in said]


@pytest.mark.filterwarnings("ignore::olla_jax.PlanWarning")
@pytest.mark.parametrize("donate, advised", [((), True), ((0,), False)])
def test_budget_not_met_suggests_donation_only_where_it_could_help(donate, advised):
    """A step whose weights are donated already is not told to donate arguments."""
    import jax

    def step(w, x):
        loss, grad = jax.value_and_grad(lambda w: jnp.tanh(x @ w).sum())(w)
        return w - 0.1 * grad, loss

    with pytest.raises(olla_jax.BudgetNotMet) as err:
        olla_jax.plan(step, jnp.ones((128, 128)), jnp.ones((16, 128)), donate_argnums=donate,
                      memory_budget=3000, time_limit_s=1, feed_back=False)
    first = str(err.value).splitlines()[0]
    assert ("donate arguments" in first) is advised, first
    if advised:
        assert "at most 64.0 KiB more" in first, first


@pytest.mark.filterwarnings("ignore::olla_jax.PlanWarning")
def test_budget_not_met_names_the_users_line_of_each_buffer_at_the_peak():
    """The largest buffers at the peak carry the op and the line that made them."""
    import jax

    def step(w, x):
        loss, grad = jax.value_and_grad(lambda w: jnp.tanh(x @ w).sum())(w)
        return w - 0.1 * grad, loss

    with pytest.raises(olla_jax.BudgetNotMet) as err:
        olla_jax.plan(step, jnp.ones((128, 128)), jnp.ones((16, 128)), memory_budget=3000,
                      time_limit_s=1, feed_back=False)
    buffers = [line for line in str(err.value).split("the largest:\n", 1)[1].splitlines()
               if "why it stays:" not in line]
    assert buffers and all("test_errors.py:" in line for line in buffers), buffers


@pytest.mark.filterwarnings("ignore::olla_jax.PlanWarning")
def test_budget_not_met_says_why_recomputation_left_the_peak():
    """The message says what the arena holds at its peak and why none of it was
    recomputed (budget.held_at_peak), in KiB for a small step."""
    step = lambda w, x: jnp.tanh(x @ w).sum()   # noqa: E731
    with pytest.raises(olla_jax.BudgetNotMet) as err:
        olla_jax.plan(step, jnp.ones((32, 32)), jnp.ones((16, 32)), memory_budget=3000,
                      time_limit_s=1, feed_back=False)
    why = [line for line in str(err.value).splitlines() if "why it stays:" in line]
    assert len(why) == 1 and "KiB" in why[0] and "0.00 MiB" not in why[0], why


@pytest.mark.filterwarnings("ignore::olla_jax.PlanWarning")
def test_budget_not_met_without_recomputation_says_it_may_recompute():
    step = lambda w, x: jnp.tanh(x @ w).sum()   # noqa: E731
    with pytest.raises(olla_jax.BudgetNotMet) as err:
        olla_jax.plan(step, jnp.ones((32, 32)), jnp.ones((16, 32)), memory_budget=1000,
                      recompute=False, time_limit_s=1, feed_back=False)
    assert "recompute=True" in str(err.value).splitlines()[0]


def test_jit_missed_budget_warning_gives_the_same_advice():
    """olla_jax.jit's warning for a missed budget: no donation advice for donated
    weights, recomputation suggested where it was switched off."""
    import jax

    def step(w, x):
        loss, grad = jax.value_and_grad(lambda w: jnp.tanh(x @ w).sum())(w)
        return w - 0.1 * grad, loss

    f = olla_jax.jit(step, donate_argnums=(0,), memory_budget=3000, recompute=False,
                     time_limit_s=1, feed_back=False, cache=False)
    with pytest.warns(olla_jax.PlanWarning, match="memory_budget of 2.9 KiB not met") as got:
        f(jnp.ones((128, 128)), jnp.ones((16, 128)))
    text = " ".join(str(w.message) for w in got if "memory_budget" in str(w.message))
    assert "recompute=True" in text and "donate arguments" not in text, text


@pytest.mark.filterwarnings("ignore::olla_jax.PlanWarning")
def test_budget_not_met_says_the_working_set_once_and_names_one_peak():
    """Recomputation's note gave the working set (in MiB: "0.00 MiB" for 4 KiB)
    and the message gave it again; the peak was named three ways (the working
    set's instruction, the breakdown's first peak step, held_at_peak's step).
    Now: the working set once, said not to be the plan's peak, and the
    breakdown at held_at_peak's instruction."""
    import re
    from small_steps import mlp_args, mlp_step
    with pytest.raises(olla_jax.BudgetNotMet) as err:   # above arguments and outputs,
        olla_jax.plan(mlp_step, *mlp_args(0), memory_budget=25_000, time_limit_s=2)  # below
    text = str(err.value)                                                  # the working set
    assert text.count("of temp for its operands and results") == 1, text
    assert "not where this plan peaks" in text and "0.00 MiB" not in text, text
    (peak,) = [ln for ln in text.splitlines() if "the plan's temp peak at step" in ln]
    (why,) = [ln for ln in text.splitlines() if "why it stays:" in ln]
    assert re.search(r"peak at step \d+ of \d+ \((\S+)\)", peak)[1] == \
        re.search(r"peak at (\S+) \(", why)[1], (peak, why)
    # the note itself (what olla_jax.jit's warning quotes) keeps the fact, in KiB
    assert any("alone needs 4.0 KiB of temp" in r for r in err.value.reasons), err.value.reasons
