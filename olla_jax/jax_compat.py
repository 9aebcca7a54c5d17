"""Every use of jax's private modules, behind one version check.

olla_jax reads a few things jax keeps private: how its PJRT plugins were
discovered and registered (``jax._src.xla_bridge``), LAPACK's set-up and
``DeviceList`` for a process that only deserializes executables, and the
options a ``jax.jit`` object resolved (``_jit_info``).  They move between jax releases, so they
live here, next to the range of jax versions they were tested with.

The CUDA plugin, when installed, is registered by jax the first time it needs
a backend; on a machine without a GPU its CUDA version check then fails, jax
prints a traceback and drops the plugin, and with it the compile-only GPU
targets.  This module (imported with ``olla_jax``) makes that check skip where
it can only fail, and registers the plugin later if jax had already dropped it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
from typing import Any, Iterator, Sequence

from olla_jax.errors import OllaJaxError

log = logging.getLogger(__name__)

# The oldest jax olla_jax passes its tests with (0.10.0's jaxlib lacks a field
# of the buffer assignment the executable rewrite edits).  Newer releases are
# not refused (0.11 runs on the GPU machines); an older one is, with a message
# saying what to install.  Keep in step with pyproject.toml.
MIN_JAX = (0, 10, 1)
SKIP_CHECK_VAR = "JAX_SKIP_CUDA_CONSTRAINTS_CHECK"
# Top-level CUDA plugin modules jax discovers, newest first.
CUDA_PLUGINS = ("jax_plugins.xla_cuda13", "jax_plugins.xla_cuda12")


class UnsupportedJaxError(OllaJaxError, ImportError):
    """The installed jax (or jaxlib) is older than olla_jax supports."""


def version_tuple(text: str) -> tuple[int, ...]:
    """``"0.10.2"`` -> ``(0, 10, 2)``; suffixes such as ``.dev2026`` or ``rc1`` are dropped."""
    parts = []
    for piece in text.split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def check_versions(jax_version: str, jaxlib_version: str) -> None:
    """Raise :class:`UnsupportedJaxError` when either is older than ``MIN_JAX``."""
    minimum = ".".join(map(str, MIN_JAX))
    for name, version in (("jax", jax_version), ("jaxlib", jaxlib_version)):
        if version_tuple(version) < MIN_JAX:
            raise UnsupportedJaxError(
                f"olla_jax needs {name} >= {minimum}, found {name} {version}: "
                f"pip install -U 'jax>={minimum}' 'jaxlib>={minimum}'")


# --- quiet native logs -----------------------------------------------------

# Printed by each CUDA library of the plugin that is loaded on a machine without
# a driver (absl logs to stderr before anything initialises it; no variable
# turns these off).  They say nothing a CPU user can act on.
_NATIVE_NOISE = re.compile(
    r"(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written "
    r"to STDERR\n)?[IW]\d{4} [^\n]*cudart_stub\.cc:\d+\] Could not find cuda drivers on "
    r"your machine, GPU will not be used\.\n")


def drop_native_noise(text: str) -> str:
    """``text`` without the CUDA stub lines of a machine that has no GPU driver."""
    return _NATIVE_NOISE.sub("", text)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold what native code writes to file descriptor 2 meanwhile, and write it
    back without the CUDA stub lines (everything else is kept, in order)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        held = tempfile.TemporaryFile()
        os.dup2(held.fileno(), 2)
    except (OSError, ValueError, AttributeError):   # no usable fd 2: nothing to filter
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        kept = drop_native_noise(held.read().decode(errors="replace"))
        held.close()
        if kept:
            os.write(2, kept.encode())


# A filter process between file descriptor 2 and the real stderr: it drops the
# lines that match its pattern (writing them to a file for the caller) and
# passes every other line on as it comes.  A process of its own, so that what
# native code writes just before it aborts (a CHECK failure) still reaches
# stderr: the filter drains the pipe after we are gone.
_FILTER = r"""
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C is the caller's: drain to the end
drop = re.compile(sys.argv[1])
with open(int(sys.argv[2]), "wb") as dropped:
    for line in sys.stdin.buffer:
        if drop.search(line.decode(errors="replace")):
            dropped.write(line)
            dropped.flush()
        else:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
