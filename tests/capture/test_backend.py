"""The backend string parsed once into a ``Backend`` (olla_jax/capture/base.py)."""

from __future__ import annotations

import pytest

import olla_jax
from olla_jax.capture.base import Backend


@pytest.mark.parametrize("name, kind, target, compile_only, local, can_rewrite", [
    ("cpu", "cpu", None, False, True, True),
    ("gpu", "gpu", "local", False, True, True),
    ("gpu:local", "gpu", "local", False, True, True),
    ("gpu:h100", "gpu", "h100", True, False, True),
    ("tpu", "tpu", None, False, False, False),
])
def test_parse(name, kind, target, compile_only, local, can_rewrite):
    b = Backend.parse(name)
    assert (b.name, b.kind, b.target, b.compile_only, b.local, b.can_rewrite) == (
        name, kind, target, compile_only, local, can_rewrite)
    assert b.alignment == (256 if kind == "gpu" else 64)
    assert b.schedulers == (("default", "memory") if kind == "cpu" else ("default",))
    assert Backend.parse(b) is b


@pytest.mark.parametrize("bad", ["cuda", "gpu:", "", None, 3, "CPU"])
def test_unknown_backends_raise_capture_error(bad):
    with pytest.raises(olla_jax.CaptureError, match="unknown backend"):
        Backend.parse(bad)


def test_frozen():
    with pytest.raises(Exception):
        Backend.parse("cpu").kind = "gpu"


# ---- the parsed Backend is what the modules test, never the string -------------------

def test_no_module_tests_the_backend_string():
    """Only capture/base.py reads the backend string; the rest reads a Backend's fields."""
    import pathlib
    import re

    root = pathlib.Path(olla_jax.__file__).parent
    pattern = re.compile(r"""backend(\.name)?\s*(==|!=|\bin\b|\bnot in\b)\s*[("']|"""
                         r"""backend(\.name)?\.(startswith|split)\(""")
    offending = [f"{path.relative_to(root)}:{k}: {line.strip()}"
                 for path in sorted(root.rglob("*.py")) if path.name != "base.py"
                 for k, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    # the user-facing check of olla_jax.jit, which runs the step here ("cpu" or "gpu" only)
    offending = [o for o in offending if not o.startswith("decorator.py")]
    assert not offending, offending
    assert pattern.search('if backend.startswith("gpu:"):') and pattern.search('backend == "cpu"')


def test_capture_takes_a_backend_or_its_string():
    import jax.numpy as jnp

    from olla_jax.capture import capture

    x = jnp.ones((8, 8), jnp.float32)
    by_name = capture(lambda a: a @ a, x, backend="cpu")
    parsed = capture(lambda a: a @ a, x, backend=Backend.parse("cpu"))
    assert by_name.backend == parsed.backend == "cpu"
    assert by_name.memory == parsed.memory
    with pytest.raises(olla_jax.CaptureError, match="unknown backend 'cuda'.*h100, a100"):
        capture(lambda a: a, x, backend="cuda")
    with pytest.raises(olla_jax.CaptureError, match="must be a string"):
        capture(lambda a: a, x, backend=3)
    with pytest.raises(olla_jax.CaptureError, match="sharded"):
        capture(lambda a: a, x, backend=Backend.parse("gpu:local"), spmd={"num_devices": 2})


@pytest.mark.parametrize("backend", ["gpu:h100", "tpu", "cuda", Backend.parse("gpu:a100")])
def test_capture_lowered_only_for_this_machine(backend):
    from olla_jax.capture.record import capture_lowered

    with pytest.raises(olla_jax.CaptureError, match="a lowered step is compiled for this machine"):
        capture_lowered(object(), backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "gpu", "gpu:local", "cuda", Backend.parse("cpu")])
def test_xla_remat_only_for_compile_only_targets(backend):
    from olla_jax import xla_remat

    with pytest.raises(olla_jax.CaptureError, match="only for a compile-only GPU target"):
        xla_remat.search(lambda a: a, 1.0, backend=backend, budget_bytes=1)


@pytest.mark.parametrize("backend", ["cpu", "tpu", "cuda", Backend.parse("cpu")])
def test_device_capacity_needs_a_gpu(backend):
    from olla_jax import batch

    with pytest.raises(ValueError, match="no device memory size"):
        batch.device_capacity(backend)
