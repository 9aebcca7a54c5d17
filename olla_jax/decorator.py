"""``@olla_jax.optimize``: plan a jitted function on its first call per signature.

    @olla_jax.optimize(donate_argnums=(0, 1))
    def train_step(params, opt_state, batch): ...

Each new input signature (shapes, dtypes, tree structure, static values) is
planned once; the plan is kept in memory and on disk (``$OLLA_JAX_CACHE_DIR``,
else ``$XDG_CACHE_HOME/olla_jax``, else ``~/.cache/olla_jax``), so a later
process re-applies it without solving (it is still checked and verified).
When planning is impossible the function runs under plain ``jax.jit``, with
one warning.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import jax

from olla_jax import saved as saved_lib
from olla_jax.plan import PlanWarning, plan as plan_step


def cache_dir() -> Path:
    root = os.environ.get("OLLA_JAX_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "olla_jax"


def _signature(args: Sequence[Any], static_argnums: Sequence[int], backend: str) -> str:
    static = set(static_argnums)
    parts = [backend, jax.__version__]
    for i, arg in enumerate(args):
        if i in static:
            parts.append(f"static:{i}:{arg!r}")
            continue
        leaves, tree = jax.tree_util.tree_flatten(arg)
        parts.append(f"{i}:{tree}:" + ",".join(
            f"{getattr(x, 'dtype', type(x).__name__)}{list(getattr(x, 'shape', ()))}" for x in leaves))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class Optimized:
    """The decorated function: plans per signature, then runs the plan."""

    def __init__(self, fn: Callable, *, static_argnums: Sequence[int], donate_argnums: Sequence[int],
                 backend: str, time_limit_s: float, cache: bool | str | Path, plan_options: dict):
        if hasattr(fn, "lower") and hasattr(fn, "__wrapped__") and (static_argnums or donate_argnums):
            # Over jax.jit with jit's arguments repeated here: plan the Python function.
            fn = fn.__wrapped__
        self._fn = fn
        self._static = tuple(static_argnums)
        self._donate = tuple(donate_argnums)
        self._backend = backend
        self._time_limit_s = time_limit_s
        self._options = plan_options
        self._cache = None if cache is False else (cache_dir() if cache is True else Path(cache))
        self._plans: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._warned = False
        self._jitted = fn if hasattr(fn, "lower") else jax.jit(
            fn, static_argnums=self._static, donate_argnums=self._donate)
        functools.update_wrapper(self, fn)

    def plan_for(self, *args):
        """The Plan used for these arguments (planning it if needed)."""
        key = _signature(args, self._static, self._backend)
        with self._lock:
            if key not in self._plans:
                self._plans[key] = self._make_plan(key, args)
            return self._plans[key]

    def _make_plan(self, key: str, args):
        path = self._cache / f"{key}.json" if self._cache else None
        options = dict(backend=self._backend, static_argnums=self._static,
                       donate_argnums=self._donate, **self._options)
        if path is not None and path.exists():
            try:
                return plan_step(self._fn, *args, saved=saved_lib.load_plan(path), **options)
            except saved_lib.PlanFileError:
                path.unlink(missing_ok=True)  # stale: another jax or program; plan again
        try:
            result = plan_step(self._fn, *args, time_limit_s=self._time_limit_s, **options)
        except Exception as err:  # noqa: BLE001 - planning must never stop the user's step
            self._warn(f"planning failed ({type(err).__name__}: {err}); running plain jax.jit")
            return None
        if path is not None and result.layout is not None and result.verified:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                result.save(path)
            except OSError as err:
                self._warn(f"could not cache the plan in {path}: {err}")
        return result

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"olla_jax.optimize: {message}", PlanWarning, stacklevel=3)

    def __call__(self, *args):
        result = self.plan_for(*args)
        if result is None:
            return self._jitted(*args)
        return result.compiled(*args)


def optimize(fn: Callable | None = None, *, static_argnums: Sequence[int] = (),
             donate_argnums: Sequence[int] = (), backend: str = "cpu", time_limit_s: float = 30.0,
             cache: bool | str | Path = True, **plan_options):
    """Decorator (with or without arguments) planning ``fn`` per input signature.

    ``static_argnums``/``donate_argnums`` mean what they mean to ``jax.jit``;
    donation is never added on its own (it invalidates the caller's arrays).
    ``cache``: True (the default cache folder), False, or a folder.
    """
    def wrap(f):
        return Optimized(f, static_argnums=static_argnums, donate_argnums=donate_argnums,
                         backend=backend, time_limit_s=time_limit_s, cache=cache,
                         plan_options=plan_options)
    return wrap(fn) if fn is not None else wrap
