"""Compile a jax step for a named NVIDIA GPU, on a machine that may have none.

XLA:GPU can compile without a device ("compile-only"): the CUDA PJRT plugin
builds devices from a ``stream_executor.GpuTargetConfigProto`` (a device
description: SM count, memory, clocks, compute capability...).  The compiled
object has the scheduled GPU HLO, ``memory_analysis()`` and, with
``xla_dump_to``, XLA's buffer assignment and live ranges.  It cannot run.

Device descriptions live in ``targets/<name>.txtpb``.  They are read through
the schema embedded in the installed jaxlib (``olla_jax.protos``): fields
that jaxlib does not know are dropped, so one file serves several versions.

Limits of compile-only: no autotuning (GEMMs get default Triton tiles, convs
default cuDNN algorithms), cuDNN fused attention cannot be compiled, and a sort
that XLA would give to CUB on a GPU stays XLA's own sort unless XLA's deviceless
table knows its scratch size (``DEVICELESS_OPTIONS``).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from google.protobuf import text_format
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from olla_jax import calls, jax_compat, protos
from olla_jax.capture.base import CaptureError as _CaptureErrorBase, step_error

log = logging.getLogger(__name__)

TARGETS_DIR = Path(__file__).parent / "targets"
TARGET_PROTO = "stream_executor.GpuTargetConfigProto"
INSTALL_HINT = "pip install 'olla_jax[gpu]'"
# Options every compile-only GPU compile gets unless the caller overrides them (those
# the installed jaxlib does not know are left out).  The CUB mode, read in XLA's
# sort_rewriter.cc and seen with jaxlib 0.10.2: on a GPU XLA gives a big enough sort to
# CUB, whose scratch size needs the device; without one WITH_FALLBACK looks the size up
# in XLA's table, keyed by device name and exact cub_version, and keeps XLA's own sort
# where there is no entry (a warning at most once a minute, only for such a sort).
# DISABLED always keeps XLA's sort, and warns twice on every compile, sort or not.
# The shipped targets carry no cub_version: no entry matches and both modes compile the
# same program (tests/capture/test_capture_gpu.py); a description that names one may get
# CUB's sort, as a GPU compile would.  NO_FALLBACK fails on a miss.
DEVICELESS_OPTIONS: dict[str, Any] = {"xla_gpu_deviceless_cub_mode": "DEVICELESS_CUB_WITH_FALLBACK"}
LOCAL = "local"  # target name: compile for the GPUs attached to this machine
# Opt-in options that make XLA:GPU's compile of a big unrolled step cheaper
# (``plan(..., compiler_options=with_fast_capture(...))``; benchmarks/scale.py
# --fast_capture).  XLA's pass timings (benchmarks/scale_compile.py, results in
# benchmarks/results/scale_compile.md) put the time in priority fusion, which
# weighs Triton tilings for the fusions triton-softmax-rewriter made (layer norms,
# softmaxes; perf shows SymbolicTileAnalysis under PriorityFusionQueue::CanFuseTriton),
# and in multi-output fusion, both growing faster than the step (perf on a
# 720-block compile also caught layout assignment's per-dot constraints, which
# cannot be turned off, taking minutes).  The first two
# CHANGE THE PROGRAM that is planned: normalizations become plain XLA reduction
# fusions instead of Triton ones, and no sibling or producer-consumer fusion shares
# a kernel's inputs, so kernels and buffers differ (a 40-block step: 5238 entry
# instructions instead of 5023, XLA's temp 46.1 MiB instead of 54.8).  The others
# act after buffer assignment (LLVM and ptxas optimization; command buffers, whose
# conversion of the thunk sequence perf caught taking over 10 minutes on a 720-block
# step): the schedule and buffers stay as they are (tests/capture/test_fast_capture.py),
# but the code is slower: a capture for planning, not an executable to deploy.
FAST_CAPTURE_OPTIONS: dict[str, Any] = {
    "xla_disable_hlo_passes": "multi_output_fusion,triton-softmax-rewriter",
    "xla_gpu_disable_gpuasm_optimizations": True,
    "xla_llvm_disable_expensive_passes": True,
    "xla_gpu_enable_command_buffer": "",
}


def with_fast_capture(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` plus ``FAST_CAPTURE_OPTIONS``: passes the caller already
    disables are kept (the lists are joined); the caller's other values win."""
    merged = dict(FAST_CAPTURE_OPTIONS)
    given = dict(options or {})
    disabled = [p for p in str(given.pop("xla_disable_hlo_passes", "") or "").split(",") if p]
    ours = FAST_CAPTURE_OPTIONS["xla_disable_hlo_passes"].split(",")
    merged["xla_disable_hlo_passes"] = ",".join(sorted(set(ours) | set(disabled)))
    merged.update(given)
    return merged


