"""Child process: load two executables, run both on the same inputs, compare.

Run as ``python -m olla_jax.apply.child LIFELINE_FD PARENT_PID [IDLE_S]`` by
:mod:`olla_jax.apply.verify`: the request (a pickle) comes on stdin, the
result (a JSON object ``{"ok", "reason", "trials"}``) goes to stdout, so no
file holds the user's inputs.  A bad executable may abort this process (XLA
CHECK failures, segfaults): that is why it runs here and not in the caller.
Progress lines on stderr (``olla-child: ...``) tell the parent how far it got.
A child started ahead of its request (``IDLE_S``: verify's spare) imports
jax first and exits quietly if no request comes within IDLE_S seconds; each
child still serves one request only.
The child dies with its parent: SIGKILL on the parent's death (Linux), and
end of file on LIFELINE_FD, a pipe whose only writer is the parent.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import sys
import threading
import traceback
from typing import Any, Sequence

import numpy as np

from olla_jax import jax_compat


def _log(message: str) -> None:
    print(f"olla-child: {message}", file=sys.stderr, flush=True)


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype of an XLA PrimitiveType name (F32, BF16, PRED...)."""
    fixed = {"PRED": "bool", "F16": "float16", "F32": "float32", "F64": "float64",
             "C64": "complex64", "C128": "complex128"}
    if name in fixed:
        return np.dtype(fixed[name])
    for prefix, kind in (("S", "int"), ("U", "uint")):
        if name[0] == prefix and name[1:].isdigit():
            bits = int(name[1:])
            if bits >= 8:
                return np.dtype(f"{kind}{bits}")
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, f"{kind}{bits}"))
    import ml_dtypes

    lowered = name.lower()
    if lowered == "bf16":
        return np.dtype(ml_dtypes.bfloat16)
    if lowered.startswith("f8"):
        return np.dtype(getattr(ml_dtypes, "float8_" + lowered[2:]))
    if lowered.startswith("f4") or lowered.startswith("f6"):
        return np.dtype(getattr(ml_dtypes, "float" + lowered[1] + "_" + lowered[2:]))
    raise ValueError(f"no numpy dtype for XLA type {name}")


def random_inputs(specs: Sequence[tuple[tuple[int, ...], str]], seed: int) -> list[np.ndarray]:
    """Floats: standard normal; integers: small values; bools: fair coins."""
    rng = np.random.default_rng(seed)
    out = []
    for shape, type_name in specs:
        dtype = numpy_dtype(type_name)
        if dtype == np.bool_:
            value = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dtype, np.complexfloating):
            value = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
        elif dtype.kind == "f" or "float" in dtype.name:
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "u" or dtype.name.startswith("uint"):
            value = rng.integers(0, 4, size=shape).astype(dtype)
        else:
            value = rng.integers(-2, 4, size=shape).astype(dtype)
        out.append(np.asarray(value))
    return out


