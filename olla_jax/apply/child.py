"""Child process: load two executables, run both on the same inputs, compare.

Run as ``python -m olla_jax.apply.child REQUEST RESULT``.  REQUEST is a pickle
written by :mod:`olla_jax.apply.verify`; RESULT receives a JSON object
``{"ok", "reason", "trials"}``.  A bad executable may abort this process (XLA
CHECK failures, segfaults): that is why it runs here and not in the caller.
Progress lines on stderr (``olla-child: ...``) tell the parent how far it got.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from typing import Any, Sequence

import numpy as np


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


def _run(executable, inputs: Sequence[np.ndarray], device) -> list[np.ndarray]:
    import jax

    # Fresh device copies every call: donated arguments are consumed.
    args = [jax.device_put(np.array(x, copy=True), device) for x in inputs]
    return [np.asarray(o) for o in executable.execute(args)]


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
        from jax._src.lax import linalg

        linalg.initialize_lapack()
    except Exception as err:  # noqa: BLE001 - jax moved it; custom calls may crash
        _log(f"could not initialise LAPACK ({err!r})")


def compare(request: dict[str, Any]) -> dict[str, Any]:
    import jax
    from jax._src.lib import xla_client as xc

    _prepare_runtime()
    device = jax.devices(request.get("platform", "cpu"))[0]
    devices = xc.DeviceList((device,))
    client = device.client

    def load(what: str):
        _log(f"loading {what}")
        return client.deserialize_executable(request[what], devices, None)

    reference = load("reference")
    try:
        candidate = load("candidate")
    except Exception as err:  # noqa: BLE001 - a clean load error
        return {"ok": False, "trials": 0, "reason": f"candidate does not load: {err}"}

    runs: list[tuple[str, list[np.ndarray]]] = []
    for trial in range(request["trials"]):
        runs.append((f"random inputs (seed {request['seed'] + trial})",
                     random_inputs(request["specs"], request["seed"] + trial)))
    if request.get("user_args") is not None:
        runs.append(("the user's inputs", list(request["user_args"])))

    # Both executables are called equally often, in step: stateful thunks (the
    # RNG state of rng-get-and-update-state) then see the same states.
    for done, (label, inputs) in enumerate(runs):
        _log(f"running reference on {label}")
        expected = _run(reference, inputs, device)
        _log(f"running candidate on {label}")
        diff = _same(expected, _run(candidate, inputs, device))
        if diff:
            _log("checking that the reference is deterministic")
            first = _run(load("reference"), inputs, device)
            second = _run(load("reference"), inputs, device)
            if _same(first, second):
                return {"ok": False, "trials": done,
                        "reason": f"the reference itself is not deterministic on {label}: "
                                  + _same(first, second)}
            return {"ok": False, "trials": done, "reason": f"on {label}: {diff}"}
    return {"ok": True, "trials": len(runs), "reason": f"bit-identical on {len(runs)} input sets"}


def main(argv: Sequence[str]) -> int:
    request_path, result_path = argv[1], argv[2]
    with open(request_path, "rb") as f:
        request = pickle.load(f)
    try:
        result = compare(request)
    except Exception as err:  # noqa: BLE001 - reported to the parent
        result = {"ok": False, "trials": 0,
                  "reason": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"}
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    _log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
