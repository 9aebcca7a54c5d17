"""``olla_jax.jit``: ``jax.jit`` that plans each input signature's memory once.

    @olla_jax.jit(donate_argnums=(0, 1), static_argnames="train")
    def train_step(params, opt_state, batch, *, train=True): ...

Takes every argument ``jax.jit`` takes and is called exactly as the jitted
function is: jax lowers each call (it resolves static, keyword and donated
arguments), and that Lowered is what is planned.  Each new signature (tree
structure, shapes, dtypes, static values) is planned once; the plan is kept in
memory and on disk (``$OLLA_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/olla_jax``,
else ``~/.cache/olla_jax``), so a later process re-applies it without solving
(it is still checked and verified).  The cache never breaks a call: a cache
entry that cannot be read, written or applied is planned again.  When planning
is impossible the function runs under plain ``jax.jit``, with one warning.  A
``memory_budget`` that is not met runs the least-memory plan found (XLA's
executable when that plan was not verified), with a warning per signature that
says by how much the budget was missed.
``olla_jax.optimize`` is the same decorator under its old name.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import hashlib
import inspect
import math
import os
import re
import threading
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from olla_jax import calls, jax_compat
from olla_jax import saved as saved_lib
from olla_jax.plan import (NOTHING_BETTER, BudgetNotMet, PlanWarning, budget_advice,
                           check_options, plan as plan_step, quiet, warn)
from olla_jax.result import held
from olla_jax.sizes import parse_size, size_text

# Keyword arguments of olla_jax.jit that are planning options, not jax.jit's.
PLAN_OPTIONS = ("engine", "verify_trials", "feed_back", "seed", "memory_budget", "recompute",
                "recompute_cost", "rng_lowering", "scan_remat", "program_remat")


def cache_dir() -> Path:
    root = os.environ.get("OLLA_JAX_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "olla_jax"


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def source_hash(package: Path) -> str:
    """A hash of the names and contents of the Python files under ``package``."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        try:
            h.update(path.read_bytes())
        except OSError:   # an unreadable file: its name alone still counts
            pass
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def planner_identity() -> str:
    """olla_jax's own source, hashed: a plan cached by other planner code is
    planned again (a stale plan would still be checked and verified, but it
    would keep that code's memory figures after an upgrade)."""
    return source_hash(Path(__file__).resolve().parent)


def _code_hash(code: types.CodeType, h) -> None:
    h.update(code.co_code)
    h.update(code.co_name.encode())
    # the names it reads (globals, attributes): jnp.sin and jnp.cos compile alike
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_hash(const, h)
        else:
            h.update(_stable(const).encode())


def function_identity(fn: Any, depth: int = 0, reach: _Reach | None = None) -> str:
    """Module, qualified name and a hash of the code of the function under any
    wrappers, and the wrappers' own code and options: two functions never share
    a cache entry, an edited one is planned afresh."""
    reach = reach or _Reach()
    h = hashlib.sha256()
    if isinstance(fn, types.MethodType) and hasattr(fn.__func__, "__wrapped__"):
        # a jit's bound method: its __wrapped__ is the unbound function's, so
        # the object is read here, not lost under it
        h.update(f"self={_stable(fn.__self__, depth + 1, reach)}".encode())
        fn = fn.__func__
    target = inspect_unwrap(fn)
    h.update(_wrappers(fn, target, depth, reach).encode())
    if isinstance(target, functools.partial):
        h.update(f"partial({_stable(target.args, depth, reach)},"
                 f"{_stable(sorted(target.keywords.items()), depth, reach)})".encode())
        target = inspect_unwrap(target.func)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__qualname__)}"
    h.update(name.encode())
    # what the code reads besides its arguments: a bound method's object, a
    # callable object's own state (two differently configured objects of one
    # class are two entries, not one that each plans over the other's)
    if isinstance(target, types.MethodType):
        h.update(f"self={_stable(target.__self__, depth + 1, reach)}".encode())
    elif not isinstance(target, (types.FunctionType, types.BuiltinFunctionType, type)):
        h.update(f"state={_stable(target, depth + 1, reach)}".encode())
    code = getattr(target, "__code__", None) or getattr(getattr(target, "__call__", None),
                                                        "__code__", None)
    if code is not None:
        _code_hash(code, h)
    for cell in getattr(target, "__closure__", None) or ():
        try:   # closed-over values (a closure made per setting is another function)
            h.update(_stable(cell.cell_contents, depth, reach).encode())
        except ValueError:   # an empty cell
            pass
    # default values, traced in where the call leaves them out (def f(x, k=n) made per n)
    for defaults in (getattr(target, "__defaults__", None), getattr(target, "__kwdefaults__", None)):
        if defaults:
            h.update(_stable(defaults, depth, reach).encode())
    return h.hexdigest()[:24]


