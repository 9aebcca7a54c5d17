"""Reliability: every way ``olla_jax.plan`` can be misused or fail gives a clear
error with a remedy, or a fallback to XLA's executable with a ``PlanWarning``
and a note; never a crashed process or a stray internal exception.

Tests marked ``xfail(strict=True)`` document bugs found here (see their reason).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import olla_jax
from _fuzz import bit_identical, fresh
from olla_jax import check
from olla_jax.apply import cpu_rewrite, executable, load, verify
from olla_jax.graph import layout as layout_lib
from olla_jax.solve import list_schedule
from olla_jax.solve import order as order_lib
from olla_jax.solve import place_greedy
from olla_jax.solve import place as place_lib
from olla_jax.solve.problem import check_topological
from small_steps import mlp_args, mlp_step as _step


# ---------------------------------------------------------------------------
# a small step that olla_jax improves and verifies (the whole pipeline runs)


@pytest.fixture(scope="module")
def step():
    args = mlp_args(0)
    expected = jax.jit(_step)(*args)
    return args, expected


@pytest.fixture(scope="module")
def baseline(step):
    """The unpatched plan: the pipeline must reach the rewrite for the
    failure-injection tests below to mean anything."""
    args, expected = step
    with warnings.catch_warnings():
        warnings.simplefilter("error", olla_jax.PlanWarning)
        plan = olla_jax.plan(_step, *args, time_limit_s=1.0)
    assert plan.verified and plan.source == "olla_jax", plan.notes
    assert bit_identical(plan.compiled(*args), expected) == ""
    return plan


def _executable(c):
    return getattr(c, "executable", c)


def _plan_falls_back(args, expected, match: str, **kw):
    """plan() warns, notes why, and its callable gives XLA's outputs."""
    with pytest.warns(olla_jax.PlanWarning) as record:
        plan = olla_jax.plan(_step, *args, time_limit_s=1.0, **kw)
    assert not plan.verified
    assert plan.notes, "a fallback must say why"
    assert any(match in n for n in plan.notes), plan.notes
    assert any(match in str(w.message) for w in record), [str(w.message) for w in record]
    assert plan.source == "xla" or "XLA's executable kept" in " ".join(plan.notes)
    assert bit_identical(plan.compiled(*args), expected) == ""
    assert _executable(plan.compiled) is _executable(plan.xla_compiled)
    return plan


# ---------------------------------------------------------------------------
# arguments and functions


def test_string_argument_names_its_path_and_static_argnums():
    with pytest.raises(olla_jax.CaptureError, match=r"\[1\].*str.*static_argnums"):
        olla_jax.plan(lambda x, s: x * 2, jnp.ones(4), "hello")


def test_python_object_in_a_pytree_names_its_path():
    with pytest.raises(olla_jax.CaptureError, match=r"\[0\]\['cfg'\].*object.*static_argnums"):
        olla_jax.plan(lambda d: d["x"] * 2, {"x": jnp.ones(4), "cfg": object()})


def test_static_string_argument_is_accepted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(lambda x, s: x * len(s), jnp.ones(4), "abc", static_argnums=(1,),
                             time_limit_s=0.5)
    out = plan.compiled(jnp.ones(4), "abc")   # called like the function, static argument included
    assert np.array_equal(np.asarray(out), np.full(4, 3.0, np.float32))


def test_bad_argument_path_counts_static_arguments():
    with pytest.raises(olla_jax.CaptureError, match=r"leaf \[2\]"):
        olla_jax.plan(lambda n, x, s: x * n, 3, jnp.ones(4), "s", static_argnums=(0,))


def test_function_that_cannot_be_traced():
    def branchy(x):
        return x if x.sum() > 0 else -x   # Python control flow on a traced value

    with pytest.raises(olla_jax.CaptureError, match="trace") as info:
        olla_jax.plan(branchy, jnp.ones(4))
    assert isinstance(info.value.__cause__, jax.errors.ConcretizationTypeError)


def test_function_that_raises_keeps_the_users_error():
    def broken(x):
        raise ZeroDivisionError("user bug")

    with pytest.raises(olla_jax.CaptureError, match="user bug") as info:
        olla_jax.plan(broken, jnp.ones(4))
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert isinstance(info.value, ZeroDivisionError)   # `except ZeroDivisionError` catches it


class _StepError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")
        self.code = code


@pytest.mark.parametrize("error", [ValueError("bad batch"), KeyError("missing"),
                                   FileNotFoundError(2, "no such file"), _StepError(7, "odd"),
                                   MemoryError("out"), RuntimeError("a CaptureError's base"),
                                   Exception("plain")])
