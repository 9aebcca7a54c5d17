"""Run a solver function in a child process.

python-mip's bundled CBC and OR-Tools ship different builds of the same
COIN-OR libraries under one soname (libOsi.so.0): whichever loads second in a
process fails.  MIP engines therefore run in a spawned child that never
imports OR-Tools; a crash or overrun there costs the caller nothing.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from olla_jax.errors import OllaJaxError

_ROOT = str(Path(__file__).resolve().parents[2])
_CHILD = ("import importlib, os, pickle, sys\n"
          "out = os.fdopen(os.dup(1), 'wb')\n"
          "os.dup2(2, 1)  # solver chatter goes to stderr, the result alone to stdout\n"
          "module, name, args, kwargs = pickle.load(sys.stdin.buffer)\n"
          "result = getattr(importlib.import_module(module), name)(*args, **kwargs)\n"
          "out.write(pickle.dumps(result))\n"
          "out.flush()\n")


class ChildFailed(OllaJaxError, RuntimeError):
    """The child process exited with an error or a signal."""


def run_isolated(module: str, name: str, *args: Any, timeout_s: float, **kwargs: Any) -> Any:
    """``module.name(*args, **kwargs)`` in a fresh interpreter; None on timeout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in [_ROOT, os.environ.get("PYTHONPATH", "")] if p))
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD],
                              input=pickle.dumps((module, name, args, kwargs)), env=env,
                              capture_output=True, timeout=timeout_s, check=True)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as err:
        raise ChildFailed(f"{module}.{name} failed in its child process (exit {err.returncode}):\n"
                          f"{err.stderr.decode(errors='replace')[-2000:]}") from None
    return pickle.loads(done.stdout)