def _wrappers(fn: Any, target: Any, depth: int, reach: _Reach) -> str:
    """The layers between ``fn`` and ``target``: a jit's options, a wrapping
    function's code and closure (``jax.grad(f)``, ``jax.vmap(f)`` or a
    ``functools.wraps`` decorator is another program than ``f``: keyed as
    ``f`` alone, each process planned over the other's cache entry)."""
    parts, seen = [], set()
    while fn is not target and id(fn) not in seen:
        seen.add(id(fn))
        options = jax_compat.jit_options(fn)
        if options is not None:   # jax.jit(f) without options is f's program
            if any(dataclasses.astuple(options)):
                parts.append(f"jit{_stable(dataclasses.astuple(options), depth + 1, reach)}")
        elif isinstance(fn, types.FunctionType):
            h = hashlib.sha256()
            _code_hash(fn.__code__, h)
            for cell in fn.__closure__ or ():
                try:
                    h.update(_stable(cell.cell_contents, depth + 1, reach).encode())
                except ValueError:   # an empty cell
                    pass
            parts.append(f"wraps:{h.hexdigest()[:16]}")
        else:
            parts.append(f"{type(fn).__module__}.{type(fn).__qualname__}")
        fn = getattr(fn, "__wrapped__", None) or getattr(fn, "fun", None)
    return "/".join(parts)


def inspect_unwrap(fn: Any) -> Any:
    seen = set()
    while id(fn) not in seen:
        seen.add(id(fn))
        inner = getattr(fn, "__wrapped__", None) or getattr(fn, "fun", None)
        if inner is None or not callable(inner):
            return fn
        fn = inner
    return fn


# How deep and how far _stable reads into functions, dataclasses and
# containers: a step's closure over an optimizer (closures over closures over
# its settings) or a flax module (a dataclass of settings and initializer
# closures) is read whole; past either limit a value is keyed by its type.
_STABLE_DEPTH = 12
_STABLE_VALUES = 20_000
# The array bytes one key may read (closed-over constants: a mask, a table);
# past it an array is keyed by its dtype and shape only.
_STABLE_ARRAY_BYTES = 64 << 20


class _Reach:
    """The values one key may still read (``_STABLE_VALUES``)."""

    def __init__(self) -> None:
        self.left = _STABLE_VALUES
        self.array_bytes = _STABLE_ARRAY_BYTES


# A static NaN keyed as one value: NaN != NaN, so each call would plan again
# (jax.jit traces again; the program is the same).
_NAN = "static NaN"


def _nan_as_one(value: Any) -> Any:
    return _NAN if isinstance(value, float) and value != value else value


def _as_nan(value: Any) -> Any:
    return math.nan if value is _NAN else value


def _tree_text(tree: jax.tree_util.PyTreeDef, depth: int = 0, reach: _Reach | None = None) -> str:
    """A pytree structure as text, its nodes' static data by ``_stable``: a
    flax TrainState keeps its optimizer there, and ``str(tree)`` without
    addresses reads adam at 1e-3 and at 1e-2 alike (one disk key, each
    planning over the other's entry)."""
    reach = reach or _Reach()
    node = tree.node_data()
    if node is None:
        return "*"
    kind, data = node
    children = ",".join(_tree_text(c, depth, reach) for c in tree.children())
    return (f"{kind.__module__}.{kind.__qualname__}[{_stable(data, depth + 1, reach)}]"
            f"({children})")


