"""Check a rewritten executable against XLA's, bit for bit, in a child process.

Loading a bad executable can abort the process (XLA CHECK failures) or crash
it, so both executables are loaded and run by ``python -m
olla_jax.apply.child`` (a fresh interpreter: forking a process that runs XLA
threads is unsafe).  Whatever happens there comes back as a Verification.

The request (both executables and the inputs, a pickle) goes to the child on
a pipe and the result comes back on one: no file holds the user's inputs, and
the child dies with this process (see :mod:`olla_jax.apply.child`).

Starting that interpreter (importing jax) takes seconds, so a CPU child is
started ahead of time (``prepare_child``: when ``plan`` starts solving, and
after each verification) and the next verification with the same environment
takes it; one that finds none starts its own.  Each child still runs one
verification: no executable is ever run in a process another one ran in.  A
spare nobody takes exits by itself after ``SPARE_IDLE_S``.

"Verified" means: outputs bit-identical on at least two distinct input sets
(the user's, the user's with their floats perturbed, ``trials`` random sets),
the first set called once more after the others, and no parameter that is not
donated changed by a call.  Steps that call back into Python (host callbacks)
are refused: the callback lives in this process, not in the child.

Both executables are called equally often and in step, so stateful thunks
see the same states: with jaxlib 0.10.2 programs using ``lax.rng_uniform``
(rng-get-and-update-state) compare equal; with 0.11.2 two loads of one
executable start from different RNG states and such programs are reported as
"the reference itself is not deterministic".
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from olla_jax.apply import executable, gpu_executable

_ROOT = Path(__file__).resolve().parents[2]  # the folder holding olla_jax/
# A spare child waits this long for its request, then exits; one older than
# SPARE_IDLE_S - SPARE_MARGIN_S is not taken (it may be leaving).
SPARE_IDLE_S = 60.0
SPARE_MARGIN_S = 10.0


@dataclasses.dataclass(frozen=True)
class Verification:
    ok: bool
    reason: str
    trials: int       # input sets on which the outputs were compared and equal
    seconds: float


def _decode(raw: bytes, platform: str):
    return (gpu_executable if platform == "gpu" else executable).decode(raw)


def parameter_specs(raw: bytes, platform: str = "cpu") -> list[tuple[tuple[int, ...], str]]:
    """(shape, XLA type name) of each entry parameter of an executable."""
    entry = _decode(raw, platform).entry_computation()
    params = sorted((i for i in entry.instructions if i.opcode == "parameter"),
                    key=lambda i: i.parameter_number)
    type_enum = params[0].shape.DESCRIPTOR.fields_by_name["element_type"].enum_type if params \
        else None
    specs = []
    for p in params:
        type_name = type_enum.values_by_number[p.shape.element_type].name
        if type_name == "TUPLE":
            raise ValueError(f"parameter {p.name} is a tuple; not supported")
        specs.append((tuple(int(d) for d in p.shape.dimensions), type_name))
    return specs


def donated_parameters(raw: bytes, platform: str = "cpu") -> list[int]:
    """Entry parameters whose buffers the executable may reuse for its outputs."""
    module = _decode(raw, platform).hlo_module
    return sorted({e.parameter_number for e in module.input_output_alias.entries}
                  | {e.parameter_number for e in module.buffer_donor.entries})


def host_callbacks(raw: bytes, platform: str = "cpu") -> list[str]:
    """Instructions that call back into Python (jax.debug.callback,
    jax.pure_callback, io_callback): their target is a function of the
    process that compiled them."""
    module = _decode(raw, platform).hlo_module
    return [i.name for c in module.computations for i in c.instructions
            if i.opcode == "custom-call" and "python" in i.custom_call_target
            and "callback" in i.custom_call_target]


def device_id(compiled: Any) -> int:
    """The id of the device ``compiled`` (a single-device jax Compiled) runs on:
    arguments committed to another device than the first (``jax.device_put(x,
    jax.devices()[2])``) compile for that one, and the verification's child
    must run both executables there."""
    try:
        return int(compiled.runtime_executable().local_devices()[0].id)
    except Exception:  # noqa: BLE001 - not a single-device executable: the first device
        return 0


def executable_arguments(compiled: Any, *args: Any, **kwargs: Any) -> list[np.ndarray]:
    """The flat host arrays the executable of ``compiled`` takes for a call
    ``f(*args, **kwargs)`` (pytrees flattened, arguments jit pruned dropped)."""
    import jax

    leaves = jax.tree_util.tree_leaves((args, kwargs))
    kept = getattr(compiled._executable, "_kept_var_idx", None)
    if kept is not None:
        leaves = [x for k, x in enumerate(leaves) if k in kept]
    out = []
    for x in leaves:
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def _normalize_spec(args_spec: Any, expected) -> list[tuple[tuple[int, ...], str]]:
    if args_spec is None:
        return expected
    import jax

    from olla_jax.apply.child import numpy_dtype

    leaves = jax.tree_util.tree_leaves(args_spec)
    if len(leaves) != len(expected):
        raise ValueError(f"args_spec has {len(leaves)} arrays, the executable takes "
                         f"{len(expected)} parameters")
    for k, (leaf, (shape, type_name)) in enumerate(zip(leaves, expected)):
        if tuple(leaf.shape) != shape or np.dtype(leaf.dtype) != numpy_dtype(type_name):
            raise ValueError(f"args_spec[{k}] is {leaf.dtype}{list(leaf.shape)}, the "
                             f"executable takes {type_name}{list(shape)}")
    return expected


def _as_parameters(user_args: Sequence[Any], specs) -> list[np.ndarray]:
    """The user's leaves as host arrays of the parameters' dtypes: a Python
    scalar is weakly typed (jax gives it the executable's dtype; numpy would
    make it 64-bit, which the child, running with x64 on, would keep)."""
    from olla_jax.apply.child import numpy_dtype

    out = []
    for x, (shape, type_name) in zip(user_args, specs):
        arr = np.asarray(x)
        want = numpy_dtype(type_name)
        if arr.dtype != want and arr.shape == tuple(shape):
            arr = arr.astype(want)
        out.append(arr)
    return out


def outputs_differ(candidate: bytes, reference: bytes, compiled: Any,
                   dynamic_args: Sequence[Any]) -> str:
    """'' where ``candidate`` gives ``reference``'s outputs bit for bit, else the first
    line of how they differ.  Both run in a child on the call's dynamic arguments
    where they are concrete arrays (laid out for ``compiled``, the jax.stages.Compiled
    of the reference's program), else on two random input sets.  For two programs
    of one step (not a plan against its module), e.g. a rewritten jaxpr's."""
    import jax
    user_args = None
    if dynamic_args and all(not isinstance(x, jax.ShapeDtypeStruct)
                            for x in jax.tree_util.tree_leaves(list(dynamic_args))):
        try:
            user_args = executable_arguments(compiled, *dynamic_args)
        except Exception:  # noqa: BLE001 - random inputs only
            user_args = None
    result = verify_executable(candidate, reference, trials=0 if user_args is not None else 2,
                               user_args=user_args, device=device_id(compiled))
    return "" if result.ok else (result.reason.split("\n")[0] or "outputs differ")


def verify_executable(candidate: bytes, reference: bytes, args_spec: Any = None, *,
                      trials: int = 3, user_args: Sequence[Any] | None = None,
                      timeout_s: float = 120, seed: int = 0,
                      platform: str = "cpu", device: int = 0) -> Verification:
    """Run ``candidate`` and ``reference`` on the same inputs in a child process.

    ``args_spec``: the executable's flat parameters (anything with .shape and
    .dtype, in parameter order), checked against the executable; None takes
    them from its HLO.  ``user_args``: flat host arrays in the same order
    (:func:`executable_arguments` builds them from a call's pytrees); they
    are compared on, then again with their floats perturbed.  ``trials``:
    random input sets besides those; at least two sets in all, else
    ValueError.  Crashes, aborts, timeouts and exceptions in the child give
    ok=False.  ``platform``: "cpu", or "gpu" to run both on this machine's
    GPU; ``device``: the id of the device both were compiled for (``device_id``).
    """
    if not isinstance(trials, (int, np.integer)) or trials < 0 or \
            trials + (2 if user_args is not None else 0) < 2:
        raise ValueError(f"trials={trials!r}: a verification compares at least two input sets; "
                         "give trials >= 2 (random input sets), or user_args and trials >= 0")
    start = time.monotonic()
    candidate, reference = (executable.without_dump_options(bytes(raw))
                            for raw in (candidate, reference))
    try:
        specs = _normalize_spec(args_spec, parameter_specs(reference, platform))
        donated = donated_parameters(reference, platform)
        callbacks = host_callbacks(reference, platform)
    except (executable.LayoutError, gpu_executable.GpuLayoutError) as err:
        return Verification(False, f"reference is not usable: {err}", 0, 0.0)
    if callbacks:
        return Verification(False, f"the step calls back into Python ({', '.join(callbacks[:3])}: "
                                   "jax.debug.callback, pure_callback or io_callback); the "
                                   "callback exists only in this process, so the rewritten "
                                   "executable cannot be run in the verification child", 0, 0.0)
    request = pickle.dumps(
        {"candidate": candidate, "reference": reference, "specs": specs, "donated": donated,
         "trials": int(trials), "seed": int(seed), "platform": platform, "device": int(device),
         "user_args": None if user_args is None else _as_parameters(user_args, specs)},
        protocol=pickle.HIGHEST_PROTOCOL)
    child = _take_child(platform)
    try:
        stdout, stderr = child.proc.communicate(request, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        _, stderr = child.proc.communicate()
        tail = _tail(stderr)
        return Verification(False, f"timed out after {timeout_s} s; {_stage(tail)}\n{tail}",
                            0, time.monotonic() - start)
    finally:
        child.close()
        if platform == "cpu":
            prepare_child()   # for the next verification, started while this one's caller works
    if child.spare and not stdout and (b"no request came" in stderr
                                       or b"olla-child: " not in stderr):
        # a spare gone before it read the request (it waits SPARE_IDLE_S; Linux kills it
        # with the thread that started it): once more, in a new child
        return verify_executable(candidate, reference, args_spec, trials=trials,
                                 user_args=user_args, timeout_s=timeout_s, seed=seed,
                                 platform=platform, device=device)
    proc = subprocess.CompletedProcess(child.proc.args, child.proc.returncode, stdout, stderr)
    seconds = time.monotonic() - start
    tail = _tail(proc.stderr)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return Verification(False, f"child killed by {name} {_stage(tail)}\n{tail}", 0, seconds)
    try:
        result = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return Verification(False, f"child exited with status {proc.returncode} "
                                   f"{_stage(tail)}\n{tail}", 0, seconds)
    return Verification(bool(result["ok"]), str(result["reason"]), int(result["trials"]), seconds)


def _child_env(platform: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if platform == "gpu":
        env.pop("JAX_PLATFORMS", None)
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # share the GPU with this process
    else:
        env["JAX_PLATFORMS"] = "cpu"
    return env


@dataclasses.dataclass
class _Child:
    """A verification child and the write end of its lifeline: this process
    holds the only one, so the child reads end of file when this process dies,
    however it dies."""
    proc: subprocess.Popen
    keep: int
    env: dict[str, str]
    started: float
    spare: bool   # started ahead of its request (prepare_child)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
        if self.keep >= 0:
            os.close(self.keep)
            self.keep = -1


def _start_child(env: dict[str, str], idle_s: float | None = None) -> _Child:
    lifeline, keep = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "olla_jax.apply.child", str(lifeline), str(os.getpid()),
             *([] if idle_s is None else [str(idle_s)])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            cwd=str(_ROOT), pass_fds=(lifeline,))
    except BaseException:
        os.close(keep)
        raise
    finally:
        os.close(lifeline)
    return _Child(proc, keep, env, time.monotonic(), spare=idle_s is not None)


_spare_lock = threading.Lock()
_spare: list[_Child] = []   # at most one


def prepare_child() -> None:
    """Start a CPU verification child now, for the next verification to take
    (if the environment is then the same); none on a machine of one CPU,
    where it would slow the caller's own work."""
    if (os.cpu_count() or 1) < 2:
        return
    env = _child_env("cpu")
    with _spare_lock:
        if _spare and _suits(_spare[0], env):
            return
        stale = _spare[:]
        _spare.clear()
        try:
            _spare.append(_start_child(env, SPARE_IDLE_S))
        except OSError:
            pass   # the verification starts its own
    for child in stale:
        child.close()


def _take_child(platform: str) -> _Child:
    """The spare if it suits (same environment, alive, not about to leave),
    else a new child."""
    env = _child_env(platform)
    with _spare_lock:
        spare = _spare.pop() if _spare else None
    if spare is not None:
        if _suits(spare, env):
            return spare
        spare.close()
    return _start_child(env)


def _suits(spare: _Child, env: dict[str, str]) -> bool:
    """Same environment, alive, and not about to leave."""
    return (spare.env == env and spare.proc.poll() is None
            and time.monotonic() - spare.started < SPARE_IDLE_S - SPARE_MARGIN_S)


def _close_spare() -> None:
    with _spare_lock:
        stale = _spare[:]
        _spare.clear()
    for child in stale:
        child.close()


atexit.register(_close_spare)


def _tail(text: Any, limit: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-limit:]


def _stage(stderr: str) -> str:
    """The last progress line of the child: where it died."""
    steps = [line[len("olla-child: "):] for line in stderr.splitlines()
             if line.startswith("olla-child: ")]
    return f"(last step: {steps[-1]})" if steps else "(before its first step)"