class GpuCaptureError(_CaptureErrorBase):
    """A GPU capture cannot be made (plugin missing, unknown target...)."""


CaptureError = GpuCaptureError   # its old name, kept: ``except gpu.CaptureError`` still works


# --- device descriptions ---------------------------------------------------

def available_targets() -> list[str]:
    """Names of the shipped device descriptions, e.g. ``["a100", "h100"]``."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.txtpb"))


def _target_path(target: str) -> Path:
    """A shipped description by name, or any ``.txtpb`` file by path."""
    if target.endswith(".txtpb") and Path(target).is_file():
        return Path(target)
    path = TARGETS_DIR / f"{target}.txtpb"
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", target) or not path.is_file():
        raise GpuCaptureError(f"unknown GPU target {target!r}; known: "
                              f"{', '.join(available_targets()) or 'none'}, {LOCAL!r}, "
                              "or a path to a GpuTargetConfigProto .txtpb file")
    return path


def _schema_field_names(descriptor, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    names: set[str] = set()
    if descriptor.full_name in seen:
        return names
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        names.add(field.name)
        if field.message_type is not None:
            names |= _schema_field_names(field.message_type, seen)
    return names


def _text_field_names(text: str) -> set[str]:
    """Field names used in a text proto (identifier followed by ':' or '{')."""
    body = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)   # strings first, then comments
    body = re.sub(r"#[^\n]*", "", body)
    return set(re.findall(r"\b([A-Za-z_]\w*)\s*(?=[:{])", body))


def normalize_target_config(text: str) -> tuple[str, list[str]]:
    """Re-write a GpuTargetConfigProto text for the installed jaxlib.

    Returns the text holding only the fields this jaxlib knows, and the sorted
    names of the fields that were dropped.
    """
    cls = protos.message_class(TARGET_PROTO)
    message = cls()
    try:
        text_format.Parse(text, message, allow_unknown_field=True)
    except text_format.ParseError as err:
        raise GpuCaptureError(
            f"device description does not parse as {TARGET_PROTO}: {err}") from err
    dropped = sorted(_text_field_names(text) - _schema_field_names(cls.DESCRIPTOR))
    return text_format.MessageToString(message), dropped


def target_config(target: str) -> str:
    """The device description of ``target`` as text the installed jaxlib
    accepts.  A shipped one is read once; a file given by path each time (it
    may change, or be gone: ``xla_remat``'s are temporary, one per limit)."""
    path = _target_path(target)
    if path.parent == TARGETS_DIR:
        return _shipped_config(target)
    return _config_of(path, target)


@functools.lru_cache(maxsize=None)
def _shipped_config(target: str) -> str:
    return _config_of(_target_path(target), target)


def _config_of(path: Path, target: str) -> str:
    text, dropped = normalize_target_config(path.read_text())
    if dropped:
        log.info("GPU target %s: fields unknown to this jaxlib dropped: %s", target, dropped)
    return text


# --- the CUDA plugin and devices -------------------------------------------

def cuda_plugin() -> str | None:
    """The importable CUDA plugin module of jax, or None when none is installed."""
    return jax_compat.cuda_plugin()


def _require_cuda_plugin() -> None:
    if cuda_plugin() is None:
        raise GpuCaptureError("compiling for a GPU needs jax's CUDA plugin "
                              "(jax-cuda12-plugin, jax-cuda12-pjrt, nvidia-cuda-nvcc-cu12 at "
                              f"jax's version): {INSTALL_HINT}")
    if not jax_compat.register_cuda_plugin():
        raise GpuCaptureError(
            f"jax's CUDA plugin ({cuda_plugin()}) is installed but could not be registered "
            f"(jax {jax.__version__}); run with --verbosity=1 or logging at INFO for the "
            "plugin's error, and check that jax, jaxlib and the plugin share one version: "
            f"{INSTALL_HINT}")


@functools.lru_cache(maxsize=None)
def local_gpu_devices() -> tuple[jax.Device, ...]:
    """The real GPUs of this machine (empty without one or without the plugin)."""
    if cuda_plugin() is None:
        return ()
    try:
        _require_cuda_plugin()
        return tuple(jax.devices("gpu"))
    except (RuntimeError, GpuCaptureError):
        return ()


def topology_name(num_devices: int) -> str:
    """``<partitions>x<hosts per partition>x<devices per host>``; one host here."""
    if num_devices < 1:
        raise GpuCaptureError(f"num_devices must be >= 1, got {num_devices}")
    return f"1x1x{num_devices}"


def _compile_only_devices(target: str, num_devices: int) -> tuple[jax.Device, ...]:
    config = target_config(target)
    _require_cuda_plugin()
    try:
        return _devices_of(config, num_devices)
    except (RuntimeError, NotImplementedError) as err:
        raise GpuCaptureError(f"the CUDA plugin refused target {target!r} "
                              f"with {num_devices} device(s): {err}") from err


# By the description's text, not its path: the same description gives the same
# devices, and a search's temporary ones (a new path per limit) are not kept
# for ever.
@functools.lru_cache(maxsize=32)
def _devices_of(config: str, num_devices: int) -> tuple[jax.Device, ...]:
    from jax.experimental import topologies
    topology = topologies.get_topology_desc(
        platform="cuda", topology=topology_name(num_devices), target_config=config)
    return tuple(topology.devices)


def gpu_devices(target: str, num_devices: int = 1) -> list[jax.Device]:
    """Devices to compile for: compile-only ones for a named target, or the
    local GPUs for ``target="local"``."""
    if target == LOCAL:
        local = local_gpu_devices()
        if len(local) < num_devices:
            raise GpuCaptureError(f"{num_devices} local GPU(s) requested, {len(local)} present")
        return list(local[:num_devices])
    return list(_compile_only_devices(target, num_devices))


def gpu_mesh(target: str, num_devices: int = 1,
             axes: Mapping[str, int] | None = None) -> Mesh:
    """A mesh over ``gpu_devices``; ``axes`` maps axis names to sizes
    (default: one axis ``"x"`` over all devices)."""
    axes = dict(axes) if axes else {"x": num_devices}
    if int(np.prod(list(axes.values()))) != num_devices:
        raise GpuCaptureError(f"mesh axes {axes} do not multiply to {num_devices} devices")
    devices = np.array(gpu_devices(target, num_devices), dtype=object)
    return Mesh(devices.reshape(tuple(axes.values())), tuple(axes))


# --- compiling ---------------------------------------------------------------

def _abstract(leaf: Any, sharding: NamedSharding) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding,
                                    weak_type=leaf.weak_type)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    if isinstance(leaf, (bool, int, float, complex)):
        dtype = jax.dtypes.canonicalize_dtype(np.asarray(leaf).dtype)
        return jax.ShapeDtypeStruct((), dtype, sharding=sharding, weak_type=True)
    raise GpuCaptureError(f"argument leaf of type {type(leaf).__name__} is not an array; "
                          "mark it static (static_argnums) or pass a ShapeDtypeStruct")