def _stable(value: Any, depth: int = 0, reach: _Reach | None = None) -> str:
    """A text for a static value that is the same in every process: exact for
    plain Python values, types, functions (their identity, closures included),
    dataclasses, objects hashed by identity (their attributes) and containers of
    them, else its type and hash (a hash salted per process then never matches
    another process's: planned again, never a wrong hit; a cached plan is
    applied only to the module it was made for)."""
    if value is None or value is Ellipsis or isinstance(value, (bool, int, float, complex, str,
                                                                 bytes)):
        return f"{type(value).__name__}:{value!r}"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    reach = reach or _Reach()
    reach.left -= 1
    if depth >= _STABLE_DEPTH or reach.left < 0:
        return f"{kind}#deep"
    if isinstance(value, (tuple, list, frozenset)):
        items = [_stable(v, depth + 1, reach) for v in value]
        if isinstance(value, frozenset):
            items.sort()
        return f"{type(value).__name__}({','.join(items)})"
    if isinstance(value, jax.tree_util.PyTreeDef):
        return f"treedef:{_tree_text(value, depth, reach)}"
    if isinstance(value, Mapping):
        try:
            items = sorted(f"{_stable(k, depth + 1, reach)}:{_stable(v, depth + 1, reach)}"
                           for k, v in value.items())
            return f"{kind}({','.join(items)})"
        except Exception:  # noqa: BLE001 - a mapping that cannot be read: keyed by hash below
            pass
    # str and type hashes are salted or addresses: each process had its own key
    if isinstance(value, type):
        return f"type:{value.__module__}.{value.__qualname__}"
    if isinstance(value, enum.Enum):
        return f"{kind}.{value.name}"
    if isinstance(value, np.dtype):
        return f"dtype:{value.str}"
    if isinstance(value, (types.FunctionType, functools.partial)):
        return f"function:{function_identity(value, depth + 1, reach)}"
    options = jax_compat.jit_options(value) if callable(value) else None
    if options is not None:   # a jax.jit object (jax.nn.relu): its function and options, not
        # jax's private record of it (its inspect.Signature hashes salted strings)
        return (f"jit:{function_identity(value, depth + 1, reach)}"
                f"{_stable(dataclasses.astuple(options), depth + 1, reach)}")
    if isinstance(value, inspect.Signature):
        return f"signature:{_ADDRESS.sub('', str(value))}"
    if isinstance(value, types.MethodType):
        return (f"method:{function_identity(value.__func__, depth + 1, reach)}"
                f"@{_stable(value.__self__, depth + 1, reach)}")
    if dataclasses.is_dataclass(value):
        try:
            fields = ",".join(
                f"{f.name}={_stable(getattr(value, f.name, None), depth + 1, reach)}"
                for f in dataclasses.fields(value))
            return f"{kind}({fields})"
        except Exception:  # noqa: BLE001 - a field that cannot be read: keyed by hash below
            pass
    if isinstance(value, types.ModuleType):
        return f"module:{value.__name__}"
    if isinstance(value, (jax.Array, np.ndarray)):
        return _array_text(value, reach)
    if type(value) is object:   # a sentinel (jax.vmap's default axis_name): no state
        return "builtins.object()"
    if type(value).__hash__ in (object.__hash__, None):
        # hashed by identity (or not at all): its attributes, as a dataclass's fields
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            return f"{kind}{_stable(attrs, depth + 1, reach)[len('builtins.dict'):]}"
    try:
        return f"{kind}#{hash(value)}"
    except TypeError:
        return f"{kind}#unhashable"


def _array_text(value: Any, reach: _Reach) -> str:
    """An array (a closed-over constant) by dtype, shape and a hash of its
    contents: closures over two different arrays are two programs (keyed by
    type alone they shared one disk entry, each process planning both again)."""
    kind = f"array:{getattr(value, 'dtype', '?')}{tuple(getattr(value, 'shape', ()))}"
    nbytes = getattr(value, "nbytes", None)
    if isinstance(value, jax.core.Tracer) or nbytes is None or nbytes > reach.array_bytes:
        return f"{kind}#unread"
    reach.array_bytes -= nbytes
    try:   # explicit: allowed under jax.transfer_guard("disallow")
        data = np.asarray(jax.device_get(value))
    except Exception:  # noqa: BLE001 - a key array, a deleted buffer: dtype and shape
        return f"{kind}#unread"
    if data.dtype.hasobject:   # pointers: no content to hash
        return f"{kind}#unread"
    return f"{kind}:{hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:16]}"


# Leaf types read the fast way (jax's concrete array type, found on first sight):
# their aval's fields directly, no dtype canonicalized (an array's dtype is
# jax's already).  A leaf's dtype, shape and weak_type properties each build
# from the aval, and canonicalizing a dtype costs as much again: per call over
# a model's hundreds of leaves, that was most of the drop-in's overhead.
_ARRAY_TYPES: set[type] = set()


