"""What the recomputation search minimises per copy: ``recompute_cost``.

"time" (the default) is a roofline estimate from a copy's FLOPs and bytes;
"flops" is its FLOPs, bytes moved breaking ties.  On an H100 the roofline
ranks a GEMM of few FLOPs per byte at about its bytes, so a search by time
copies it before an elementwise kernel of a sixteenth of its FLOPs that moves
twice the bytes; a search by FLOPs ranks them the other way, which is what a step
judged by extra FLOPs (against XLA's rematerialization) asks for.
"""

from __future__ import annotations

import warnings

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax.budget.candidates import check_cost, copy_cost  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

S = jax.ShapeDtypeStruct


def test_flops_cost_goes_with_flops_and_bytes_only_break_ties():
    few, many = copy_cost(10**6, 8 << 20, "flops"), copy_cost(10**7, 2 << 20, "flops")
    assert few < many                                   # 10 x fewer FLOPs, 4 x the bytes
    assert copy_cost(10**6, 1 << 20, "flops") < copy_cost(10**6, 2 << 20, "flops")
    assert copy_cost(0, 1 << 20, "flops") > 0           # moving data is not free
    # time (the default): the roofline, the slower of FLOPs and bytes
    assert copy_cost(10**6, 8 << 20) > copy_cost(10**7, 2 << 20)
    assert copy_cost(10**6, 8 << 20, "time") == copy_cost(10**6, 8 << 20)


def test_an_unknown_cost_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'time', 'flops'"):
        check_cost("seconds")
    with pytest.raises(ValueError, match="recompute_cost"):
        copy_cost(1, 1, "bytes")


def test_plan_refuses_an_unknown_cost_before_compiling():
    import olla_jax
    with pytest.raises(ValueError, match="recompute_cost must be one of"):
        olla_jax.plan(lambda x: x + 1, S((4,), jnp.float32), recompute_cost="energy")


def step(x, w, p, w2):
    a = x @ w                               # a GEMM of K = 8: few FLOPs per byte
    b = p * a.sum()                         # one FLOP per element, twice the bytes read
    c = jnp.tanh((p * b.sum()) @ w2)        # the peak while a and b wait
    d = c[:, :256] * c[:, 256:512]
    return (a * d + b * d).astype(jnp.bfloat16)


ARGS = (S((2048, 8), jnp.float32), S((8, 256), jnp.float32), S((2048, 256), jnp.float32),
        S((256, 1024), jnp.float32))
VALUE = 2048 * 256 * 4      # a's and b's bytes


def _base():
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return olla_jax.plan(step, *ARGS, backend="gpu:h100", time_limit_s=2, feed_back=False)


def _gemm_and_elementwise(cands, g):
    big = [c for c in cands if g.values[c.value].size == VALUE]
    gemm = next(c for c in big if c.flops == 2 * 2048 * 256 * 8)
    elementwise = min((c for c in big if c.flops < gemm.flops / 4), key=lambda c: c.flops)
    return gemm, elementwise


@needs_plugin
def test_each_cost_ranks_the_gemm_and_the_elementwise_copy_its_own_way():
    from olla_jax import budget
    base = _base()
    g, cap = base.graph, base.capture
    gemm, elem = _gemm_and_elementwise(budget.candidates(g, cap), g)
    assert elem.cost_s > gemm.cost_s            # time: the elementwise one moves more bytes
    gemm, elem = _gemm_and_elementwise(budget.candidates(g, cap, "flops"), g)
    assert elem.cost_s < gemm.cost_s            # flops: a sixteenth of the GEMM's
    assert elem.cost_s / gemm.cost_s == pytest.approx(elem.flops / gemm.flops, rel=0.2)


@needs_plugin
def test_recompute_to_budget_hands_its_cost_to_the_candidates(monkeypatch):
    from olla_jax import budget
    from olla_jax.budget import feed_back
    base = _base()
    asked = []

    def spy(graph, capture, recompute_cost="time"):
        asked.append(recompute_cost)
        return budget.candidates(graph, capture, recompute_cost)
    monkeypatch.setattr(feed_back, "candidates", spy)
    budget_bytes = base.runs_total_bytes - VALUE // 2      # a or b must go
    got = budget.recompute_to_budget(base, budget_bytes, measure_time=False, time_limit_s=5,
                                     recompute_cost="flops")
    assert asked == ["flops"]
    assert got.runs_total_bytes <= budget_bytes, got.notes
    assert got.executable_bytes is not None               # checked, built and decoded again
    with pytest.raises(ValueError, match="recompute_cost"):
        budget.recompute_to_budget(base, budget_bytes, recompute_cost="energy")


def test_jit_takes_the_cost_and_refuses_an_unknown_one():
    """``olla_jax.jit`` passes ``recompute_cost`` on to each plan, checked when made."""
    import olla_jax
    f = olla_jax.jit(lambda x: x + 1, memory_budget=2**20, recompute_cost="flops")
    assert f._options["recompute_cost"] == "flops"
    with pytest.raises(ValueError, match="recompute_cost must be one of"):
        olla_jax.jit(lambda x: x + 1, recompute_cost="energy")


def test_the_default_cost_is_flops_on_gpu_targets_and_time_on_cpu():
    from olla_jax.budget.candidates import default_cost
    assert default_cost(None, "gpu:h100") == "flops"
    assert default_cost(None, "gpu") == "flops"
    assert default_cost(None, "cpu") == "time"
    assert default_cost("time", "gpu:h100") == "time"       # asked for: kept
    with pytest.raises(ValueError, match="recompute_cost must be one of"):
        default_cost("energy", "gpu:h100")
    import olla_jax
    assert olla_jax.jit(lambda x: x + 1)._options["recompute_cost"] is None   # plan decides


def _cost_plan_asks_for(monkeypatch, backend: str, **options) -> list[str]:
    """The ``recompute_cost`` ``olla_jax.plan`` hands the recomputation of a
    budget that order and placement miss (the recomputation itself stubbed)."""
    import olla_jax
    from olla_jax import budget, gpu_budget
    asked = []

    def ours(result, budget_bytes, *args, recompute_cost="time", **kw):
        asked.append(recompute_cost)
        return result
    monkeypatch.setattr(gpu_budget, "to_budget", ours)
    monkeypatch.setattr(budget, "recompute_to_budget", ours)
    with warnings.catch_warnings(), pytest.raises(olla_jax.BudgetNotMet):
        warnings.simplefilter("ignore")
        olla_jax.plan(step, *ARGS, backend=backend, time_limit_s=2, feed_back=False,
                      memory_budget=VALUE, **options)
    return asked


@needs_plugin
def test_plan_on_a_gpu_target_minimises_flops_unless_told(monkeypatch):
    assert _cost_plan_asks_for(monkeypatch, "gpu:h100") == ["flops"]
    assert _cost_plan_asks_for(monkeypatch, "gpu:h100", recompute_cost="time") == ["time"]


def test_plan_on_cpu_minimises_time_by_default(monkeypatch):
    assert _cost_plan_asks_for(monkeypatch, "cpu") == ["time"]
