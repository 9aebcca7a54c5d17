"""Compile-only GPU capture: device descriptions, errors, and real compiles.

The compile tests need jax's CUDA plugin (``pip install 'olla_jax[gpu]'``) but
no GPU; without the plugin they are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from olla_jax.capture import gpu  # noqa: E402
from tests.marks import needs_plugin  # noqa: E402

DUMP_OPTIONS = {"xla_dump_hlo_as_proto": True, "xla_dump_hlo_as_text": True}
DUMP_SUFFIXES = ("-buffer-assignment.txt", "-buffer-assignment-values.txt",
                 "-live-range.txt", "after_optimizations.hlo.pb")
S = jax.ShapeDtypeStruct


def mlp_step(params, x, y):
    def loss(p):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        return jnp.mean((h @ p["w2"] - y) ** 2)
    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)


def mlp_args(batch: int = 64):
    params = {"w1": jnp.zeros((256, 512)), "b1": jnp.zeros((512,)), "w2": jnp.zeros((512, 10))}
    return params, jnp.zeros((batch, 256)), jnp.zeros((batch, 10))


def cnn_step(kernels, x, y):
    def loss(ks):
        h = x
        for k in ks:
            h = jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = jax.lax.reduce_window(jax.nn.relu(h), -jnp.inf, jax.lax.max,
                                      (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return jnp.mean((h.mean(axis=(1, 2, 3)) - y) ** 2)
    grads = jax.grad(loss)(kernels)
    return [k - 0.01 * g for k, g in zip(kernels, grads)]


CNN_ARGS = ([S((3, 3, 3, 16), jnp.float32), S((3, 3, 16, 32), jnp.float32)],
            S((8, 32, 32, 3), jnp.float32), S((8,), jnp.float32))


def assert_dumps(directory: Path) -> None:
    names = [p.name for p in directory.iterdir()]
    for suffix in DUMP_SUFFIXES:
        assert any(n.endswith(suffix) and "gpu_after_optimizations" in n for n in names), suffix


def assert_positive_memory(compiled) -> None:
    stats = compiled.memory_analysis()
    assert stats.temp_size_in_bytes > 0
    assert stats.argument_size_in_bytes > 0
    assert stats.output_size_in_bytes > 0


# --- no plugin needed ----------------------------------------------------------

def test_targets_parse_with_installed_jaxlib():
    assert {"h100", "a100"} <= set(gpu.available_targets())
    for target in gpu.available_targets():
        text = gpu.target_config(target)
        assert "core_count" in text and 'platform_name: "CUDA"' in text


def test_a_target_file_is_read_again_each_time(tmp_path):
    """A description given by path is not kept by its path (xla_remat writes a
    temporary one per limit; a user may edit theirs); a shipped one is kept."""
    text = (gpu.TARGETS_DIR / "h100.txtpb").read_text()
    path = tmp_path / "mine.txtpb"
    path.write_text(text.replace("core_count: 132", "core_count: 100"))
    assert "core_count: 100" in gpu.target_config(str(path))
    path.write_text(text.replace("core_count: 132", "core_count: 50"))
    assert "core_count: 50" in gpu.target_config(str(path))
    assert gpu.target_config("h100") is gpu.target_config("h100")


def test_unknown_fields_are_dropped():
    text = (gpu.TARGETS_DIR / "h100.txtpb").read_text()
    text = text.replace("ecc_enabled: true",
                        "ecc_enabled: true\n  field_from_the_future: 7\n  nested_future { a: 1 }")
    clean, dropped = gpu.normalize_target_config(text)
    assert {"field_from_the_future", "nested_future"} <= set(dropped)
    assert "future" not in clean and "core_count: 132" in clean


def test_unknown_target_is_a_clear_error():
    with pytest.raises(gpu.CaptureError, match="unknown GPU target 'h999'.*h100"):
        gpu.gpu_devices("h999")


def test_missing_plugin_names_the_extra(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_plugin", lambda: None)
    with pytest.raises(gpu.CaptureError, match=r"olla_jax\[gpu\]"):
        gpu.gpu_devices("h100", 3)   # a device count no other test caches
    assert gpu.local_gpu_devices.__wrapped__() == ()


# --- compile-only ------------------------------------------------------------------

@needs_plugin
@pytest.mark.parametrize("target", ["h100", "a100"])
def test_mlp_train_step_jitted_with_arrays(target, tmp_path):
    step = jax.jit(mlp_step, donate_argnums=0)
    compiled = gpu.compile_for_target(
        step, mlp_args(), target=target,
        compiler_options={"xla_dump_to": str(tmp_path), **DUMP_OPTIONS})
    assert isinstance(compiled, jax.stages.Compiled)
    assert_positive_memory(compiled)
    assert compiled.memory_analysis().alias_size_in_bytes > 0   # the jit's donation kept
    assert_dumps(tmp_path)


@needs_plugin
@pytest.mark.parametrize("target", ["h100", "a100"])
def test_cnn_plain_function_with_shapes(target, tmp_path):
    compiled = gpu.compile_for_target(
        cnn_step, CNN_ARGS, target=target,
        compiler_options={"xla_dump_to": str(tmp_path), **DUMP_OPTIONS})
    assert_positive_memory(compiled)
    assert "cudnn" in compiled.as_text()
    assert_dumps(tmp_path)


@needs_plugin
def test_static_args_and_sort():
    def f(x, k):
        return jnp.sort(x)[:k]
    compiled = gpu.compile_for_target(f, (S((1000,), jnp.float32), 10),
                                      target="h100", static_argnums=1)
    assert compiled.out_info.shape == (10,)


@needs_plugin
def test_data_parallel_over_several_devices():
    assert len(gpu.gpu_devices("h100", 4)) == 4
    compiled = gpu.compile_for_target(
        mlp_step, mlp_args(batch=64), target="h100", num_devices=4,
        in_shardings=(P(), P("x"), P("x")))
    assert compiled.input_shardings[0][1].spec == P("x")
    assert "all-reduce" in compiled.as_text()
    assert_positive_memory(compiled)


@needs_plugin
@pytest.mark.parametrize("num_devices", [1, 2])
def test_a_step_that_evaluates_eagerly_while_traced_compiles(num_devices):
    """``jax.ensure_compile_time_eval`` (equinox's enumerations: optimistix,
    diffrax) runs ops on this machine while the step is traced; with the target's
    mesh made the concrete mesh they ran on its compile-only devices and raised
    "'Executable' object has no attribute 'local_devices'"."""
    def f(x):
        with jax.ensure_compile_time_eval():
            scale = jnp.arange(1.0, 33.0) * 2
        return jax.lax.with_sharding_constraint(x * scale, P("x"))
    compiled = gpu.compile_for_target(f, (S((64, 32), jnp.float32),), target="h100",
                                      num_devices=num_devices, in_shardings=(P("x"),))
    assert compiled.out_info.shape == (64, 32)


@needs_plugin
def test_a_host_callback_is_refused_saying_so():
    """jax lowers a callback only for a platform it has a client for; the
    compile-only target has none, and jax's own words ("Unknown backend: 'gpu'
    requested") named no callback."""
    def f(x):
        jax.debug.print("{}", x.sum())
        return x + 1
    from olla_jax.capture.base import CaptureError
    with pytest.raises(CaptureError, match="calls back into Python.*EQX_ON_ERROR"):
        gpu.compile_for_target(f, (S((64,), jnp.float32),), target="h100")


