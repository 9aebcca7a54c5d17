"""largest_batch: the largest batch that fits, per planner, checked against direct compiles."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import examples
import olla_jax
from olla_jax import batch as batch_lib
from olla_jax.capture import capture
from tests.small_steps import make_batch_mlp as make_mlp

REPO = Path(__file__).resolve().parents[1]


def xla_total(batch: int) -> int:
    """XLA's best plan at ``batch``, compiled here without the search: least temp of both
    XLA:CPU schedulers."""
    fn, args = make_mlp(batch)
    caps = [capture(fn, *args, scheduler=s) for s in ("default", "memory")]
    return min(caps, key=lambda c: c.memory.temp).memory.total


@pytest.fixture(scope="module")
def capacity() -> int:
    return xla_total(24)


@pytest.fixture(scope="module")
def report(capacity):
    return olla_jax.largest_batch(make_mlp, capacity_bytes=capacity, modes=("xla", "olla"),
                                  time_limit_s=1.0)


def test_xla_answer_matches_direct_compiles(report, capacity):
    answer = report.largest("xla")
    assert answer is not None and answer >= 24
    assert xla_total(answer) <= capacity
    probe = report.probe("xla", answer)
    assert probe is not None and probe.fits and probe.total_bytes == xla_total(answer)
    # Bisection ends next to a failure: the search saw answer + 1, and it does not fit.
    above = report.probe("xla", answer + 1)
    assert above is not None and not above.fits
    assert xla_total(answer + 1) > capacity == report.capacity_bytes
    assert report.result("xla").smallest_failing == answer + 1


def test_olla_fits_at_least_xla_s_batch(report):
    assert report.largest("olla") >= report.largest("xla")
    olla_probe = report.probe("olla", report.largest("olla"))
    assert olla_probe.fits and olla_probe.total_bytes <= report.capacity_bytes
    table = report.summary()
    assert table == report.table()   # the first name, kept
    assert "| xla |" in table and "| olla |" in table and "vs xla" in table
    ratio = report.largest("olla") / report.largest("xla")
    assert f"{ratio:.2f}x" in table
    assert len(report.probes_table().splitlines()) == len(report.probes) + 2


def test_probes_table_keeps_each_note_in_a_cell():
    # The notes (verified, step time) came after the row's last cell, where
    # rendered markdown drops them.
    report = batch_lib.BatchReport(
        backend="cpu", capacity_bytes=2**24, device_memory_bytes=None, reserve_bytes=None,
        results=(), probes=(batch_lib.Probe("recompute", 8, 2**20, True, 1.0, "verified | timed"),
                            batch_lib.Probe("xla", 4, None, False, 0.5)))
    header, rule, *rows = report.probes_table().splitlines()
    def cells(line):
        return re.split(r"(?<!\\)\|", line)[1:-1]
    assert len(cells(rule)) == len(cells(header)) and cells(header)[-1].strip() == "note"
    assert [len(cells(r)) for r in rows] == [len(cells(header))] * 2, rows
    assert cells(rows[0])[-1].strip() == "verified \\| timed" and rows[1].endswith("|  |")


def test_report_has_summary_as_plan_and_donation_advice_do():
    report = batch_lib.BatchReport(
        backend="cpu", capacity_bytes=2**24, device_memory_bytes=None, reserve_bytes=None,
        results=(batch_lib.ModeResult("xla", 8, 2**23, 9), batch_lib.ModeResult("olla", 12, 2**23, 13)),
        probes=())
    assert all(callable(getattr(kind, "summary", None))
               for kind in (olla_jax.Plan, olla_jax.DonationAdvice, batch_lib.BatchReport))
    assert "| olla | 12 |" in report.summary() and "1.50x" in report.summary()
    assert report.table() == report.summary()


def test_high_bounds_the_search(capacity):
    r = olla_jax.largest_batch(make_mlp, capacity_bytes=capacity, modes=("xla",), high=6)
    assert r.largest("xla") == 6 and "high=6" in r.result("xla").note
    assert max(p.batch for p in r.probes) == 6


def test_nothing_fits(capacity):
    r = olla_jax.largest_batch(make_mlp, capacity_bytes=xla_total(1) - 1, modes=("xla",))
    assert r.largest("xla") is None and [p.batch for p in r.probes] == [1, 1]   # quick, full


def test_cpu_needs_a_capacity_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="capacity_bytes is required"):
        olla_jax.largest_batch(make_mlp)
    with pytest.raises(ValueError, match="unknown modes"):
        olla_jax.largest_batch(make_mlp, capacity_bytes=10**6, modes=("xla", "fast"))
    with pytest.raises(ValueError, match="not both"):
        olla_jax.largest_batch(make_mlp, capacity_bytes=10**6, reserve_bytes=1)
    # a list of batches was a raw TypeError (dict() of it); "xla" was modes x, l and a
    with pytest.raises(ValueError, match="hints maps a mode"):
        olla_jax.largest_batch(make_mlp, capacity_bytes=10**6, hints=[8, 16])
    with pytest.raises(ValueError, match=r"unknown modes \['fast'\]"):
        olla_jax.largest_batch(make_mlp, capacity_bytes=10**6, modes="fast")


def test_a_step_that_ignores_the_batch_is_reported():
    with pytest.raises(ValueError, match="use its batch size"):
        olla_jax.largest_batch(lambda b: make_mlp(8), capacity_bytes=10**9, modes=("xla",))


def test_gpu_capacity_from_the_device_description(monkeypatch):
    text = (REPO / "olla_jax/capture/targets/h100.txtpb").read_text()
    memory = int(re.search(r"device_memory_size:\s*(\d+)", text).group(1))
    for var in batch_lib._FRACTION_VARS:
        monkeypatch.delenv(var, raising=False)
    capacity, read, reserve = batch_lib.device_capacity("gpu:h100")
    assert read == memory and reserve == memory - int(memory * 0.75)
    assert capacity == memory - reserve
    assert batch_lib.device_capacity("gpu:h100", reserve_bytes=2**30)[0] == memory - 2**30
    # a size as every other size is given, and zero
    assert batch_lib.device_capacity("gpu:h100", reserve_bytes="1GiB")[0] == memory - 2**30
    assert batch_lib.device_capacity("gpu:h100", reserve_bytes="0")[0] == memory
    with pytest.raises(ValueError, match="reserve_bytes='lots'"):
        batch_lib.device_capacity("gpu:h100", reserve_bytes="lots")
    monkeypatch.setenv("XLA_CLIENT_MEM_FRACTION", "0.5")
    assert batch_lib.device_capacity("gpu:h100")[0] == int(memory * 0.5)


def test_recompute_mode_is_skipped_with_a_note_when_unavailable(monkeypatch, capacity):
    def unavailable():
        raise batch_lib._Skip("no memory budgets here")
    monkeypatch.setattr(batch_lib, "_recompute_support", unavailable)
    r = olla_jax.largest_batch(make_mlp, capacity_bytes=capacity, modes=("xla", "recompute"),
                               high=4)
    assert r.largest("recompute") is None and "skipped" in r.result("recompute").note
    assert r.largest("xla") == 4


def test_examples_make_overrides_only_the_batch():
    base = examples.get("mlp", "tiny")
    step = examples.make("mlp", "tiny", 3)
    assert step.args[2]["x"].shape[0] == 3 and base.args[2]["x"].shape[0] != 3
    assert jax.tree.map(jnp.shape, step.args[0]) == jax.tree.map(jnp.shape, base.args[0])
    with pytest.raises(ValueError, match="positive"):
        examples.make("mlp", "tiny", 0)
    with pytest.raises(ValueError, match="multiple of 2"):
        examples.make("grad_accum", "tiny", 3)


def olla(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "olla_jax", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow   # ~20 s; test_cli.py runs `batch` against largest_batch by default
def test_cli_batch():
    step = examples.make("mlp", "tiny", 16)
    caps = [capture(step.fn, *step.args, scheduler=s) for s in ("default", "memory")]
    capacity = min(caps, key=lambda c: c.memory.temp).memory.total
    # The search itself is checked in-process above; from 16 to 17, two probes.
    result = olla("batch", "--example=mlp", "--size=tiny", f"--capacity={capacity}",
                  "--modes=xla", "--min_batch=16", "--max_batch=17")
    assert result.returncode == 0, result.stderr
    row = re.search(r"^\| xla \| (\d+) \|", result.stdout, re.M)
    assert row and int(row.group(1)) >= 16, result.stdout
    assert "probes (in search order)" in result.stdout
    usage = olla("batch", "--example=mlp", "--size=tiny")
    assert usage.returncode == 2 and "--capacity" in usage.stderr


def _kw_step(w, x, *, act, scale):
    return w - scale * jax.grad(lambda w: getattr(jnp, act)(x @ w).sum())(w)


def test_make_step_with_keyword_and_static_arguments_is_probed_with_them():
    """A Step's kwargs and static/donate argnames (or a (fn, args, kwargs) tuple),
    as plan and the CLI take them, reach every probe: they were dropped (the
    step then failed with "missing 1 required positional argument")."""
    import dataclasses
    from olla_jax.batch.probes import _step_of, _xla_total
    from olla_jax.capture.base import Backend

    @dataclasses.dataclass
    class Step:
        fn: object
        args: tuple
        kwargs: dict
        static_argnames: tuple = ()
        donate_argnames: tuple = ()
    w, x = jnp.ones((16, 16)), jnp.ones((4, 16))
    made = _step_of(Step(_kw_step, (w,), {"x": x, "act": "tanh", "scale": 0.5}, ("act",),
                         ("w",)), 4)
    assert made.static_argnums == () and made.donate_argnums == (0,) and len(made.args) == 3
    expected = jax.jit(_kw_step, static_argnames="act")(w, x=x, act="tanh", scale=0.5)
    assert jnp.array_equal(jax.jit(made.fn)(*made.args), expected)
    cpu = Backend.parse("cpu")
    assert _xla_total(made, cpu) > 0
    as_tuple = _step_of((_kw_step, (w, x), {"act": "tanh", "scale": 0.5}), 4)
    with pytest.raises(Exception, match="is a str, not an array.*static"):   # act not static
        _xla_total(as_tuple, cpu)
    with pytest.raises(ValueError, match="kwargs must be a dict"):
        _step_of((_kw_step, (w,), [x]), 4)


def test_a_step_that_refuses_a_size_names_the_way_to_search_in_units(capacity):
    def even_only(batch):
        if batch % 2:
            raise ValueError("the batch must be even")
        return make_mlp(batch)

    with pytest.raises(ValueError, match=r"make_step\(\d+\) failed: ValueError: the batch must "
                                         r"be even.*in units: make_step=lambda k"):
        olla_jax.largest_batch(even_only, capacity_bytes=capacity, modes=("xla",), low=2)