def test_the_steps_own_exception_type_catches_what_plan_raises(error):
    """A user who catches their own exception type around olla_jax.plan still
    catches it (as around jax.jit), with olla_jax's context (the user's line) in
    the message and the attributes of their exception kept."""
    def step(x):
        raise error

    with pytest.raises(type(error)) as info:
        olla_jax.plan(step, jnp.ones(4), time_limit_s=1)
    assert isinstance(info.value, olla_jax.CaptureError) and info.value.__cause__ is error
    assert "jax could not trace/lower the step" in str(info.value)
    assert f"in step)" in str(info.value) and str(error) in str(info.value)
    if isinstance(error, _StepError):
        assert info.value.code == 7
    assert not getattr(info.value, "__notes__", None)   # the notes jax adds stay on the cause
    with pytest.raises(type(error)):
        jax.jit(step)(jnp.ones(4))     # where jax.jit raises the same type


def test_jitted_function_with_argnums_says_where_they_go():
    with pytest.raises(olla_jax.CaptureError, match="jax.jit"):
        olla_jax.plan(jax.jit(lambda x: x * 2), jnp.ones(4), donate_argnums=(0,))


# ---------------------------------------------------------------------------
# backends


def _no_tpu() -> bool:
    try:
        return not jax.devices("tpu")
    except RuntimeError:
        return True


@pytest.mark.skipif(not _no_tpu(), reason="this machine has a TPU")
def test_tpu_without_a_tpu():
    with pytest.raises(olla_jax.CaptureError, match="(?i)tpu"):
        olla_jax.plan(lambda x: x * 2, jnp.ones(4), backend="tpu")


def test_unknown_gpu_target_lists_the_known_ones():
    with pytest.raises(olla_jax.CaptureError, match=r"nonexistent.*h100"):
        olla_jax.plan(lambda x: x * 2, jnp.ones(4), backend="gpu:nonexistent")


@pytest.mark.parametrize("backend", ["foo", "GPU", "cpu:0", ""])
def test_unknown_backend_says_what_exists(backend):
    with pytest.raises(olla_jax.CaptureError, match="'cpu'"):
        olla_jax.plan(lambda x: x * 2, jnp.ones(4), backend=backend)


def test_backend_none_is_a_capture_error():
    with pytest.raises(olla_jax.CaptureError):
        olla_jax.plan(lambda x: x * 2, jnp.ones(4), backend=None)


# ---------------------------------------------------------------------------
# saved plans


def _valid_json(**changes) -> str:
    data = {"format": "olla_jax.plan", "version": 1, "fingerprint": "0" * 64, "backend": "cpu",
            "xla_scheduler": "default", "order": [], "places": {}, "allocation_sizes": {},
            "figures": {}, "engine": "list", "notes": []}
    data.update(changes)
    return json.dumps(data)


def test_load_plan_missing_file(tmp_path):
    with pytest.raises(olla_jax.PlanFileError, match="cannot read"):
        olla_jax.load_plan(tmp_path / "nope.json")


def test_load_plan_directory(tmp_path):
    with pytest.raises(olla_jax.PlanFileError, match="cannot read"):
        olla_jax.load_plan(tmp_path)


@pytest.mark.parametrize("text,match", [
    ("{not json", "invalid JSON"),
    ("", "invalid JSON"),
    ("[1, 2]", "not an olla_jax plan file"),
    (json.dumps({"format": "something else", "version": 1}), "not an olla_jax plan file"),
    (_valid_json(version=2), "version 2"),
    (_valid_json(version=None), "version None"),
    (json.dumps({"format": "olla_jax.plan", "version": 1}), "damaged"),
    (_valid_json(places={"1": [5]}), "damaged"),
    (_valid_json(places={"x": [0, 0]}), "damaged"),
    (_valid_json(order=None), "damaged"),
])
def test_load_plan_damaged(tmp_path, text, match):
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(olla_jax.PlanFileError, match=match) as info:
        olla_jax.load_plan(path)
    assert "plan" in str(info.value)


def test_load_plan_binary_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(olla_jax.PlanFileError):
        olla_jax.load_plan(path)


@pytest.mark.parametrize("field", ["places", "allocation_sizes"])
def test_load_plan_field_of_the_wrong_type(tmp_path, field):
    path = tmp_path / "plan.json"
    path.write_text(_valid_json(**{field: [[1, 2]]}))
    with pytest.raises(olla_jax.PlanFileError, match="damaged"):
        olla_jax.load_plan(path)


