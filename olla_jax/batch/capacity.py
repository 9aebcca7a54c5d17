"""The bytes one step may use on a GPU: the device's memory less what jax's
client keeps outside its allocator (``device_capacity``)."""

from __future__ import annotations

import os

from olla_jax.capture.base import Backend, CaptureError
from olla_jax.sizes import parse_size

# The share of GPU memory jax's GPU client gives its allocator unless told otherwise
# (XLA_CLIENT_MEM_FRACTION / XLA_PYTHON_CLIENT_MEM_FRACTION; jax's "GPU memory allocation" docs).
JAX_GPU_MEM_FRACTION = 0.75
_FRACTION_VARS = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def _memory_fraction() -> float:
    for var in _FRACTION_VARS:
        value = os.environ.get(var)
        if value:
            try:
                fraction = float(value)
            except ValueError as err:
                raise ValueError(f"{var}={value!r} is not a number") from err
            if not 0 < fraction <= 1:
                raise ValueError(f"{var}={value!r} must be in (0, 1]")
            return fraction
    return JAX_GPU_MEM_FRACTION


def target_memory_bytes(target: str) -> int:
    """``device_memory_size`` of a shipped GPU device description (``gpu:<target>``)."""
    from google.protobuf import text_format

    from olla_jax import protos
    from olla_jax.capture import gpu
    message = protos.message_class(gpu.TARGET_PROTO)()
    text_format.Parse(gpu.target_config(target), message)
    size = int(message.gpu_device_info.device_memory_size)
    if size <= 0:
        raise ValueError(f"the device description of {target!r} gives no device_memory_size: "
                         "pass capacity_bytes")
    return size


def reserve_size(value: int | str) -> int:
    """``reserve_bytes`` as bytes: zero, or a size as ``parse_size`` reads it
    (``2**30``, ``"1GiB"``)."""
    if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip() == "0":
        return 0
    return parse_size(value, "reserve_bytes")


def device_capacity(backend: str | Backend,
                    reserve_bytes: int | str | None = None) -> tuple[int, int, int]:
    """(capacity, device memory, reserve) in bytes for a GPU backend.

    ``gpu:<target>``: the description's ``device_memory_size`` less ``reserve_bytes``;
    by default the share jax's GPU client leaves outside its allocator
    (1 - XLA_CLIENT_MEM_FRACTION, 0.75 unless that variable is set): CUDA's
    context, cuBLAS/cuDNN workspaces and other processes live there.  ``gpu``
    (this machine's GPU): the allocator's own limit (``memory_stats()["bytes_limit"]``),
    which already excludes that share, less ``reserve_bytes`` (default 0).
    """
    try:
        target = Backend.parse(backend)
    except CaptureError:
        target = None   # refused below like cpu: no device memory size to read
    backend = getattr(backend, "name", backend)
    if target is not None and target.kind == "gpu" and not target.compile_only:
        import jax
        try:
            stats = jax.devices("gpu")[0].memory_stats() or {}
        except RuntimeError as err:
            raise ValueError(f"backend {backend!r}: no local GPU ({err}); pass capacity_bytes") from err
        memory = int(stats.get("bytes_limit", 0))
        if memory <= 0:
            raise ValueError("the local GPU reports no bytes_limit; pass capacity_bytes")
        reserve = 0 if reserve_bytes is None else reserve_size(reserve_bytes)
    elif target is not None and target.kind == "gpu":
        memory = target_memory_bytes(target.target)
        reserve = (memory - int(memory * _memory_fraction()) if reserve_bytes is None
                   else reserve_size(reserve_bytes))
    else:
        raise ValueError(f"backend {backend!r} has no device memory size to read: pass "
                         "capacity_bytes (the bytes one step may use)")
    if reserve < 0 or reserve >= memory:
        raise ValueError(f"reserve_bytes={reserve} must be at least 0 and below the device's "
                         f"{memory} bytes")
    return memory - reserve, memory, reserve