def _place(arg: Any, spec: Any, replicated: NamedSharding) -> Any:
    """``arg``'s leaves as ShapeDtypeStructs carrying the shardings of ``spec``,
    a pytree prefix of ``arg`` (None: replicated)."""
    is_spec = lambda s: s is None or isinstance(s, jax.sharding.Sharding)  # noqa: E731
    return jax.tree.map(
        lambda s, sub: jax.tree.map(lambda leaf: _abstract(leaf, s or replicated), sub),
        spec, arg, is_leaf=is_spec)


def _to_shardings(spec: Any, mesh: Mesh) -> Any:
    """PartitionSpecs (anywhere in a pytree) become NamedShardings on ``mesh``."""
    if spec is None:
        return None
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s) if isinstance(s, PartitionSpec) else s,
        spec, is_leaf=lambda s: isinstance(s, PartitionSpec) or s is None)


_FOREIGN_MESH = "should match the mesh passed to shard_map"   # jax's words for another mesh
_NO_CLIENT = "Unknown backend: 'gpu' requested"   # jax's words lowering a host callback


def compile_for_target(
    fn: Callable[..., Any],
    args: tuple,
    *,
    target: str,
    static_argnums: int | Sequence[int] = (),
    donate_argnums: int | Sequence[int] = (),
    compiler_options: dict[str, Any] | None = None,
    num_devices: int = 1,
    in_shardings: Any = None,
    out_shardings: Any = None,
    mesh_axes: Mapping[str, int] | None = None,
) -> jax.stages.Compiled:
    """Compile ``fn(*args)`` for ``target``: a name from ``available_targets()``,
    a path to a GpuTargetConfigProto ``.txtpb``, or ``"local"`` (this machine's GPUs).

    ``fn`` may be a plain function or a ``jax.jit`` one. A jitted ``fn`` keeps its
    own options when none of ``static_argnums``, ``donate_argnums``,
    ``out_shardings`` is given; otherwise it is re-jitted with exactly these (so
    repeat its static_argnums). ``args`` may hold arrays or ``ShapeDtypeStruct``
    pytrees (only shapes and dtypes are used; shardings come from here). Unless
    ``in_shardings`` says otherwise every argument is replicated over the mesh.
    Shardings may be ``PartitionSpec``s over ``mesh_axes`` (default ``{"x":
    num_devices}``) or ``NamedSharding``s over ``gpu_mesh(...)``.
    ``compiler_options`` go to XLA as they are (e.g. ``{"xla_dump_to": dir}``).
    """
    mesh = gpu_mesh(target, num_devices, mesh_axes)
    static = {static_argnums} if isinstance(static_argnums, int) else set(static_argnums)
    dynamic = [i for i in range(len(args)) if i not in static]
    shardings = _to_shardings(in_shardings, mesh)
    if not isinstance(shardings, (tuple, list)):   # one sharding (or None) for all
        shardings = [shardings] * len(dynamic)
    if len(shardings) != len(dynamic):
        raise GpuCaptureError(f"in_shardings has {len(shardings)} entries for "
                              f"{len(dynamic)} non-static arguments")
    abstract_args = list(args)
    for i, spec in zip(dynamic, shardings):
        abstract_args[i] = _place(args[i], spec, NamedSharding(mesh, PartitionSpec()))

    # Argument shardings travel on the ShapeDtypeStructs; jit gets the rest.
    given: dict[str, Any] = {}
    if static:
        given["static_argnums"] = tuple(sorted(static))
    if donate_argnums is not None and donate_argnums != ():
        given["donate_argnums"] = donate_argnums
    if out_shardings is not None:
        given["out_shardings"] = _to_shardings(out_shardings, mesh)
    is_jitted = hasattr(fn, "lower") and hasattr(fn, "__wrapped__")
    if is_jitted and not given:
        jitted = fn                      # keep the caller's own jit options
    else:                                # re-jit the plain function with ours
        jitted = jax.jit(fn.__wrapped__ if is_jitted else fn, **given)

    options = dict(compiler_options or {})
    if target != LOCAL:
        for key, value in known_debug_options(DEVICELESS_OPTIONS).items():
            options.setdefault(key, value)
    with _mesh_context(mesh):
        try:
            lowered = calls.lower_traced(jitted, abstract_args, {})
        except _CaptureErrorBase as err:
            if target != LOCAL and _NO_CLIENT in str(err):
                raise step_error(
                    f"{err}; the step calls back into Python (jax.pure_callback, "
                    "jax.debug.print or .callback, io_callback; equinox's error_if, which "
                    "diffrax and optimistix use), and jax lowers a host callback only for a "
                    f"platform it has a client for: a compile-only target ({target!r}) has none. "
                    "Plan the step without its callbacks (equinox's: environment variable "
                    "EQX_ON_ERROR=nan)", err.__cause__ or err) from (err.__cause__ or err)
            if _FOREIGN_MESH not in str(err) or err.__cause__ is None:
                raise
            raise step_error(
                f"{err}; a step compiled for a compile-only target runs on that target's "
                f"devices: build the mesh its shard_map uses with olla_jax.capture.gpu.gpu_mesh("
                f"{target!r}, {num_devices}, {dict(mesh.shape)!r}) (the num_devices and mesh_axes "
                "given to plan)", err.__cause__) from err.__cause__
    try:
        return lowered.compile(compiler_options=options or None)
    except Exception as err:  # noqa: BLE001 - XLA raises several kinds; name the target
        if target != LOCAL and _UNTILED in str(err) and _TRITON_GEMM not in options:
            # Without a GPU there is no autotuning, and Triton's default GEMM tiles can
            # fit no shape of some dots; cuBLAS takes any.  The program differs from
            # an autotuned one only in how those GEMMs are emitted.
            log.warning("compile-only %s: no default Triton tiles fit a dot; compiling with "
                        "%s=False", target, _TRITON_GEMM)
            _retried.count = untiled_retries() + 1
            return compile_for_target(fn, args, target=target, static_argnums=static_argnums,
                                      donate_argnums=donate_argnums,
                                      compiler_options={**options, _TRITON_GEMM: False},
                                      num_devices=num_devices, in_shardings=in_shardings,
                                      out_shardings=out_shardings, mesh_axes=mesh_axes)
        raise GpuCaptureError(f"XLA could not compile for GPU target {target!r}: {err}") from err