@needs_plugin
def test_local_gpu_detection_does_not_fail():
    devices = gpu.local_gpu_devices()
    assert all(d.platform == "gpu" for d in devices)
    if devices:
        compiled = gpu.compile_for_target(mlp_step, mlp_args(), target=gpu.LOCAL)
        assert_positive_memory(compiled)


# --- the paths users take: no environment variables, any import order ------------------

REPO = Path(__file__).resolve().parents[2]
STEP_MODULE = """
import jax.numpy as jnp

def make_step():
    def step(x):
        return (jnp.sin(x) @ x.T).sum()
    return step, (jnp.ones((32, 32)),)
"""


def run_as_user(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python ARGS`` with the environment of a user: none of the jax variables
    the tests or benchmarks might set (importing olla_jax here sets one)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(cwd)])
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@needs_plugin
def test_plan_for_gpu_after_jax_started_first(tmp_path):
    # jax discovers its plugins (and the CUDA check fails) before olla_jax is imported.
    (tmp_path / "user.py").write_text(textwrap.dedent("""
        import jax
        jax.numpy.ones(3).block_until_ready()
        import olla_jax
        def step(x):
            return (jax.numpy.sin(x) @ x.T).sum()
        p = olla_jax.plan(step, jax.numpy.ones((32, 32)), backend="gpu:h100", time_limit_s=2)
        print("planned", p.backend)
    """))
    proc = run_as_user(["user.py"], tmp_path)
    assert_ok(proc)
    assert "planned gpu:h100" in proc.stdout


