"""``advise_donation``: which arguments to donate, found from shapes and measured by XLA.

Donating an argument (``jax.jit(..., donate_argnums=...)``) lets XLA write an
output into the argument's buffer instead of a fresh one.  Whether that saves
memory is XLA's decision: an aliased output may need a copy, or temporaries
XLA used to park in the output buffer may need their own space, so the alias
bytes XLA reports are not the saving.  This module proposes candidates from
shapes and dtypes, then compiles the step with and without them and keeps only
those that lower the measured total (temp + arguments + outputs - aliased).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, Sequence

import jax
import numpy as np

from olla_jax import calls
from olla_jax.capture import Capture, capture
from olla_jax.sizes import size_text


@dataclasses.dataclass(frozen=True)
class DonatableLeaf:
    """One array inside an argument that an output of the same shape/dtype could reuse."""
    path: str            # jax.tree_util.keystr of the leaf inside its argument, "" for a bare array
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    output_path: str     # the output leaf it was matched with (keystr of the output pytree)


@dataclasses.dataclass(frozen=True)
class DonationCandidate:
    """A top-level positional argument with leaves that outputs could reuse, and what donating
    it (on top of the user's donate_argnums) measured."""
    index: int
    leaves: tuple[DonatableLeaf, ...]
    leaf_count: int                 # all array leaves of the argument (donation invalidates all)
    reusable_bytes: int             # sum of the matched leaves' bytes: the most it could save
    measured_total_bytes: int       # step total with this argument donated too
    measured_saved_bytes: int       # bytes_before - measured_total_bytes (XLA's decision)
    alias_bytes: int                # alias bytes XLA reported with this argument donated too
    suggested: bool
    note: str = ""
    keyword: str = ""               # the keyword argument it is, for a step's keyword arguments

    @property
    def what(self) -> str:
        return f"keyword argument {self.keyword!r}" if self.keyword else f"argument {self.index}"


@dataclasses.dataclass(frozen=True)
class DonationAdvice:
    """Which ``donate_argnums`` to use, with the totals XLA reported (bytes)."""
    backend: str
    user_donate_argnums: tuple[int, ...]
    donate_argnums: tuple[int, ...]       # suggested: the user's plus the helpful candidates, sorted
    candidates: tuple[DonationCandidate, ...]
    bytes_before: int                     # total with the user's donate_argnums only
    bytes_after: int                      # total with the suggested donate_argnums
    alias_bytes_before: int
    alias_bytes_after: int                # what XLA actually aliased with the suggestion
    notes: tuple[str, ...] = ()
    # Keyword arguments of the step (not static), in the order of the indices
    # after its positional ones: donate_argnums holds positions only, these by name.
    donate_argnames: tuple[str, ...] = ()
    user_donate_argnames: tuple[str, ...] = ()

    @property
    def saved_bytes(self) -> int:
        return self.bytes_before - self.bytes_after

    @property
    def suggested(self) -> tuple[int, ...]:
        """Arguments suggested on top of the user's own donate_argnums."""
        return tuple(i for i in self.donate_argnums if i not in self.user_donate_argnums)

    @property
    def suggested_argnames(self) -> tuple[str, ...]:
        """Keyword arguments suggested on top of the user's own donate_argnames."""
        return tuple(k for k in self.donate_argnames if k not in self.user_donate_argnames)

    def summary(self) -> str:
        lines = [f"olla_jax donation advice ({self.backend})"]
        if not self.candidates:
            lines.append("  no argument has leaves that an output of the same shape and dtype "
                         "could reuse; nothing to donate")
        for c in self.candidates:
            verdict = "donate" if c.suggested else "do not donate"
            lines.append(f"  {c.what}: {len(c.leaves)} of {c.leaf_count} leaves could be "
                         f"reused ({size_text(c.reusable_bytes)}); measured saving "
                         f"{size_text(c.measured_saved_bytes)} (XLA aliased {size_text(c.alias_bytes)}) "
                         f"-> {verdict}" + (f" ({c.note})" if c.note else ""))
            largest = sorted(c.leaves, key=lambda leaf: -leaf.bytes)
            for leaf in largest[:5]:
                lines.append(f"      {leaf.path or '(the array)'} {leaf.dtype}{list(leaf.shape)} "
                             f"{size_text(leaf.bytes)} -> output {leaf.output_path or '(the array)'}")
            if len(c.leaves) > 5:
                more = len(c.leaves) - 5
                lines.append(f"      ... and {more} smaller {'leaf' if more == 1 else 'leaves'}")
        lines.append(f"  total: {size_text(self.bytes_before)} -> {size_text(self.bytes_after)} "
                     f"(saved {size_text(self.saved_bytes)}; aliased {size_text(self.alias_bytes_before)} "
                     f"-> {size_text(self.alias_bytes_after)})")
        if self.suggested or self.suggested_argnames:
            given = [f"donate_argnums={self.donate_argnums}"] if self.donate_argnums else []
            given += [f"donate_argnames={self.donate_argnames}"] if self.donate_argnames else []
            lines.append(f"  pass {' and '.join(given)} to jax.jit, olla_jax.jit or "
                         "olla_jax.plan.")
            lines.append("  Donation invalidates the caller's arrays: after the call the donated "
                         "arguments\n  (every leaf of them) are deleted and must not be used "
                         "again; keep the step's outputs\n  instead (params = step(params, ...)).")
        else:
            kept = f"donate_argnums={self.user_donate_argnums}"
            if self.user_donate_argnames:
                kept += f", donate_argnames={self.user_donate_argnames}"
            lines.append(f"  nothing to add: keep {kept}.")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _nbytes(leaf: Any) -> int:
    itemsize = getattr(leaf.dtype, "itemsize", None)   # a typed PRNG key's dtype has one
    return int(math.prod(leaf.shape)) * (itemsize or np.dtype(leaf.dtype).itemsize)


def _dtype_name(dtype: Any) -> str:
    """NumPy's name of ``dtype``; a jax extended dtype (a typed PRNG key,
    ``key<fry>``) has no NumPy dtype: its own name."""
    try:
        return str(np.dtype(dtype))
    except TypeError:
        return str(dtype)


def _layout(fmt: Any) -> Any:
    """The layout of a Format/ShapeDtypeStruct, or None when not visible."""
    layout = getattr(fmt, "layout", None) or getattr(fmt, "format", None)
    layout = getattr(layout, "layout", layout)   # a Format inside a ShapeDtypeStruct
    return None if layout is None else str(layout)


def _input_layouts(cap: Capture, dynamic: Sequence[int]) -> dict[tuple[int, str], Any]:
    """(argument index, leaf path) -> layout, from the compiled executable, where it says."""
    try:
        formats = cap.compiled.input_formats[0]
        found = {}
        for k, i in enumerate(dynamic):
            for path, fmt in jax.tree_util.tree_flatten_with_path(formats[k])[0]:
                found[(i, jax.tree_util.keystr(path))] = _layout(fmt)
        return found
    except Exception:  # noqa: BLE001 - layouts are a refinement; shapes and dtypes decide
        return {}


@dataclasses.dataclass
class _Output:
    path: str
    shape: tuple[int, ...]
    dtype: str
    layout: Any
    taken: bool = False


def _outputs(cap: Capture) -> list[_Output]:
    info = cap.compiled.out_info
    return [_Output(jax.tree_util.keystr(path), tuple(leaf.shape), _dtype_name(leaf.dtype),
                    _layout(leaf))
            for path, leaf in jax.tree_util.tree_flatten_with_path(info)[0]]


def _array_leaves(arg: Any) -> list[tuple[str, Any]]:
    return [(jax.tree_util.keystr(path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]
            if hasattr(leaf, "shape") and hasattr(leaf, "dtype")]


def _match(arg_index: int, arg: Any, outputs: list[_Output],
           layouts: dict[tuple[int, str], Any]) -> list[DonatableLeaf]:
    """Take, in leaf order, the first free output of each leaf's shape, dtype and layout
    (jax pairs donated buffers with outputs in the same greedy way)."""
    matched = []
    for path, leaf in _array_leaves(arg):
        shape, dtype = tuple(leaf.shape), _dtype_name(leaf.dtype)
        layout = layouts.get((arg_index, path))
        for out in outputs:
            if out.taken or out.shape != shape or out.dtype != dtype:
                continue
            if layout is not None and out.layout is not None and layout != out.layout:
                continue
            out.taken = True
            matched.append(DonatableLeaf(path, shape, dtype, _nbytes(leaf), out.path))
            break
    return matched


def _measure(fn, args, *, backend, scheduler, static_argnums, donate_argnums,
             compiler_options) -> Capture:
    with warnings.catch_warnings():
        # jax warns when a donated leaf finds no output; the advice reports that itself.
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        return capture(fn, *args, backend=backend, scheduler=scheduler,
                       static_argnums=tuple(static_argnums),
                       donate_argnums=tuple(sorted(set(donate_argnums))),
                       compiler_options=compiler_options)


def advise_donation(fn: Callable, *args, static_argnums: Sequence[int] = (),
                    donate_argnums: Sequence[int] = (), backend: str = "cpu",
                    compiler_options: dict[str, Any] | None = None,
                    scheduler: str = "default", kwargs: dict[str, Any] | None = None,
                    static_argnames: Sequence[str] = (),
                    donate_argnames: Sequence[str] = ()) -> DonationAdvice:
    """Suggest ``donate_argnums`` for ``fn(*args)`` and measure what they save.

    A top-level positional argument is a candidate when some of its array leaves
    have an output leaf of the same shape and dtype (and layout, where the
    executable shows it) that no other donated leaf has taken.  Each candidate is
    then compiled donated (on top of ``donate_argnums``, the user's own) and kept
    only when XLA's total (temp + arguments + outputs - aliased) goes down; the
    kept ones are combined greedily, largest saving first, each kept only if the
    combined total still goes down.  ``scheduler`` is XLA:CPU's scheduler used for
    every compile ("default" is what ``jax.jit`` compiles with).

    ``kwargs``: the step's keyword arguments; ``static_argnames`` and
    ``donate_argnames`` mean what they mean to ``jax.jit``.  A keyword argument
    that is not static is a candidate too, suggested by name
    (``DonationAdvice.donate_argnames``).

    ``fn`` must be the plain function (not ``jax.jit``-wrapped): donation is a jit
    option, so it is re-jitted here with each candidate set.
    """
    if hasattr(fn, "lower"):
        raise ValueError("advise_donation needs the plain function, not a jax.jit-wrapped one "
                         "(donation is a jit option it must vary): pass fn.__wrapped__ or the "
                         "undecorated function, with its static_argnums")
    if compiler_options is not None and (not isinstance(compiler_options, dict) or not all(
            isinstance(k, str) for k in compiler_options)):
        raise TypeError(f"compiler_options must be a dict of XLA option names to values, got "
                        f"{compiler_options!r}")
    keywords: tuple[str, ...] = ()    # the dynamic keyword arguments, after the positional ones
    user_names: tuple[str, ...] = ()
    if kwargs or static_argnames or donate_argnames:
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict of the step's keyword arguments, got "
                            f"{type(kwargs).__name__}")
        kwargs = dict(kwargs or {})
        static_argnames = calls.argnames(static_argnames, "static_argnames")
        donate_argnames = calls.argnames(donate_argnames, "donate_argnames")
        keywords = tuple(sorted(k for k in kwargs if k not in static_argnames))
        user_names = tuple(k for k in donate_argnames if k in keywords)
        call = calls.positional_call(fn, args, kwargs, calls.argnums(static_argnums,
                                     "static_argnums"), calls.argnums(donate_argnums,
                                     "donate_argnums"), static_argnames, donate_argnames)
        fn, args = call.fn, call.args
        static_argnums, donate_argnums = call.static_argnums, call.donate_argnums
    positional = len(args) - len(keywords)

    def keyword(i: int) -> str:
        return keywords[i - positional] if i >= positional else ""
    static = set(int(i) for i in static_argnums)
    user = tuple(sorted(set(int(i) for i in donate_argnums)))
    for i in (*static, *user):
        if not 0 <= i < len(args):
            raise ValueError(f"argument index {i} is out of range for {len(args)} positional "
                             "arguments (static_argnums/donate_argnums count from 0)")
    if static & set(user):
        raise ValueError(f"arguments {sorted(static & set(user))} are both static and donated; "
                         "a static argument cannot be donated")
    measure = dict(backend=backend, scheduler=scheduler, static_argnums=tuple(sorted(static)),
                   compiler_options=compiler_options)
    base = _measure(fn, args, donate_argnums=user, **measure)
    dynamic = [i for i in range(len(args)) if i not in static]
    layouts = _input_layouts(base, dynamic)
    outputs = _outputs(base)
    notes: list[str] = []
    # The user's donated leaves claim their outputs first.
    for i in user:
        _match(i, args[i], outputs, layouts)

    before = base.memory.total
    found: list[tuple[int, list[DonatableLeaf]]] = []
    single: dict[int, Capture] = {}
    for i in dynamic:
        if i in user:
            continue
        taken_before = [out.taken for out in outputs]
        leaves = _match(i, args[i], outputs, layouts)
        if not leaves:
            continue
        found.append((i, leaves))
        single[i] = _measure(fn, args, donate_argnums=(*user, i), **measure)
        if single[i].memory.total >= before:
            # No saving: its outputs stay free for the arguments after it.
            for out, was in zip(outputs, taken_before):
                out.taken = was
    # Greedy combination: largest single saving first; keep what lowers the combined total.
    chosen: list[int] = []
    current = base
    for i in sorted(single, key=lambda j: single[j].memory.total):
        if single[i].memory.total >= before:
            continue
        trial = single[i] if not chosen else _measure(
            fn, args, donate_argnums=(*user, *chosen, i), **measure)
        if trial.memory.total < current.memory.total:
            chosen.append(i)
            current = trial
        else:
            notes.append(f"{f'keyword argument {keyword(i)!r}' if keyword(i) else f'argument {i}'}"
                         f" saves on its own but not together with "
                         f"{[keyword(j) or j for j in chosen]}; not suggested")

    candidates = []
    for i, leaves in found:
        cap = single[i]
        saved = before - cap.memory.total
        note = ""
        if saved <= 0:
            note = ("XLA aliased it but the total did not go down (a copy or the temporaries "
                    "it displaced cost as much)" if cap.memory.alias > base.memory.alias
                    else "XLA did not alias it")
        leaf_count = len(_array_leaves(args[i]))
        if leaf_count > len(leaves) and not note:
            note = (f"{leaf_count - len(leaves)} leaves have no matching output: donated too, "
                    "they are only freed")
        candidates.append(DonationCandidate(
            index=i, leaves=tuple(leaves), leaf_count=leaf_count,
            reusable_bytes=sum(leaf.bytes for leaf in leaves),
            measured_total_bytes=cap.memory.total, measured_saved_bytes=saved,
            alias_bytes=cap.memory.alias, suggested=i in chosen, note=note, keyword=keyword(i)))
    donated = sorted(set(user) | set(chosen))
    return DonationAdvice(
        backend=backend, user_donate_argnums=tuple(i for i in user if i < positional),
        donate_argnums=tuple(i for i in donated if i < positional),
        donate_argnames=tuple(keyword(i) for i in donated if i >= positional),
        user_donate_argnames=user_names, candidates=tuple(candidates),
        bytes_before=before, bytes_after=current.memory.total,
        alias_bytes_before=base.memory.alias, alias_bytes_after=current.memory.alias,
        notes=tuple(notes))


__all__ = ["DonatableLeaf", "DonationAdvice", "DonationCandidate", "advise_donation"]