@pytest.fixture(scope="module")
def saved_path(baseline, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "step.json"
    baseline.save(path)
    return path


def test_saved_plan_round_trip(step, saved_path):
    args, expected = step
    plan = olla_jax.plan(_step, *args, saved=olla_jax.load_plan(saved_path))
    assert plan.verified
    assert bit_identical(plan.compiled(*args), expected) == ""


def test_saved_plan_for_another_program(saved_path):
    saved = olla_jax.load_plan(saved_path)
    with pytest.raises(olla_jax.PlanFileError, match="another program"):
        olla_jax.plan(lambda x: jnp.sin(x) @ x.T, jnp.ones((8, 8)), saved=saved)


def test_saved_plan_for_other_shapes(step, saved_path):
    (p, x, y), _ = step
    with pytest.raises(olla_jax.PlanFileError, match="another program"):
        olla_jax.plan(_step, p, x[:8], y[:8], saved=olla_jax.load_plan(saved_path))


def test_saved_plan_with_overlapping_places_is_refused(step, saved_path):
    """Damage that keeps the fingerprint: the checker refuses, XLA's plan is kept."""
    args, expected = step
    saved = olla_jax.load_plan(saved_path)
    damaged = dataclasses.replace(saved, places={v: (a, 0) for v, (a, o) in saved.places.items()})
    _plan_falls_back(args, expected, "checker rejected", saved=damaged)


def test_saved_plan_with_a_broken_order_is_refused(step, saved_path):
    args, expected = step
    saved = olla_jax.load_plan(saved_path)
    _plan_falls_back(args, expected, "checker rejected",
                     saved=dataclasses.replace(saved, order=saved.order[::-1]))
    _plan_falls_back(args, expected, "checker rejected",
                     saved=dataclasses.replace(saved, order=saved.order[:-1]))


def test_saved_plan_naming_an_unknown_instruction(step, saved_path):
    args, _ = step
    saved = olla_jax.load_plan(saved_path)
    damaged = dataclasses.replace(saved, order=saved.order[:-1] + ("no_such_instruction",))
    try:
        olla_jax.plan(_step, *args, saved=damaged)
    except olla_jax.PlanFileError:
        return
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"{type(err).__name__}: {err}")


def test_saved_plan_moving_values_to_an_unknown_allocation(step, saved_path):
    args, expected = step
    saved = olla_jax.load_plan(saved_path)
    damaged = dataclasses.replace(saved, places={v: (999, o) for v, (a, o) in saved.places.items()})
    _plan_falls_back(args, expected, "checker rejected", saved=damaged)


# ---------------------------------------------------------------------------
# solver failures


def test_order_solver_raises(step, baseline, monkeypatch):
    args, expected = step

    def broken(*a, **kw):
        raise RuntimeError("solver bug")

    monkeypatch.setattr(order_lib, "solve_order", broken)
    plan = _plan_falls_back(args, expected, "the solver failed (RuntimeError: solver bug)")
    assert plan.source == "xla"


def test_placement_raises(step, baseline, monkeypatch):
    args, expected = step

    def broken(*a, **kw):
        raise MemoryError("placement ran out")

    monkeypatch.setattr(place_lib, "place", broken)
    monkeypatch.setattr(place_lib, "best_fit", broken)
    # solve_graph's best-fit passes go through the greedy's model directly (one sort order at a time)
    monkeypatch.setattr(place_greedy, "best_fit_model", broken)
    plan = _plan_falls_back(args, expected, "the solver failed (MemoryError")
    assert plan.source == "xla"


