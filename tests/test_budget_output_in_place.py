"""A copy may not read an operand held in an output allocation after XLA
writes that allocation's next value over it in place.

The case the independent checker refused on resnet50:small (gpu:h100, budget
88.87 MiB): ``loop_maximum_fusion.12`` reads a batch mean
(``input_reduce_fusion.174``) that lives in an output allocation, and the
multi-output fusion updating the running mean later writes its output {2}
over those bytes (one unit, two members).  A copy of
``loop_maximum_fusion.12`` after that update reads the update, not the mean.
The search must not offer it (``operand_intact``): here on a small graph of
that shape, by the predicate and by the greedy, with a control in which the
update is written elsewhere (then the copy is fine and the greedy takes it)."""

from __future__ import annotations

from olla_jax.budget import greedy, recompute_plan
from olla_jax.budget.candidates import Candidate
from olla_jax.graph import model

KIB = 1024


def _graph(update_in_place: bool):
    """Nodes n0..n6 in XLA's order.  ``a`` (temp, n0) and ``m`` (output
    allocation, n1) are read by ``x`` (temp, n2), read at n3 and n6; the
    update ``u`` (n4) is written over ``m``'s bytes (in place) or into an
    allocation of its own; ``b`` (n4-n5) makes the peak while ``x`` is idle."""
    values, units = {}, []
    allocations = [model.Allocation(0, 0, "temp")]
    offset = 0

    def temp(key, d, touches, size):
        nonlocal offset
        vid = len(values)
        values[vid] = model.Value(id=vid, key=key, size=size, allocation=0, offset=offset,
                                  xla_range=(d, max(touches)), def_node=d,
                                  touches=frozenset({d, *touches}), live_in=False,
                                  live_out=False)
        units.append(model.Unit(len(units), (vid,), 0, offset, size, (0,), True))
        offset += size
        return vid

    def output(key, d, touches, xla_range, alloc):
        vid = len(values)
        values[vid] = model.Value(id=vid, key=key, size=256, allocation=alloc, offset=0,
                                  xla_range=xla_range, def_node=d,
                                  touches=frozenset({d, *touches}), live_in=False,
                                  live_out=xla_range[1] == 6)
        return vid

    a = temp("a", 0, {2}, 1 * KIB)
    x = temp("x", 2, {3, 6}, 4 * KIB)
    temp("b", 4, {5}, 8 * KIB)
    allocations.append(model.Allocation(1, 256, "output", live_out=True))
    # (in place, ``m`` ends where ``u`` is written; else it is an output too)
    m = output("m", 1, {2, 4}, (1, 4) if update_in_place else (1, 6), 1)
    if update_in_place:
        u = output("u", 4, set(), (4, 6), 1)
        units.append(model.Unit(len(units), (m, u), 1, 0, 256, (0, 0), False))
    else:
        allocations.append(model.Allocation(2, 256, "output", live_out=True))
        u = output("u", 4, set(), (4, 6), 2)
        units.append(model.Unit(len(units), (m,), 1, 0, 256, (0,), False))
        units.append(model.Unit(len(units), (u,), 2, 0, 256, (0,), False))
    allocations[0] = model.Allocation(0, offset, "temp")
    names = tuple(f"n{i}" for i in range(7))
    edges = {(0, 2), (1, 2), (2, 3), (2, 6), (1, 4), (2, 4), (3, 4), (4, 5), (5, 6)}
    graph = model.ScheduleGraph(nodes=names, flat=names, block_end=tuple(range(7)),
                                edges=tuple(sorted(edges)), values=values, units=tuple(units),
                                allocations=tuple(allocations), temp_allocation=0,
                                alignment=256)
    cand = Candidate(value=x, producer=2, users=(3, 6), operands=(a, m), flops=1, cost_s=1e-9)
    return graph, cand, m


def _greedy_splits(graph, cand):
    order = graph.xla_order
    target = 1 * KIB      # out of reach: the greedy takes whatever lowers the peak
    found = greedy.choose(graph, order, [cand], target, time_limit_s=2.0)
    return () if found is None else found.splits


def _intact(graph, value, at):
    """``operand_intact`` on XLA's order, for a copy at doubled step ``at``."""
    order = graph.xla_order
    step = recompute_plan.step_index(graph, order)
    spans = graph.unit_spans(order)
    state = recompute_plan.new_state(graph, order)
    return recompute_plan.operand_intact(graph, spans, step, state.interval_of_unit, value, at)


def test_operand_written_over_in_its_output_allocation_is_not_intact():
    graph, cand, m = _graph(update_in_place=True)
    intact = [_intact(graph, m, 2 * n) for n in range(2, 7)]
    # intact for a copy before n2..n4 (the update is written at n4), not before n5, n6
    assert intact == [True, True, True, False, False]


def test_search_offers_no_copy_that_reads_the_overwritten_operand():
    graph, cand, _ = _graph(update_in_place=True)
    assert (cand.value, 1) not in _greedy_splits(graph, cand)


def test_control_without_the_in_place_update_the_copy_is_taken():
    graph, cand, m = _graph(update_in_place=False)
    assert _intact(graph, m, 12)
    assert (cand.value, 1) in _greedy_splits(graph, cand)
