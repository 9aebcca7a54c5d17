"""The canonical search's descent without a target probes halfway between the
best arena found and the least not ruled out (place_canonical._descend), and
_regions_and_arena gives the arena search all the time where the hint's region
choices already hold the arena's live bytes near the floor."""

from __future__ import annotations

from olla_jax.solve import place, place_canonical
from olla_jax.solve.place import place_exact, validate_placement
from olla_jax.solve.place_canonical import solve_canonical
from olla_jax.solve.place_model import build_model
from olla_jax.solve.problem import ARENA, Interval, Placement, PlacementProblem, Region


def _disjoint_stack(n: int, size: int) -> tuple[PlacementProblem, Placement]:
    """``n`` blocks that all live at once, stacked: the arena is optimal (n * size)."""
    p = PlacementProblem(tuple(Interval(size, 0, 9) for _ in range(n)), alignment=64)
    hint = Placement(tuple([ARENA] * n), tuple(k * size for k in range(n)), n * size)
    return p, hint


def _chain(n: int, size: int) -> tuple[PlacementProblem, Placement]:
    """``n`` blocks living one after another, stacked: the optimum is one block."""
    p = PlacementProblem(tuple(Interval(size, k, k) for k in range(n)), alignment=64)
    hint = Placement(tuple([ARENA] * n), tuple(k * size for k in range(n)), n * size)
    return p, hint


def test_the_first_cap_asked_is_halfway_to_the_floor(monkeypatch):
    # Eight 1 KiB blocks one after another, stacked to 8 KiB: the live bytes
    # say 1 KiB.  The first cap asked is halfway (4.5 KiB), not one byte
    # below the start (the descent that found densenet's arena slowly).
    p, hint = _chain(8, 1024)
    caps = []
    real = place_canonical._Race.run

    def spy(self, cap, deadline):
        caps.append(cap)
        return real(self, cap, deadline)
    monkeypatch.setattr(place_canonical._Race, "run", spy)
    result = solve_canonical(build_model(p), hint, 5.0)
    assert caps[0] == 1024 + (8 * 1024 - 1024) // 2
    assert result.placement.arena_size == 1024 and result.optimal


def test_a_probe_proven_empty_raises_the_floor_and_the_result_stays_proven(monkeypatch):
    # Blocks all live at once: nothing fits below their sum.  Starting above
    # it (a hint with a gap), the probes below the sum are proven empty and
    # the descent ends proven optimal at the sum.
    p, hint = _disjoint_stack(4, 1024)
    gappy = Placement(hint.region, (0, 1024, 2048, 4096), 5120)
    validate_placement(p, gappy)
    result = solve_canonical(build_model(p), gappy, 5.0)
    assert result.placement.arena_size == 4096 and result.optimal


def test_a_timed_out_probe_rules_nothing_out(monkeypatch):
    # Every probe below the start times out: the search keeps the start,
    # is not proven optimal, and still ends by its deadline.
    p, hint = _chain(6, 1024)
    real = place_canonical._Race.run

    def stalls(self, cap, deadline):
        if cap < 5 * 1024:
            raise place_canonical._Timeout
        return real(self, cap, deadline)
    monkeypatch.setattr(place_canonical._Race, "run", stalls)
    result = solve_canonical(build_model(p), hint, 0.5)
    validate_placement(p, result.placement)
    assert not result.optimal
    assert result.placement.arena_size <= 6 * 1024


def test_settled_region_choices_leave_the_time_to_the_arena_search(monkeypatch):
    # Block 0 (256 B) sits in the only region; blocks 1-4 (1 KiB, one after
    # another) are stacked in the arena: the hint's region choices leave an
    # arena peak of 1 KiB, the floor, so no start from other region choices
    # (class choices, best-fit's sort orders) takes the time: the arena
    # search alone brings the arena to 1 KiB.
    ivs = (Interval(256, 0, 9),) + tuple(Interval(1024, k, k) for k in range(4))
    p = PlacementProblem(ivs, regions=(Region(256),), alignment=64)
    hint = Placement((0, ARENA, ARENA, ARENA, ARENA), (0, 0, 1024, 2048, 3072), 4096)
    validate_placement(p, hint)
    called = []
    monkeypatch.setattr(place, "_from_classes", lambda *a, **k: called.append("classes"))
    monkeypatch.setattr(place, "_region_pass", lambda problem, model, start, deadline:
                        called.append("pass") or start)
    monkeypatch.setattr(place, "_CLASSES_PER_BUILD", 0.0)   # the class start could run
    got = place_exact(p, time_limit_s=2.0, engine="canonical", hint=hint)
    validate_placement(p, got)
    assert got.arena_size == 1024
    assert called == []