class _LeftToJax(Exception):
    """A call under another transformation (a Tracer leaf) or with
    ShapeDtypeStructs: jax.jit's, not planned."""


def _leaves_key(leaves: list, calling: bool, static_leaves: bool = False) -> tuple:
    """``_leaf`` of each leaf; ``calling``: raise _LeftToJax on a Tracer or a
    ShapeDtypeStruct (a call, not ``plan_for``, which plans ahead with them).
    ``static_leaves``: a leaf that is not an array is keyed by its value (a jit
    wrapper that is not jax.jit, equinox's ``filter_jit``, bakes such leaves
    into the program: 2.0 and 3.0 are two programs there)."""
    out = []
    for x in leaves:
        if type(x) in _ARRAY_TYPES:
            a = x.aval
            out.append((a.dtype, a.shape, a.weak_type, x.sharding if x.committed else None))
            continue
        if calling and isinstance(x, (jax.core.Tracer, jax.ShapeDtypeStruct)):
            raise _LeftToJax
        if static_leaves and not isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)):
            out.append((_STATIC_LEAF, type(x), x))   # hashed with the key: TypeError if it cannot be
            continue
        out.append(_leaf(x))
    return tuple(out)


# Marks a leaf keyed by its value (``_leaves_key``'s ``static_leaves``).
_STATIC_LEAF = "static leaf"


def _leaf(x: Any) -> tuple:
    """What of an argument leaf the program depends on (the sharding object as
    it is: hashable, and cheap where its text is not; the file key prints it).

    As jax.jit does, only a committed array's sharding counts: a NumPy array and
    an uncommitted jax array (placed by default) lower to the same program, so
    they share a plan rather than planning the step twice."""
    if isinstance(x, (bool, int, float, complex)):
        return ("py", type(x).__name__)
    sharding = getattr(x, "sharding", None) if getattr(x, "committed", True) else None
    key = (_canonical(getattr(x, "dtype", type(x).__name__)), tuple(getattr(x, "shape", ())),
           bool(getattr(x, "weak_type", False)), sharding)
    if (type(x) not in _ARRAY_TYPES and isinstance(x, jax.Array)
            and not isinstance(x, jax.core.Tracer)
            and type(getattr(x, "aval", None)) is jax.core.ShapedArray
            and key[:3] == (x.aval.dtype, x.aval.shape, x.aval.weak_type)):
        _ARRAY_TYPES.add(type(x))     # its aval gives the same key: read it so from now on
    return key


def _canonical(dtype: Any) -> Any:
    """The dtype jax traces a leaf of ``dtype`` as (a NumPy float64 is float32
    unless x64 is on): two calls that trace alike share a plan."""
    try:
        return jax.dtypes.canonicalize_dtype(dtype)
    except (TypeError, ValueError):   # not a dtype jax knows (the call will say so)
        return dtype