"""
_FILTER_EXIT_S = 10.0      # after fd 2 is back, how long the filter may take to drain
_FD2 = threading.Lock()    # one filter at a time: fd 2 is the process's


@contextlib.contextmanager
def native_stderr_without(pattern: str) -> Iterator[list[str]]:
    """Meanwhile, lines written to file descriptor 2 (native logs) that match
    ``pattern`` are held back and handed to the caller (the list yielded, filled
    on exit); every other line goes on to stderr as it comes, in order, even if
    the process dies meanwhile.  Where fd 2 cannot be redirected, nothing is
    filtered."""
    dropped: list[str] = []
    if not _FD2.acquire(blocking=False):   # another thread filters fd 2 now: its filter
        yield dropped                      # stays in place (two would swap fd 2 under
        return                             # each other), its pattern applies meanwhile
    try:
        with _fd2_filtered(pattern, dropped):
            yield dropped
    finally:
        _FD2.release()


@contextlib.contextmanager
def _fd2_filtered(pattern: str, dropped: list[str]) -> Iterator[None]:
    if getattr(sys, "frozen", False) or not sys.executable:   # no interpreter to run it
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no usable fd 2: nothing to filter
        yield
        return
    held = tempfile.TemporaryFile()     # no name: nothing is left behind, even by a crash
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, pattern,
                                 str(held.fileno())], stdin=subprocess.PIPE, stdout=saved,
                                stderr=saved, pass_fds=(held.fileno(),))
    except (OSError, ValueError):   # the interpreter would not start
        os.close(saved)
        held.close()
        yield
        return
    try:
        os.dup2(proc.stdin.fileno(), 2)
        proc.stdin.close()          # fd 2 is now the pipe's only write end here
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)           # the pipe closes: the filter drains it and ends
        os.close(saved)
        try:
            proc.wait(timeout=_FILTER_EXIT_S)
        except subprocess.TimeoutExpired:   # a child of ours still holds the pipe: the
            pass                            # filter goes on passing its lines through
        held.seek(0)
        dropped += held.read().decode(errors="replace").splitlines()
        held.close()


# --- the CUDA plugin -------------------------------------------------------

def cuda_plugin() -> str | None:
    """The importable CUDA plugin module of jax, or None when none is installed."""
    for name in CUDA_PLUGINS:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


# The device files jax looks for (jax._src.hardware_utils) before it starts a CUDA backend.
_NVIDIA_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")


def has_visible_nvidia_gpu() -> bool:
    """Whether this machine shows an NVIDIA device, by jax's own test."""
    return any(os.path.exists(path) for path in _NVIDIA_DEVICE_FILES)


# --- importing jax ---------------------------------------------------------

def _noise_expected() -> bool:
    """The stub lines come only from the CUDA plugin on a machine with no NVIDIA
    device.  Elsewhere stderr is left alone, so that a native crash still shows."""
    return cuda_plugin() is not None and not has_visible_nvidia_gpu()


def _quiet_if_noisy() -> contextlib.AbstractContextManager:
    return quiet_native_stderr() if _noise_expected() else contextlib.nullcontext()


def _import_jax() -> Any:
    if "jax" in sys.modules:
        import jax
        return jax
    with _quiet_if_noisy():
        import jax
    return jax


jax = _import_jax()
import jaxlib  # noqa: E402 - jax first, under the filter above
from jax._src import xla_bridge as _xb  # noqa: E402

check_versions(jax.__version__, getattr(jaxlib, "__version__", "0"))


def plugins_discovered() -> bool:
    """Whether jax has already imported and initialised its PJRT plugins."""
    return bool(getattr(_xb, "_plugins_registered", False))


def cuda_registered() -> bool:
    """Whether the CUDA plugin can make device topologies (compile-only targets)."""
    return "cuda" in getattr(_xb, "_topology_factories", {})


def skip_failing_cuda_check() -> None:
    """Without a visible GPU, jax's CUDA version check can only fail (no driver),
    print a traceback and drop the plugin; skip it then.  jax does not start a
    CUDA backend on such a machine anyway, so nothing else changes.  With a GPU
    the check is left to jax.  jax reads the variable when it discovers plugins."""
    if (cuda_plugin() is not None and not plugins_discovered()
            and not has_visible_nvidia_gpu()):
        os.environ.setdefault(SKIP_CHECK_VAR, "1")


