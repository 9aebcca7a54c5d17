"""Plans that earlier budgeted ``plan()`` calls of this process found, per program.

Each budget's search is limited in time, so two separate calls need not
agree: a lower budget's search may end above a plan a higher budget's search
met.  This memo keeps, per compiled program and options, the (total memory,
extra cost) Pareto front of the plans earlier calls applied, as saved plans
(``olla_jax.saved``: order, places, recomputation; no executable).  A new
call's own plan competes with them: among those that meet its budget the least
extra cost wins (ties: less memory), and where none meets it the least memory
does.  Every answer is then a point of one front, and "least cost that meets
B" on a front is its largest-memory point <= B: answers are monotone in B,
and a missed budget's plan is never above one an earlier call found.  A memo
plan is applied again through the saved-plan path (checked, rewritten,
verified), never trusted.

Bounded: ``MAX_PROGRAMS`` programs (least recently used dropped), ``MAX_PLANS``
plans each.  ``clear()`` (``olla_jax.clear_cache()``) forgets them all;
``OLLA_JAX_PLAN_MEMO=0`` in the environment turns the memo off.

Beside the plans, ``lever_memo``: per program, the dict program recomputation
keeps its XLA compiles and bit checks in (``olla_jax.program_remat``'s
``memo``), so a second budget of one step does not compile the step and the
sets an earlier call compiled again (``MAX_LEVER_PROGRAMS`` programs: each
holds compiled executables).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from typing import Any, Hashable

from olla_jax.saved import SavedPlan

MAX_PROGRAMS = 4
MAX_PLANS = 6
ENVIRONMENT = "OLLA_JAX_PLAN_MEMO"


@dataclasses.dataclass(frozen=True)
class Known:
    """A plan an earlier call applied: enough to apply it again, and its figures."""
    saved: SavedPlan
    total_bytes: int        # the step's total as applied (Plan.runs_total_bytes)
    cost: float             # its extra cost (the recomputation search's objective; 0: none)
    extra_flops: int
    budget: int             # the memory_budget of the call that found it


_LOCK = threading.Lock()
_FRONTS: collections.OrderedDict[Hashable, list[Known]] = collections.OrderedDict()
MAX_LEVER_PROGRAMS = 2
_LEVERS: collections.OrderedDict[Hashable, dict] = collections.OrderedDict()


def enabled() -> bool:
    """Whether plan() consults and fills the memo (``OLLA_JAX_PLAN_MEMO=0``: not)."""
    return os.environ.get(ENVIRONMENT, "1").strip().lower() not in ("0", "false", "off", "no")


def clear() -> None:
    """Forget every plan of every program."""
    with _LOCK:
        _FRONTS.clear()
        _LEVERS.clear()


def lever_memo(key: Hashable) -> dict | None:
    """The memo dict a lever keeps its compiles in for the program ``key``
    (the same dict for the same key until dropped or ``clear()``), or None
    where the memo is off."""
    if not enabled():
        return None
    with _LOCK:
        memo = _LEVERS.setdefault(key, {})
        _LEVERS.move_to_end(key)
        while len(_LEVERS) > MAX_LEVER_PROGRAMS:
            _LEVERS.popitem(last=False)
        return memo


def rank(total_bytes: int, cost: float, budget: int) -> tuple:
    """Smaller is better at ``budget``: meeting it first, by extra cost, then
    memory; else by memory, then extra cost."""
    return (0, cost, total_bytes) if total_bytes <= budget else (1, total_bytes, cost)


def better(key: Hashable, budget: int, total_bytes: int, cost: float) -> list[Known]:
    """The memo's plans of ``key`` that rank before a plan of ``total_bytes``
    and ``cost`` at ``budget``, best first."""
    with _LOCK:
        front = list(_FRONTS.get(key, ()))
        if key in _FRONTS:
            _FRONTS.move_to_end(key)
    mine = rank(total_bytes, cost, budget)
    return sorted((k for k in front if rank(k.total_bytes, k.cost, budget) < mine),
                  key=lambda k: rank(k.total_bytes, k.cost, budget))


def record(key: Hashable, known: Known) -> None:
    """Add ``known`` to ``key``'s front unless a plan there is as good on both
    counts; drop the ones it dominates; keep ``MAX_PLANS`` (the
    highest-memory ones go first: the least memory is always kept)."""
    with _LOCK:
        front = _FRONTS.get(key, [])
        if any(k.total_bytes <= known.total_bytes and k.cost <= known.cost for k in front):
            return
        front = [k for k in front
                 if not (known.total_bytes <= k.total_bytes and known.cost <= k.cost)]
        front = sorted([*front, known], key=lambda k: (k.total_bytes, k.cost))[:MAX_PLANS]
        _FRONTS[key] = front
        _FRONTS.move_to_end(key)
        while len(_FRONTS) > MAX_PROGRAMS:
            _FRONTS.popitem(last=False)


def forget(key: Hashable, known: Known) -> None:
    """Drop ``known`` (it could not be applied again)."""
    with _LOCK:
        if key in _FRONTS:
            _FRONTS[key] = [k for k in _FRONTS[key] if k is not known]


def front(key: Hashable) -> list[Known]:
    """``key``'s plans, least memory first (for tests and reports)."""
    with _LOCK:
        return list(_FRONTS.get(key, ()))


def program_key(fingerprint: str, **options: Any) -> tuple:
    """The memo's key: the program (``saved.fingerprint`` of its optimized
    module: function, shapes, donation, compile options, rng lowering) and
    the options a plan's validity or its cost depend on."""
    return (fingerprint, tuple(sorted((k, repr(v)) for k, v in options.items())))
