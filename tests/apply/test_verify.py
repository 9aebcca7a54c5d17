"""Rewritten executables run in a child process, then loaded as Compiled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from apply_programs import fresh
from olla_jax.apply import child, controls, cpu_rewrite, executable, load, verify

ROOT = Path(__file__).resolve().parents[2]
from olla_jax.apply.cpu_rewrite import ExecutableEdit


def _same_outputs(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return (jax.tree.structure(a) == jax.tree.structure(b)
            and all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb)))


def test_mirrored_mlp_is_bit_identical_and_loads(programs):
    p = programs["mlp"]
    decoded = executable.decode(p.raw)
    edit = controls.mirror_edit(decoded)
    new = cpu_rewrite.rewrite(p.raw, edit)
    result = verify.verify_executable(new, p.raw, user_args=verify.executable_arguments(p.compiled, *p.args))
    assert result.ok, result.reason
    assert result.trials == 5  # the user's inputs, them perturbed, three random input sets

    compiled = load.load_compiled(p.compiled, new)
    (temp, size), = edit.allocation_sizes.items()
    assert compiled.memory_analysis().temp_size_in_bytes == size
    assert _same_outputs(compiled(*fresh(p.args)), p.compiled(*fresh(p.args)))
    # The Compiled really runs the rewritten thunks.
    back = executable.decode(executable.serialize_compiled(compiled))
    assert cpu_rewrite.slice_uses(back) == cpu_rewrite.slice_uses(executable.decode(new))


def test_mirrored_zoo_is_bit_identical(programs):
    """Sort, top-k, stateful RNG, fft, convolution, LAPACK, cond and while."""
    p = programs["zoo"]
    new = cpu_rewrite.rewrite(p.raw, controls.mirror_edit(executable.decode(p.raw)))
    result = verify.verify_executable(new, p.raw, trials=2)
    assert result.ok, result.reason


def test_shifted_scan_is_bit_identical(programs):
    """A while loop: its nested body and condition thunks move too."""
    p = programs["scan"]
    decoded = executable.decode(p.raw)
    edit = controls.shift_edit(decoded, delta=128)
    new = cpu_rewrite.rewrite(p.raw, edit)
    nested = [u for u in cpu_rewrite.slice_uses(executable.decode(new)) if u.depth > 0]
    old_nested = [u for u in cpu_rewrite.slice_uses(decoded) if u.depth > 0]
    assert nested != old_nested
    result = verify.verify_executable(new, p.raw, trials=2)
    assert result.ok, result.reason


@pytest.mark.parametrize("name", ["dus", "donate"])
def test_donating_programs_stay_donating(programs, name):
    p = programs[name]
    new = cpu_rewrite.rewrite(p.raw, controls.mirror_edit(executable.decode(p.raw)))
    result = verify.verify_executable(new, p.raw, trials=2)
    assert result.ok, result.reason
    compiled = load.load_compiled(p.compiled, new)
    args, reference_args = fresh(p.args), fresh(p.args)
    out = compiled(*args)
    assert _same_outputs(out, p.compiled(*reference_args))
    assert args[0].is_deleted(), "the donated argument was consumed"
    assert not args[1].is_deleted()


def test_swapped_instructions_are_bit_identical(programs):
    p = programs["mlp"]
    decoded = executable.decode(p.raw)
    a, b = controls.swappable_pairs(decoded)[0]
    new = cpu_rewrite.rewrite(p.raw, controls.swap_edit(decoded, a, b))
    result = verify.verify_executable(new, p.raw, trials=2)
    assert result.ok, result.reason


def test_temporary_moved_out_of_an_output_allocation(programs):
    """XLA parks the MLP's hidden activations (4096 B) at the start of w1's
    8192 B output allocation; move them to the end of the temp arena."""
    p = programs["mlp"]
    decoded = executable.decode(p.raw)
    allocs = decoded.buffer_assignment.buffer_allocations
    output = next((a for a in allocs if a.maybe_live_out and a.size == 8192), None)
    parked = [e.logical_buffer_id for e in output.assigned if e.size == 4096] if output else []
    if not parked:
        pytest.skip("XLA no longer parks the activations there")
    temp = controls.temp_allocation(decoded)
    end = -(-allocs[temp].size // 64) * 64

    def relocate(name, alloc, offset, size):
        return (temp, end + offset) if alloc == output.index and size == 4096 else (alloc, offset)

    edit = ExecutableEdit(
        order=cpu_rewrite.entry_order(decoded), relocate=relocate,
        relocate_logical=lambda b, a, o: (temp, end + o) if b in parked else (a, o),
        allocation_sizes={temp: end + 4096})
    new = cpu_rewrite.rewrite(p.raw, edit)
    result = verify.verify_executable(new, p.raw, trials=2)
    assert result.ok, result.reason


def test_overlapping_live_buffers_give_different_outputs(programs):
    """Negative control: the check must see a plan that shares live bytes."""
    p = programs["mlp"]
    new = cpu_rewrite.rewrite(p.raw, controls.overlap_edit(executable.decode(p.raw)))
    result = verify.verify_executable(new, p.raw, trials=2)
    assert not result.ok
    assert "differs" in result.reason


class _AbortOnLoad:
    """Unpickling this in the child calls os.abort(): a crash on demand."""

    def __reduce__(self):
        return os.abort, ()


def test_aborting_child_is_reported(programs):
    raw = programs["mlp"].raw
    result = verify.verify_executable(raw, raw, trials=1, user_args=[_AbortOnLoad()])
    assert not result.ok and result.trials == 0
    assert "SIGABRT" in result.reason, result.reason


def test_assignment_past_its_allocation_is_contained(programs):
    """An assignment entry past its allocation: jaxlib 0.10.2's loader fails a
    CHECK and aborts (0.11.2 returns an error); either way only the child dies."""
    decoded = executable.decode(programs["mlp"].raw)
    temp = controls.temp_allocation(decoded)
    decoded.buffer_assignment.buffer_allocations[temp].size = 64
    bad = executable.encode(decoded)
    result = verify.verify_executable(bad, programs["mlp"].raw, trials=2)
    assert not result.ok
    if executable.jaxlib_version() == "0.10.2":
        assert "SIGABRT" in result.reason and "loading candidate" in result.reason, result.reason
    else:
        assert "SIGABRT" in result.reason or "does not load" in result.reason, result.reason


def test_unloadable_and_timeouts_are_reported(programs):
    raw = programs["mlp"].raw
    result = verify.verify_executable(raw[:-200], raw, trials=2)
    assert not result.ok and result.trials == 0
    result = verify.verify_executable(raw, raw, trials=2, timeout_s=0.01)
    assert not result.ok and "timed out" in result.reason


def test_args_spec_is_checked(programs):
    p = programs["mlp"]
    spec = [jax.ShapeDtypeStruct(x.shape, x.dtype)
            for x in verify.executable_arguments(p.compiled, *p.args)]
    with pytest.raises(ValueError, match="parameters"):
        verify.verify_executable(p.raw, p.raw, spec[:-1])
    with pytest.raises(ValueError, match="takes"):
        verify.verify_executable(p.raw, p.raw, spec[::-1])


def test_fewer_than_two_input_sets_are_refused(programs):
    raw = programs["mlp"].raw
    with pytest.raises(ValueError, match="at least two input sets"):
        verify.verify_executable(raw, raw, trials=1)
    with pytest.raises(ValueError, match="at least two input sets"):
        verify.verify_executable(raw, raw, trials=-1, user_args=[])


def test_derived_inputs_perturb_floats_and_keep_integers():
    user = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.zeros(5, np.float16),
            np.array([0, 3, 7], np.int32), np.array([True, False]), np.float64(np.inf),
            np.array([1 + 2j], np.complex64), np.ones(8, ml_dtypes.bfloat16)]
    derived = child.derived_inputs(user, seed=0)
    for a, b in zip(user, derived):
        assert a.dtype == b.dtype and a.shape == b.shape
    assert np.all(derived[0] != user[0]) and np.all(derived[1] != 0)
    assert np.array_equal(derived[2], user[2]) and np.array_equal(derived[3], user[3])
    assert derived[4] == np.inf  # non-finite values are kept
    assert derived[5][0].real != 1 and derived[5][0].imag != 2
    assert np.any(derived[6] != user[6])
    assert all(np.array_equal(x, y) for x, y in zip(derived, child.derived_inputs(user, 0)))


def test_dump_options_are_stripped(programs, tmp_path):
    """A capture's executable no longer names its dump folder: loading it
    does not make XLA dump the module again."""
    from olla_jax.capture import record

    p = programs["mlp"]
    folder = tmp_path / "dumps"
    raw = record.serialize_executable(p.fn.lower(*p.args).compile(
        compiler_options={"xla_dump_to": str(folder), "xla_dump_hlo_as_text": True}))
    shutil.rmtree(folder)
    overrides = executable.decode(raw).envelope.compile_options.env_option_overrides
    assert not [k for k in overrides if k.startswith("xla_dump")]
    load.load_compiled(p.compiled, raw)
    assert not folder.exists()
    assert executable.without_dump_options(raw) == raw
    assert executable.without_dump_options(b"\x00junk") == b"\x00junk"


def test_host_callbacks_are_refused_not_crashed():
    def step(x, w):
        h = jnp.tanh(x @ w)
        jax.debug.callback(lambda v: None, h.sum())
        return jnp.tanh(h @ w).sum()

    compiled = jax.jit(step).lower(jnp.ones((8, 16)), jnp.eye(16)).compile()
    raw = executable.serialize_compiled(compiled)
    assert verify.host_callbacks(raw)
    result = verify.verify_executable(raw, raw, trials=2)
    assert not result.ok and "calls back into Python" in result.reason, result.reason


_KILLED_PARENT = r"""
import sys, time
import jax, jax.numpy as jnp
from olla_jax.apply import executable, verify

