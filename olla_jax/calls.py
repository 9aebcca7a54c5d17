"""How a call reaches an executable: jax's calling convention, kept as jax keeps it.

Every entry (a plain function with ``static_argnums``/``donate_argnums``, a
``jax.jit`` or ``flax.nnx.jit`` object, a ``jax.stages.Lowered``) becomes a
:class:`Entry`: the Lowered that jax itself made for the call (jax resolves
static arguments, keyword arguments and donation), and how a later call of the
same function is split into the dynamic arguments a ``Compiled`` takes.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import numbers
from typing import Any, Callable, Sequence

import jax
import numpy as np

from olla_jax import jax_compat
from olla_jax.capture.base import CaptureError, step_error
from olla_jax.errors import OllaJaxError

log = logging.getLogger(__name__)


def is_lowered(obj: Any) -> bool:
    """A ``jax.stages.Lowered``, or a wrapper of one (``flax.nnx``'s)."""
    return isinstance(obj, jax.stages.Lowered) or (
        isinstance(getattr(obj, "lowered", None), jax.stages.Lowered) and hasattr(obj, "compile"))


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt keyword
    argument, or nothing: ``budget`` is ``memory_budget``, ``time_limit`` is
    ``time_limit_s``."""
    import difflib
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_compiled(obj: Any) -> bool:
    """A ``jax.stages.Compiled`` (or ``flax.nnx``'s wrapper of one): XLA's
    executable already, too late to plan."""
    return isinstance(inner_compiled(obj), jax.stages.Compiled)


def is_jitted(fn: Any) -> bool:
    """A ``jax.jit`` (or ``flax.nnx.jit``) object: it lowers itself."""
    return callable(fn) and hasattr(fn, "lower") and not is_lowered(fn)


def inner_compiled(compiled: Any) -> Any:
    """The ``jax.stages.Compiled`` in ``compiled`` (itself, or what a wrapper holds)."""
    if isinstance(compiled, jax.stages.Compiled):
        return compiled
    inner = getattr(compiled, "compiled", None)
    if isinstance(inner, jax.stages.Compiled):
        return inner
    return compiled


def rewrapper(compiled: Any) -> Callable[[Any], Any] | None:
    """For a wrapper of a Compiled (``flax.nnx``'s, a frozen dataclass holding
    ``compiled``): a function giving the same wrapper around another Compiled."""
    if isinstance(compiled, jax.stages.Compiled) or not dataclasses.is_dataclass(compiled) \
            or not isinstance(getattr(compiled, "compiled", None), jax.stages.Compiled):
        return None
    template = compiled
    return lambda inner: dataclasses.replace(template, compiled=inner)


def argnums(value: Any, name: str) -> tuple[int, ...]:
    """``static_argnums``/``donate_argnums`` as jax takes them: an int or ints."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, numbers.Integral) else value
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}") from None
    for i in items:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    return tuple(int(i) for i in items)


def argnames(value: Any, name: str) -> tuple[str, ...]:
    """``static_argnames``/``donate_argnames`` as jax takes them: a str or strs."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else value
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{name} must be a str or a sequence of str, got {value!r}") from None
    if not all(isinstance(i, str) for i in items):
        raise TypeError(f"{name} must be a str or a sequence of str, got {value!r}")
    return items


def name_positions(fn: Callable, names: Sequence[str], num_args: int, what: str) -> tuple[int, ...]:
    """Positions of the parameters ``names`` among ``fn``'s first ``num_args``
    (for a call made with positional arguments only).  A parameter the call
    leaves to its default has no position and is skipped, as jax.jit skips it."""
    if not names:
        return ()
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params[:num_args]
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    defaulted = {p.name for p in params if p.name not in positional
                 and p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                             p.KEYWORD_ONLY)}
    names = [n for n in names if n not in defaulted]
    missing = [n for n in names if n not in positional]
    if missing:
        raise TypeError(f"{what} names {missing}, which are neither keyword arguments of the "
                        f"call nor among its {num_args} positional arguments {positional}")
    return tuple(positional.index(n) for n in names)


@dataclasses.dataclass(frozen=True)
class PositionalCall:
    """A call with positional arguments only (what the compile-only targets compile)."""
    fn: Callable
    args: tuple[Any, ...]
    static_argnums: tuple[int, ...]
    donate_argnums: tuple[int, ...]
    # the call's dynamic keyword arguments, in the order they follow the positional ones
    keywords: tuple[str, ...] = ()


def positional_call(fn: Callable, args: Sequence[Any], kwargs: dict[str, Any],
                    static_argnums: Sequence[int], donate_argnums: Sequence[int],
                    static_argnames: Sequence[str], donate_argnames: Sequence[str]
                    ) -> PositionalCall:
    """``fn(*args, **kwargs)`` as a positional call: static keyword arguments
    are bound into the function, the others follow ``args`` (sorted by name);
    names of positional parameters become their positions.  A ``jax.jit``
    object is compiled as its function, with its own static and donated
    arguments added to those given."""
    own = jax_compat.jit_options(fn)
    if own is not None and callable(getattr(fn, "__wrapped__", None)):
        fn = fn.__wrapped__
        static_argnums = (*static_argnums, *own.static_argnums)
        static_argnames = (*static_argnames, *own.static_argnames)
        donate_argnums = (*donate_argnums, *own.donate_argnums)
        donate_argnames = (*donate_argnames, *own.donate_argnames)
    elif is_jitted(fn) and static_info(fn) is None:
        _check_wrapper_leaves(args, kwargs)
    elif kwargs and is_jitted(fn):
        raise TypeError("keyword arguments with a flax.nnx.jit-wrapped function on a "
                        "compile-only target: pass the plain function, with static_argnames/"
                        "donate_argnames given to olla_jax.plan")
    static_argnames = tuple(dict.fromkeys(static_argnames))
    donate_argnames = tuple(dict.fromkeys(donate_argnames))
    fixed = {k: v for k, v in kwargs.items() if k in static_argnames}
    dynamic = sorted(k for k in kwargs if k not in fixed)
    n = len(args)
    # negative positions count from the end of the positional arguments, as jax.jit
    # counts them, not of these with the keyword arguments appended
    static, donate = ([i + n if -n <= i < 0 else i for i in nums]
                      for nums in (static_argnums, donate_argnums))
    for what, names, out in (("static_argnames", static_argnames, static),
                             ("donate_argnames", donate_argnames, donate)):
        by_position = [k for k in names if k not in kwargs]
        out.extend(name_positions(fn, by_position, n, what))
    donate.extend(n + dynamic.index(k) for k in donate_argnames if k in dynamic)
    if not kwargs:
        return PositionalCall(fn, tuple(args), tuple(static), tuple(donate))

    def call(*flat):
        return fn(*flat[:n], **fixed, **dict(zip(dynamic, flat[n:])))
    call.__name__ = getattr(fn, "__name__", "step")
    return PositionalCall(call, (*args, *(kwargs[k] for k in dynamic)), tuple(static),
                          tuple(donate), tuple(dynamic))


def traced_as_array(leaf: Any) -> bool:
    """Whether jax.jit traces ``leaf`` as an argument: an array or
    ShapeDtypeStruct, or a Python number (a weakly typed array)."""
    return isinstance(leaf, (bool, int, float, complex)) or (
        hasattr(leaf, "shape") and hasattr(leaf, "dtype"))


def leaf_that_is_no_array(args: Sequence[Any], kwargs: dict[str, Any] | None,
                          keep: Callable[[Any], bool]) -> tuple[str, Any] | None:
    """The first leaf of ``args`` and ``kwargs`` that ``keep`` refuses, with
    where it is ("argument leaf [1]", "keyword argument leaf ['scale']")."""
    for path, leaf in jax.tree_util.tree_flatten_with_path((tuple(args), kwargs or {}))[0]:
        if not keep(leaf):
            return (("argument leaf " if path[0].idx == 0 else "keyword argument leaf ")
                    + jax.tree_util.keystr(path[1:])), leaf
    return None


def _check_wrapper_leaves(args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """A jit wrapper that is neither jax.jit nor flax.nnx.jit (equinox's
    ``filter_jit``) decides itself which leaves are static; a compile-only target
    compiles the call under jax.jit, where every leaf is an array: refuse a leaf
    that is not one, saying what to do, rather than plan another program."""
    found = leaf_that_is_no_array(args, kwargs, lambda x: isinstance(
        x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)))
    if found is not None:
        where, leaf = found
        raise TypeError(
            f"{where} is a {type(leaf).__name__}, not an array: the step's jit wrapper is not "
            "jax.jit (equinox's filter_jit, say, which keeps such leaves static itself), and "
            "olla_jax plans it through the wrapper's own .lower() for backend='cpu' only; a "
            "compile-only target compiles the call under jax.jit: pass the plain function, "
            "with the parts that are not arrays as static arguments (static_argnums / "
            "static_argnames; equinox: params, static = eqx.partition(model, eqx.is_array))")


def positions(nums: Sequence[int], num_args: int, name: str) -> tuple[int, ...]:
    """Argument positions, negative ones counted from the end as jax does;
    out of range is an error (jax would silently treat nothing as static)."""
    out = []
    for i in nums:
        if not -num_args <= i < num_args:
            raise ValueError(f"{name} has {i}, but the step is given {num_args} positional "
                             f"argument{'s' if num_args != 1 else ''}: use positions 0.."
                             f"{num_args - 1} (or -{num_args}..-1)")
        out.append(i % num_args)
    return tuple(sorted(set(out)))


class CompileOnlyError(OllaJaxError, RuntimeError):
    """A compile-only target's plan was called: nothing of it can run here."""


@dataclasses.dataclass(frozen=True)
class StepCallable:
    """A compiled step callable with the original arguments, static ones included.

    ``executable`` is the ``jax.stages.Compiled`` that runs; a call is split as
    jax.jit splits it (positions in ``static`` and names in ``static_kwargs``
    are static, must equal the planned values, and are not passed on), and the
    rest goes to the executable, wrapped by ``wrap`` where the step was a
    ``flax.nnx.jit`` one (nnx moves its modules' state in and out)."""
    executable: Any                       # jax.stages.Compiled
    num_args: int | None                  # positional arguments (None: not checked)
    static: tuple[tuple[int, Any], ...] = ()        # (position, value) of each static argument
    static_kwargs: tuple[tuple[str, Any], ...] = ()  # (name, value) of static keyword arguments
    wrap: Callable[[Any], Any] | None = dataclasses.field(default=None, compare=False)
    # The compile-only target (``"gpu:h100"``) whose executable this is: built
    # without the device, it runs nowhere here (jax fails deep in its internals).
    compile_only: str | None = None

    def __call__(self, *args, **kwargs):
        if self.compile_only is not None:
            raise CompileOnlyError(
                f"this plan is for the compile-only target {self.compile_only!r}: its executable "
                "was built without the device and cannot run here; take Plan.executable_bytes "
                "to a machine with that GPU (client.deserialize_executable), or plan with "
                "backend='cpu' or 'gpu' (the local GPU) for a step to call")
        if self.num_args is not None and len(args) != self.num_args:
            named = f" and keyword argument(s) {', '.join(sorted(kwargs))}" if kwargs else ""
            raise TypeError(
                f"the planned step takes {self.num_args} positional arguments, got {len(args)}"
                f"{named}: call it as the step was called when it was planned, each argument "
                "by position or by name as then (as jax's .lower().compile() does), or use "
                "olla_jax.jit, which plans each way of calling")
        for i, value in self.static:
            if not _same_static(args[i], value):
                raise ValueError(f"static argument {i} is {args[i]!r}, but the step was planned "
                                 f"for {value!r}: plan it again for this value")
        for name, value in self.static_kwargs:
            if name not in kwargs:
                raise TypeError(f"the planned step was called without its static keyword "
                                f"argument {name!r} (planned for {value!r})")
            if not _same_static(kwargs[name], value):
                raise ValueError(f"static argument {name!r} is {kwargs[name]!r}, but the step "
                                 f"was planned for {value!r}: plan it again for this value")
        if self.static:
            skip = {i for i, _ in self.static}
            args = tuple(a for i, a in enumerate(args) if i not in skip)
        if self.static_kwargs:
            names = {n for n, _ in self.static_kwargs}
            kwargs = {k: v for k, v in kwargs.items() if k not in names}
        target = self.executable if self.wrap is None else self.wrap(self.executable)
        try:
            return target(*args, **kwargs)
        except TypeError as err:
            if not str(err).startswith(_OTHER_SIGNATURE):
                raise
            # jax's AOT error (a flax.nnx model's whole graph in it: pages), cut
            # short, and what to do: this executable takes one signature only
            raise TypeError(
                f"{_shortened(str(err))}\nThe planned step runs the executable planned for "
                "the arguments it was given (as jax's .lower().compile() does): arguments of "
                "other shapes, dtypes or structure (for flax.nnx, a model or optimizer built "
                "again: its static fields, e.g. an optax transformation, compare by identity) "
                "need a plan of their own: call olla_jax.plan again, or use olla_jax.jit, which "
                "plans each signature") from None

    def memory_analysis(self):
        return self.executable.memory_analysis()

    def __getattr__(self, name: str):
        """The rest of jax.stages.Compiled's surface (``cost_analysis()``,
        ``as_text()``, ``out_info``, ...) is the executable's."""
        if name.startswith("_"):   # copy/pickle probing a half-built object
            raise AttributeError(name)
        try:
            executable = object.__getattribute__(self, "executable")
        except AttributeError:
            raise AttributeError(name) from None
        try:
            return getattr(executable, name)
        except AttributeError:
            raise AttributeError(f"Plan.compiled has no attribute {name!r}, nor has its "
                                 f"{type(executable).__name__} (Plan.compiled.executable)") from None


# How jax.stages.Compiled refuses arguments it was not compiled for.
_OTHER_SIGNATURE = ("Function compiled with input pytree does not match",
                    "Argument types differ from the types for which this computation was compiled")


def _shortened(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " ... (cut short)"


def _same_static(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and hash(a) == hash(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - unhashable or odd __eq__: not the same value
        return False


@dataclasses.dataclass(frozen=True)
class Entry:
    """One call of a step, normalised to jax's convention."""
    lowered: Any                          # jax.stages.Lowered (or flax.nnx's wrapper of one)
    num_args: int | None
    static: tuple[tuple[int, Any], ...]
    static_kwargs: tuple[tuple[str, Any], ...]
    # What verification and timing get: the positional args and static positions
    # as before where the call is positional only, else the flat dynamic leaves.
    verify_args: tuple[Any, ...]
    verify_static: tuple[int, ...]
    # jax.jit's own lowering of the call where ``lowered`` is another program
    # of the same step (threefry2x32 unrolled on CPU); None: ``lowered`` is it.
    jax_lowered: Any = None

    def callable_of(self, compiled: Any, wrap=None, compile_only: str | None = None) -> StepCallable:
        return StepCallable(compiled, self.num_args, self.static, self.static_kwargs, wrap,
                            compile_only)


def static_info(jitted: Any) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """(static_argnums, static_argnames) of a ``jax.jit`` object, as jax resolved them
    (names given for positional parameters are in both), or of the ``jax.jit`` inside a
    ``flax.nnx.jit`` object (it takes the call's arguments at the same places, after
    any bound ``partial_args``); None for anything else."""
    options = jax_compat.jit_options(jitted)
    if options is not None:
        return options.static_argnums, options.static_argnames
    inner = getattr(jitted, "jitted_fn", None)
    options = jax_compat.jit_options(inner) if inner is not None else None
    if options is None:
        return None
    bound = len(getattr(jitted, "partial_args", None) or ())
    return (tuple(i - bound if i >= 0 else i for i in options.static_argnums if i < 0 or i >= bound),
            options.static_argnames)


def lower_call(jitted: Any, args: Sequence[Any], kwargs: dict[str, Any],
               rng_lowering: str = "jax") -> Entry:
    """Lower ``jitted(*args, **kwargs)`` (jax.jit or flax.nnx.jit) and say how it splits.

    ``rng_lowering="unrolled"`` (for CPU): where the step uses threefry2x32,
    ``Entry.lowered`` has it unrolled (:func:`threefry_unrolled`) and
    ``Entry.jax_lowered`` is jax.jit's own lowering; "jax": jax's only."""
    info = static_info(jitted)
    nnx = jax_compat.jit_options(jitted) is None   # flax.nnx.jit (its modules are no arrays)
    if info is not None:
        nums, names = info
        fixed = {i % len(args) for i in nums if -len(args) <= i < len(args)} if args else set()
        if not nnx:
            _check_dynamic({i: a for i, a in enumerate(args) if i not in fixed})
            _check_dynamic({k: v for k, v in kwargs.items() if k not in names})
    lowered = lower_traced(jitted, args, kwargs)
    jax_lowered = None
    if rng_lowering == "unrolled":
        unrolled = threefry_unrolled(jitted, args, kwargs, lowered)
        if unrolled is not None:
            lowered, jax_lowered = unrolled, lowered
    if info is None:
        return Entry(lowered, len(args), (), (), (), (), jax_lowered)
    static = tuple((i, args[i]) for i in sorted(fixed))
    static_kwargs = tuple((k, kwargs[k]) for k in sorted(kwargs) if k in names)
    if nnx:   # its Compiled takes the dynamic arguments, modules whole, and splits them itself
        return Entry(lowered, len(args), static, static_kwargs, (), (), jax_lowered)
    if not kwargs:
        verify_args, verify_static = tuple(args), tuple(sorted(fixed))
    else:
        dyn_args = tuple(a for i, a in enumerate(args) if i not in fixed)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        verify_args, verify_static = tuple(jax.tree_util.tree_leaves((dyn_args, dyn_kwargs))), ()
    return Entry(lowered, len(args), static, static_kwargs, verify_args, verify_static,
                 jax_lowered)


def _module_text(lowered: Any) -> str:
    return (lowered if isinstance(lowered, jax.stages.Lowered) else lowered.lowered).as_text()


def threefry_unrolled(jitted: Any, args: Sequence[Any], kwargs: dict[str, Any],
                      lowered: Any) -> Any | None:
    """``jitted(*args, **kwargs)`` lowered with jax.random's threefry2x32
    unrolled (``jax_compat.lower_threefry_unrolled``), in the same wrapper as
    ``lowered`` (jax's own lowering of the call: a ``jax.stages.Lowered`` or
    flax.nnx's); None where the step has no threefry2x32, where this jax cannot,
    or where the module kept all its loops (the lowering did not take)."""
    try:
        traced = jitted.trace(*args, **kwargs)   # jax's cached trace of the lowering just made
    except Exception as err:  # noqa: BLE001 - lowered once already; jax's own lowering stays
        log.info("threefry2x32 keeps jax's lowering: tracing again failed: %r", err)
        return None
    inner = traced if isinstance(traced, jax.stages.Traced) else getattr(traced, "traced", None)
    unrolled = jax_compat.lower_threefry_unrolled(inner)
    if unrolled is None:
        return None
    if not isinstance(lowered, jax.stages.Lowered):   # flax.nnx's: a dataclass holding jax's
        if not (dataclasses.is_dataclass(lowered)
                and isinstance(getattr(lowered, "lowered", None), jax.stages.Lowered)):
            return None
        unrolled = dataclasses.replace(lowered, lowered=unrolled)
    if jax_compat.rolled_loops(_module_text(unrolled)) >= \
            jax_compat.rolled_loops(_module_text(lowered)):
        log.info("threefry2x32 keeps jax's lowering: the unrolled module has as many loops")
        return None
    return unrolled


def lower_traced(jitted: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``jitted.lower(*args, **kwargs)``; what the step raises while jax traces
    it becomes a CaptureError naming the step's line, also an instance of the
    step's own exception type."""
    try:
        return jitted.lower(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise step_error(f"jax could not trace/lower the step with these arguments: "
                         f"{type(err).__name__}: {_first_line(err)}{_where(err)}"
                         f"{_hint(err)}", err) from err
    except Exception as err:  # noqa: BLE001 - tracing the user's code raises anything
        raise step_error(f"jax could not trace/lower the step: {type(err).__name__}: "
                         f"{err}{_where(err)}", err) from err


def _first_line(err: Exception) -> str:
    """jax's message up to its pointer to the docs (its own traceback explains the rest)."""
    text = str(err)
    return text.split("\nSee https://", 1)[0].rstrip() if isinstance(
        err, (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError)) else text


def _where(err: BaseException) -> str:
    """`` (raised at train.py:12, in loss)``: the last line of the traceback in
    the user's code (not jax's, olla_jax's or an installed package's), where the
    step's own bug usually is; "" when there is none."""
    import os
    import traceback
    skip = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                 for m in (jax, __import__("olla_jax")))
    user = [f for f in traceback.extract_tb(err.__traceback__)
            if not os.path.abspath(f.filename).startswith(skip)
            and "site-packages" not in f.filename and not f.filename.startswith("<")]
    if not user:
        return ""
    return f" (raised at {user[-1].filename}:{user[-1].lineno}, in {user[-1].name})"


def _hint(err: Exception) -> str:
    """What to do when a traced argument is used as a Python value."""
    if isinstance(err, (jax.errors.ConcretizationTypeError,
                        jax.errors.TracerIntegerConversionError)):
        return (" (the step uses an argument as a Python value: a flag it branches on, a size, "
                "a count; pass it as static, with static_argnums/static_argnames, as jax.jit "
                "needs; on the command line, return a Step whose static_argnames name it)")
    return ""


def _check_dynamic(dynamic: dict[Any, Any]) -> None:
    """Every dynamic leaf an array (or a Python scalar), else where it is, as
    ``argument leaf [2]['cfg']`` (positions and keyword names of the call)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(dynamic)[0]:
        if isinstance(leaf, (bool, int, float, complex)):
            continue  # Python scalars are traced as weakly typed arrays, as jax.jit does
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise CaptureError(
                f"argument leaf {jax.tree_util.keystr(path)} is a {type(leaf).__name__}, not an "
                "array: pass arrays or jax.ShapeDtypeStruct leaves, and mark other "
                "arguments static (static_argnums / static_argnames)")


def of_lowered(lowered: Any) -> Entry:
    """A Lowered given as it is: its Compiled is called with the dynamic arguments only."""
    return Entry(lowered, None, (), (), (), ())


def jit_of(fn: Callable, static_argnums: Sequence[int], donate_argnums: Sequence[int],
           static_argnames: Sequence[str] = (), donate_argnames: Sequence[str] = ()):
    """``fn`` under jax.jit with these options (or ``fn`` itself, already jitted)."""
    if is_jitted(fn):
        if static_argnums or donate_argnums or static_argnames or donate_argnames:
            raise CaptureError(
                "the function is already jax.jit-wrapped; give static_argnums/static_argnames/"
                "donate_argnums/donate_argnames to jax.jit, not to olla_jax")
        return fn
    # Only the options given: jax.jit ignores donate_argnames next to an
    # explicit donate_argnums=() (jax 0.10.2).
    options = {k: tuple(v) for k, v in (
        ("static_argnums", static_argnums), ("donate_argnums", donate_argnums),
        ("static_argnames", static_argnames), ("donate_argnames", donate_argnames)) if v}
    try:
        return jax.jit(fn, **options)
    except ValueError as err:
        raise ValueError(f"jax.jit refused these options: {err}") from err
