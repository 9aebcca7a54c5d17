"""The independent checker alone refuses every plan that could change a result.

Each bad plan here is the solver's good plan of a real captured step
(``benchmarks/fuzz_plans.fuzz_step``: a constant table, an argmax with its
tuple table and thread-local allocations, parameters, outputs, a temp arena)
with one edit that hits one hole; each is paired with a control, the same
value moved to fresh bytes at the end of the temp arena, which the checker
accepts, so the rejection is for that hole and nothing else.  The adversarial
fuzz at the end applies every plan the checker accepts, with the executable
rewrite's own guards off, and runs it against XLA's.
"""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks import fuzz_plans
from olla_jax import check


@pytest.fixture(scope="module")
def base():
    return fuzz_plans.base_plan(time_limit_s=1.0)


@pytest.fixture(scope="module")
def donated():
    """XLA's own plan of the step with donated parameters (other in-place pairs)."""
    return fuzz_plans.donated_base()


def _check(base, plan):
    cap = base.capture
    return check.check_plan(cap.hlo_proto, cap.values_text, cap.live_range_text, plan,
                            alignment=base.graph.alignment)


def _good(base):
    lay = base.layout
    return check.CandidatePlan(lay.order_names, dict(lay.places), dict(lay.allocation_sizes))


def _moved(base, unit, alloc, offset, grow_to=None):
    """The solver's plan with every value of ``unit`` moved to ``alloc``+``offset``
    (its members keep their relative offsets); ``grow_to`` resizes ``alloc``."""
    plan = _good(base)
    places = dict(plan.places)
    for v, rel in zip(unit.values, unit.member_offsets):
        places[v] = (alloc, offset + rel)
    sizes = dict(plan.allocation_sizes)
    if grow_to is not None:
        sizes[alloc] = grow_to
    return dataclasses.replace(plan, places=places, allocation_sizes=sizes)


def _at_arena_end(base, unit):
    """The control: ``unit`` on fresh bytes at the end of a grown temp arena."""
    g = base.graph
    t = g.temp_allocation
    end = base.layout.allocation_sizes.get(t, base.allocations[t].size)
    end += -end % g.alignment
    return _moved(base, unit, t, end, grow_to=end + unit.size)


def _allocation(base, what):
    return [a for a in base.allocations.values() if what(a)]


def _unit_fitting(base, size, latest=True):
    """A movable unit of at most ``size`` bytes, the one defined last in the plan's order."""
    g = base.graph
    step = {n: k for k, n in enumerate(base.layout.order)}
    units = [u for u in g.units if u.movable and 0 < u.size <= size]
    assert units, f"the fuzz step has no movable value of at most {size} B"
    return max(units, key=lambda u: step[g.values[u.values[0]].def_node] * (1 if latest else -1))


def test_the_solvers_plan_and_the_controls_pass(base):
    _check(base, _good(base))
    for unit in [u for u in base.graph.units if u.movable][:5]:
        _check(base, _at_arena_end(base, unit))


def test_temp_on_a_constant_after_its_last_use(base):
    """Before: accepted (the constant looked dead), applied it verified once and
    was wrong from the second call (the constant is initialised only at load)."""
    (const,) = _allocation(base, lambda a: a.is_constant and a.size >= 4096)
    unit = _unit_fitting(base, const.size)
    _check(base, _at_arena_end(base, unit))
    with pytest.raises(check.PlanRejected, match="constant allocation .* corrupts every later call"):
        _check(base, _moved(base, unit, const.index, 0))


def test_value_inside_a_tuple_table(base):
    (table,) = _allocation(base, lambda a: a.is_tuple)
    unit = _unit_fitting(base, table.size)
    _check(base, _at_arena_end(base, unit))
    with pytest.raises(check.PlanRejected, match="a tuple table"):
        _check(base, _moved(base, unit, table.index, 0))


def test_value_on_a_thread_local_allocation(base):
    local = max(_allocation(base, lambda a: a.is_thread_local), key=lambda a: a.size)
    unit = _unit_fitting(base, local.size)
    _check(base, _at_arena_end(base, unit))
    with pytest.raises(check.PlanRejected, match="thread-local allocation .* no buffer"):
        _check(base, _moved(base, unit, local.index, 0))


