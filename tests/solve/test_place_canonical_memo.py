"""The ordered search's memo of solved and failed groups (and hatless
pruning) decide every capacity as the plain search does."""

from __future__ import annotations

import random

import numpy as np
import pytest

from olla_jax.solve import place_canonical
from olla_jax.solve.place import best_fit, live_bytes_bound, validate_placement
from olla_jax.solve.place_canonical import _Ordered
from olla_jax.solve.place_model import build_model
from olla_jax.solve.problem import ARENA, Interval, PlacementProblem


def _problem(seed: int) -> PlacementProblem:
    """Short-lived buffers over a long time line: the groups left often split."""
    rng = random.Random(seed)
    out = []
    for _ in range(rng.randint(8, 12)):
        start = rng.randint(0, 12)
        out.append(Interval(size=rng.choice((1, 2, 3, 4, 5)) * 64, start=start,
                            end=start + rng.randint(0, 4)))
    return PlacementProblem(tuple(out), alignment=64)


def _decide(p: PlacementProblem, cap: int, *, memo: bool, hatless: bool):
    model = build_model(p)
    conf = [np.asarray(c, dtype=np.int64) for c in model.conflicts]
    search = _Ordered(np.array([b.size for b in model.blocks], dtype=np.int64),
                      [b.segments for b in model.blocks], conf, p.alignment)
    search.hatless = hatless
    found = None
    for heuristic in ("TWA", "WAT"):
        gen = search.dive(cap, heuristic)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            found = stop.value
    if found is not None:
        placement = model.to_placement([ARENA] * len(model.blocks), [int(x) for x in found])
        validate_placement(p, placement)
        assert placement.arena_size <= cap
    return found is not None, len(search._memo)


def test_memo_and_hatless_pruning_decide_like_the_plain_search(monkeypatch):
    groups = 0
    for seed in range(40):
        p = _problem(seed)
        lo, hi = live_bytes_bound(p), best_fit(p).arena_size
        for cap in range(lo, hi + 1, 64):
            got, keys = _decide(p, cap, memo=True, hatless=True)
            groups = max(groups, keys)
            with monkeypatch.context() as m:
                m.setattr(place_canonical, "_MEMO_PER_KEY", 0)
                assert _decide(p, cap, memo=False, hatless=False)[0] == got, (seed, cap)
    assert groups > 1          # the memo saw groups apart, not only the whole problem
