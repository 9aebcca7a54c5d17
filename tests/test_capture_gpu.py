"""Compile-only GPU capture: device descriptions, errors, and real compiles.

The compile tests need jax's CUDA plugin (``pip install 'olla_jax[gpu]'``) but
no GPU; without the plugin they are skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from olla_jax.capture import gpu  # noqa: E402

needs_plugin = pytest.mark.skipif(gpu.cuda_plugin() is None,
                                  reason="jax's CUDA plugin is not installed")
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
def test_local_gpu_detection_does_not_fail():
    devices = gpu.local_gpu_devices()
    assert all(d.platform == "gpu" for d in devices)
    if devices:
        compiled = gpu.compile_for_target(mlp_step, mlp_args(), target=gpu.LOCAL)
        assert_positive_memory(compiled)