class Sleep:  # unpickling it in the child sleeps: the child is caught mid-verification
    def __reduce__(self):
        return time.sleep, (120,)

raw = executable.serialize_compiled(jax.jit(jnp.sin).lower(jnp.ones(4)).compile())
print("verifying", flush=True)
verify.verify_executable(raw, raw, trials=2, user_args=[Sleep()], timeout_s=300)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"olla_jax.apply.child" in cmdline:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_child_dies_with_its_killed_parent_and_leaves_no_inputs(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    parent = subprocess.Popen([sys.executable, "-c", _KILLED_PARENT], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        kids: list[int] = []
        while not kids and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            kids = _children(parent.pid)
        assert kids, "the verification child never started"
        time.sleep(3)  # let it import jax and start reading the request
        assert _alive(kids[0])
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 15
    while _alive(kids[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(kids[0]), "the verification child outlived its parent"
    assert not [p for p in tmp.rglob("*")], "files left in TMPDIR"


def test_plan_refuses_fewer_than_two_verify_trials():
    import olla_jax
    from small_steps import mlp_args, mlp_step

    with pytest.raises(ValueError, match="verify_trials must be an int >= 2"):
        olla_jax.plan(mlp_step, *mlp_args(0), verify_trials=1)


def test_plan_verifies_a_float64_step_and_leaves_nothing_in_tmp(monkeypatch, tmp_path):
    """x64 switched on in the caller's code: the step is optimised and
    verified (the child once ran it on float32 inputs), and neither XLA's
    dumps nor the verification leave anything in the temp folder."""
    import tempfile

    import olla_jax
    from small_steps import mlp_args, mlp_step

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    with jax.enable_x64(True):
        args = jax.tree.map(lambda a: np.asarray(a, np.float64), mlp_args(0))
        planned = olla_jax.plan(mlp_step, *args, time_limit_s=1)
        assert "f64[" in planned.capture.hlo_text
        assert planned.verified, planned.notes
        out = planned.compiled(*args)
        assert np.asarray(out[1]).dtype == np.float64
    assert not list(tmp.rglob("*")), "left in TMPDIR"


def _callback_step(seen):
    from small_steps import mlp_step

    def step(p, x, y):
        new, loss = mlp_step(p, x, y)
        jax.debug.callback(seen.append, loss)
        return new, loss
    return step


def test_plan_keeps_xla_for_a_step_with_host_callbacks():
    """A small step's plan, refused for its callback, saved too little to warn
    about (a jax.debug.print in a small step warned every signature under
    olla_jax.jit, which jax.jit runs silently): the notes say it."""
    import warnings

    import olla_jax
    from small_steps import mlp_args

    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", olla_jax.PlanWarning)
        planned = olla_jax.plan(_callback_step(seen), *mlp_args(0), time_limit_s=1)
    assert not planned.verified
    assert any("host callbacks: not fed back" in n for n in planned.notes), planned.notes
    planned.compiled(*mlp_args(0))
    jax.effects_barrier()
    assert seen, "XLA's executable, kept, still calls back"


@pytest.mark.slow
def test_a_host_callback_that_costs_a_plans_saving_warns(monkeypatch):
    import importlib

    import olla_jax
    from small_steps import mlp_args

    monkeypatch.setattr(importlib.import_module("olla_jax.plan"), "WARN_SAVING_BYTES", 0)
    monkeypatch.setattr(importlib.import_module("olla_jax.plan"), "WARN_SAVING_SHARE", 0.0)
    with pytest.warns(olla_jax.PlanWarning, match="host callbacks"):
        planned = olla_jax.plan(_callback_step([]), *mlp_args(0), time_limit_s=1)
    assert not planned.verified


def test_a_candidate_that_consumes_an_undonated_argument_is_refused():
    """Same outputs, but the candidate reuses parameter 0's buffer (donation
    the reference does not have): the caller's array would be lost."""
    def f(a, b):
        return jnp.tanh(a) * b

    args = (jnp.ones((64, 32)), jnp.full((64, 32), 0.5))
    reference = executable.serialize_compiled(jax.jit(f).lower(*args).compile())
    candidate = executable.serialize_compiled(
        jax.jit(f, donate_argnums=0).lower(*args).compile())
    assert verify.donated_parameters(candidate) == [0] and not verify.donated_parameters(reference)
    result = verify.verify_executable(candidate, reference, trials=2)
    assert not result.ok and "changed parameter(s) [0]" in result.reason, result.reason


_FOUR_DEVICES = """
import jax, jax.numpy as jnp
import olla_jax
from tests.small_steps import mlp_args, mlp_step
assert len(jax.devices()) == 4
for device in (jax.devices()[0], jax.devices()[2]):
    args = jax.device_put(mlp_args(0), device)
    plan = olla_jax.plan(mlp_step, *args, time_limit_s=1)
    out = plan.compiled(*args)
    ref = jax.jit(mlp_step)(*args)
    same = all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)))
    print(device.id, plan.verified, same, {d.id for o in jax.tree.leaves(out) for d in o.devices()},
          plan.notes)
"""


@pytest.mark.slow
def test_a_one_device_step_in_a_process_with_four_devices_is_verified_and_runs(tmp_path):
    """With several local devices (XLA_FLAGS' host device count, a multi-GPU
    machine) a plan verified and loaded crashed its first call ("expected ...
    to have 4 shards": loaded over every device), and a step on the third
    device failed its verification (the child ran it on the first)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _FOUR_DEVICES], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [ln for ln in run.stdout.splitlines() if ln[:1].isdigit()]
    assert [ln.split()[:4] for ln in lines] == [["0", "True", "True", "{0}"],
                                               ["2", "True", "True", "{2}"]], run.stdout