def known_debug_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` less those whose name or enum value the installed jaxlib's
    ``xla.DebugOptions`` lacks (XLA would refuse the compile)."""
    try:
        fields = protos.message_class("xla.DebugOptions").DESCRIPTOR.fields_by_name
    except protos.SchemaError:
        return dict(options)
    known = {}
    for name, value in options.items():
        field = fields.get(name)
        if field is None or (field.enum_type is not None
                             and value not in field.enum_type.values_by_name):
            log.info("compile-only GPU option %s=%s unknown to this jaxlib: left out", name, value)
            continue
        known[name] = value
    return known


_UNTILED = "Couldn't find output tile sizes"
_TRITON_GEMM = "xla_gpu_enable_triton_gemm"
# The option a compile that found no Triton tiles is retried with (a caller that
# compiles many variants of one step passes it at once: ``untiled_retries``).
NO_TRITON_GEMM = {_TRITON_GEMM: False}
_retried = threading.local()


def untiled_retries() -> int:
    """Compiles this thread retried with ``NO_TRITON_GEMM`` (no default Triton
    tiles fit a dot; each such compile costs the failed try, a third of it on
    vit:small): a caller that compiles many rewrites of one step passes the
    option at once where the step needed it."""
    return getattr(_retried, "count", 0)


def _mesh_context(mesh: Mesh):
    """Make ``mesh`` current so bare PartitionSpecs inside ``fn`` resolve to it.

    Its abstract mesh only: what jax's tracing reads (shard_map without a mesh,
    sharding constraints, device_put with a spec lower the same).  As the
    concrete mesh (``jax.set_mesh``) it would also be where jax runs what the
    step evaluates eagerly (``jax.ensure_compile_time_eval``: equinox's
    enumerations, hence optimistix and diffrax), on compile-only devices that
    cannot run anything ("'Executable' object has no attribute 'local_devices'")."""
    use_abstract = getattr(jax.sharding, "use_abstract_mesh", None)
    if use_abstract is not None:
        return use_abstract(mesh.abstract_mesh)
    set_mesh = getattr(jax, "set_mesh", None) or getattr(jax.sharding, "use_mesh", None)
    return set_mesh(mesh) if set_mesh is not None else mesh