def discover_plugins() -> None:
    """Let jax discover its plugins now, keeping the CUDA stub lines off stderr.
    A no-op once jax has done it."""
    discover = getattr(_xb, "_discover_and_register_pjrt_plugins", None)
    if plugins_discovered() or discover is None:   # done, or a jax that hides it: jax will
        return
    skip_failing_cuda_check()
    with _quiet_if_noisy():
        discover()


# A CPU install with jax's CUDA plugin: the plugins are discovered now, quietly,
# so that a user's first jax call after `import olla_jax` prints no stub lines.
if _noise_expected():
    discover_plugins()


def register_cuda_plugin() -> bool:
    """Make sure jax's CUDA plugin is registered; True when it is.

    When jax discovered its plugins before olla_jax was imported (a user called
    ``jax.devices()`` first), the version check failed then and the plugin was
    dropped.  Its ``initialize()`` is run again here with the check skipped: the
    plugin then serves compile-only targets (jax's backends, fixed already, are
    left as they were)."""
    name = cuda_plugin()
    if name is None:
        return False
    discover_plugins()
    if cuda_registered():
        return True
    previous = os.environ.get(SKIP_CHECK_VAR)
    os.environ[SKIP_CHECK_VAR] = "1"
    try:
        with _quiet_if_noisy():
            importlib.import_module(name).initialize()
    except Exception as err:  # noqa: BLE001 - the plugin raises several kinds
        log.info("registering %s again failed: %r", name, err)
    finally:
        if previous is None:
            os.environ.pop(SKIP_CHECK_VAR, None)
        else:
            os.environ[SKIP_CHECK_VAR] = previous
    return cuda_registered()


# --- for a process that only deserializes executables ----------------------

def initialize_lapack() -> None:
    """Set up LAPACK's function table for jnp.linalg's custom calls (jax does this
    lazily while lowering, which a deserializing process never does)."""
    from jax._src.lax import linalg
    linalg.initialize_lapack()


def device_list(devices: Sequence[Any]) -> Any:
    """jaxlib's ``DeviceList`` of ``devices``, as ``deserialize_executable`` takes."""
    from jax._src.lib import xla_client
    return xla_client.DeviceList(tuple(devices))


skip_failing_cuda_check()


# --- a jax.jit object's options ----------------------------------------------

@dataclasses.dataclass(frozen=True)
class JitOptions:
    """The static and donated arguments of a ``jax.jit`` object, as jax resolved
    them (a name given for a positional parameter is in both lists)."""
    static_argnums: tuple[int, ...]
    static_argnames: tuple[str, ...]
    donate_argnums: tuple[int, ...]
    donate_argnames: tuple[str, ...]


def jit_options(jitted: Any) -> JitOptions | None:
    """``jitted``'s resolved options, or None when it is not a ``jax.jit`` object
    (jax keeps them in a private field; an ``olla_jax.jit`` object forwards it)."""
    info = getattr(jitted, "_jit_info", None)
    if info is None:
        return None
    return JitOptions(tuple(info.static_argnums), tuple(info.static_argnames),
                      tuple(info.donate_argnums), tuple(info.donate_argnames))


def trace_context() -> Any:
    """jax's configuration that changes what a call traces to (``jax_enable_x64``,
    the default matmul precision, ...), as jax.jit keys its own cache by it:
    hashable, compared by value."""
    try:
        from jax._src import config as _config
        return _config.trace_context()
    except (ImportError, AttributeError):   # jax moved it: x64, the one most steps change
        return (bool(jax.config.jax_enable_x64),)


# --- jax.random's threefry2x32, lowered unrolled on CPU ---------------------
#
# On CPU jax lowers the threefry2x32 primitive (the default PRNG: dropout,
# jax.random.bernoulli) to a rolled while loop (``use_rolled_loops=True``);
# every other platform gets the unrolled rule, ordinary elementwise ops that
# XLA fuses and our recomputation can copy.  Both compute the same uint32
# arithmetic.  The unrolled rule is given to one lowering as jax's own
# per-lowering override (``LoweringParameters.override_lowering_rules``, what
# jax.export uses): no registry is changed, so the user's jax.jit calls, on
# any thread, before, during or after, lower as before; the parameters are
# part of jax's lowering cache keys, so a function the user jitted (and jax
# cached) first still lowers unrolled here.

