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
