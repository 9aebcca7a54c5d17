"""The bound at a loop node with whole units parked and the writers' order
(``solve.bound_block``, ``graph.park.block_park``).

A loop's body runs in XLA's order whatever the entry order; units live
across the loop (gradient accumulators read by the updates after it) can sit
in an update's output only if they are read before that output is written,
so of units parked in each other's outputs, the last writer's cannot be.
The min-cut counts every idle output byte free: on the step below it proves
2 KiB where every order and placement needs 3 KiB."""

from __future__ import annotations

import itertools
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from test_model_bound_fill import KIB, _min_cut  # noqa: E402

from olla_jax import strategy
from olla_jax.graph import model, park
from olla_jax.solve import bound_block, place


def _loop_graph(length, inner, through, outputs, alignment=256):
    """A ScheduleGraph: n0 writes the ``through`` units, n1 is a loop of
    ``length`` inner steps (then its own), reading them, and writer ``k``
    (node 2 + k) writes output ``k``, after the loop.  ``inner``: (size,
    first, last) of units inside the loop (steps from 0); ``through``: (size,
    the writer that reads it last); ``outputs``: sizes."""
    values, units = {}, []
    allocations = [model.Allocation(0, 0, "temp")]
    names = ["n0", "n1", *(f"w{k}" for k in range(len(outputs)))]
    flat = ["n0", *(f"n1.{s}" for s in range(length)), "n1",
            *(f"w{k}" for k in range(len(outputs)))]
    block_end = [0, length + 1, *(length + 2 + k for k in range(len(outputs)))]
    offset = 0

    def unit(size, d, touches, xla_range, alloc=0, at=0, live_out=False):
        vid = len(values)
        values[vid] = model.Value(id=vid, key=f"v{vid}", size=size, allocation=alloc,
                                  offset=at, xla_range=xla_range, def_node=d,
                                  touches=frozenset(touches), live_in=False, live_out=live_out)
        units.append(model.Unit(len(units), (vid,), alloc, at, size, (0,), alloc == 0))

    for size, reader in through:
        unit(size, 0, {0, 1, 2 + reader}, (0, block_end[2 + reader]), at=offset)
        offset += size
    for size, first, last in inner:
        unit(size, 1, {1}, (1 + first, 1 + last), at=offset)
        offset += size
    allocations[0] = model.Allocation(0, offset, "temp")
    for k, size in enumerate(outputs):
        a = len(allocations)
        allocations.append(model.Allocation(a, size, "output", live_out=True))
        unit(size, 2 + k, {2 + k}, (block_end[2 + k], len(flat) - 1), alloc=a, live_out=True)
    edges = {(0, 1)} | {(0, 2 + k) for k in range(len(outputs))} | \
        {(1, 2 + k) for k in range(len(outputs))}
    return model.ScheduleGraph(nodes=tuple(names), flat=tuple(flat), block_end=tuple(block_end),
                               edges=tuple(sorted(edges)), values=values, units=tuple(units),
                               allocations=tuple(allocations), temp_allocation=0,
                               alignment=alignment)


def _crossed():
    # Two 1 KiB accumulators, each read by the update of the other's size-
    # alike output, and a 2 KiB unit in the loop no output can hold: 4 KiB
    # live in the loop, 2 KiB of idle outputs (the min-cut's 2 KiB), but
    # only one accumulator fits an output written after its read.
    return _loop_graph(3, [(2 * KIB, 0, 2)], [(KIB, 0), (KIB, 1)], [KIB, KIB])


def _block_value(graph) -> int:
    best = 0
    for c in sorted({0, *graph.order_problem().region_sizes}):
        for n in park.block_nodes(graph):
            found = park.block_park(graph, c, n)
            steps = bound_block.busiest_steps(found, 3)
            value, exact = bound_block.block_minimum(found, steps, time_limit_s=10)
            assert exact
            best = max(best, value)
    return best


def _least_placed(graph) -> int:
    """The least arena placed over every order of the writers."""
    writers = list(range(2, len(graph.nodes)))
    return min(place.place(graph.placement_problem((0, 1, *order))[0],
                           time_limit_s=2).arena_size
               for order in itertools.permutations(writers))


