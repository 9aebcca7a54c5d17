"""Meeting a memory budget by recomputing values (trading compute for memory).

Order and placement come first (``olla_jax.plan``).  When their plan is still
over the budget, values held idle across the peak are recomputed: a copy of
their producer's kernel runs again just before the first later reader, so the
first copy dies early and the second is born late.  A value qualifies when
its producer is one pure kernel thunk (kernel, dot, convolution or ynn fusion) with one
plain result that shares bytes with nothing but values XLA writes over it in
place later (those are then written over the second copy: they move with it,
so the copy must run before the first of them is written), and every operand can stay
intact until the second run (an operand written over in place before then
disqualifies it; one that is itself recomputed is read from its copy when that
copy is made first, a chain, which only the model picks).  Operands are kept live until
the second run, which costs memory of its own and is counted; on CPU an operand
made from intact inputs and read by the producer alone is instead recomputed
just before the copy, for it alone (a *feeder*, ``candidates.with_feeders``).

Values are picked greedily at the live-bytes peak, most bytes saved per unit
of extra compute first (a roofline estimate from the instruction's FLOPs and
bytes), and the order is kept.  That plan is then the warm start (and the
fallback) of a model (``choose_model``, ``olla_jax.solve.recompute``: CP-SAT
or python-mip) that picks, on the same order, which values to drop and before
which reader to run their copy, for the least extra roofline cost that meets
the budget (else the least memory), chains included: a copy may read the copy
of an operand recomputed before it.  A value may be recomputed several times
(``split_copies``): each copy is read by its own readers, in order, and dies
after the last of them.  Every plan is placed again (best-fit),
goes through the independent checker, and on CPU the executable with the
copied thunks is verified bit for bit against XLA's before it is used.

``search`` runs it all within a time limit: the order given and the same with
sink moves, the greedy on each, the model on each (the better first), then an exact
placement of the most promising plan (best-fit fragments around the copies).
"""

from __future__ import annotations

from olla_jax.budget.candidates import Candidate, candidates, refusals
from olla_jax.budget.recompute_plan import RecomputePlan, plan_of
from olla_jax.budget.greedy import choose
from olla_jax.budget.model import choose_model
from olla_jax.budget.refine import polish, split_copies
from olla_jax.budget.timed_search import ladder, search
from olla_jax.budget.floors import (WORKING_SET_CLAUSE, HeldAtPeak, held_at_peak, recompute_floor,
                                    working_set_bound, working_set_text)
from olla_jax.budget.feed_back import (
    feed_back_plan, recompute_to_budget, step_flops, xla_remat_to_budget)

__all__ = ["WORKING_SET_CLAUSE", "Candidate", "HeldAtPeak", "RecomputePlan", "candidates",
           "choose", "choose_model",
           "feed_back_plan", "held_at_peak", "ladder", "plan_of", "polish", "recompute_floor",
           "recompute_to_budget", "refusals", "search", "split_copies", "step_flops",
           "working_set_bound", "working_set_text", "xla_remat_to_budget"]
