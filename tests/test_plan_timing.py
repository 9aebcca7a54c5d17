"""Plan's three clocks (olla_jax/plan.py, result.py): XLA's compiles, the
planner's part (which time_limit_s bounds) and the verification after it."""

from __future__ import annotations

import importlib
import json
import time
import warnings

import pytest

import olla_jax
from olla_jax import saved as saved_lib
from tests.small_steps import mlp_args, mlp_step

plan_mod = importlib.import_module("olla_jax.plan")
SLOW_COMPILE_S = 1.0


@pytest.fixture
def slow_compiles(monkeypatch):
    """XLA's compiles made a known second slower."""
    real = plan_mod._baselines

    def baselines(*a, **k):
        time.sleep(SLOW_COMPILE_S)
        return real(*a, **k)
    monkeypatch.setattr(plan_mod, "_baselines", baselines)


def _plan(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=1, **kw)


def test_solve_seconds_excludes_the_compiles_when_xlas_plan_is_handed_back(slow_compiles,
                                                                           monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("solver bug")
    monkeypatch.setattr(plan_mod, "solve_graph", broken)
    p = _plan(feed_back=False)
    assert p.source == "xla" and any("solver failed" in n for n in p.notes)
    assert p.capture_seconds >= SLOW_COMPILE_S
    assert p.solve_seconds < SLOW_COMPILE_S


def test_three_clocks_reported_apart_in_the_plan_and_its_summary(slow_compiles):
    p = _plan()
    assert p.verified
    assert p.capture_seconds >= SLOW_COMPILE_S > 0
    assert 0 < p.solve_seconds < p.capture_seconds
    assert p.verify_seconds > 0
    text = p.summary()
    assert f"{p.capture_seconds:.1f} s, {p.verify_seconds:.1f} s" in text
    assert "XLA compiles, verification" in text
    figures = p.to_saved().figures
    assert figures["capture_seconds"] == p.capture_seconds
    assert figures["verify_seconds"] == p.verify_seconds
    for key in ("live_bytes", "least_live_bytes", "best_fit_bytes", "exact_placement_tried"):
        assert key in p.settings


def test_saved_plans_without_the_new_time_fields_still_load(tmp_path):
    p = _plan(feed_back=False)
    path = tmp_path / "plan.json"
    p.save(path)
    data = json.loads(path.read_text())
    for key in ("capture_seconds", "verify_seconds"):   # as a file from before they existed
        data["figures"].pop(key)
    path.write_text(json.dumps(data))
    old = olla_jax.load_plan(path)
    assert "capture_seconds" not in old.figures
    assert old.order == saved_lib.from_json(p.to_saved().to_json()).order
    assert "saved olla_jax plan" in old.summary()
    again = _plan(feed_back=False, saved=old)
    assert again.planned_temp_bytes == p.planned_temp_bytes