def derived_inputs(user_args: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """The user's inputs with every float element perturbed (scaled by 1 +- ~0.1
    and shifted by ~0.1 of the array's spread); integers and bools are reused
    as they are, so indices, counters and masks stay valid.  Non-finite
    elements are kept."""
    rng = np.random.default_rng(seed)
    out = []
    for x in user_args:
        x = np.asarray(x)
        kind = x.dtype.kind
        if kind in "fc" or (kind == "V" and "float" in x.dtype.name):
            parts = [x] if kind != "c" else [x.real, x.imag]
            moved = []
            for part in parts:
                wide = part.astype(np.float64)
                finite = np.isfinite(wide)
                spread = float(np.std(wide[finite])) if finite.any() else 0.0
                spread = spread if spread > 0 else 1.0
                noisy = (wide * (1 + 0.1 * rng.standard_normal(wide.shape))
                         + 0.1 * spread * rng.standard_normal(wide.shape))
                moved.append(np.where(finite, noisy, wide))
            value = moved[0] if kind != "c" else moved[0] + 1j * moved[1]
            out.append(np.asarray(value).astype(x.dtype))
        else:
            out.append(x)
    return out


def _run(executable, inputs: Sequence[np.ndarray], device,
         donated: frozenset = frozenset()) -> tuple[list[np.ndarray], list[int]]:
    """Outputs of one call, and the parameters not in ``donated`` that the
    call consumed or overwrote."""
    import jax

    # Fresh device copies every call: donated arguments are consumed.
    args = [jax.device_put(np.array(x, copy=True), device) for x in inputs]
    outputs = [np.asarray(o) for o in executable.execute(args)]
    changed = [k for k, (a, x) in enumerate(zip(args, inputs))
               if k not in donated and (a.is_deleted() or np.ascontiguousarray(np.asarray(a))
                                        .tobytes() != np.ascontiguousarray(x).tobytes())]
    return outputs, changed


def _same(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> str:
    """'' if both output lists are bit-identical, else what differs."""
    if len(a) != len(b):
        return f"{len(a)} outputs against {len(b)}"
    for k, (x, y) in enumerate(zip(a, b)):
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"output {k}: {x.dtype}{list(x.shape)} against {y.dtype}{list(y.shape)}"
        if x.tobytes() != y.tobytes():
            flat_x, flat_y = x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8)
            differing = int(np.count_nonzero(flat_x != flat_y))
            return (f"output {k} ({x.dtype}{list(x.shape)}) differs in {differing} of "
                    f"{flat_x.size} bytes")
    return ""


def _prepare_runtime() -> None:
    """Initialise what jax sets up lazily while lowering, which a process that
    only deserializes never does: LAPACK's function table for its custom calls
    (running jnp.linalg's custom calls without it segfaults)."""
    try:
        jax_compat.initialize_lapack()
    except Exception as err:  # noqa: BLE001 - jax moved it; custom calls may crash
        _log(f"could not initialise LAPACK ({err!r})")


def compare(request: dict[str, Any]) -> dict[str, Any]:
    import jax

    # The inputs already have the executable's exact dtypes: keep float64 and
    # int64 as they are whatever the caller's script configured.
    jax.config.update("jax_enable_x64", True)
    platform, device_id = request.get("platform", "cpu"), int(request.get("device", 0))
    if platform == "cpu" and device_id:   # compiled for cpu:N: this process needs N + 1 CPUs
        jax.config.update("jax_num_cpu_devices", device_id + 1)
    _prepare_runtime()
    device = next((d for d in jax.devices(platform) if d.id == device_id), None)
    if device is None:
        return {"ok": False, "trials": 0,
                "reason": f"both executables run on {platform}:{device_id}, which the "
                          f"verification process does not have ({len(jax.devices(platform))} "
                          f"{platform} devices)"}
    devices = jax_compat.device_list([device])
    client = device.client

    def load(what: str):
        _log(f"loading {what}")
        return client.deserialize_executable(request[what], devices, None)

    reference = load("reference")
    try:
        candidate = load("candidate")
    except Exception as err:  # noqa: BLE001 - a clean load error
        return {"ok": False, "trials": 0, "reason": f"candidate does not load: {err}"}

    donated = frozenset(request.get("donated", ()))
    runs: list[tuple[str, list[np.ndarray]]] = []
    if request.get("user_args") is not None:
        user = [np.asarray(x) for x in request["user_args"]]
        runs.append(("the user's inputs", user))
        derived = derived_inputs(user, request["seed"])
        if any(a.tobytes() != b.tobytes() for a, b in zip(user, derived)):
            runs.append(("the user's inputs with their floats perturbed", derived))
    for trial in range(request["trials"]):
        runs.append((f"random inputs (seed {request['seed'] + trial})",
                     random_inputs(request["specs"], request["seed"] + trial)))
    if len(runs) < 2:
        return {"ok": False, "trials": 0,
                "reason": f"only {len(runs)} input set to compare on; at least 2 are needed"}
    # The first set once more, last: whatever the earlier calls left behind
    # (a constant or a buffer the executable keeps, stale temp bytes) must not
    # change a later call.
    runs.append((runs[0][0] + ", called again after the others", runs[0][1]))

    # Both executables are called equally often, in step: stateful thunks (the
    # RNG state of rng-get-and-update-state) then see the same states.
    for done, (label, inputs) in enumerate(runs):
        _log(f"running reference on {label}")
        expected, reference_changed = _run(reference, inputs, device, donated)
        _log(f"running candidate on {label}")
        got, changed = _run(candidate, inputs, device, donated)
        diff = _same(expected, got)
        if not diff and changed != reference_changed:
            diff = (f"the call changed parameter(s) {changed} (not donated), XLA's changed "
                    f"{reference_changed or 'none'}")
            return {"ok": False, "trials": min(done, len(runs) - 1), "reason": f"on {label}: {diff}"}
        if diff:
            _log("checking that the reference is deterministic")
            first = _run(load("reference"), inputs, device, donated)[0]
            second = _run(load("reference"), inputs, device, donated)[0]
            if _same(first, second):
                return {"ok": False, "trials": min(done, len(runs) - 1),
                        "reason": f"the reference itself is not deterministic on {label}: "
                                  + _same(first, second)}
            return {"ok": False, "trials": min(done, len(runs) - 1),
                    "reason": f"on {label}: {diff}"}
    distinct = len(runs) - 1
    return {"ok": True, "trials": distinct,
            "reason": f"bit-identical on {distinct} input sets (the first twice), "
                      "parameters unchanged"}


def _die_with_parent(lifeline: int, parent: int) -> None:
    """Exit as soon as the parent dies, wherever this process is."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the lifeline below still works
    if parent and os.getppid() != parent:  # it died before prctl
        os._exit(3)

    def watch() -> None:
        try:
            while os.read(lifeline, 1):
                pass
        except OSError:
            pass
        os._exit(3)  # end of file: the parent's end of the pipe is closed

    threading.Thread(target=watch, name="olla-lifeline", daemon=True).start()


def main(argv: Sequence[str]) -> int:
    lifeline, parent = int(argv[1]), int(argv[2])
    idle_s = float(argv[3]) if len(argv) > 3 else None
    _die_with_parent(lifeline, parent)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, ValueError, OSError):
        pass  # a crash here may leave a core file; nothing else changes
    # The result gets stdout to itself: anything else printing goes to stderr.
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    if idle_s is not None and not select.select([sys.stdin.buffer], [], [], idle_s)[0]:
        _log("no request came: idle")
        return 0
    try:
        request = pickle.load(sys.stdin.buffer)
        result = compare(request)
    except Exception as err:  # noqa: BLE001 - reported to the parent
        result = {"ok": False, "trials": 0,
                  "reason": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"}
    json.dump(result, result_out)
    result_out.close()
    _log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