@needs_plugin
def test_cli_plans_for_gpu(tmp_path):
    (tmp_path / "user_step.py").write_text(STEP_MODULE)
    proc = run_as_user(["-m", "olla_jax", "plan", "--module=user_step:make_step",
                        "--backend=gpu:h100", "--time_limit_s=2"], tmp_path)
    assert_ok(proc)
    assert "gpu:h100" in proc.stdout


@needs_plugin   # the noise comes from the plugin: without it there is nothing to keep quiet
def test_cli_on_cpu_is_quiet(tmp_path):
    (tmp_path / "user_step.py").write_text(STEP_MODULE)
    proc = run_as_user(["-m", "olla_jax", "plan", "--module=user_step:make_step",
                        "--backend=cpu", "--time_limit_s=2"], tmp_path)
    assert_ok(proc)
    assert "Traceback" not in proc.stderr
    assert "cudart_stub" not in proc.stderr


@needs_plugin
def test_library_on_cpu_prints_no_traceback(tmp_path):
    # olla_jax first, then the user's own jax calls start the backends.
    (tmp_path / "user.py").write_text(textwrap.dedent("""
        import olla_jax
        import jax
        x = jax.numpy.ones((32, 32))
        p = olla_jax.plan(lambda x: (jax.numpy.sin(x) @ x.T).sum(), x, time_limit_s=2,
                          feed_back=False)
        print("planned", p.backend)
    """))
    proc = run_as_user(["user.py"], tmp_path)
    assert_ok(proc)
    assert "planned cpu" in proc.stdout
    assert "Traceback" not in proc.stderr


@needs_plugin
def test_sort_step_plans_without_xla_sort_warnings(tmp_path):
    # XLA's sort rewriter warned twice per compile-only compile (sort or not) with
    # xla_gpu_deviceless_cub_mode=DISABLED; a budget search compiles many times.
    (tmp_path / "user.py").write_text(textwrap.dedent("""
        import jax, jax.numpy as jnp
        import olla_jax
        def step(w, x):
            def loss(w):
                h = jnp.tanh(x @ w)
                top, _ = jax.lax.top_k(h, 4)
                return jnp.sort(h, axis=-1)[:, :8].sum() + top.sum()
            return w - 0.1 * jax.grad(loss)(w)
        p = olla_jax.plan(step, jnp.ones((64, 64)), jnp.ones((32, 64)),
                          backend="gpu:h100", time_limit_s=1)
        print("planned", p.backend)
    """))
    proc = run_as_user(["user.py"], tmp_path)
    assert_ok(proc)
    assert "planned gpu:h100" in proc.stdout
    assert "sort_rewriter" not in proc.stderr, proc.stderr[-2000:]


@needs_plugin
def test_deviceless_cub_mode_compiles_the_program_disabled_did():
    # A sort XLA gives to CUB on an H100 (one row of 32768 f32): the shipped target has
    # no cub_version, so XLA's table has no entry and its own sort stays, as with DISABLED.
    def f(x):
        return jnp.sort(x.reshape(-1)), jnp.argsort(x, axis=-1)
    args = (S((128, 256), jnp.float32),)
    ours = gpu.compile_for_target(f, args, target="h100")
    disabled = gpu.compile_for_target(
        f, args, target="h100",
        compiler_options={"xla_gpu_deviceless_cub_mode": "DEVICELESS_CUB_DISABLED"})
    assert " sort(" in ours.as_text()
    assert ours.as_text() == disabled.as_text()


def test_debug_options_unknown_to_jaxlib_are_left_out():
    given = {"xla_gpu_deviceless_cub_mode": "DEVICELESS_CUB_WITH_FALLBACK",
             "xla_no_such_option": True, "xla_gpu_enable_triton_gemm": False}
    assert gpu.known_debug_options(given) == {
        "xla_gpu_deviceless_cub_mode": "DEVICELESS_CUB_WITH_FALLBACK",
        "xla_gpu_enable_triton_gemm": False}
    assert gpu.known_debug_options({"xla_gpu_deviceless_cub_mode": "NO_SUCH_MODE"}) == {}
    assert gpu.known_debug_options(gpu.DEVICELESS_OPTIONS) == gpu.DEVICELESS_OPTIONS