class Jitted:
    """The jitted function: plans per input signature, then runs the plan."""

    def __init__(self, fun: Callable, *, backend: str | None = None, time_limit_s: float = 30.0,
                 cache: bool | str | Path = True, compiler_options: dict | None = None,
                 plan_options: dict | None = None, jit_kwargs: dict | None = None):
        if not callable(fun):
            raise TypeError(
                "olla_jax.jit takes the function to jit (or a jax.jit-wrapped one), got "
                + ("None" if fun is None else f"an object of type {type(fun).__name__}")
                + (": plan a jax.stages.Lowered with olla_jax.plan(lowered)"
                   if calls.is_lowered(fun) else ""))
        # first: copying the function's __dict__ (functools.wraps does) must not
        # replace this object's own attributes (a wrapper object's ``_jitted``)
        functools.update_wrapper(self, inspect_unwrap(fun) if calls.is_jitted(fun) else fun)
        plan_options = dict(plan_options or {})
        unknown = set(plan_options) - set(PLAN_OPTIONS)
        if unknown:
            raise TypeError(f"olla_jax.jit got unexpected keyword argument(s) {sorted(unknown)}; "
                            f"it takes jax.jit's arguments and {', '.join(PLAN_OPTIONS)}, "
                            "backend, time_limit_s, cache")
        if backend is None:
            backend = "cpu" if jax.default_backend() == "cpu" else "gpu"
        if backend not in ("cpu", "gpu"):
            raise ValueError(f"olla_jax.jit runs the step here: backend must be 'cpu' or 'gpu', "
                             f"not {backend!r} (plan a compile-only target with olla_jax.plan)")
        check_options(fun, backend=backend, time_limit_s=time_limit_s,
                      compiler_options=compiler_options, **plan_options)
        if plan_options.get("memory_budget") is not None:   # "1GiB" and 2**30 plan alike
            plan_options["memory_budget"] = parse_size(plan_options["memory_budget"])
        if not isinstance(cache, (bool, str, os.PathLike)):
            raise TypeError(f"cache must be True, False or a folder, got {cache!r}")
        jit_kwargs = dict(jit_kwargs or {})
        _check_jit_kwargs(jit_kwargs)
        if compiler_options:
            jit_kwargs["compiler_options"] = compiler_options
        for name in ("static_argnums", "donate_argnums"):
            if name in jit_kwargs:
                jit_kwargs[name] = calls.argnums(jit_kwargs[name], name)
        if calls.is_jitted(fun) and jit_kwargs:
            if not hasattr(fun, "__wrapped__"):
                raise TypeError("this jitted function cannot be re-jitted with new options; give "
                                "them to the jit that made it")
            fun = fun.__wrapped__     # over jax.jit with jit's arguments repeated here
        try:
            self._jitted = fun if calls.is_jitted(fun) else jax.jit(fun, **jit_kwargs)
        except (TypeError, ValueError) as err:
            raise type(err)(f"olla_jax.jit: jax.jit refused these arguments: {err}") from err
        self._fn = fun
        self._backend = backend
        self._time_limit_s = time_limit_s
        self._options = plan_options
        self._cache = None if cache is False else (cache_dir() if cache is True else Path(cache))
        self._identity = "|".join((
            function_identity(fun), jax.__version__, planner_identity(), backend,
            repr(sorted((k, _stable_option(v)) for k, v in jit_kwargs.items())),
            repr(sorted((k, _stable_option(v)) for k, v in plan_options.items()))))
        self._plans: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self._warned = False
        # a jit wrapper whose static arguments jax.jit's options do not tell
        # (equinox's filter_jit: every leaf that is not an array is static)
        self._static_leaves = calls.static_info(self._jitted) is None

    # -- signatures ---------------------------------------------------------
    def _split(self, args, kwargs):
        """(static part, dynamic part) of a call, as jax.jit splits it."""
        info = calls.static_info(self._jitted)
        nums, names = info if info is not None else ((), ())
        fixed = {i % len(args) for i in nums if -len(args) <= i < len(args)} if args else set()
        static = (tuple((i, args[i]) for i in sorted(fixed)),
                  tuple((k, kwargs[k]) for k in sorted(kwargs) if k in names))
        dynamic = (tuple(a for i, a in enumerate(args) if i not in fixed),
                   {k: v for k, v in kwargs.items() if k not in names})
        return static, dynamic

    def _key(self, args, kwargs, calling: bool = False):
        """In memory: static values themselves (hash and equality, as jax.jit keys
        them), the dynamic arguments' structure and avals, and jax's configuration
        that changes the trace (``jax_enable_x64`` switched on after a call is
        another program, as it is to jax.jit).  ``calling``: raise _LeftToJax for
        a call jax.jit must take (a Tracer or ShapeDtypeStruct among the leaves)."""
        (positional, named), dynamic = self._split(args, kwargs)
        # the type too: 1, 1.0 and True are equal and hash alike, but trace differently
        static = (tuple((i, type(v), _nan_as_one(v)) for i, v in positional),
                  tuple((k, type(v), _nan_as_one(v)) for k, v in named))
        leaves, tree = jax.tree_util.tree_flatten(dynamic)
        return (static, tree, _leaves_key(leaves, calling, self._static_leaves),
                jax_compat.trace_context())

    def _file_key(self, key) -> str:
        (positional, named), tree, leaves, context = key
        static = (tuple((i, _as_nan(v)) for i, _, v in positional),
                  tuple((k, _as_nan(v)) for k, _, v in named))
        text = "|".join((self._identity, _stable(static), _tree_text(tree),
                         _ADDRESS.sub("", repr([_stable(leaf[2]) if leaf[0] is _STATIC_LEAF
                                                else tuple(map(str, leaf)) for leaf in leaves])),
                         _ADDRESS.sub("", repr(context))))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    # -- planning -----------------------------------------------------------
    def plan_for(self, *args, **kwargs):
        """The Plan used for these arguments (planning it if needed); None when
        planning failed and the call runs under jax.jit."""
        try:
            key = self._key(args, kwargs)
            hash(key)
        except TypeError:   # an unhashable static value: jax.jit itself will say so
            return None
        return self._plan_of(key, args, kwargs)

    def _plan_of(self, key, args, kwargs):
        with self._lock:
            if key not in self._plans:
                self._plans[key] = self._make_plan(key, args, kwargs)
            return self._plans[key]

    def _make_plan(self, key, args, kwargs):
        path = self._cache / f"{self._file_key(key)}.json" if self._cache else None
        options = dict(backend=self._backend, time_limit_s=self._time_limit_s, **self._options)
        if path is not None:
            try:
                cached = self._cached(path, args, kwargs, options)
            except OSError:   # an unreadable cache folder: plan as if it were empty
                cached = None
            if cached is not None:
                return cached
        said: list[tuple[str, type[Warning]]] = []   # plan()'s warnings, given below
        try:
            with held(said):
                result = plan_step(self._jitted, *args, kwargs=kwargs, **options)
        except BudgetNotMet as err:   # the least-memory plan found still runs, with a warning
            # one warning for the signature: plan()'s own (why recomputation
            # did not reach the budget) are folded into it
            folded = [m for m, category in said if issubclass(category, PlanWarning)]
            said = [(m, c) for m, c in said if not issubclass(c, PlanWarning)]
            result = self._budget_missed(err, [*err.reasons, *folded])
            failure = None
        except Exception as err:  # noqa: BLE001 - planning must never stop the user's step
            failure = err
        else:
            failure = None
        for message, category in said:
            warn(message, category)
        if failure is not None:
            # outside the handler: jax's error then reads as jax.jit's, not chained
            # to olla_jax's own failure
            self._raise_if_jax_refuses(args, kwargs)
            self._warn(f"planning failed ({type(failure).__name__}: {failure}); running plain "
                       "jax.jit")
            return None
        # a plan of scan_remat's rewritten step is of another program than the one a
        # cached plan is applied to (refused there): not cached
        if path is not None and not result.settings.get("scan_remat_stacks") and (
                (result.layout is not None and result.verified) or self._searched_in_vain(result)):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                saved = result.to_saved()
                saved_lib.write_atomic(path, dataclasses.replace(saved, figures=dict(
                    saved.figures, time_limit_s=self._time_limit_s)).to_json())
            except OSError as err:
                self._warn(f"could not cache the plan in {path}: {err}")
        return result

    def _searched_in_vain(self, result) -> bool:
        """XLA's plan kept because the search found nothing below it (no failure,
        no budget): cached too, so that a later process keeps it without searching
        as long again (a longer ``time_limit_s`` searches again)."""
        return (result.source == "xla" and self._options.get("memory_budget") is None
                and result.settings.get("xla_plan_kept") == NOTHING_BETTER)

    def _cached(self, path: Path, args, kwargs, options):
        """The cached plan applied to this call, or None (then it is planned again)."""
        if not path.is_file():
            if path.exists() or path.is_symlink():
                self._drop(path)
            return None
        try:
            saved = saved_lib.load_plan(path)
            searched_s = saved.figures.get("time_limit_s") or 0
            if not saved.figures.get("verified") and self._time_limit_s > searched_s:
                return None   # XLA's plan kept after a shorter search: search again
            with quiet():   # a refused entry is planned again: its fallback is no news
                result = plan_step(self._jitted, *args, kwargs=kwargs, saved=saved, **options)
        except BudgetNotMet as err:   # a plan cached after it missed the budget: it misses again
            if not err.plan.verified:
                self._drop(path)
                return None
            return self._budget_missed(err)
        except Exception:  # noqa: BLE001 - a stale or damaged entry: plan again
            self._drop(path)
            return None
        if self._searched_in_vain(result):
            return dataclasses.replace(result, notes=(*result.notes, (
                "XLA's plan kept from the plan cache: the search found nothing below it in "
                f"{saved.figures['time_limit_s']:g} s when cached (a longer time_limit_s "
                "searches again)")))
        if not result.verified:   # the checker or the verification refused it: plan again
            self._drop(path)
            return None
        return result

    def _budget_missed(self, err: BudgetNotMet, said: list[str] = ()):
        """The plan to run when ``memory_budget`` was not met: the least-memory
        plan found when it was verified and fed back, else XLA's executable
        (``err.plan.compiled`` is XLA's then); either way one warning per
        signature saying by how much the budget was missed."""
        plan = err.plan
        budget = self._options["memory_budget"]
        over = size_text(plan.runs_total_bytes - budget)
        if plan.verified:
            what = (f"the least-memory plan found needs {size_text(plan.runs_total_bytes)}, "
                    f"{over} over; running it")
        elif plan.source == "xla":
            what = (f"nothing below XLA's plan was found: running XLA's executable, "
                    f"{size_text(plan.runs_total_bytes)}, {over} over")
        else:
            what = (f"the least-memory plan found (planned {size_text(plan.total_bytes)}) was not "
                    f"verified (Plan.notes says why): running XLA's executable, "
                    f"{size_text(plan.runs_total_bytes)}, {over} over")
        warn(f"olla_jax.jit: memory_budget of {size_text(budget)} not met: {what} (XLA's plan: "
             f"{size_text(plan.xla_total_bytes)}). olla_jax.plan(..., memory_budget=...) raises "
             "BudgetNotMet with what holds the peak; "
             f"{budget_advice(plan, budget, self._options.get('recompute', True))}"
             + "".join(f"; {message}" for message in said), PlanWarning)
        return plan

    def _raise_if_jax_refuses(self, args, kwargs) -> None:
        """Raise jax's own error for a call jax.jit cannot lower (a wrong
        argument type, a missing argument, an error in the traced code), as
        jax.jit's call would: the caller's mistake is no planning failure, so
        it neither warns nor uses up the one warning a real failure gets."""
        self._jitted.lower(*args, **kwargs)

    def _drop(self, path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                import shutil
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            pass   # a read-only cache: the fresh plan is then not saved either (one warning)

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warn(f"olla_jax.jit: {message}", PlanWarning)

    # -- jax.jit's surface ----------------------------------------------------
    def __call__(self, *args, **kwargs):
        if jax.config.jax_disable_jit:   # jax.disable_jit(): jax.jit runs the function as
            return self._jitted(*args, **kwargs)   # Python, so nothing is compiled or planned
        if jax.config.jax_debug_nans or jax.config.jax_debug_infs:
            # jax.jit checks the outputs and re-runs the step op by op to raise
            # FloatingPointError at the op; a planned (AOT) executable raises
            # jax's internal signal for that instead: debugging is jax.jit's
            return self._jitted(*args, **kwargs)
        try:
            key = self._key(args, kwargs, calling=True)
            result = self._plans.get(key, _MISSING)   # a dict read: no lock needed
        except _LeftToJax:
            # inside another transformation: jax's job; a ShapeDtypeStruct is no
            # value to run on: jax.jit's own error (plan_for and lower take them)
            return self._jitted(*args, **kwargs)
        except TypeError:   # an unhashable static value: jax.jit itself will say so
            return self._jitted(*args, **kwargs)
        if result is _MISSING:
            result = self._plan_of(key, args, kwargs)
        if result is None:
            return self._jitted(*args, **kwargs)
        return result.compiled(*args, **kwargs)

    @property
    def _jit_info(self):
        """jax.jit's resolved options, so olla_jax.plan splits calls of this as jax does."""
        return getattr(self._jitted, "_jit_info", None)

    def lower(self, *args, **kwargs):
        """jax's Lowered for this call (``olla_jax.plan`` accepts it)."""
        return self._jitted.lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        return self._jitted.trace(*args, **kwargs)

    def eval_shape(self, *args, **kwargs):
        return self._jitted.eval_shape(*args, **kwargs)

    def clear_cache(self) -> None:
        """As jax.jit's: forget this process's plans and jax's traces (a later
        call plans again, reading the disk cache; the plans budgeted calls
        share stay until ``olla_jax.clear_cache()``)."""
        with self._lock:
            self._plans.clear()
        self._jitted.clear_cache()

    def __deepcopy__(self, memo):
        """A copy with its own table of plans and lock, as jax.jit's deep-copies
        (a dataclass or flax module holding the step); the plans' loaded
        executables cannot be copied and are shared: nothing changes them."""
        new = copy.copy(self)
        new._plans = dict(self._plans)
        new._lock = threading.Lock()
        memo[id(self)] = new
        return new

    def __get__(self, obj, objtype=None):
        """A bound method, as jax.jit's (``obj.step.__name__``, ``__wrapped__``)."""
        if obj is None:
            return self
        return types.MethodType(self, obj)


def _check_jit_kwargs(jit_kwargs: dict) -> None:
    """A keyword argument neither jax.jit nor olla_jax.jit takes: a TypeError
    naming the closest of both (``budget=`` is most likely ``memory_budget=``,
    not something jax.jit refused)."""
    import inspect
    try:
        params = inspect.signature(jax.jit).parameters
    except (TypeError, ValueError):   # no signature to read: jax.jit will say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return                        # a jax.jit taking **kwargs judges them itself
    accepted = set(params)
    ours = [*PLAN_OPTIONS, "backend", "time_limit_s", "cache", "compiler_options"]
    unknown = sorted(set(jit_kwargs) - accepted)
    if unknown:
        choices = [*ours, *sorted(accepted - {"fun"})]
        hints = "".join(calls.did_you_mean(name, choices) for name in unknown)
        raise TypeError(f"olla_jax.jit got unexpected keyword argument(s) {unknown}{hints}; it "
                        f"takes jax.jit's arguments and {', '.join(ours)}")


# The old name: the same class.
Optimized = Jitted
_MISSING = object()


def _stable_option(value: Any) -> str:
    if isinstance(value, jax.tree_util.PyTreeDef):
        return f"treedef:{_tree_text(value)}"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_stable_option(v)}" for k, v in sorted(value.items())) + "}"
    return _ADDRESS.sub("", _stable(value) if not hasattr(value, "__dict__") else repr(value))