RNG_LOWERINGS = ("unrolled", "jax")
# The primitives whose lowering may hold threefry2x32: itself, and the typed-key
# operations (a key's impl, threefry or rbg, is picked only when they lower).
PRNG_PRIMITIVES = frozenset({"threefry2x32", "random_bits", "random_split", "random_fold_in"})


def _threefry_override() -> Any | None:
    """jax's LoweringParameters that lower threefry2x32 with its unrolled
    (non-CPU) rule, or None where this jax's internals differ."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry
        primitive, rule = threefry.threefry2x32_p, threefry._threefry2x32_lowering_rule
        return mlir.LoweringParameters(override_lowering_rules=((primitive, rule),))
    except (ImportError, AttributeError, TypeError) as err:
        log.info("threefry2x32 keeps jax's lowering (this jax's internals differ: %r)", err)
        return None


def uses_prng(closed_jaxpr: Any) -> bool:
    """Whether a primitive of ``PRNG_PRIMITIVES`` occurs anywhere in
    ``closed_jaxpr`` (inner jits, scans, conds, custom derivatives included)."""
    seen: set[int] = set()
    todo = [closed_jaxpr]
    while todo:
        jaxpr = todo.pop()
        jaxpr = getattr(jaxpr, "jaxpr", jaxpr)       # a ClosedJaxpr holds a Jaxpr
        if id(jaxpr) in seen or not hasattr(jaxpr, "eqns"):
            continue
        seen.add(id(jaxpr))
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in PRNG_PRIMITIVES:
                return True
            for value in eqn.params.values():
                items = value if isinstance(value, (tuple, list)) else (value,)
                todo.extend(v for v in items if hasattr(v, "eqns") or hasattr(
                    getattr(v, "jaxpr", None), "eqns"))
    return False


def rolled_loops(module_text: str) -> int:
    """How many while loops a lowered (StableHLO) module has."""
    return module_text.count("stablehlo.while")


def lower_threefry_unrolled(traced: Any) -> Any | None:
    """``traced`` (a ``jax.stages.Traced``) lowered with threefry2x32 unrolled,
    or None where that does not apply: no jax.random in the step, or a jax
    whose internals differ (the caller keeps jax's own lowering; it also keeps
    it where this module has as many loops: no threefry2x32 was lowered)."""
    if not isinstance(traced, jax.stages.Traced) or not uses_prng(traced.jaxpr):
        return None
    params = _threefry_override()
    if params is None:
        return None
    try:
        return traced.lower(_private_parameters=params)
    except TypeError as err:      # a jax whose lower() takes no such parameters
        log.info("threefry2x32 keeps jax's lowering: %r", err)
        return None


# --- evaluating a jaxpr one equation at a time -----------------------------
#
# olla_jax.scan_remat and olla_jax.offload evaluate a traced step's jaxpr
# themselves (to change what a scan keeps, or where a value lives) as
# jax.core.eval_jaxpr does, and read a scan equation's parameters.  Both lean
# on jax's equation objects (``get_bind_params``, ``eqn.ctx``, the scan
# primitive's params), which change between releases: they are read here only.

def bind_equation(eqn: Any, invals: Sequence[Any]) -> list[Any]:
    """The outputs of the jaxpr equation ``eqn`` on ``invals`` (one per outvar),
    bound in the current trace as ``jax.core.eval_jaxpr`` binds it."""
    params = eqn.primitive.get_bind_params(eqn.params)
    # jax <= 0.4.3x returned (subfuns, params); 0.10 returns the params only
    subfuns, params = params if isinstance(params, tuple) else ((), params)
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    with ctx if ctx is not None else contextlib.nullcontext():
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


@dataclasses.dataclass(frozen=True)
class ScanParams:
    """A ``scan`` equation's parameters: its body (a ClosedJaxpr) takes
    ``num_consts`` consts, ``num_carry`` carried values, then the xs; ``length``
    iterations, backwards when ``reverse``, ``unroll`` iterations per loop trip."""
    body: Any
    num_consts: int
    num_carry: int
    length: int
    reverse: bool
    unroll: int | bool


def scan_params(eqn: Any) -> ScanParams:
    """``eqn``'s parameters (``eqn.primitive.name == "scan"``)."""
    p = eqn.params
    return ScanParams(p["jaxpr"], int(p["num_consts"]), int(p["num_carry"]), int(p["length"]),
                      bool(p["reverse"]), p.get("unroll", 1))
