"""What XLA:GPU's rematerialization computed again, read back onto the step's jaxpr.

XLA's rematerialization pass clones an instruction of the scheduled entry as
``<name>.remat``, ``<name>.remat2``, ... (``<name>.remat.1`` for a clone of a
clone) and points the late readers at the clone.  A clone keeps its
original's op_name metadata, so with the step evaluated under one named scope
per top-level equation (``offload.SCOPE``, ``offload.rewrite(..., scoped=True)``)
each clone names the jaxpr equation whose value XLA computes a second time:
what XLA's cheap recomputation is made of, beside what our levers pick (issue
20), and a set of values a recomputation of ours may start from.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

import numpy as np
from jax.extend import core as jex

from olla_jax import jaxpr_walk
from olla_jax.offload import SCOPE

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(\((?:[^()]|\(\d+\))*\)|\S+)\s+"
                          r"([\w\-]+)\(")
_CLONE = re.compile(r"(.+?)\.remat\d*(?:\.\d+)*")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_EQUATION = re.compile(re.escape(SCOPE).replace(r"\{\}", r"(\d+)") + r"(?:/|$)")
_KIND = re.compile(r"\bkind=(k\w+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
# an instruction that runs nothing of its own: not a clone that computes again
_VIEWS = ("bitcast", "get-tuple-element", "tuple")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                "c128": 16}


@dataclasses.dataclass(frozen=True)
class Clone:
    """One instruction XLA's rematerialization made: a copy of ``original``."""
    name: str
    original: str                       # the cloned instruction's name (a clone's: its root)
    opcode: str                         # "fusion", "custom-call", ...
    kind: str                           # a fusion's kind ("kLoop"), a custom call's target, or ""
    arrays: tuple[tuple[str, tuple[int, ...]], ...]   # (element type, dims) per result
    op_name: str
    equation: int | None                # the top-level jaxpr equation (its scope), if named

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(dims, dtype=np.int64)) * _DTYPE_BYTES.get(t, 4)
                   for t, dims in self.arrays)

    @property
    def counts(self) -> frozenset[int]:
        """Element counts of its results."""
        return frozenset(int(np.prod(dims, dtype=np.int64)) for _, dims in self.arrays)


def clones(hlo_text: str) -> list[Clone]:
    """The clones of XLA's rematerialization in ``hlo_text``'s entry computation
    (an optimized module's text), views (bitcasts, tuples and their elements) left
    out, in the entry's order."""
    start = hlo_text.find("\nENTRY")
    entry = hlo_text[start:] if start >= 0 else hlo_text
    found = []
    for line in entry.splitlines():
        m = _INSTRUCTION.match(line)
        if not m or m.group(3) in _VIEWS:
            continue
        c = _CLONE.fullmatch(m.group(1))
        if c is None:
            continue
        op = _OP_NAME.search(line)
        op_name = op.group(1) if op else ""
        eq = _EQUATION.search(op_name)
        kind = _KIND.search(line) or _TARGET.search(line)
        arrays = tuple((t, tuple(int(d) for d in dims.split(",") if d))
                       for t, dims in _ARRAY.findall(m.group(2)))
        found.append(Clone(m.group(1), c.group(1), m.group(3), kind.group(1) if kind else "",
                           arrays, op_name, int(eq.group(1)) if eq else None))
    return found


def seeded_values(found: Iterable[Clone], closed) -> dict[str, list[str]]:
    """Names (``jaxpr_walk.names``) of ``closed``'s top-level values whose
    producer equation XLA cloned, each with the clones that computed it again:
    the outputs of the clone's equation with one of its results' element counts
    (an equation with several such outputs, a SiLU's call with its two
    residuals, gives all of them: the op_name does not say which one the clone
    makes).  Clones with no equation scope (a parameter's layout transpose) or
    one outside ``closed`` are left out."""
    jaxpr = closed.jaxpr
    names = jaxpr_walk.names(jaxpr)
    seeds: dict[str, list[str]] = {}
    for clone in found:
        i = clone.equation
        if i is None or not 0 <= i < len(jaxpr.eqns):
            continue
        for u in jaxpr.eqns[i].outvars:
            shape = getattr(getattr(u, "aval", None), "shape", None)
            if isinstance(u, jex.DropVar) or shape is None:
                continue
            if int(np.prod(shape, dtype=np.int64)) in clone.counts:
                seeds.setdefault(names[u], []).append(clone.name)
    return seeds


def by_kind(found: Sequence[Clone]) -> list[tuple[str, int, int]]:
    """(opcode and kind, clones, bytes of their results), most bytes first."""
    table: dict[str, list[int]] = {}
    for c in found:
        key = f"{c.opcode} {c.kind}".strip()
        row = table.setdefault(key, [0, 0])
        row[0] += 1
        row[1] += c.nbytes
    return sorted(((k, n, b) for k, (n, b) in table.items()), key=lambda r: (-r[2], r[0]))


def original_of(name: str) -> str:
    """``name`` without its rematerialization suffixes (itself when it has none)."""
    c = _CLONE.fullmatch(name)
    return c.group(1) if c else name


def cloned_instructions(hlo_text: str) -> frozenset[str]:
    """Names of the instructions XLA's rematerialization cloned in ``hlo_text``
    (their clones' ``original``): in a compile of the same step without the
    limit they are the same instructions, by name, as far as XLA's passes
    before rematerialization name them alike (``budget.candidates.of_producers``)."""
    return frozenset(c.original for c in clones(hlo_text))
