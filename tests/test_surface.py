"""The user's surface: plan(), Plan.compiled, save/load, the decorator."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax


def step(params, x, scale):
    def loss(p):
        h = jnp.tanh(x @ p["w1"])
        return jnp.mean((h @ p["w2"]) ** 2) * scale
    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), loss(params)


def args(batch=32):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(k1, (64, 128)), "w2": jax.random.normal(k2, (128, 16))}
    return params, jax.random.normal(k3, (batch, 64)), 2.0


def same(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def planned():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        return olla_jax.plan(step, *args(), static_argnums=(2,), time_limit_s=2)


def test_plan_figures_and_compiled(planned):
    p = planned
    assert p.xla_temp_bytes == p.xla_best_temp_bytes <= p.xla_default_temp_bytes
    assert p.planned_temp_bytes <= p.xla_best_temp_bytes
    assert 0 <= p.lower_bound_bytes <= p.planned_temp_bytes
    assert p.achieved_temp_bytes is not None
    if p.verified:
        assert p.achieved_temp_bytes == p.planned_temp_bytes
    else:
        assert p.notes, "a plan that is not verified must say why"
    expected = jax.jit(step, static_argnums=(2,))(*args())
    assert same(p.compiled(*args()), expected)
    with pytest.raises(ValueError, match="static argument 2"):
        p.compiled(args()[0], args()[1], 3.0)
    # planned positionally, called by name: says how to call it (jax's AOT executable
    # refuses such a call too)
    params, x, scale = args()
    with pytest.raises(TypeError, match=r"got 0 and keyword argument\(s\) params, scale, x: "
                                        "call it as the step was called"):
        p.compiled(params=params, x=x, scale=scale)
    assert "olla_jax plan" in p.summary()


def test_plan_compiled_has_jax_compileds_surface(planned):
    """Plan.compiled is called like jax's Compiled; its cost_analysis(),
    as_text() and out_info raised AttributeError (memory_analysis() alone was there)."""
    import copy
    compiled = planned.compiled
    reference = jax.jit(step, static_argnums=(2,)).lower(*args()).compile()
    assert compiled.cost_analysis().keys() == reference.cost_analysis().keys()
    assert compiled.as_text().startswith("HloModule")
    assert compiled.out_info == reference.out_info
    with pytest.raises(AttributeError, match="Plan.compiled has no attribute 'no_such'"):
        compiled.no_such
    assert copy.copy(compiled).executable is compiled.executable


def _gpu_plugin():
    from olla_jax.capture import gpu
    return gpu.cuda_plugin() is not None


def test_compile_only_callable_refuses_to_run():
    from olla_jax.calls import StepCallable
    runs = StepCallable(executable=None, num_args=1, compile_only="gpu:a100")
    with pytest.raises(olla_jax.OllaJaxError, match="compile-only target 'gpu:a100'"):
        runs(np.ones(3))


@pytest.mark.slow   # a GPU compile: about 5 s
@pytest.mark.skipif(not _gpu_plugin(), reason="needs jax's CUDA plugin (pip install 'olla_jax[gpu]')")
def test_compile_only_plan_says_it_cannot_run_here():
    # Calling a compile-only target's plan raised an AttributeError from jax's
    # internals ('Executable' object has no attribute 'local_devices').
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(step, *args(), static_argnums=(2,), backend="gpu:h100",
                             time_limit_s=0.5)
    for runs in (plan.compiled, plan.xla_compiled):
        with pytest.raises(olla_jax.OllaJaxError, match="compile-only target 'gpu:h100'.*"
                           "Plan.executable_bytes") as info:
            runs(*args())
        assert isinstance(info.value, RuntimeError)


def test_save_and_load_roundtrip(planned, tmp_path):
    path = tmp_path / "plan.json"
    planned.save(path)
    saved = olla_jax.load_plan(path)
    assert saved.figures["planned_temp_bytes"] == planned.planned_temp_bytes
    assert "saved olla_jax plan" in saved.summary()
    shown = repr(saved)           # counts, not every instruction and offset
    assert len(shown) < 200 and f"{len(saved.order):,} instructions" in shown, shown
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        again = olla_jax.plan(step, *args(), static_argnums=(2,), saved=saved)
    assert again.planned_temp_bytes == planned.planned_temp_bytes
    assert same(again.compiled(*args()), planned.compiled(*args()))
    # Another program (another batch size) refuses the plan.
    with pytest.raises(olla_jax.PlanFileError, match="another program"):
        olla_jax.plan(step, *args(batch=16), static_argnums=(2,), saved=saved)


def test_plan_applied_from_a_file_says_so_and_keeps_the_search_seconds(planned, tmp_path):
    """A saved plan is applied, not searched: its summary said "solve time 0.0 s
    (limit 2.0 s)" and nothing said where the plan came from."""
    assert "saved plan" not in planned.summary() and planned.saved_from is None
    path = tmp_path / "plan.json"
    planned.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        again = olla_jax.plan(step, *args(), static_argnums=(2,), saved=olla_jax.load_plan(path))
    text = again.summary()
    assert text.splitlines()[0].endswith(", applied from a saved plan)"), text
    (row,) = [ln for ln in text.splitlines() if "engine, solve time" in ln]
    assert "no search" in row and f"{planned.solve_seconds:.1f} s (limit 2.0 s)" in row, row
    assert any(str(path) in n and "not searched here" in n for n in again.notes), again.notes
    assert again.saved_from == {"path": str(path), "searched_s": planned.solve_seconds,
                                "time_limit_s": 2.0}
    # saved again, it keeps the search's seconds, not the application's
    figures = again.to_saved().figures
    assert (figures["solve_seconds"], figures["time_limit_s"]) == (planned.solve_seconds, 2.0)