def test_the_last_writers_read_parks_in_no_output():
    graph = _crossed()
    assert _min_cut(graph) == 2 * KIB
    assert _block_value(graph) == 3 * KIB
    assert _least_placed(graph) == 3 * KIB


def test_the_plan_bound_rises_to_the_plan():
    solution = strategy.solve_graph(_crossed(), time_limit_s=3)
    assert solution.lower_bound_bytes == 3 * KIB      # the min-cut's: 2 KiB
    assert solution.layout.temp_bytes == 3 * KIB


def test_block_up_raises_a_threshold():
    graph = _crossed()
    per_cap = {0: 2 * KIB, KIB: 2 * KIB}
    value = strategy._block_up(graph, per_cap, 2 * KIB, time.monotonic, time.monotonic() + 5)
    assert value == 3 * KIB and max(per_cap.values()) == value


def test_an_output_written_in_the_loop_holds_nothing_after_its_write():
    # The loop writes the output at its step 1 (a live-out value of the
    # loop): the 1 KiB unit living at steps 1-2 cannot sit there.
    graph = _crossed()
    k = next(u.id for u in graph.units if not u.movable)
    vid = graph.units[k].values[0]
    v = graph.values[vid]
    values = dict(graph.values)
    values[vid] = v.__class__(**{**v.__dict__, "def_node": 1, "xla_range": (2, v.xla_range[1]),
                                 "touches": frozenset({1})})
    import dataclasses
    graph = dataclasses.replace(graph, values=values)
    found = park.block_park(graph, 0, 1)
    assert set(found.busy_from.values()) == {1}


def _random_loops(seed: int, count: int, alike: bool = False):
    """Small random loops; ``alike``: each writer reads one accumulator of its
    output's size, of two sizes (writers the model groups as alike)."""
    rng = random.Random(seed)
    sizes = [KIB // 2, KIB, 2 * KIB]
    for _ in range(count):
        writers = rng.randrange(1, 4)
        length = rng.randrange(2, 5)
        inner = []
        for _ in range(rng.randrange(1, 4)):
            first = rng.randrange(length)
            inner.append((rng.choice(sizes), first, rng.randrange(first, length)))
        through = [(rng.choice(sizes), rng.randrange(writers)) for _ in range(rng.randrange(0, 4))]
        outputs = [rng.choice(sizes) + rng.choice((0, 0, KIB // 4)) for _ in range(writers)]
        if alike:
            outputs = [rng.choice(sizes[:2]) for _ in range(writers)]
            through = [(size, k) for k, size in enumerate(outputs)]
        yield _loop_graph(length, inner, through, outputs)


def test_random_loops_block_bound_at_most_every_placed_order():
    raised = 0
    for trial, graph in enumerate(_random_loops(5, 25)):
        value = _block_value(graph)
        assert value <= _least_placed(graph), trial
        raised += value > _min_cut(graph)
    assert raised, "no random loop where the block bound rose above the min-cut"


def test_alike_writers_go_in_one_order_and_the_last_ones_read_stays_out():
    # Three updates alike, each reading its own 1 KiB accumulator: in every
    # order the last one's accumulator parks in no output (3 KiB, where the
    # min-cut counts the three idle outputs free: 2 KiB).
    graph = _loop_graph(2, [(2 * KIB, 0, 1)], [(KIB, 0), (KIB, 1), (KIB, 2)], [KIB] * 3)
    found = park.block_park(graph, 0, 1)
    built = bound_block._model(found, bound_block.busiest_steps(found, 2), 0)
    assert sorted(len(c) for c in built[2]) == [3]       # one class of three writers
    assert _min_cut(graph) == 2 * KIB
    assert _block_value(graph) == 3 * KIB == _least_placed(graph)


def test_random_alike_writers_block_bound_at_most_every_placed_order():
    grouped = 0
    for trial, graph in enumerate(_random_loops(9, 15, alike=True)):
        value = _block_value(graph)
        assert value <= _least_placed(graph), trial
        found = park.block_park(graph, 0, 1)
        built = bound_block._model(found, bound_block.busiest_steps(found, 3), 0)
        grouped += not isinstance(built, int) and any(len(c) > 1 for c in built[2])
    assert grouped, "no random loop with writers alike"