@pytest.mark.parametrize("damage", ["reversed", "short", "out of range"])
def test_order_solver_returns_an_invalid_order(step, baseline, monkeypatch, damage):
    """An invalid order from the solver never reaches the executable: it is
    outplaced by a valid candidate, refused by the checker, or the solve fails."""
    args, expected = step
    real = order_lib.solve_order

    def bad(problem, **kw):
        result = real(problem, **kw)
        o = tuple(result.order)
        order = {"reversed": o[::-1], "repeated": (o[0],) * len(o), "short": o[:-1],
                 "out of range": o[:-1] + (len(o) + 3,)}[damage]
        return dataclasses.replace(result, order=order, cost=0)

    monkeypatch.setattr(order_lib, "solve_order", bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(_step, *args, time_limit_s=1.0)
    assert bit_identical(plan.compiled(*args), expected) == ""
    if plan.verified:
        check_topological(plan.graph.order_problem(), plan.layout.order)
    else:
        assert plan.notes


def test_every_candidate_order_invalid(step, baseline, monkeypatch):
    """Warm starts and the solver's result all broken: nothing invalid runs."""
    args, expected = step
    plan_mod = importlib.import_module("olla_jax.plan")   # olla_jax.plan is also the function

    monkeypatch.setattr(plan_mod, "_warm_starts", lambda graph, others: [graph.xla_order[::-1]])

    def bad(problem, *, warm_starts=(), **kw):
        return order_lib.OrderResult(tuple(warm_starts[0]), 0, "bad", 0.0, False, ())

    monkeypatch.setattr(order_lib, "solve_order", bad)
    # The list schedule's order is a candidate of its own: broken too.
    monkeypatch.setattr(list_schedule, "best_list_schedule", lambda problem, **kw:
                        types.SimpleNamespace(order=tuple(range(problem.num_nodes))[::-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(_step, *args, time_limit_s=1.0)
    assert not plan.verified and plan.notes
    assert plan.source == "xla" or "XLA's executable kept" in " ".join(plan.notes)
    assert bit_identical(plan.compiled(*args), expected) == ""


# ---------------------------------------------------------------------------
# rewrite, verification and loading failures


def test_rewrite_refuses(step, baseline, monkeypatch):
    args, expected = step

    def refuse(raw, edit):
        raise cpu_rewrite.RewriteError("injected refusal")

    monkeypatch.setattr(cpu_rewrite, "rewrite", refuse)
    _plan_falls_back(args, expected, "injected refusal")


def test_unexpected_rewrite_exception_falls_back(step, baseline, monkeypatch):
    args, expected = step

    def buggy(raw, edit):
        raise KeyError("internal bug")

    monkeypatch.setattr(cpu_rewrite, "rewrite", buggy)
    _plan_falls_back(args, expected, "internal bug")


def test_overlapping_placement_is_caught_by_verification(step, baseline, monkeypatch):
    """The checker is switched off and every moved value is put at offset 0:
    the child process sees different outputs, the plan falls back, and this
    process survives."""
    args, expected = step
    real_realize = layout_lib.realize

    def overlapping(graph, order, placement, movable):
        layout = real_realize(graph, order, placement, movable)
        return dataclasses.replace(layout, places={v: (a, 0) for v, (a, o) in layout.places.items()})

    monkeypatch.setattr(layout_lib, "realize", overlapping)
    monkeypatch.setattr(check, "check_plan", lambda *a, **kw: None)
    _plan_falls_back(args, expected, "did not match XLA's")


def test_candidate_that_does_not_load(step, baseline, monkeypatch):
    """Rewritten bytes that are not an executable: refused before loading here."""
    args, expected = step
    monkeypatch.setattr(cpu_rewrite, "rewrite", lambda raw, edit: raw[: len(raw) // 2])
    _plan_falls_back(args, expected, "does not load")


def test_verification_child_crash_is_contained(baseline):
    """A candidate whose bytes decode but whose thunks point far outside their
    buffers: whatever the child does (abort, segfault, wrong bytes), this
    process gets a Verification back."""
    raw = baseline.capture.executable
    decoded = executable.decode(raw)
    temp = baseline.graph.temp_allocation
    for use_alloc in decoded.buffer_assignment.buffer_allocations:
        if use_alloc.index == temp:
            use_alloc.size = 64
    bad = executable.encode(decoded)
    result = verify.verify_executable(bad, raw, trials=2, timeout_s=120)
    assert not result.ok and result.reason


# ---------------------------------------------------------------------------
# executable layouts this jaxlib does not match


@pytest.fixture(scope="module")
def raw_executable(baseline) -> bytes:
    return baseline.capture.executable


@pytest.mark.parametrize("damage", ["empty", "half", "one byte", "junk appended", "zeros",
                                    "length prefix too long", "random"])
def test_decode_corrupt_bytes(raw_executable, damage):
    raw = raw_executable
    bad = {"empty": b"", "half": raw[: len(raw) // 2], "one byte": raw[:1],
           "junk appended": raw + b"\x07junk", "zeros": bytes(len(raw)),
           "length prefix too long": b"\xff\xff\xff\xff\x0f" + raw[5:],
           "random": random.Random(0).randbytes(4096)}[damage]
    with pytest.raises(executable.LayoutError, match="not a serialized XLA:CPU executable"):
        executable.decode(bad)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_decode_mutated_bytes(raw_executable, data):
    """Any flip, cut or insertion: a DecodedExecutable or a LayoutError, nothing else."""
    raw = bytearray(raw_executable)
    where = data.draw(st.integers(0, len(raw) - 1))
    kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
    if kind == "flip":
        raw[where] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "cut":
        raw = raw[:where]
    elif kind == "insert":
        raw[where:where] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        del raw[where:where + data.draw(st.integers(1, 16))]
    try:
        executable.decode(bytes(raw))
    except executable.LayoutError:
        pass


def test_load_refuses_corrupt_bytes(baseline, raw_executable):
    with pytest.raises(executable.LayoutError):
        load.load_compiled(baseline.capture.compiled, raw_executable[:100])


def test_verify_with_a_corrupt_reference(raw_executable):
    result = verify.verify_executable(raw_executable, b"\x00garbage", trials=2)
    assert not result.ok and "reference is not usable" in result.reason