# jit()'s function when none is given: ``@olla_jax.jit(...)`` makes a decorator
# (a None given is a mistake, said at once rather than at the first call).
_DECORATOR: Any = object()


def jit(fun: Callable = _DECORATOR, /, *, backend: str | None = None, time_limit_s: float = 30.0,
        cache: bool | str | Path = True, compiler_options: dict | None = None,
        engine: str = "auto", verify_trials: int = 2, feed_back: bool = True, seed: int = 0,
        memory_budget: int | str | None = None, recompute: bool = True,
        recompute_cost: str | None = None, rng_lowering: str = "unrolled",
        scan_remat: bool = False, program_remat: bool = False, **jit_kwargs):
    """``jax.jit`` with planned memory.  ``jit_kwargs`` are ``jax.jit``'s own
    (static_argnums/static_argnames, donate_argnums/donate_argnames,
    in_shardings/out_shardings, keep_unused, device, inline, ...); ``backend``
    ("cpu" or "gpu", default: jax's default backend), ``time_limit_s``,
    ``engine``, ``verify_trials``, ``feed_back``, ``seed``, ``memory_budget``,
    ``recompute``, ``recompute_cost``, ``rng_lowering``, ``scan_remat``, ``program_remat`` mean
    what they mean to ``olla_jax.plan`` (a plan made with scan_remat's rewritten step is not
    cached: it is not jax.jit's program; ``program_remat=True`` is refused as ``plan`` refuses
    it off compile-only GPU targets, so always here, where the step runs); ``compiler_options``
    go to jax.jit (so to XLA) as well.  ``cache``: True (the default folder),
    False, or a folder.  Donation is never added on its own (it invalidates
    the caller's arrays).  Usable with or without arguments."""
    plan_options = dict(engine=engine, verify_trials=verify_trials, feed_back=feed_back,
                        seed=seed, memory_budget=memory_budget, recompute=recompute,
                        recompute_cost=recompute_cost, rng_lowering=rng_lowering,
                        scan_remat=scan_remat,
                        # only when asked: the options are part of the disk cache's key
                        **({} if program_remat is False else {"program_remat": program_remat}))

    def wrap(f):
        return Jitted(f, backend=backend, time_limit_s=time_limit_s, cache=cache,
                      compiler_options=compiler_options, plan_options=plan_options,
                      jit_kwargs=jit_kwargs)
    return wrap if fun is _DECORATOR else wrap(fun)


def optimize(fun: Callable = _DECORATOR, /, **kwargs):
    """The old name of :func:`jit` (same arguments, same class)."""
    return jit(fun, **kwargs)
