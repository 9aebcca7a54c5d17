"""overlap.just_in_time: collectives drawn in to the compute that hides them."""

from __future__ import annotations

import random

from olla_jax.graph import overlap


def _coll(start, done, kind, seconds):
    return overlap.Collective(start=start, done=done, kind=kind, group=2, link_bytes=1.0,
                              seconds=seconds)


def test_all_gather_starts_late_and_reduce_scatter_right_after_its_operand():
    # 0: param source, 1: ag start, 2: ag done, 3..6: compute (1 s each), 7: user of ag
    # 8: gradient, 9: rs start, 10: rs done, 11..12: compute, 13: user of rs.
    edges = [(0, 1), (1, 2), (2, 7), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10),
             (10, 13), (8, 11), (11, 12), (12, 13)]
    seconds = [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0]
    colls = [_coll(1, 2, "all-gather", 1.5), _coll(9, 10, "reduce-scatter", 0.5)]
    xla = (0, 1, 3, 4, 5, 6, 2, 7, 8, 11, 12, 9, 10, 13)   # gather early, scatter late
    drawn = overlap.just_in_time(xla, seconds, colls, edges)
    pos = {n: k for k, n in enumerate(drawn)}
    assert all(pos[u] < pos[v] for u, v in edges)
    # the gather starts with 2 s of compute (>= 1.5 s) before its done, not 4
    assert [n for n in drawn[pos[1] + 1:pos[2]]] == [5, 6]
    # the scatter starts right after the gradient, done after 1 s of compute (>= 0.5)
    assert drawn[pos[8] + 1] == 9 and drawn[pos[9] + 1:pos[10]] == (11,)
    # both stay hidden under the cost model
    assert overlap.exposure(drawn, seconds, colls).exposed_s == 0.0


def test_just_in_time_keeps_every_edge_on_random_dags():
    rng = random.Random(3)
    for _ in range(40):
        n = 30
        edges = sorted({(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.08})
        starts = rng.sample(range(n - 1), 3)
        colls, taken = [], set()
        for s in starts:
            d = s + 1
            if s in taken or d in taken:
                continue
            taken |= {s, d}
            edges.append((s, d))
            colls.append(_coll(s, d, rng.choice(["all-gather", "reduce-scatter", "all-reduce"]),
                               rng.random() * 3))
        edges = sorted(set(edges))
        seconds = [rng.random() for _ in range(n)]
        for c in colls:
            seconds[c.start] = seconds[c.done] = 0.0
        drawn = overlap.just_in_time(tuple(range(n)), seconds, colls, edges)
        assert sorted(drawn) == list(range(n))
        pos = {v: k for k, v in enumerate(drawn)}
        assert all(pos[u] < pos[v] for u, v in edges)


def test_all_gather_done_early_moves_to_its_first_reader():
    # XLA's order gathers up front: 1 start, 2 done, then 3..6 compute (1 s each),
    # 7 the gathered array's reader; its array was live over all four.
    edges = [(0, 1), (1, 2), (2, 7), (3, 4), (4, 5), (5, 6), (6, 7)]
    seconds = [0, 0, 0, 1, 1, 1, 1, 1]
    colls = [_coll(1, 2, "all-gather", 1.5)]
    xla = (0, 1, 2, 3, 4, 5, 6, 7)
    drawn = overlap.just_in_time(xla, seconds, colls, edges)
    pos = {n: k for k, n in enumerate(drawn)}
    assert all(pos[u] < pos[v] for u, v in edges)
    assert pos[2] + 1 == pos[7]                      # done right before its reader
    assert drawn[pos[1] + 1:pos[2]] == (5, 6)        # 2 s of compute hide its 1.5 s
    assert overlap.exposure(drawn, seconds, colls).exposed_s == 0.0
    # a done already right before its reader stays
    free = [(0, 1), (1, 2), (2, 7), (3, 4), (4, 5), (5, 6)]
    assert overlap.just_in_time((0, 1, 2, 7, 3, 4, 5, 6), seconds, colls,
                                free)[:4] == (0, 1, 2, 7)