def test_value_in_a_parameter_that_is_not_donated(base):
    param = max(_allocation(base, lambda a: a.is_entry_computation_parameter), key=lambda a: a.size)
    unit = _unit_fitting(base, param.size)
    with pytest.raises(check.PlanRejected, match="entry parameter .* not donated"):
        _check(base, _moved(base, unit, param.index, 0))


@pytest.mark.parametrize("kind", ["constant", "tuple", "thread_local", "parameter", "output"])
def test_a_fixed_allocation_grown_to_hold_a_value(base, kind):
    """Before: a constant, tuple-table, thread-local, parameter or live-out
    allocation could be given a new size and a value put in the new bytes."""
    what = {"constant": lambda a: a.is_constant, "tuple": lambda a: a.is_tuple,
            "thread_local": lambda a: a.is_thread_local,
            "parameter": lambda a: a.is_entry_computation_parameter,
            "output": lambda a: a.maybe_live_out and not a.is_tuple
            and not a.is_entry_computation_parameter}[kind]
    alloc = _allocation(base, what)[0]
    unit = _unit_fitting(base, 1 << 30)
    end = alloc.size + (-alloc.size % base.graph.alignment)
    with pytest.raises(check.PlanRejected, match="its size .* cannot change"):
        _check(base, _moved(base, unit, alloc.index, end, grow_to=end + unit.size))


def test_output_allocation_takes_a_temp_in_its_idle_bytes(base):
    """Outputs are written late: a temp may use their bytes before (the solver
    does), never while an output is live."""
    g = base.graph
    outputs = set(g.regions)
    lay = base.layout
    assert any(p[0] in outputs for p in lay.places.values()), "the solver used no output region"
    _check(base, _good(base))
    # an output and a movable unit still in use when that output is written
    # (which pair that is depends on the order the solver found)
    step = {n: k for k, n in enumerate(lay.order)}

    def last_use(u):
        return max(step[n] for v in u.values for n in g.values[v].touches | {g.values[v].def_node})

    pairs = [(out, u) for out in g.values.values()
             if out.live_out and out.allocation in outputs and out.size >= 64
             for u in g.units if u.movable and 0 < u.size <= out.size and out.id not in u.values
             and last_use(u) >= step[out.def_node]]
    assert pairs, "no movable value is live when an output is written"
    out, unit = pairs[0]
    with pytest.raises(check.PlanRejected, match="overlap .* while both are live"):
        _check(base, _moved(base, unit, out.allocation, out.offset))


def test_fixed_values_stay(base):
    g = base.graph
    plan = _good(base)
    t = g.temp_allocation
    for what in (lambda a: a.is_tuple, lambda a: a.is_constant, lambda a: a.is_thread_local):
        alloc = _allocation(base, what)[0]
        v = alloc.assigned[0].logical_buffer_id
        moved = dataclasses.replace(plan, places={**plan.places, v: (t, 0)})
        with pytest.raises(check.PlanRejected, match="must stay"):
            _check(base, moved)


def test_unknown_value_misalignment_and_a_shrunk_arena(base):
    plan = _good(base)
    with pytest.raises(check.PlanRejected, match="does not hold"):
        _check(base, dataclasses.replace(plan, places={**plan.places, 10 ** 6: (0, 0)}))
    unit = _unit_fitting(base, 1 << 30)
    a, o = plan.places.get(unit.values[0], (unit.allocation, unit.offset))
    shifted = _moved(base, unit, a, o)
    shifted = dataclasses.replace(shifted, places={
        v: (pa, po + 32) if v in unit.values else (pa, po) for v, (pa, po) in shifted.places.items()})
    with pytest.raises(check.PlanRejected, match="not a multiple of"):
        _check(base, shifted)
    t = base.graph.temp_allocation
    size = plan.allocation_sizes.get(t, base.allocations[t].size)
    with pytest.raises(check.PlanRejected, match="does not fit"):
        _check(base, dataclasses.replace(plan, allocation_sizes={**plan.allocation_sizes,
                                                                 t: size - 64}))
    with pytest.raises(check.PlanRejected, match="does not exist"):
        _check(base, dataclasses.replace(plan, allocation_sizes={10 ** 6: 64}))


