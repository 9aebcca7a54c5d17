"""overlap.retime simulates each candidate from a kept state: the same result
as simulating every candidate from the first step."""

from __future__ import annotations

import random

from olla_jax.graph import overlap


def _plain_exposure(order, seconds, colls):
    """The cost model, written out again: one stream of compute, one link."""
    start = {c.start: k for k, c in enumerate(colls)}
    done = {c.done: k for k, c in enumerate(colls)}
    finish, waited, clock, link = {}, [0.0] * len(colls), 0.0, 0.0
    for node in order:
        if node in start:
            link = max(clock, link) + colls[start[node]].seconds
            finish[start[node]] = link
        if node in done:
            k = done[node]
            waited[k] = max(0.0, finish[k] - clock)
            clock = max(clock, finish[k])
            continue
        clock += seconds[node]
    return waited


def _case(rng):
    n = rng.randint(8, 60)
    edges = {(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.06}
    colls, taken = [], set()
    for _ in range(rng.randint(1, 8)):
        s = rng.randrange(n - 1)
        d = rng.randrange(s + 1, min(n, s + 6))
        if s in taken or d in taken:
            continue
        taken |= {s, d}
        edges.add((s, d))
        colls.append(overlap.Collective(
            start=s, done=d, kind=rng.choice(["all-gather", "reduce-scatter", "all-reduce"]),
            group=2, link_bytes=1.0, seconds=rng.random() * 4))
    seconds = [rng.random() for _ in range(n)]
    for c in colls:
        seconds[c.start] = seconds[c.done] = 0.0
    weights = [rng.randint(0, 9) for _ in range(n)]

    def memory(o):   # any cost that depends on the order
        return max(sum(weights[x] * (k + 1) for k, x in enumerate(o[:j])) % 97
                   for j in range(1, len(o) + 1))
    return n, sorted(edges), tuple(colls), seconds, memory


def test_kept_states_change_nothing(monkeypatch):
    rng = random.Random(11)
    for _ in range(60):
        n, edges, colls, seconds, memory = _case(rng)
        allowance = rng.choice([0.0, rng.random()])
        results = []
        for every in (1, 3, n + 1):   # n + 1: every candidate simulated from step 0
            monkeypatch.setattr(overlap, "SNAPSHOT_EVERY", every)
            results.append(overlap.retime(range(n), seconds, colls, edges, allowance, memory))
        assert all(r == results[0] for r in results[1:])
        r = results[0]
        pos = {v: k for k, v in enumerate(r.order)}
        assert sorted(r.order) == list(range(n)) and all(pos[u] < pos[v] for u, v in edges)
        got = overlap.exposure(r.order, seconds, colls)
        assert got == r.exposure
        assert list(got.per_collective) == _plain_exposure(r.order, seconds, colls)