def test_save_and_plot_into_a_missing_folder_name_the_folder(planned, tmp_path):
    """Not an error about a temporary file, nor one from inside the image library."""
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=f"the folder {missing} does not exist"):
        planned.save(missing / "plan.json")
    with pytest.raises(FileNotFoundError, match=f"the folder {missing} does not exist"):
        planned.plot(missing / "step")
    assert not (tmp_path / "no").exists()


def test_load_plan_errors(tmp_path):
    with pytest.raises(olla_jax.PlanFileError, match="cannot read"):
        olla_jax.load_plan(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(olla_jax.PlanFileError, match="invalid JSON"):
        olla_jax.load_plan(bad)
    bad.write_text(json.dumps({"format": "olla_jax.plan", "version": 999}))
    with pytest.raises(olla_jax.PlanFileError, match="version"):
        olla_jax.load_plan(bad)


def test_decorator_plans_once_per_signature_and_caches_on_disk(tmp_path):
    calls = []

    @olla_jax.optimize(static_argnums=(2,), time_limit_s=1, cache=tmp_path)
    def traced(params, x, scale):
        calls.append(1)
        return step(params, x, scale)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        out1 = traced(*args())
        out2 = traced(*args())
        first = traced.plan_for(*args())
        assert same(out1, out2) and same(out1, jax.jit(step, static_argnums=(2,))(*args()))
        assert traced.plan_for(*args()) is first
        other = traced.plan_for(*args(batch=8))
        assert other is not first
        if first.verified:
            assert list(tmp_path.glob("*.json")), "a verified plan is cached on disk"
            fresh = olla_jax.optimize(step, static_argnums=(2,), cache=tmp_path)
            reused = fresh.plan_for(*args())
            assert reused.engine == first.engine
            assert reused.planned_temp_bytes == first.planned_temp_bytes


def test_decorator_falls_back_with_one_warning(monkeypatch, tmp_path):
    import olla_jax.decorator as deco

    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(deco, "plan_step", broken)
    f = olla_jax.optimize(step, static_argnums=(2,), cache=False)
    with pytest.warns(olla_jax.PlanWarning, match="boom") as record:
        out = f(*args())
        f(*args(batch=8))
    assert len(record) == 1
    assert same(out, jax.jit(step, static_argnums=(2,))(*args()))


def test_over_jax_jit():
    jitted = jax.jit(lambda x: jnp.sin(x) * 2)
    f = olla_jax.optimize(jitted, cache=False, time_limit_s=2)
    x = jnp.arange(8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        assert same(f(x), jitted(x))


def test_place_standalone():
    buffers = [(0, 4, 100), (2, 6, 200), (5, 9, 100), (0, 9, 64)]
    placement = olla_jax.place(buffers)
    spans = [(lo, hi, size, off) for (lo, hi, size), off in zip(buffers, placement.offset)]
    for i, (l1, h1, s1, o1) in enumerate(spans):
        for l2, h2, s2, o2 in spans[i + 1:]:
            if l1 < h2 and l2 < h1:
                assert o1 + s1 <= o2 or o2 + s2 <= o1
    assert placement.arena_size >= 364  # buffers 0, 1 and 3 are live together
    with pytest.raises(ValueError, match="capacity"):
        olla_jax.place(buffers, capacity=100)
    with pytest.raises(ValueError, match="lower < upper"):
        olla_jax.place([(3, 3, 8)])


@pytest.mark.parametrize("buffers, options, error, match", [
    ([(0, 4, 100.5)], {}, ValueError, "whole numbers"),       # was placed as 100 bytes
    ([(0.5, 4, 100)], {}, ValueError, "whole numbers"),
    ([(0, 4, 100)], dict(alignment=2.5), ValueError, "alignment"),   # gave float offsets
    ([(0, 4, 100)], dict(alignment="8"), ValueError, "alignment"),   # a raw TypeError
    ([(0, 4, 100)], dict(time_limit_s=0), ValueError, "time_limit_s"),   # ran
    ([(0, 4, 100)], dict(time_limit_s=-1), ValueError, "time_limit_s"),
    ([(0, 4, 100)], dict(time_limit_s=None), TypeError, "time_limit_s"),  # a raw TypeError
])
def test_place_refuses_what_it_cannot_place(buffers, options, error, match):
    with pytest.raises(error, match=match):
        olla_jax.place(buffers, **options)
    whole = olla_jax.place([(0, 4, 1e2), (np.int64(2), 6, 8)], alignment=8.0)
    assert whole.arena_size == 108 and all(o % 8 == 0 and type(o) is int for o in whole.offset)