def test_recomputed_copy_on_a_constant(base):
    """A plausible recomputation (the fuzz's own) is accepted at the arena's
    end and refused on the constant."""
    import random
    rng = random.Random(0)
    for _ in range(200):
        m = fuzz_plans.Mutant(list(base.layout.order), dict(base.layout.places),
                              dict(base.layout.allocation_sizes), [], [])
        if not fuzz_plans._recompute(base, m, rng, plausible=True):
            continue
        try:
            _check(base, fuzz_plans.candidate(base, m))
        except check.PlanRejected:
            continue
        break
    else:
        pytest.fail("no recomputation of the fuzz step was accepted")
    claim = m.recomputes[0]
    (const,) = _allocation(base, lambda a: a.is_constant and a.size >= claim.size)
    m.recomputes[0] = dataclasses.replace(claim, place=(const.index, 0))
    with pytest.raises(check.PlanRejected, match="constant allocation"):
        _check(base, fuzz_plans.candidate(base, m))


def test_adversarial_mutations_accepted_plans_all_run_right(base, donated):
    """200 mutants of the two base plans: every one the checker accepts is
    applied (rewrite guards off) and run against XLA on 2 input sets, twice
    each; none may differ."""
    figures = fuzz_plans.campaign([base, donated], 200, seed=1)
    print("\n" + fuzz_plans.summary(figures, "tests/test_check.py (200 mutations)"))
    assert figures.mutations == 200
    assert figures.accepted_and_wrong == 0, figures.wrong
    assert set(figures.kinds) == set(fuzz_plans.KINDS), set(fuzz_plans.KINDS) - set(figures.kinds)
    assert figures.rejected > 0 and figures.accepted_applied > 0


def _sink_after(base, names, r, writer):
    """``names`` with ``r`` and whatever depends on it (between the two) moved
    just after ``writer``; None when ``writer`` itself depends on ``r``."""
    from olla_jax import dumps
    module = dumps.parse_hlo_proto(base.capture.hlo_proto).hlo_module
    entry = next(c for c in module.computations if c.id == module.entry_computation_id)
    by_id = {i.id: i.name for i in entry.instructions}
    preds = {i.name: {by_id[p] for p in list(i.operand_ids) + list(i.control_predecessor_ids)}
             for i in entry.instructions}
    i, j = names.index(r), names.index(writer)
    moved = {r}
    for n in names[i + 1:j + 1]:
        if preds[n] & moved:
            if n == writer:
                return None
            moved.add(n)
    stay = [n for n in names[i:j + 1] if n not in moved]
    return names[:i] + stay + [n for n in names[i:j + 1] if n in moved] + names[j + 1:]


def test_reader_moved_after_the_in_place_writer(donated):
    """Values XLA compiled to share bytes (an in-place kernel's operand and
    result) take turns: before, a reader of the operand moved after the kernel
    that writes over it passed (with donated parameters, XLA's own order so
    changed passed and the result changed)."""
    base = donated
    g, lay = base.graph, base.layout
    names = list(lay.order_names)
    found = 0
    for unit in g.units:
        for a in unit.values:
            for b in unit.values:
                writer = base.records[b].defining_instruction
                if a == b or writer not in names or writer not in fuzz_plans._users(base, a):
                    continue
                for r in fuzz_plans._users(base, a):
                    if r == writer or names.index(r) > names.index(writer):
                        continue
                    order = _sink_after(base, names, r, writer)
                    if order is None:
                        continue
                    with pytest.raises(check.PlanRejected,
                                       match="which XLA compiled to write over its bytes"):
                        _check(base, dataclasses.replace(_good(base), order=tuple(order)))
                    found += 1
    assert found, "no in-place pair of the fuzz step has another reader to move"
