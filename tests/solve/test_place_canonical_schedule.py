"""The section search's restart schedule (place_canonical.schedule)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from olla_jax.solve import place_canonical as pc
from olla_jax.solve.csv_io import read_csv
from olla_jax.solve.place_model import build_model

E_CSV = Path(__file__).resolve().parents[2] / "benchmarks/data/minimalloc/E.1048576.csv"


def test_round_zero_reaches_every_rule_ranking_fit_combination_once_at_the_least_limit():
    n = len(pc.SECTION_RULES) * len(pc._RANKINGS) * len(pc._FITS)
    first = [pc.schedule(a) for a in range(n)]
    combos = {(at.rule, at.ranking, at.fit) for at in first}
    assert combos == set(itertools.product(pc.SECTION_RULES, pc._RANKINGS, pc._FITS))
    assert all(at.luby == 1 and at.seed is None for at in first)
    # Every rule meets every fit (cycling both by the attempt alone paired
    # each rule with one fit only).
    assert {(at.rule, at.fit) for at in first[:3 * len(pc.SECTION_RULES) * len(pc._RANKINGS)]} \
        == set(itertools.product(pc.SECTION_RULES, pc._FITS))


def test_each_combination_follows_its_own_luby_sequence_with_random_ties_after_round_zero():
    n = len(pc.SECTION_RULES) * len(pc._RANKINGS) * len(pc._FITS)
    for k in (0, 13, n - 1):
        runs = [pc.schedule(r * n + k) for r in range(7)]
        assert len({(at.rule, at.ranking, at.fit) for at in runs}) == 1
        assert [at.luby for at in runs] == [pc._luby(r + 1) for r in range(7)]
        seeds = [at.seed for at in runs[1:]]
        assert None not in seeds and len(set(seeds)) == len(seeds)


def test_minimalloc_e_s_larger_component_fits_within_the_first_round():
    """MiniMalloc E splits into two components; the 131-block one has 4 KiB
    slack at its peak.  The old schedule's first section-search fit came at
    attempt 31 after 2.9 CPU s (count rule never met the valley fit); round
    0 (every combination once, least limit) fits it."""
    if not E_CSV.exists():
        pytest.skip("MiniMalloc instance E not present (benchmarks/minimalloc.py's data)")
    model = build_model(read_csv(E_CSV).problem)
    conf = [np.asarray(c, dtype=np.int64) for c in model.conflicts]
    comps = pc._components(conf, len(model.blocks))
    assert sorted(len(c) for c in comps if len(c) > 1) == [84, 131]
    comp = max(comps, key=len)
    pos = {int(g): i for i, g in enumerate(comp.tolist())}
    search = pc._Search(np.array([model.blocks[g].size for g in comp], dtype=np.int64),
                        [model.blocks[g].segments for g in comp],
                        [np.array([pos[j] for j in conf[g].tolist()], dtype=np.int64) for g in comp.tolist()],
                        model.alignment)
    n = len(pc.SECTION_RULES) * len(pc._RANKINGS) * len(pc._FITS)
    for attempt in range(n):
        got = pc._restart(search, 1048576, time.monotonic() + 60, attempt)
        if got is not pc._LIMIT and got is not None:
            break
    else:
        pytest.fail("no restart of round 0 fits E's 131-block component")
    at = pc.schedule(attempt)
    assert at.luby == 1 and at.seed is None
    sizes = search.size
    assert int((got + sizes).max()) <= 1048576
    for b in range(search.m):                    # no two blocks live together overlap
        for c in search.conf[b].tolist():
            assert got[b] + sizes[b] <= got[c] or got[c] + sizes[c] <= got[b]
