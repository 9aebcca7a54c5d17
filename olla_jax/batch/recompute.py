"""Recomputation's probes: a batch judged by the plan's memory alone
(``_recompute_memory``), the batch the search settles on fed back, verified
and timed (``_recompute_confirm``, ``_retimed``), and the probe that does all
of it at once (``_recompute_total``: ``search="bisect"``'s, and GPU's)."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any

from olla_jax.batch.probes import _plan_function, _Step
from olla_jax.batch.report import _mib
from olla_jax.capture.base import Backend


class _Skip(Exception):
    """This olla_jax cannot run the mode; the search records why and moves on."""


def _recompute_support() -> tuple[Any, set[str]]:
    """(BudgetNotMet, plan's parameter names), or _Skip when plan has no memory budget."""
    try:
        from olla_jax.result import BudgetNotMet
    except ImportError as err:
        raise _Skip("this olla_jax has no olla_jax.plan.BudgetNotMet (memory budgets with "
                    "recomputation are not available)") from err
    params = set(inspect.signature(_plan_function()).parameters)
    if not {"memory_budget", "recompute"} <= params:
        raise _Skip("this olla_jax.plan takes no memory_budget/recompute")
    return BudgetNotMet, params


# Calls per side when a recomputing plan is timed again (the budget's own check
# takes 10 and compares medians, which swing by tens of percent on a shared machine).
STEP_TIME_REPEATS = 30
STEP_TIME_ROUNDS = 3   # rounds of them where the first is over the limit (``_retimed``)


@dataclasses.dataclass(frozen=True)
class _Timed:
    ratio: float            # what the step-time limit is checked against
    how: str                # how it was measured, for the probe's note


def _retimed(result, step: _Step, limit: float | None = None) -> _Timed | None:
    """The recomputing plan's step time over XLA's, measured again here:
    ``STEP_TIME_REPEATS`` interleaved calls per side, the fastest call over
    the fastest (other processes only ever add time to a call; the medians are
    in the note); the plan's own ``step_time_ratio`` when it cannot be run here.
    Where that round is over ``limit``, two more rounds are timed and the
    median of the three rounds' ratios is the figure: on a shared machine one
    side's fastest call can be one lucky call, either way."""
    own = getattr(result, "step_time_ratio", None)
    compiled, xla = getattr(result, "compiled", None), getattr(result, "xla_compiled", None)
    fallback = (_Timed(own, "the plan's own median of 10 calls a side") if own is not None
                else None)
    if compiled is None or xla is None:
        return fallback
    import jax

    from olla_jax.apply import timing
    dynamic = tuple(a for i, a in enumerate(step.args) if i not in set(step.static_argnums))
    if not dynamic or any(isinstance(x, jax.ShapeDtypeStruct)
                          for x in jax.tree_util.tree_leaves(dynamic)):
        return fallback
    rounds = []
    try:
        while len(rounds) < (1 if not rounds or limit is None
                             or rounds[0].ratio_of_minima <= limit else STEP_TIME_ROUNDS):
            rounds.append(timing.time_ratio(xla.executable, compiled.executable, dynamic,
                                            repeats=STEP_TIME_REPEATS))
    except Exception:  # noqa: BLE001 - the plan's own figure stands
        if not rounds:
            return fallback
    ratios = sorted(r.ratio_of_minima for r in rounds)
    how = (f"fastest of {STEP_TIME_REPEATS} calls a side" if len(rounds) == 1 else
           f"the median of {len(rounds)} rounds' fastest of {STEP_TIME_REPEATS} calls a side "
           f"({', '.join(f'{r.ratio_of_minima:.2f}' for r in rounds)})")
    return _Timed(ratios[len(ratios) // 2],
                  f"{how}; medians {', '.join(f'{r.ratio:.2f}' for r in rounds)}"
                  + (f", the plan's own {own:.2f}" if own is not None else ""))


def _why_not_met(err) -> str:
    """What held the batch: the step's fixed bytes, the working-set floor (the
    temp one instruction needs whatever is recomputed), and what recomputation
    said; empty when the error carries no plan."""
    result = getattr(err, "plan", None)
    if result is None:
        return ""
    parts = []
    try:
        fixed = result.argument_bytes + result.output_bytes - result.alias_bytes
        parts.append(f"least {_mib(int(err.least_bytes))}, of which arguments + outputs "
                     f"{_mib(fixed)}")
        if result.graph is not None:
            from olla_jax import budget
            floor, where = budget.working_set_bound(result.graph)
            if floor:
                parts.append(f"working-set floor {_mib(floor + fixed)} ({where})")
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not cost the probe
        parts.append(f"no diagnosis ({type(exc).__name__})")
    said = [n for n in getattr(result, "notes", ()) if "recomput" in n]
    if said:
        parts.append(said[-1][:200])
    return ": " + "; ".join(parts) if parts else ""


def _recompute_total(step: _Step, backend: Backend, time_limit_s: float, capacity: int,
                     step_time_limit: float) -> tuple[int, bool, str]:
    """(total, fits, note).  A plan that recomputed values fits only if its measured
    step time is within ``step_time_limit`` x XLA's; unmeasured, that is noted."""
    from olla_jax.result import PlanWarning
    budget_not_met, _ = _recompute_support()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanWarning)
        try:
            result = _plan_function()(
                step.fn, *step.args, backend=backend.name, time_limit_s=time_limit_s,
                static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                feed_back=False, memory_budget=int(capacity), recompute=True)
        except budget_not_met as err:
            return int(err.least_bytes), False, "budget not met" + _why_not_met(err)
        except ImportError as err:   # the recomputation module is not there
            raise _Skip(f"recomputation is not available in this olla_jax ({err})") from err
    total = int(getattr(result, "runs_total_bytes", result.total_bytes))
    fits, note = total <= capacity, ""
    if getattr(result, "recomputed", ()):
        timed = _retimed(result, step, step_time_limit)
        if timed is None:
            note = f"recomputed; step time not measured, step_time_limit={step_time_limit} unchecked"
        elif timed.ratio > step_time_limit:
            fits, note = False, (f"recomputed, but step time {timed.ratio:.2f} x XLA's > "
                                 f"{step_time_limit} ({timed.how})")
        else:
            note = f"recomputed, step time {timed.ratio:.2f} x XLA's ({timed.how})"
    return total, fits, note


@dataclasses.dataclass(frozen=True)
class _MemoryFit:
    """A recomputation plan judged by memory alone (planned bytes, nothing fed
    back, verified or timed): the search's probe.  ``found`` is None where
    order and placement fit without recomputation, or nothing fits."""
    total: int
    fits: bool
    note: str
    found: Any = None


def _recompute_memory(result, capacity: int, time_limit_s: float) -> _MemoryFit:
    """Does ``result`` (ours without recomputation) fit ``capacity`` once values
    are recomputed, by the plan's figures?  ``olla_jax.budget.search`` on
    ``result``'s graph and order, what ``plan(memory_budget=...)`` runs, but
    without feeding the plan back, verifying or timing it: that is done once,
    for the batch the search settles on (``_recompute_confirm``)."""
    from olla_jax import budget
    from olla_jax.graph.layout import xla_layout
    fixed = result.argument_bytes + result.output_bytes - result.alias_bytes
    total = int(result.runs_total_bytes)
    if total <= capacity:
        return _MemoryFit(total, True, "fits without recomputation (ours)")
    graph, cap = result.graph, result.capture
    if graph is None or cap is None or getattr(cap, "executable", None) is None:
        return _MemoryFit(total, False, "no memory model of this step: recomputation not tried")
    if capacity - fixed <= 0:
        return _MemoryFit(total, False, f"arguments and outputs alone take {_mib(fixed)}")
    order = result.layout.order if result.layout is not None else graph.xla_order
    cands = budget.candidates(graph, cap)
    found = budget.search(graph, order, cands, capacity - fixed, time_limit_s=time_limit_s,
                          layout=result.layout if result.layout is not None
                          else xla_layout(graph))
    if found is None or found.temp_bytes + fixed >= total:
        floor, where = budget.working_set_bound(graph)
        return _MemoryFit(total, False, f"budget not met: recomputation found nothing that "
                          f"lowers the peak ({len(cands)} values qualified; working-set floor "
                          f"{_mib(floor + fixed)} ({where}))")
    planned = int(found.temp_bytes + fixed)
    if planned > capacity:
        floor, where = budget.working_set_bound(graph)
        return _MemoryFit(planned, False, f"budget not met: least {_mib(planned)} with "
                          f"recomputation, of which arguments + outputs {_mib(fixed)}; "
                          f"working-set floor {_mib(floor + fixed)} ({where})")
    return _MemoryFit(planned, True, f"fits by the plan's figures recomputing "
                      f"{len(found.picked)} values (not yet verified or timed)", found)


def _recompute_confirm(result, memory: _MemoryFit, step: _Step, capacity: int,
                       step_time_limit: float, verify_trials: int = 2) -> tuple[int, bool, str]:
    """(total, fits, note) of the batch the search settled on: the recomputation
    fed back into the executable (``budget.feed_back_plan``: checked, rewritten,
    verified bit for bit), its achieved total within ``capacity``, and its step
    time, measured here against XLA's executable at the same batch
    (``_retimed``), within ``step_time_limit`` x XLA's."""
    if memory.found is None:
        return memory.total, memory.fits, memory.note
    from olla_jax import budget
    from olla_jax.result import PlanWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanWarning)
        fed = budget.feed_back_plan(result, memory.found, args=step.args,
                                    static_argnums=step.static_argnums,
                                    verify_trials=verify_trials, measure_time=False)
    if not getattr(fed, "recomputed", ()):
        said = [n for n in fed.notes if "recomput" in n]
        return memory.total, False, "not fed back: " + (said[-1][:200] if said else "refused")
    total = int(fed.runs_total_bytes)
    if total > capacity:
        return total, False, (f"recomputed and verified, but the executable needs {_mib(total)} "
                              f"(planned {_mib(memory.total)})")
    timed = _retimed(fed, step, step_time_limit)   # (measure_time=False: the plan's own is None)
    if timed is None:
        return total, False, "recomputed, but the step time could not be measured here"
    if timed.ratio > step_time_limit:
        return total, False, (f"recomputed, but step time {timed.ratio:.2f} x XLA's > "
                              f"{step_time_limit} ({timed.how})")
    return total, True, (f"recomputed {fed.recomputed_text}, verified, step time "
                         f"{timed.ratio:.2f} x XLA's ({timed.how})")
