"""The solve strategy: which engines run on a graph, in which order, and how
they share the time limit.

``solve_graph`` is the solve stage of ``olla_jax.plan`` (capture -> graph ->
*solve* -> check -> apply): it takes a ``graph.model.ScheduleGraph`` and hands
back a ``Solution`` (a ``graph.layout.Layout`` and a proven lower bound).  The
engines themselves live in ``olla_jax.solve`` and know nothing of the graph;
this module is where the graph's problems meet them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

from absl import logging

from olla_jax.graph import layout as layout_lib
from olla_jax.graph import model, overlap
from olla_jax.solve import problem as sp

# How solve_graph shares the time limit: every stage ends at a mark, a
# fraction of the limit from the start, or at the deadline itself.
JOINT_WARM_START_SHARE = 0.4   # engine="joint": the separate search warm-starting the joint model
JOINT_GRACE_SHARE = 0.05       # of its time: the joint model's child is stopped this long after its deadline
# engine="auto": where the plan ends further than JOINT_GAP of its arena (and
# JOINT_MIN_GAP_BYTES) above the bound, on a loop-free graph of at most
# JOINT_MAX_NODES nodes, with at least JOINT_MIN_S left, the joint model gets
# what the limit leaves (it stops once it proves its optimum or reaches the
# bound).  A custom_vjp MLP (27 nodes, tests/solve/test_auto_stops_early.py)
# ended long before its limit at twice the bound, which the joint model
# reaches.  The suite's tiny mlp (71 nodes) keeps XLA's 68 bytes over a bound
# of 8 (88%): not worth the seconds.  JOINT_MIN_S leaves room for the child's
# start-up (a fresh interpreter importing olla_jax and jax).
JOINT_GAP = 0.05
JOINT_MIN_GAP_BYTES = 4096
JOINT_MIN_S = 3.0
JOINT_MAX_NODES = 400
LIST_SHARE = 0.1               # the list schedules placed first end here (the first rule always runs)
LIST_TIE = 1e-4                # list orders whose order costs are this close tie (_tied_list_order)
LIST_FLOOR_SHARE = 0.25        # of the time left, what ranking tied list orders by floor may take
LIST_FIT_LOSS = 0.02           # ... when the least cost's floor is this far above its live bytes
LIST_FLOW_MOMENTS = 2          # region_fit_bound's flows there (16: 1.0 s an order, 2: 0.25 s)
ORDER_SEARCH_SHARE = 0.45      # the order searches end here, all objectives together
FIRST_OBJECTIVE_SHARE = 2 / 3  # of the order searches: the first (plain) objective, the best on the examples
ORDER_FLOOR_SHARE = 0.25       # of one objective's share: the min-cut floor for its order search
BOUND_END = 0.55               # the lower bounds end here
BOUND_TOP_UP_SHARE = 0.05      # of the limit: the least left after the repair that goes on to the bound
RESIDENT_BOUND_SHARE = 0.5     # of the bounds' time: the resident floor (threshold min-cuts: the rest)
# A big graph's forced-live floor (its resident floor's stand-in) takes this
# share instead where a min-cut fits in the rest (else all of it), and its
# thresholds go largest first with the plain one (0) last: min-cuts cost
# seconds each there and few run.  On the 10k-instruction
# transformer (gpu:h100) the two largest proved 100.75 and 108.12 MiB (XLA
# 108.69, plan 108.50), the plain one nothing over them, and the forced-live
# floor alone 1.09 MiB a layer at 40k (row 320 of scale_100k_240s: 349.63
# against XLA's 431.78, no min-cut started after it).
BIG_PROBE_SHARE = 0.1
# Of the time left, the least each threshold min-cut gets (it stops when done,
# leaving the rest to the next): an equal share of 27 left densenet's largest
# (gpu:h100, small, loaded) 0.06 s of the 0.5 s it needed (bound 70.78 MiB, not
# 74.78); resnet50's 23 each got less than their set-up (0.1 s) and ran no flow.
LEAD_THRESHOLD_SHARE = 0.5
# After the min-cuts (by the bound's mark) and after the top-up: CP-SAT on the
# threshold problems whose min-cuts proved most, reduced to the items that
# keep at most CPSAT_BOUND_NODES nodes, asked whether any order is below the
# orders' best there (then below the plan) (solve.bound_cpsat; lstm cpu
# small: 143.50 -> 147.50 MiB, the plan, in 0.4 s on 97 nodes); none starts
# with less than CPSAT_BOUND_MIN_S left.  Each gets all the time left (the
# next runs only when one ends early): split 2/3 and 1/3 at load 10, the
# strongest's 0.9 s were short of its proof, twice, and the other proved nothing.
CPSAT_BOUND_PROBLEMS = 2
# Before CP-SAT: pairs and triples of the CHAIN_WIDTH nodes costliest in the
# orders, in every sequence (solve.bound_chain), on the CHAIN_PROBLEMS
# strongest thresholds, in CHAIN_SHARE of the bound's stage and of the
# top-up (kept from the min-cuts in the stage) (unet cpu small:
# 83.88 -> 87.50 MiB, the best order's cost there, in 0.7 s; CP-SAT on 120
# reduced nodes had proven nothing past 83.88 in 20 s).
CHAIN_PROBLEMS = 2
CHAIN_WIDTH = 12
CHAIN_SHARE = 0.3
CHAIN_REST_SHARE = 0.5         # of what the stage's min-cuts left: the rest goes to CP-SAT
CHAIN_MIN_S = 0.05
CPSAT_BOUND_NODES = 120
CPSAT_BOUND_MIN_S = 0.2
# Whole units parked in the regions at one node (solve.bound_park): on the
# PARK_PROBLEMS thresholds the orders cost most on, the PARK_NODES nodes
# costliest in the orders there, each at most PARK_NODE_S of CP-SAT, in PARK_SHARE of what the
# stage's min-cuts and chains left; graphs of at most PARK_MAX_NODES nodes
# (a park problem's set-up, not interruptible, walks each output writer's
# descendants: 0.17 s on unet's 898 nodes).
PARK_PROBLEMS = 4
PARK_NODES = 4
PARK_NODE_S = 2.0
PARK_SHARE = 0.5
PARK_MAX_NODES = 2500
# A park node's CP-SAT set-up per arena item and whole region, taken before
# one starts (then the longest measured): remat (H100) has 1,118 x 302, 3.2 s
# (quiet); begun with 1 s left at load 16, its bound top-up ended 3.8 s past
# the limit's mark (solve 21.7 s at 20).
PARK_SETUP_US = 10.0
# Loop nodes (blocks) with whole units parked and the writers' order
# (solve.bound_block): at most BLOCK_PROBLEMS thresholds, those whose
# min-cuts proved within BLOCK_NEAR of the most, largest threshold first
# (the fewest units: the smallest models; each gets an even share of what
# the earlier left), at the BLOCK_STEPS block steps of the most inner bytes,
# in BLOCK_SHARE of the time the min-cuts left (before the chain and park
# bounds: it runs only where the graph has loops); graphs of at
# most PARK_MAX_NODES nodes.  grad_accum H100 small: 8.00 -> 8.25 MiB, the
# plan, at its fourth largest threshold, 4 KiB (four cases of 1-2 s each at
# load 6; the three larger ones proved 8.00 in 0.5 s; with three, the
# bound stayed at 8.00).
BLOCK_PROBLEMS = 4
BLOCK_NEAR = 0.95
BLOCK_STEPS = 2
BLOCK_SHARE = 0.5
RESIDENT_NODE_PAIR_S = 1e-8    # the resident floor's set-up per node pair (2 s on 10k nodes, loaded)
MIN_CUT_NODE_S = 2e-4          # one threshold min-cut per node on a big graph (47 s on 100k, loaded)
PLACE_CANDIDATES_END = 0.7     # no further candidate order is placed by best-fit past here
DEFER_END = 0.8                # output deferral and sink moves end here
# Before the finish, kept for the repair (the exact placement of the orders
# placed) from the candidates after the first and from output deferral, in
# best-fits of this graph (its model and one sort order, as measured, so
# that it grows with the load): the region-fit floor (1-2), the exact
# engine's region pass (densenet small, CPU: about 4, 0.4 s) and its
# canonical search (3).  At a 10 s limit densenet's repair had about 1 s and
# its region pass was cut (57.27 MiB placed against a 52.66 floor, 53.25 with
# the pass done); at a 6 s limit (CPU time) a second candidate and the
# deferrals left resnet50's repair 0.1 s an order: 31.99 kept, where the
# exact engine reaches 28.12 in 0.1 s of CPU.
REPAIR_BEST_FITS = 8.0
SINK_SHARE = 0.25              # of the time to DEFER_END: sink moves on a deferred order
EXACT_PLACEMENT_SHARE = 0.7    # of the time left: exact placement of the first order repaired
FINISH_RESERVE = 0.03          # of the limit: kept for turning the placement into a layout
REPAIR_REST_MIN_SHARE = 0.02   # of the limit: the least left that goes on the best order's exact placement
LOSING_EXACT_SHARE = 0.05      # of the limit: the least an exact placement gets before XLA's plan wins
PLACEMENTS_KEPT = 1.5          # best-fits' time kept after the search (the searched order's)
FIRST_FIT_SHARE = 0.2          # hide_collectives: of the time left, kept for its first try's placement
BEST_FIT_US = 3.0              # best-fit's cost estimate before it is measured (see _Cost.predict)
# An arena this far above its order's floor is worth repairing.  At 0.02,
# resnet50 gpu:h100 small (20 s) kept best-fit's 96.39 MiB over a 94.81 floor
# (1.7%: no exact try) and a 93.90 bound; the exact engine reached 95.42.
PLACEMENT_SLACK = 0.01
# The exact engine's set-up (block model, region pass, search state) in block
# model builds: about 3 on resnet50 small (0.43 s beside a 0.14 s model, 989
# intervals x 429 regions, loaded machine).  It was taken as a model and four
# best-fit sort orders (9.2 s there), so no exact placement started at a 10 s limit.
EXACT_SETUP_MODELS = 3.0
# Past this many overlapping pairs per second of the limit, the block model
# (place_model: every pair of blocks live together, quadratic on deep steps)
# is not built at all: placements come from the sweep (solve.place_sweep,
# O(n log n)) and no exact placement is tried.  The model and one greedy pass
# took 137 s under cProfile on 3.5 M pairs (benchmarks/scale_profile.py
# --cprofile, 10k-instruction transformer, loaded machine): taken as 10 us a
# pair; SWEEP_PAIR_SHARE of the limit may go to the model and one greedy pass.
PAIR_US = 10.0
SWEEP_PAIR_SHARE = 0.25
# Below SWEEP_MIN_PAIRS the block model stays, whatever the limit (small steps).
# resnet50 gpu:h100 small has 546k pairs (its model and one sort order: 1.2 s,
# 2.2 us a pair, load 9.6): at 500k it fell to the sweep at a 20 s limit, no
# exact placement, 97.70 MiB over a 93.90 bound.  The scale rows have 3.5 M+.
SWEEP_MIN_PAIRS = 1_000_000
# The exact engine of the repair: the canonical search (set-up about one
# best-fit).  CP-SAT's model took 5 s (unet, small) and 21 s (resnet50) to
# build before it searched at all, whatever its limit.
REPAIR_ENGINE = "canonical"
# The repair's floor of an order (place_check.region_fit_bound) builds a
# moments x blocks matrix: on more intervals than this, the live-bytes bound
# alone (about 0.2 s for the region-fit bound on 1k intervals, loaded).
FIT_BOUND_MAX_INTERVALS = 4000
# The threshold objectives after the plain one are the region sizes its
# order is most bound by, among this many of the largest (_FitScore).
BINDING_CANDIDATES = 8


class Deadline:
    """One clock for a whole solve: each stage asks it for the time to a mark
    (a fraction of the limit from the start) or to the end, never past the end.
    ``clock``: ``time.monotonic`` unless a test passes another."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.start = clock()
        self.seconds = max(0.0, float(seconds))
        self.at = self.start + self.seconds

    def left(self) -> float:
        """Seconds to the deadline (0 once past it)."""
        return max(0.0, self.at - self.clock())

    def mark(self, fraction: float) -> float:
        """The clock time ``fraction`` of the limit after the start (capped at the deadline)."""
        return min(self.at, self.start + fraction * self.seconds)

    def until(self, fraction: float) -> float:
        """Seconds from now to ``mark(fraction)`` (0 once past it)."""
        return max(0.0, self.mark(fraction) - self.clock())

    def elapsed(self) -> float:
        return self.clock() - self.start


class _Cost:
    """Running estimates of what the placement steps cost on this graph, so that
    none starts when it cannot end before its mark: best-fit's model, one
    best-fit sort order, and the exact engine's set-up (its model and bound,
    before it searches; until measured, EXACT_SETUP_MODELS model builds)."""

    def __init__(self, clock: Callable[[], float], limit_s: float = float("inf")):
        self.clock = clock
        self.limit_s = limit_s
        self.model = 0.0
        self.sort_order = 0.0
        self.exact_setup = 0.0
        self.measured = False
        self.sweep = False    # too many overlapping pairs for the block model: sweep placement

    def predict(self, problem: sp.PlacementProblem) -> None:
        """Estimates from a problem's size until a best-fit is measured: model
        and one sort order each took up to 3 us per interval and region (the
        arena counts as one) on the examples, unloaded.  Decides, once, whether
        the block model fits in the limit at all (see PAIR_US)."""
        if not self.measured:
            from olla_jax.solve import place_sweep
            pairs = place_sweep.overlapping_pairs(problem)
            if pairs >= SWEEP_MIN_PAIRS and PAIR_US * 1e-6 * pairs > SWEEP_PAIR_SHARE * self.limit_s:
                self.sweep = True
                logging.info("%d overlapping pairs: sweep placement (no block model, no exact "
                             "placement) in a %.0f s limit", pairs, self.limit_s)
                self.model = 0.0
                self.sort_order = BEST_FIT_US * 1e-6 * len(problem.intervals)
                self.exact_setup = float("inf")
                return
            self.model = self.sort_order = (BEST_FIT_US * 1e-6 * len(problem.intervals)
                                            * (len(problem.regions) + 1))
            self.exact_setup = EXACT_SETUP_MODELS * self.model

    @property
    def one_best_fit(self) -> float:
        """A best-fit with one sort order: the least a placement costs."""
        return self.model + self.sort_order

    def best_fit(self, problem, until: float, cut: float | None = None) -> sp.Placement:
        """Best-fit over the sort orders, none started that would end past
        ``until`` (the first always runs; with ``cut``, a time on this clock,
        it stops placing by best-fit there and stacks the blocks left:
        place_greedy.greedy)."""
        from olla_jax.solve import place_greedy, place_model
        if self.sweep:
            from olla_jax.solve import place_sweep
            t = self.clock()
            placement = place_sweep.sweep_fit(problem)
            # Counted twice: building the placement problem for an order costs
            # about one sweep (8 and 11 s on 100k nodes), and callers do both.
            spent = 2 * (self.clock() - t)
            self.sort_order = spent if not self.measured else max(self.sort_order, spent)
            self.measured = True
            return placement
        if not self.measured:
            self.model = self.sort_order = self.exact_setup = 0.0
            self.measured = True
        t = self.clock()
        model_ = place_model.build_model(problem)
        self.model = max(self.model, self.clock() - t)
        best = None
        for order in place_greedy.SORT_ORDERS:
            if best is not None and self.clock() + self.sort_order > until:
                break
            t1 = self.clock()
            stop = None if cut is None or best is not None else time.monotonic() + cut - t1
            placement = place_greedy.best_fit_model(model_, orders=(order,), deadline=stop,
                                                    cut=stop is not None)
            self.sort_order = max(self.sort_order, self.clock() - t1)
            if best is None or placement.arena_size < best.arena_size:
                best = placement
        if not self.exact_setup:
            self.exact_setup = EXACT_SETUP_MODELS * self.model
        return best


class _FitScore:
    """An order judged as its placement will judge it, before it is placed:
    the most of its costs under the plain objective and under the threshold
    objectives (``ScheduleGraph.threshold_problem``: only the units larger
    than a region size count, only regions that large hold them).  The
    plain objective counts every idle
    output byte free to any unit; where the units live at its peak are too
    large for those outputs, a threshold's cost is higher (a lower bound
    too, but for units idle inside a loop body, counted over their hull:
    a ranking, never a reason to skip an order): on densenet
    (CPU, small) every region is under 0.08 MiB and every unit live at the
    plain order's peak larger, 52.29 MiB by the plain objective against
    55.12 by the largest threshold and 55.14 placed; on unet 85.11 against
    89.50 (region size 0.56 MiB) and 91.00 placed.  The thresholds: the
    BINDING_CANDIDATES largest region sizes (each problem and its evaluator
    cost 10-30 ms on 2k nodes), built by the first ``binding``."""

    def __init__(self, graph: model.ScheduleGraph, plain: sp.OrderProblem, evaluator):
        from olla_jax.solve.evaluate import Evaluator
        self._evaluator_of = Evaluator
        self.graph = graph
        self.plain = evaluator
        self.caps = sorted({c for c in plain.region_sizes if c > 0})[-BINDING_CANDIDATES:]
        self.evaluators: dict[int, object] = {}
        self.searched: set[tuple[int, tuple[int, ...]]] = set()   # (threshold, lead)
        self.costs: dict[tuple[int, tuple[int, ...]], int] = {}
        self.last: sp.OrderProblem | None = None   # what ``binding`` returned last

    def _cost(self, c: int, order: tuple[int, ...]) -> int:
        key = (c, order)
        if key not in self.costs:
            if c not in self.evaluators:
                self.evaluators[c] = self._evaluator_of(self.graph.threshold_problem(c))
            self.costs[key] = (self.plain if c == 0 else self.evaluators[c]).cost(order)
        return self.costs[key]

    def score(self, order: Sequence[int]) -> int:
        """The most of the order's costs under the plain objective and the
        thresholds built so far (``binding`` builds them: on a graph where
        the order searches had no time for it, scoring builds nothing)."""
        order = tuple(order)
        return max(self._cost(c, order) for c in (0, *self.evaluators))

    def binding(self, orders: Sequence[Sequence[int]]) -> sp.OrderProblem | None:
        """The threshold problem that costs most on the order of least
        ``score`` (the lead), not searched from that lead already, when that
        cost is above the lead's plain cost (else None: no threshold sees
        more than the plain objective there).  The same threshold again
        when it still binds the order its search found: the search goes on
        from there (on densenet the two largest region sizes, 4% apart,
        were the first two picks when each was searched once)."""
        if not orders or not self.caps:
            return None
        for c in self.caps:
            self._cost(c, tuple(orders[0]))   # builds every threshold's evaluator
        lead = min((tuple(o) for o in orders), key=lambda o: (self.score(o), self._cost(0, o)))
        plain = self._cost(0, lead)
        c = max((c for c in self.caps if (c, lead) not in self.searched),
                key=lambda c: self._cost(c, lead), default=None)
        if c is None or self._cost(c, lead) <= plain:
            return None
        self.searched.add((c, lead))
        self.last = self.graph.threshold_problem(c)
        logging.info("binding threshold %d bytes: %d on the lead order (plain objective %d)",
                     c, self._cost(c, lead), plain)
        return self.last


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One order and its placement, as ``solve_graph``'s steps hand them on:
    ``source`` names what produced the order ("xla", "list", an engine, with
    "+deferred", "+sunk" when moved after), ``owners`` and ``problem`` are what
    ``graph.placement_problem(order)`` returned for it; ``live`` is the order's
    live bytes by the order objective (a lower bound on its arena)."""
    order: tuple[int, ...]
    source: str
    placement: sp.Placement
    owners: tuple[int, ...]   # per interval of ``problem``, the graph's unit id
    problem: sp.PlacementProblem
    live: int = -1


@dataclasses.dataclass(frozen=True)
class Solution:
    """The best order and placement found for a graph, and what bounds it.

    ``live_bytes``: the chosen order's live bytes (the order objective);
    ``least_live_bytes``: the least of any order searched; ``best_fit_bytes``:
    the chosen order's arena by best-fit, before exact placement;
    ``exact_tried``: an exact placement engine ran on some order."""
    layout: layout_lib.Layout
    lower_bound_bytes: int     # proven for every order and placement of the model
    engine: str                # what produced the order ("xla" when XLA's order won)
    live_bytes: int = 0
    least_live_bytes: int = 0
    best_fit_bytes: int = 0
    exact_tried: bool = False
    # seconds from the solve's start at the end of each stage, in order (logged
    # and reported by plan() so that an overrun of the limit can be located)
    stage_ends: tuple[tuple[str, float], ...] = ()
    # The other orders best-fit placed, least arena first (RUNNER_UP_ORDERS at
    # most): recomputation searches from them too, since the order a few bytes
    # better before recomputation can be far worse after it.
    runner_up_orders: tuple[tuple[int, ...], ...] = ()


def solve_graph(graph: model.ScheduleGraph, *, warm_starts: Sequence[Sequence[int]] = (),
                time_limit_s: float = 30.0, engine: str = "auto", seed: int = 0,
                progress=None, xla_temp_bytes: int | None = None,
                deadline: Deadline | None = None) -> Solution:
    """Order and placement for a scheduling graph, with a lower bound.

    Orders are searched under several objectives: arena live bytes less idle
    output space (a relaxation that favours writing outputs late, so their
    allocations can hold temporaries first), the same seen from units larger
    than a threshold (only regions at least their size can hold them: the
    threshold that binds the orders found most, searched from them, see
    ``_FitScore``), and arena live bytes alone.  The placement of each candidate order, XLA's
    included, decides; then the orders whose live bytes are below the best
    arena, least live bytes first, are placed by the exact engine ("repair":
    best-fit can leave an order's arena well above its live bytes).
    ``xla_temp_bytes``: XLA's temp; an order whose live bytes are below it
    always gets an exact placement attempt before the result could lose to XLA.
    ``deadline``: the clock the whole solve runs on (a ``Deadline`` of
    ``time_limit_s`` from now when None); every stage takes its time from it.
    ``progress``: a callable taking ``olla_jax.progress.Progress``
    snapshots (or a ``progress.Reporter``)."""
    from olla_jax import progress as progress_lib
    from olla_jax.solve import bounds
    from olla_jax.solve import order as order_lib
    from olla_jax.solve.evaluate import Evaluator

    clock = deadline or Deadline(time_limit_s)
    now = clock.clock
    report = progress_lib.reporter(progress, clock.seconds)
    stage_ends: list[tuple[str, float]] = []

    def lap(stage: str) -> None:
        stage_ends.append((stage, round(now() - clock.start, 3)))
    lap("start")    # past 0 when the deadline started earlier (plan(): the graph build)

    def order_progress(msg: str) -> None:
        logging.info("order search: %s", msg)
        report("order search", msg)

    joint = engine == "joint"
    joint_if_far = engine == "auto"   # the joint model where the plan stays far from the bound
    if joint:   # a short separate search warm-starts the joint model, which gets the rest
        engine = "auto"
        search = Deadline(JOINT_WARM_START_SHARE * clock.left(), now)
    else:
        # The stages' marks are fractions of the time left now, not of the
        # limit: plan() builds the graph on the same deadline, and marks from
        # its start left resnet50's first order search under a second at a
        # 10 s limit (its sink moves cut short: 38.28 MiB live, not 29.75).
        search = Deadline(clock.left(), now)
    starts = [tuple(s) for s in warm_starts] or [graph.xla_order]
    with_regions = graph.order_problem()
    evaluator = Evaluator(with_regions)
    live_of = evaluator.cost
    orders = {s: "xla" for s in starts}
    cost = _Cost(now, clock.seconds)
    placed: dict[tuple[int, ...], Candidate] = {}
    # The memory-aware list schedule first: a candidate however short the
    # limit (its best-fit sometimes beats orders that score better on the order
    # objectives).  Its placement problem tells what a best-fit will cost on
    # this graph, which the later stages leave time for.
    from olla_jax.solve import list_schedule
    t_list = now()
    listed_all: list = []    # every rule's order, for _tied_list_order
    best_listed = list_schedule.best_list_schedule(   # the engines run on time.monotonic
        with_regions, evaluator=evaluator, deadline=time.monotonic() + search.until(LIST_SHARE),
        found_all=listed_all)
    # A search's fixed part (its problem, list schedules, evaluator) costs more
    # than this stage (at least one rule): 2.3 s for a 0.13 s share on 20k
    # instructions at a 10 s limit, load 14, ending at the deadline.
    list_s = now() - t_list
    lap("list schedule")
    # Kept: the list order is placed below, and its problem costs about a best-fit to build.
    listed, listed_problem = _tied_list_order(
        graph, listed_all or [best_listed],
        until=time.monotonic() + LIST_FLOOR_SHARE * clock.left())
    orders.setdefault(listed, "list")
    cost.predict(listed_problem[0])
    kept = PLACEMENTS_KEPT * cost.one_best_fit
    lap("list problem")
    logging.info("best-fit estimate: model %.2f s, one sort order %.2f s; %.1f s kept for it",
                 cost.model, cost.sort_order, kept)
    order_end = min(search.mark(ORDER_SEARCH_SHARE), search.at - kept)
    problems = [lambda: with_regions]
    fit = _FitScore(graph, with_regions, evaluator)
    if with_regions.region_sizes:
        # Also search as seen from the units larger than a few region sizes
        # (only big regions can hold big units), and with no parking at all.
        # Built when their turn comes: each costs a fraction of a second on 2k nodes.
        caps = sorted(set(with_regions.region_sizes))
        if cost.sweep:   # a threshold's cost on an order costs seconds there: as before
            for q in (0.5, 0.9, 1.0):
                problems.append(lambda c=caps[round(q * (len(caps) - 1))]: graph.threshold_problem(c))
        else:
            # The threshold the orders found so far are most bound by (their
            # placement cannot use what the plain objective counts free),
            # searched from them: order and placement alternate.  Where none
            # binds them, the threshold at that quantile of the sizes, as before.
            for q in (0.5, 0.9, 1.0):
                problems.append(lambda c=caps[round(q * (len(caps) - 1))]: fit.binding(
                    [o for o, src in orders.items() if src not in ("xla", "list")])
                    or graph.threshold_problem(c))
        problems.append(lambda: dataclasses.replace(
            with_regions, region_sizes=tuple(0 for _ in with_regions.region_sizes)))
    overrun = 0.0    # the most an objective took past its share (its problem, floor, list schedules)
    for k, make_problem in enumerate(problems):
        left = order_end - now()
        # The first objective (the plain one, the best on the examples) gets the most.
        share = FIRST_OBJECTIVE_SHARE * left if k == 0 and len(problems) > 1 else \
            left / (len(problems) - k)
        if share <= 0 or (k and share + overrun > left) or \
                ((k == 0 or cost.sweep) and share < list_s):
            # Each search has a fixed cost (its problem, floor and list
            # schedules): on densenet small, loaded, 0.1-0.3 s shares took
            # 0.44-0.51 s, and the order searches ended 0.4 s past their mark.
            # None starts that would end past the mark by the most one overran.
            # On a big graph a threshold objective's fixed part (its problem,
            # evaluator, the warm starts checked and costed) is seconds, as
            # the first list schedule's: 100k nodes (synthetic, 60 s limit)
            # took 9.4 s for a 0.84 s share and the bound lost its stage.
            logging.info("time limit: %d of %d order objectives not searched",
                         len(problems) - k, len(problems))
            break
        t = now()
        problem = make_problem()
        # One network and the cuts the floor solves, reused by the search's min-cut moves.
        cuts = bounds.NodeCuts(problem)
        # No floor for a binding threshold's search: it starts from an order
        # already searched, far above the floor (densenet: 48.50 MiB against
        # 57.80), and the floor took a quarter of its share.
        floor = None if (cost.sweep and MIN_CUT_NODE_S * len(graph.nodes) > ORDER_FLOOR_SHARE
                         * share) or problem is fit.last else bounds.min_cut_bound(
                problem, time_limit_s=ORDER_FLOOR_SHARE * share, orders=starts, cuts=cuts).value
        t_floor = now()
        # From the orders found so far too: each objective then moves the best
        # order it sees (a threshold objective counts what the placement of
        # the plain objective's order cannot use).
        found_orders = [o for o, src in orders.items() if src not in ("xla", "list")]
        result = order_lib.solve_order(problem, warm_starts=[*starts, listed, *found_orders],
                                       time_limit_s=max(0.0, share - (now() - t)),
                                       engine=engine, seed=seed, lower_bound=floor,
                                       progress=order_progress, cuts=cuts,
                                       polish=bool(found_orders))
        overrun = max(overrun, now() - t - share)
        orders.setdefault(tuple(result.order), result.engine)
        lap(f"order search {k}")
        logging.info("order objective %d: %.2f s given, %.2f s taken (problem and floor %.2f s)",
                     k, share, now() - t, t_floor - t)
    bound_end = min(search.mark(BOUND_END), search.at - kept)
    proven: set = set()   # thresholds whose min-cut is done: the top-up skips them
    per_cap: dict = {}    # threshold -> what its min-cut proved (for _prove_below)
    settled: set = set()  # thresholds whose optimum CP-SAT proved
    parked: set = set()   # (threshold, node) whose parked minimum is proven (_park_up)
    blocked: set = set()  # (threshold, loop node) whose minimum is proven (_block_up)
    if cost.sweep and now() >= min(bound_end, _finish_mark(clock, cost)):
        # A big graph already past the layout's reserve: no bound starts (on
        # 93k nodes at load 21, 240 s limit, two forced-live probes given no
        # time took 30 s and 16 s past the limit, for a bound of 0).  Nor past
        # its mark: its problem alone costs seconds (10k nodes, 10 s limit,
        # load 16: 1.6 s, past the deadline); the top-up may run it later.
        logging.info("lower bound skipped: past its mark")
        value = 0
    else:
        # The chain bound's share of the stage is kept from the min-cuts (none on a big graph).
        cuts_end = bound_end if cost.sweep else \
            now() + (1 - CHAIN_SHARE) * max(0.0, bound_end - now())
        value = _lower_bound(graph, with_regions, list(orders), now, cuts_end, big=cost.sweep,
                             done=proven, values=per_cap)
    if not cost.sweep:   # the time the min-cuts left: the orders' best proven optimal
        value = _block_up(graph, per_cap, value, now,
                          now() + BLOCK_SHARE * max(0.0, bound_end - now()), done=blocked)
        value = _chain_up(graph, per_cap, value, list(orders), now,
                          now() + CHAIN_REST_SHARE * max(0.0, bound_end - now()))
        value = _park_up(graph, per_cap, value, list(orders), now,
                         now() + PARK_SHARE * max(0.0, bound_end - now()), fit=fit,
                         done=parked)
        value = _prove_below(graph, per_cap, value, None, now, bound_end, orders=list(orders),
                             settled=settled)
    report("lower bound", bound=value)
    lap("bound")
    live = {order: live_of(order) for order in orders}
    best = None
    # Best-fit of the candidate orders (the ranking needs real placements):
    # the first searched order, the list schedule's, the other searched orders
    # in the order their objectives were tried, XLA's last (XLA's own placement
    # of its order is the baseline anyway); none past the mark once one is placed.
    searched = [o for o, src in orders.items() if src not in ("xla", "list")]

    def rank(item):
        order, src = item
        return 3 if src == "xla" else 1 if src == "list" else 0 if order == searched[0] else 2
    ranked = sorted(orders.items(), key=rank)
    made = {listed: listed_problem}
    floors: dict = {}   # an order's live-bytes bound: no placement of it goes below
    if not cost.sweep:
        # The least live-bytes bound of its placement problem first (no
        # placement of an order goes below it; the order objectives count idle
        # output space no block may fit: on remat two orders 0.7 MiB apart by
        # the objective had bounds of 64 and 96 MiB), while its problems cost
        # at most one best-fit's time; then the rank above.
        from olla_jax.solve import place_check
        peak, t = {}, now()
        for order, _ in ranked:
            if now() - t > cost.one_best_fit:
                break
            made.setdefault(order, graph.placement_problem(order))
            # At least its fit score too (the threshold objectives: unet's
            # plain order and a threshold's were 85.11 and 85.14 MiB by the
            # live bytes, 89.50 and 87.50 by the score, 91.00 and 89.38 placed).
            floors[order] = place_check.live_bytes_bound(made[order][0])
            peak[order] = max(floors[order], fit.score(order))
        ranked.sort(key=lambda item: peak.get(item[0], float("inf")))   # stable: rank breaks ties
    for order, source in ranked:
        until = min(search.mark(PLACE_CANDIDATES_END), search.at - kept / 2)
        if best is not None:   # the first's sort orders as before: it is the repair's hint
            until = min(until, _repair_mark(clock, cost))
        if best is not None and now() + cost.one_best_fit > until:
            logging.info("time limit: %d candidate orders not placed by best-fit",
                         len(ranked) - ranked.index((order, source)))
            break
        if best is not None and floors.get(order, 0) >= best.placement.arena_size:
            continue   # no placement of it beats the best (densenet: a 95 MiB list order, 0.7 s)
        pp, owners = made[order] if order in made else graph.placement_problem(order)
        # The first placement, cut at the finish: a plan past the limit is worse
        # than a loose one (the repair and the layout still follow).
        placement = cost.best_fit(pp, until, cut=None if best is not None else
                                  clock.at - FINISH_RESERVE * clock.seconds)
        logging.info("placement under the %s order: %d bytes (live bytes %d)", source,
                     placement.arena_size, live[order])
        report("placement", f"{source} order", best=placement.arena_size)
        placed[order] = Candidate(order, source, placement, owners, pp, live[order])
        if best is None or placement.arena_size < best.placement.arena_size:
            best = placed[order]
    lap("best-fit candidates")

    def defer_end() -> float:
        return min(search.mark(DEFER_END), _repair_mark(clock, cost))
    if best.placement.arena_size > value:
        best = _defer_outputs(graph, with_regions, best, deadline=defer_end(), cost=cost,
                              live_of=live_of)
    if best.placement.arena_size > value and "defer" in best.source:
        best = _sink_deferred(graph, with_regions, best, deadline=defer_end(), cost=cost,
                              live_of=live_of)
    placed[best.order] = best
    live[best.order] = best.live
    lap("defer and sink")
    if joint:
        best = _joint(graph, best, clock.left() - FINISH_RESERVE * clock.seconds, seed,
                      live_of=live_of)
        placed[best.order] = best
        live[best.order] = best.live
    unplaced = [(o, orders[o]) for o in orders
                if o not in placed and floors.get(o, 0) < best.placement.arena_size]
    best_fit_bytes = {o: c.placement.arena_size for o, c in placed.items()}
    best, exact_tried = _repair(graph, best, placed, unplaced, live, value, xla_temp_bytes,
                                clock, cost, score=None if cost.sweep else fit.score)
    lap("repair")
    if cost.sweep and not value:
        # A big graph's bound found no time at its mark (the graph build and
        # the first list schedule take most of it): the time the skipped exact
        # placement leaves goes to it, all but the layout's share (if any), when
        # that is worth a start (as the top-up below).
        if _finish_mark(clock, cost) - now() >= BOUND_TOP_UP_SHARE * clock.seconds:
            value = _lower_bound(graph, with_regions, list(orders), now,
                                 _finish_mark(clock, cost), big=True)
            report("lower bound", bound=value)
    elif best.placement.arena_size > value:
        # The bound had a tenth of the time at its mark (less on a loaded
        # machine: unet's fell from 83.88 to 46.50 MiB at load 10); what the
        # repair left before the finish goes to it, starting from what it proved.
        end = clock.at - FINISH_RESERVE * clock.seconds - cost.one_best_fit
        if end - now() >= BOUND_TOP_UP_SHARE * clock.seconds:
            value = _lower_bound(graph, with_regions, list(orders), now, end, big=cost.sweep,
                                 floor=value, done=proven, values=per_cap)
            if not cost.sweep:   # a big graph's reduction alone takes seconds
                value = _block_up(graph, per_cap, value, now,
                                  now() + BLOCK_SHARE * max(0.0, end - now()), done=blocked)
                value = _chain_up(graph, per_cap, value, [*orders, best.order], now,
                                  now() + CHAIN_SHARE * max(0.0, end - now()))
                value = _park_up(graph, per_cap, value, [*orders, best.order], now,
                                 now() + PARK_SHARE * max(0.0, end - now()), fit=fit,
                                 done=parked)
                value = _prove_below(graph, per_cap, value, best.placement.arena_size, now,
                                     end, settled=settled)
            report("lower bound", bound=value)
    lap("bound top-up")
    if joint_if_far:
        left = clock.left() - FINISH_RESERVE * clock.seconds
        skipped = joint_skipped(graph, best.placement.arena_size, value, left)
        if skipped:
            logging.info("joint model not run: %s", skipped)
        else:
            logging.info("joint model: arena %d, bound %d; %.1f s left", best.placement.arena_size,
                         value, left)
            best = _joint(graph, best, left, seed, lower_bound=value, live_of=live_of)
            placed[best.order] = best
            live[best.order] = best.live
            lap("joint model")
    layout = layout_lib.realize(graph, best.order, best.placement, best.owners)
    lap("layout")
    logging.info("stage ends (s from the solve's start): %s",
                 ", ".join(f"{name} {t:.2f}" for name, t in stage_ends))
    report("placement", "done", best=layout.temp_bytes)
    logging.info("chosen order (%s): live bytes %d, best-fit %d, placed %d; %.1f s of %.1f",
                 best.source, best.live, best_fit_bytes.get(best.order, best.placement.arena_size),
                 layout.temp_bytes, clock.elapsed(), clock.seconds)
    if value > layout.temp_bytes:
        # A valid bound never exceeds a plan of the same model.  Clipped to the
        # plan it would claim the plan optimal (a 0% gap) on the strength of a
        # wrong proof, so none is claimed.
        logging.warning("lower bound %d bytes above the plan's %d: the bound is wrong on this "
                        "graph (no bound reported; please file it)", value, layout.temp_bytes)
        value = 0
    return Solution(layout=layout, lower_bound_bytes=value,
                    engine=best.source, live_bytes=best.live,
                    least_live_bytes=min([*live.values(), best.live]),
                    best_fit_bytes=best_fit_bytes.get(best.order, best.placement.arena_size),
                    exact_tried=exact_tried, stage_ends=tuple(stage_ends),
                    runner_up_orders=runner_ups(placed, best.order))


# How many of the orders best-fit placed besides the chosen one a Solution
# keeps for recomputation (each costs the budget search a share of its time).
RUNNER_UP_ORDERS = 2


def runner_ups(placed: dict, chosen: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The orders of ``placed`` (order -> Candidate) other than ``chosen``,
    least best-fit arena first, RUNNER_UP_ORDERS at most."""
    others = sorted((c for o, c in placed.items() if tuple(o) != tuple(chosen)),
                    key=lambda c: c.placement.arena_size)
    return tuple(tuple(c.order) for c in others[:RUNNER_UP_ORDERS])


def _tied_list_order(graph: model.ScheduleGraph, found, until: float):
    """The list order kept, and its placement problem: the least order cost
    (the first of equal costs), unless another list order whose cost ties it
    (within LIST_TIE) has a lower region-fit floor (``region_fit_bound`` with
    LIST_FLOW_MOMENTS flows: no placement of that order goes below it),
    looked at in the rules' order while ``time.monotonic()`` is before
    ``until`` (each costs its placement problem and the floor), and only
    when the first's floor is above its live bytes by more than
    LIST_FIT_LOSS (on grad_accum CPU every rule's floor was its live bytes'
    8.22 MiB and 8.28; looking at them took the order search's time).  The order
    objective counts every idle output byte free, so it cannot tell such
    orders apart: on gpt2 with gradient accumulation (H100, small) the ten
    rules' orders were within 12 bytes of each other and their floors 8.25 to
    9.25 MiB (the first of the least cost: 9.25; placed at its floor)."""
    from olla_jax.solve import place_check
    best = min(found, key=lambda r: r.cost)
    t = time.monotonic()
    best_problem = graph.placement_problem(best.order)
    ties, seen = [], {tuple(best.order)}
    for r in found:
        if r.cost <= best.cost * (1 + LIST_TIE) and tuple(r.order) not in seen:
            seen.add(tuple(r.order))
            ties.append(r)
    if not ties or len(best_problem[0].intervals) > FIT_BOUND_MAX_INTERVALS or \
            not any(reg.capacity > 0 for reg in best_problem[0].regions):
        return tuple(best.order), best_problem
    keep = (tuple(best.order), best_problem,
            place_check.region_fit_bound(best_problem[0], moments=LIST_FLOW_MOMENTS))
    if keep[2] <= (1 + LIST_FIT_LOSS) * place_check.live_bytes_bound(best_problem[0]):
        return keep[0], keep[1]   # the regions cost it little: the time goes to the search
    each = time.monotonic() - t
    for r in ties:
        if time.monotonic() + each > until:
            break
        problem = graph.placement_problem(r.order)
        floor = place_check.region_fit_bound(problem[0], moments=LIST_FLOW_MOMENTS)
        if floor < keep[2]:
            logging.info("list order %s: region-fit floor %d bytes, below %d (same order cost)",
                         r.rule, floor, keep[2])
            keep = (tuple(r.order), problem, floor)
    return keep[0], keep[1]


def _repair_mark(clock: Deadline, cost: _Cost) -> float:
    """When the repair must start at the latest: REPAIR_BEST_FITS best-fits
    before the finish (the deadline on a sweep graph: no exact placement there)."""
    if cost.sweep:
        return clock.at
    return clock.at - FINISH_RESERVE * clock.seconds - REPAIR_BEST_FITS * cost.one_best_fit


def _finish_mark(clock: Deadline, cost: _Cost) -> float:
    """When the layout must start: the finish reserve and one best-fit before the end."""
    return clock.at - FINISH_RESERVE * clock.seconds - cost.one_best_fit


def _lower_bound(graph: model.ScheduleGraph, with_regions, orders, now, end: float,
                 big: bool = False, floor: int = 0, done: set | None = None,
                 values: dict | None = None) -> int:
    """The lower bound, by ``end`` (a ``now()`` time): what must be resident at
    one step whatever the order (loop bodies included) and the last output
    writer's need, the min-cut's floor and the bound where the relaxation
    degenerates (a step inside one while; outputs whose idle space it counts as
    free for every unit); then the threshold min-cuts (each a valid bound on
    the arena, see ScheduleGraph.bound_problems; the largest holds).  ``big``:
    a graph past the block model's size (see PAIR_US), where each min-cut
    costs seconds: none starts that MIN_CUT_NODE_S says would end past ``end``
    (the bound may then be 0: valid, and reported as such).  ``floor``: a
    bound already proven, the start (no threshold problem runs past ``end``
    to beat it).  ``done``: thresholds whose min-cut ran to the end, skipped
    (their value must be in ``floor``), and "probe" once the forced-live floor
    (the resident floor's stand-in on a big graph) has; those completed here are added.
    ``values``: per threshold, what its min-cut proved (set here)."""
    from olla_jax.graph import resident
    from olla_jax.solve import bounds
    t0 = now()
    nodes = len(graph.nodes)
    share = max(0.0, end - now())
    if not big:
        share *= RESIDENT_BOUND_SHARE
    elif (1 - BIG_PROBE_SHARE) * share >= MIN_CUT_NODE_S * nodes:
        share *= BIG_PROBE_SHARE    # else no min-cut would start: the floor takes it all
    if done and "probe" in done:
        value = 0    # the forced-live floor ran to the end: its value is in ``floor``
    elif RESIDENT_NODE_PAIR_S * nodes * nodes > share:
        # Its set-up (every node's ancestors and descendants as bitsets) cannot
        # be interrupted and grows as nodes squared, in time and memory.
        # The forced-live floor instead, at the nodes costliest in the orders
        # found (linear memory a node; the costliest at least, however little
        # time: 100k nodes' bound was 0, nothing else fitting the time left).
        found = bounds.probe_bound(graph.order_problem_for_bound, orders, time_limit_s=share)
        logging.info("resident bound skipped: %d nodes, %.1f s for it; forced-live floor %d "
                     "bytes (%d nodes probed, %.1f s)", nodes, share, found.value,
                     found.flows, found.seconds)
        value = found.value
        if found.complete and done is not None:
            done.add("probe")
    else:
        floor_found = resident.floor_bound(   # on time.monotonic, as the engines
            graph, deadline=time.monotonic() + share)
        logging.info("resident bound %d bytes (%d steps solved)", floor_found.value,
                     floor_found.evaluated)
        value = floor_found.value
    value = max(value, floor)
    # The largest threshold first (few units, often the strongest: what it
    # proves lets the others skip every node that cannot beat it), then the
    # plain relaxation, then the rest, largest first, while the time lasts:
    # any subset of these bounds is a bound, only maybe weaker (a big graph:
    # the plain one last, see BIG_PROBE_SHARE).  Each problem is built when
    # its turn comes (building them all costs seconds on 2k nodes).
    thresholds = sorted({0, *with_regions.region_sizes})
    thresholds = thresholds[::-1] if big else \
        [thresholds[-1], *thresholds[:1], *thresholds[-2:0:-1]][:len(thresholds)]
    solved = 0
    if done:   # proven already (the value is in ``floor``): the time goes to the others
        thresholds = [c for c in thresholds if c not in done]
    overrun = 0.0   # the most a threshold took past its share (its problem, set-up, last flow)
    for k, cap in enumerate(thresholds):
        left = end - now()
        if big and MIN_CUT_NODE_S * len(graph.nodes) > left:
            break   # sized: one min-cut (not interruptible) costs seconds on a big graph
        if left <= overrun and (k >= 2 or value > 0):
            # The first two at least, unless another bound is in already; none
            # that would end past ``end`` by the most one overran (the stage's
            # min-cuts ended 0.2-0.8 s past their marks on loaded gpu:h100 runs).
            break
        t = now()
        problem = graph.threshold_problem(cap, for_bound=True)
        left = max(0.0, end - now() - overrun)   # room for its overrun: it ends by ``end``
        # min_cut_bound stops when done: what the first leaves goes to the rest
        share = max(left / (len(thresholds) - k), LEAD_THRESHOLD_SHARE * left)
        found = bounds.min_cut_bound(problem, time_limit_s=share, orders=orders, floor=value)
        overrun = max(overrun, now() - t - share)
        value = max(value, found.value)
        solved += 1
        if values is not None:
            values[cap] = max(values.get(cap, 0), found.value)
        if found.complete and done is not None:
            done.add(cap)
    logging.info("lower bound %d bytes (%d of %d threshold problems) in %.1f s",
                 value, solved, len(thresholds), now() - t0)
    return value


def _chain_up(graph: model.ScheduleGraph, per_cap: dict, value: int,
              orders: Sequence[Sequence[int]], now, end: float) -> int:
    """``value`` raised by sets of nodes in every sequence (``solve.bound_chain``)
    on the threshold problems whose min-cuts proved most (``per_cap``, raised
    here too), by ``end`` (a ``now()`` time); what it leaves goes to CP-SAT."""
    from olla_jax.solve import bound_chain
    ranked = sorted(per_cap, key=lambda c: (-per_cap[c], c))[:CHAIN_PROBLEMS]
    for k, cap in enumerate(ranked):
        left = (end - now()) / (len(ranked) - k)
        if left < CHAIN_MIN_S or not orders:
            break
        problem = graph.threshold_problem(cap, for_bound=True)
        found = bound_chain.search_bound(problem, orders, time_limit_s=left, floor=value,
                                         width=CHAIN_WIDTH)
        logging.info("chain bound, threshold %d: %d bytes (%d flows, %.2f s%s)", cap,
                     found.value, found.flows, found.seconds,
                     "" if found.complete else ", stopped")
        per_cap[cap] = max(per_cap[cap], found.value)
        value = max(value, found.value)
    return value


def _park_up(graph: model.ScheduleGraph, per_cap: dict, value: int,
             orders: Sequence[Sequence[int]], now, end: float,
             fit: _FitScore | None = None, done: set | None = None) -> int:
    """``value`` raised by whole units parked in the regions at single nodes
    (``solve.bound_park``) on the PARK_PROBLEMS thresholds the orders cost
    most on (by ``fit``'s threshold objectives where it has them: the min-cuts'
    ``per_cap`` says little once another bound met them; else ``per_cap``,
    raised here too), at the nodes costliest in ``orders`` there, by ``end``
    (a ``now()`` time).  ``done``: (threshold, node) pairs solved exactly,
    skipped (their value is in ``value``); those solved here are added."""
    from olla_jax.graph import park
    from olla_jax.solve import bound_park, bounds
    if len(graph.nodes) > PARK_MAX_NODES or not orders:
        return value
    done = set() if done is None else done

    def rank(c):
        if fit is not None and (c == 0 or c in fit.evaluators):
            return (0, -min(fit._cost(c, tuple(o)) for o in orders), c)
        return (1, -per_cap[c], c)
    ranked = sorted(per_cap, key=rank)[:PARK_PROBLEMS]
    setup_s = [0.0]    # the longest set-up measured here
    for cap in ranked:
        if end - now() < CHAIN_MIN_S:
            break
        found = park.park_problem(graph, cap)
        if not found.whole:
            continue
        upper = bounds.order_upper(found.problem, orders)[0]
        # Parking adds at most the whole regions' counted bytes to a node's cost.
        room = sum(found.problem.region_sizes[r] for r in found.whole)
        nodes = [n for n in sorted(range(len(upper)), key=lambda n: -upper[n])
                 if upper[n] + room > value and n in found.nodes][:PARK_NODES]
        nodes = [n for n in nodes if (cap, n) not in done]
        cuts = bounds.NodeCuts(found.problem)
        profiles = [sp.step_profile(found.problem, o) for o in orders] if nodes else []
        at = [{v: i for i, v in enumerate(o)} for o in orders] if nodes else []
        # The model's set-up (not interruptible) grows with arena items x whole regions.
        items = sum(1 for it in found.problem.items if it.region == sp.ARENA)
        setup = max(setup_s[0], PARK_SETUP_US * 1e-6 * items * len(found.whole))
        for n in nodes:
            left = end - now()
            if left < CHAIN_MIN_S + setup:
                break
            known = max(0, cuts.before(n)[0])
            # One hint (each costs about the model's build: 0.4 s on remat's
            # 1,861 nodes): the order cheapest at ``n``.
            k = min(range(len(orders)), key=lambda k: profiles[k][at[k][n]])
            hints = [set(orders[k][:at[k][n]])]
            t = now()
            limit = max(0.01, min(PARK_NODE_S, left - setup))
            proven, exact = bound_park.node_minimum(found, n, floor=known, hints=hints,
                                                    time_limit_s=limit)
            if not exact:    # it ran to its limit: the rest was its set-up
                setup_s[0] = max(setup_s[0], now() - t - limit)
            logging.info("park bound, threshold %d, node %d: %d bytes (min-cut %d, %s)", cap, n,
                         proven, known, "exact" if exact else "stopped")
            per_cap[cap] = max(per_cap[cap], proven)
            value = max(value, proven)
            if exact:
                done.add((cap, n))
    return value


def _block_up(graph: model.ScheduleGraph, per_cap: dict, value: int, now, end: float,
              done: set | None = None) -> int:
    """``value`` raised at the loop nodes by whole units parked in the regions
    over the block's busiest steps, with the writers' order
    (``solve.bound_block``), on the thresholds ``per_cap`` ranks (see
    BLOCK_PROBLEMS), by ``end`` (a ``now()`` time).  ``done``: (threshold,
    node) pairs solved exactly, skipped; those solved here are added."""
    from olla_jax.graph import park
    from olla_jax.solve import bound_block
    if len(graph.nodes) > PARK_MAX_NODES or not per_cap:
        return value
    blocks = park.block_nodes(graph)
    if not blocks:
        return value
    done = set() if done is None else done
    strongest = max(per_cap.values())
    ranked = sorted((c for c in per_cap if per_cap[c] >= BLOCK_NEAR * strongest),
                    reverse=True)[:BLOCK_PROBLEMS]
    work = [(c, n) for c in ranked for n in blocks if (c, n) not in done]
    for k, (cap, n) in enumerate(work):
        left = (end - now()) / (len(work) - k)
        if left < CHAIN_MIN_S:
            break
        t = now()
        found = park.block_park(graph, cap, n)
        steps = bound_block.busiest_steps(found, BLOCK_STEPS)
        proven, exact = bound_block.block_minimum(found, steps, floor=value, time_limit_s=left)
        logging.info("block bound, threshold %d, node %d: %d bytes (%s, %.2f s of %.2f)", cap, n,
                     proven, "exact" if exact else "stopped", now() - t, left)
        per_cap[cap] = max(per_cap[cap], proven)
        value = max(value, proven)
        if exact:
            done.add((cap, n))
    return value


def _prove_below(graph: model.ScheduleGraph, per_cap: dict, value: int, target: int | None,
                 now, end: float, orders: Sequence[Sequence[int]] = (),
                 settled: set | None = None) -> int:
    """``value`` raised by CP-SAT (``solve.bound_cpsat.prove``) on the
    threshold problems whose min-cuts proved most (``per_cap``), reduced:
    no order of one below ``target`` (the plan's arena) makes ``target`` the
    bound.  ``target`` None: per problem, the least cost of ``orders`` there
    (before any placement; proven, that is the problem's optimum, and the
    problem goes in ``settled``, which later calls skip).  Each ends by
    ``end`` (a ``now()`` time)."""
    from olla_jax.solve import bound_cpsat
    from olla_jax.solve.problem import order_cost
    settled = set() if settled is None else settled
    ranked = sorted((c for c in per_cap if c not in settled),
                    key=lambda c: (-per_cap[c], c))[:CPSAT_BOUND_PROBLEMS]
    for cap in ranked:
        if (target is not None and value >= target) or end - now() < CPSAT_BOUND_MIN_S:
            break
        problem = graph.threshold_problem(cap, for_bound=True)
        goal = target if target is not None else min(
            (order_cost(problem, o) for o in orders), default=0)
        if goal <= value:
            continue
        found = bound_cpsat.prove(problem, goal, floor=value, max_nodes=CPSAT_BOUND_NODES,
                                  time_limit_s=max(0.0, end - now()))   # what its build left
        logging.info("CP-SAT bound, threshold %d: %d bytes (%s, %d nodes, %.1f s)", cap,
                     found.value, found.status, found.kept_nodes, found.seconds)
        if found.status == "optimal" or (target is None and found.status == "below-none"):
            settled.add(cap)    # its reduced problem solved: no later target proves more
        value = max(value, found.value)
    return value


def _repair(graph, best: Candidate, placed: dict, unplaced: list, live: dict, bound: int,
            xla_temp: int | None, clock: Deadline, cost: _Cost,
            score: Callable[[tuple[int, ...]], int] | None = None) -> tuple[Candidate, bool]:
    """Placement judged against what each order's placement problem allows:
    an order's floor is the most of the proven bound and its region-fit
    bound (``place_check.region_fit_bound``: its live bytes with region
    space counted only where a block fits, while its live bytes by the
    order objective count every idle output byte as free and ran 40% below
    it on remat).  The orders whose floor is below the best arena (by more
    than ``PLACEMENT_SLACK`` when that arena already beats XLA's) get the
    exact engine, stopping at the floor: the least live-bytes bound first
    (then the least best-fit arena; orders not placed yet get best-fit
    first), warm-started from best-fit, while time lasts; one attempt
    always when the best arena is not below XLA's temp and some order's
    floor is.  ``score``: an order's fit score (``_FitScore.score``), which
    ranks the orders before their live-bytes bound.  Returns the best
    candidate and whether an exact engine ran."""
    from olla_jax.solve import place as place_lib
    from olla_jax.solve import place_check
    now = clock.clock
    finish = clock.at - FINISH_RESERVE * clock.seconds
    sources = dict(unplaced)
    problems, peaks = {}, {}
    if cost.sweep:   # building each order's problem costs seconds there: as before
        pool = sorted(placed, key=lambda o: (placed[o].placement.arena_size, live[o]))
        pool += sorted(sources, key=lambda o: live[o])
    else:
        # Least live-bytes bound first (cheap: the order objective can rank an
        # order 40% below another whose bound is lower), then best-fit arena.
        problems = {o: (c.problem, c.owners) for o, c in placed.items()}
        for o in sorted(sources, key=lambda o: live[o]):
            if now() + cost.one_best_fit > finish:
                break    # no time to place it: not worth its problem (about a best-fit's cost)
            problems[o] = graph.placement_problem(o)
        peaks = {o: max(bound, place_check.live_bytes_bound(pp)) for o, (pp, _) in problems.items()}
        # With the fit score when given (a ranking only: the threshold
        # objectives count an order's items over their hull, not a bound).
        pool = sorted(problems, key=lambda o: (max(peaks[o], score(o)) if score else peaks[o],
                                               placed[o].placement.arena_size
                                               if o in placed else float("inf"), live[o]))
    fit_s = [0.0]    # the longest region-fit bound so far

    def floor_of(order) -> int:
        """The arena no placement of this order goes below (as far as
        time allows to tell: the live-bytes bound when the region-fit one
        would not fit the time or memory)."""
        problem = problems[order][0]
        t = now()
        found = peaks[order]
        # Until one is measured, taken as a best-fit (resnet50 small: 0.29 s
        # against 0.23; at load 12 the first, started just before the finish
        # with none measured, ran the plan 1.5 s past its limit).
        if (len(problem.intervals) <= FIT_BOUND_MAX_INTERVALS and any(
                r.capacity > 0 for r in problem.regions)
                and t + 2 * (fit_s[0] or cost.one_best_fit) < finish):
            found = max(found, place_check.region_fit_bound(problem))
        fit_s[0] = max(fit_s[0], now() - t)
        return found

    tried = False
    repaired: dict = {}   # order -> its floor, for the orders the exact engine ran on
    for order in pool:
        arena = best.placement.arena_size
        if arena <= bound:
            break
        if tried and finish - now() <= 0:
            break
        cand = placed.get(order)
        if cost.sweep:    # no region-fit bound nor exact placement on such a graph: as before
            if cand is None and live[order] < arena and now() + cost.one_best_fit <= finish:
                pp, owners = graph.placement_problem(order)
                cand = Candidate(order, sources[order], cost.best_fit(pp, finish), owners, pp,
                                 live[order])
                placed[order] = cand
                if cand.placement.arena_size < arena:
                    best = cand
            continue
        losing = xla_temp is not None and arena >= xla_temp and peaks[order] < xla_temp
        if peaks[order] * (1 + (0 if losing else PLACEMENT_SLACK)) >= arena:
            continue     # no placement of this order beats the best by enough
        if cand is None:
            pp, owners = problems[order]
            floor = floor_of(order)
            losing = xla_temp is not None and arena >= xla_temp and floor < xla_temp
            if floor * (1 + (0 if losing else PLACEMENT_SLACK)) >= arena:
                continue
            # Losing to XLA, an order may take the finish reserve, never the deadline.
            end = clock.at if losing else finish
            if now() + cost.one_best_fit > end:
                continue
            cand = Candidate(order, sources[order], cost.best_fit(pp, end), owners, pp,
                             live[order])
            placed[order] = cand
            logging.info("placement under the %s order: %d bytes (live bytes %d, floor %d)",
                         cand.source, cand.placement.arena_size, cand.live, floor)
            if cand.placement.arena_size < best.placement.arena_size:
                best = cand
                arena = best.placement.arena_size
        else:
            floor = floor_of(order)
        losing = xla_temp is not None and arena >= xla_temp and floor < xla_temp
        if floor * (1 + (0 if losing else PLACEMENT_SLACK)) >= arena:
            continue     # no placement of this order beats the best by enough
        if cand.placement.arena_size <= floor:
            continue
        # Its set-up (the block model: seconds on 10k nodes, not interruptible)
        # must end in time: by the finish, or losing to XLA by the deadline (a
        # 10k-instruction step at a 240 s limit, loaded, ran 27 s past it).
        end = clock.at if losing and not tried else finish
        if end - now() <= cost.exact_setup:
            continue
        # The exact model warm-starts from best-fit; building it takes time of
        # its own (measured on the first call), hence the share of what is left.
        t = now()
        left = max(0.0, finish - t - cost.exact_setup)
        # The first keeps time for the others, where any other could beat the
        # best by its live-bytes bound.
        others = any(peaks[o] * (1 + PLACEMENT_SLACK) < arena
                     for o in pool[pool.index(order) + 1:])
        budget = left * (EXACT_PLACEMENT_SHARE if not tried and others else 1.0)
        if losing and not tried:   # an attempt, not a call with no time: the reserve if need be
            budget = max(budget, min(LOSING_EXACT_SHARE * clock.seconds,
                                     end - t - cost.exact_setup))
        exact = place_lib.place_exact(cand.problem, time_limit_s=budget, hint=cand.placement,
                                      engine=REPAIR_ENGINE, floor=floor,
                                      best_fit_s=cost.sort_order)
        repaired[order] = floor
        over = now() - t - budget   # its set-up, when it ran to its limit (not at the floor)
        if over > 0:
            cost.exact_setup = over if not tried else max(cost.exact_setup, over)
        tried = True
        logging.info("exact placement of the %s order (live bytes %d, floor %d): %d -> %d bytes "
                     "in %.1f s of %.1f", cand.source, cand.live, floor, cand.placement.arena_size,
                     exact.arena_size, now() - t, budget)
        if exact.arena_size < cand.placement.arena_size:
            cand = dataclasses.replace(cand, placement=exact)
            placed[order] = cand
        if cand.placement.arena_size < best.placement.arena_size:
            best = cand
    if best.order in repaired:
        best = _repair_rest(best, repaired[best.order], finish, clock, cost)
    return best, tried


def _repair_rest(best: Candidate, floor: int, finish: float, clock: Deadline,
                 cost: _Cost) -> Candidate:
    """The exact placement of the best order once more, from where it got,
    in what the repair left before ``finish`` (a ``clock`` time): the first
    order's exact placement gets EXACT_PLACEMENT_SHARE of the time, kept
    for orders that often are not worth one (densenet CPU small, 10 s
    limit: 0.9 s of the limit went unused, the arena 2% above its floor)."""
    from olla_jax.solve import place as place_lib
    now = clock.clock
    budget = finish - now() - cost.exact_setup
    if best.placement.arena_size <= floor or budget < REPAIR_REST_MIN_SHARE * clock.seconds:
        return best
    t = now()
    exact = place_lib.place_exact(best.problem, time_limit_s=budget, hint=best.placement,
                                  engine=REPAIR_ENGINE, floor=floor, best_fit_s=cost.sort_order)
    logging.info("exact placement of the %s order, again in the time left (floor %d): %d -> %d "
                 "bytes in %.1f s of %.1f", best.source, floor, best.placement.arena_size,
                 exact.arena_size, now() - t, budget)
    if exact.arena_size < best.placement.arena_size:
        return dataclasses.replace(best, placement=exact)
    return best


def _sink_deferred(graph: model.ScheduleGraph, problem: sp.OrderProblem, best: Candidate, *,
                   deadline: float, cost: _Cost, live_of) -> Candidate:
    """Sink moves (``solve.sink``) on an order whose output writers were just
    deferred: the writers' operands now wait for them and can often be made
    later too; placed by best-fit, kept when better."""
    from olla_jax.solve import sink
    from olla_jax.solve.dag import Dag
    from olla_jax.solve.evaluate import Evaluator

    order, source, placement = best.order, best.source, best.placement
    now = cost.clock
    if deadline - now() < 2 * cost.one_best_fit:   # no time for sinking and a best-fit
        return best
    budget = SINK_SHARE * (deadline - now() - cost.one_best_fit)
    # sink.improve runs on time.monotonic: given the budget, not the deadline
    moved = sink.improve(Evaluator(problem), Dag.of(problem), order,
                         deadline=time.monotonic() + budget)
    if moved == order:
        return best
    pp, owners = graph.placement_problem(moved)
    trial = cost.best_fit(pp, deadline)
    logging.info("placement after sink moves on the deferred order: %d bytes", trial.arena_size)
    if trial.arena_size < placement.arena_size:
        return Candidate(moved, f"{source}+sunk", trial, owners, pp, live_of(moved))
    return best


def _defer_outputs(graph: model.ScheduleGraph, problem: sp.OrderProblem, best: Candidate, *,
                   deadline: float, cost: _Cost, live_of) -> Candidate:
    """The best order with output writers moved later (``solve.defer``), each
    variant placed by best-fit; the best placement wins.  Variants are tried
    while ``deadline`` allows (none whose best-fit would end past it); none
    is placed that repeats an order tried, or whose live-bytes bound is not
    below the best arena (no placement of it wins: deferring all 380 of
    densenet's writers, CPU small, took a best-fit to place at 139 MiB
    against 54, and the repair after lacked that time)."""
    import bisect

    from olla_jax.solve import defer, place_check

    order, source, placement, pp = best.order, best.source, best.placement, best.problem
    writers = defer.output_writers(problem)
    if not writers:
        return best
    layout = graph.flat_layout(order)
    starts = [layout[n] for n in order]
    peak = order[bisect.bisect_right(starts, defer.arena_peak_step(pp, placement)) - 1]
    tried = {tuple(order)}
    for k, chosen in enumerate(defer.deferral_sets(writers, order, peak)):
        if cost.clock() + cost.one_best_fit > deadline:
            break
        moved = defer.defer(problem, order, chosen)
        if moved in tried:
            continue
        tried.add(moved)
        moved_pp, moved_owners = graph.placement_problem(moved)
        if place_check.live_bytes_bound(moved_pp) >= best.placement.arena_size:
            logging.info("%d output writers deferred: live-bytes bound not below %d bytes, "
                         "not placed", len(chosen), best.placement.arena_size)
            continue   # no placement of it beats the best (H100 resnet18: 8 variants, 4 s)
        moved_placement = cost.best_fit(moved_pp, deadline)
        logging.info("placement with %d output writers deferred: %d bytes", len(chosen),
                     moved_placement.arena_size)
        if moved_placement.arena_size < best.placement.arena_size:
            best = Candidate(moved, f"{source}+deferred", moved_placement, moved_owners,
                             moved_pp, live_of(moved))
    return best


def joint_skipped(graph: model.ScheduleGraph, arena: int, bound: int, left_s: float) -> str | None:
    """Why engine="auto" does not run the joint model on a plan of ``arena``
    bytes above a proven ``bound`` with ``left_s`` left (None: it runs)."""
    from olla_jax.solve import joint
    if arena - bound <= max(JOINT_GAP * arena, JOINT_MIN_GAP_BYTES):
        return f"the plan is within {JOINT_GAP:.0%} or {JOINT_MIN_GAP_BYTES} bytes of the bound"
    if left_s < JOINT_MIN_S:
        return f"{max(0.0, left_s):.1f} s left, under {JOINT_MIN_S:g} s"
    if len(graph.nodes) > JOINT_MAX_NODES:
        return f"{len(graph.nodes)} nodes, over {JOINT_MAX_NODES}"
    return joint.unsupported(graph)


def _joint(graph: model.ScheduleGraph, best: Candidate, time_limit_s: float, seed: int, *,
           lower_bound: int = 0, live_of=None) -> Candidate:
    """The joint order-and-placement model, warm-started from ``best``; ``best``
    itself unless the joint model finds a valid plan with a smaller arena.
    ``lower_bound``: proven, so the model stops once it reaches it;
    ``live_of``: an order's live bytes (the Candidate's ``live``)."""
    from olla_jax.solve import isolated, joint, place_check
    order, placement = best.order, best.placement
    reason = joint.unsupported(graph)
    if reason:
        logging.info("joint engine skipped: %s", reason)
        return best
    hint = joint.hull_hint(graph, order)
    limit = time_limit_s
    if limit <= 0:
        logging.info("joint engine skipped: no time left")
        return best
    # In a child (a solver abort must not take the user's process with it),
    # whose start-up (a fresh interpreter importing olla_jax: seconds) counts
    # against the limit: it ends by one deadline, and is stopped soon after it.
    deadline = time.monotonic() + limit
    try:
        found = isolated.run_isolated("olla_jax.solve.joint", "solve_joint", graph,
                                      hint_order=tuple(order), hint_places=hint,
                                      time_limit_s=limit, seed=seed, deadline=deadline,
                                      lower_bound=lower_bound,
                                      timeout_s=limit * (1 + JOINT_GRACE_SHARE))
    except isolated.ChildFailed as err:
        logging.warning("joint engine failed: %s", err)
        return best
    if found is None:
        return best
    try:
        place_check.validate_placement(found.problem, found.placement)
    except ValueError as err:  # the model and the placement problem disagree: keep ours
        logging.warning("joint engine returned an invalid placement: %s", err)
        return best
    logging.info("joint engine: arena %d (separate: %d), bound %d, optimal %s",
                 found.placement.arena_size, placement.arena_size, found.bound, found.optimal)
    if found.placement.arena_size < placement.arena_size:
        return Candidate(found.order, "joint", found.placement, found.owners, found.problem,
                         live_of(found.order) if live_of else best.live)
    return best


# Collective re-timing (collective_overlap="hidden" or an exposure allowance): the cost
# model and the re-timing move are olla_jax.graph.overlap's; placing the moved orders is here.


@dataclasses.dataclass(frozen=True)
class Hidden:
    """The least-memory order found within the allowance, placed."""
    layout: layout_lib.Layout
    exposure: overlap.Exposure
    source: str               # which order it was re-timed from
    met: bool                 # exposure within the allowance


def hide_collectives(graph: model.ScheduleGraph, step: overlap.StepModel, orders: dict[str, object],
                     allowance_s: float, deadline: float | None = None) -> Hidden:
    """Re-time each of ``orders`` (by name: where it came from; an order, or a
    ``Layout`` whose placement is kept when no move was needed) to expose at
    most ``allowance_s``, and also as far as re-timing hides (moving a
    reduce-scatter's start up to its gradient can free memory: more overlap is
    not always dearer); place each moved one best-fit, and keep the least temp
    among those within the allowance (the least exposed when none is).  Each
    re-timing gets an equal share of the time to ``deadline``, but the first
    order of ``orders`` (XLA's, from the plan) drawn in and re-timed to the
    allowance goes first with all of it (less FIRST_FIT_SHARE for its
    placement): on a large step that one try alone may take most of the
    limit, and equal shares left every try unfinished."""
    from olla_jax.solve import place as place_lib
    from olla_jax.solve.evaluate import Evaluator
    problem = graph.order_problem()
    score = Evaluator(problem).cost   # problem.order_cost, vectorised: retime scores every move
    targets = (allowance_s, 0.0) if allowance_s > 0 else (allowance_s,)
    # Each order as it is, then drawn in to just-in-time collectives (overlap.just_in_time:
    # all-gathers started late, reduce-scatters right after their gradients),
    # each re-timed to the allowance, then to none.
    tries = [(name, given, jit, a) for name, given in orders.items() for jit in (False, True)
             for a in targets]
    if tries:
        lead = next(k for k, t in enumerate(tries) if t[2] or k == len(tries) - 1)
        tries.insert(0, tries.pop(lead))   # the first order, drawn in, to the allowance
    found, seen = [], set()
    fit_s = 0.0   # the longest placement so far
    for k, (name, given, jit, allowed) in enumerate(tries):
        if found and deadline is not None and time.monotonic() > deadline:
            break
        share = None if deadline is None else (
            deadline - FIRST_FIT_SHARE * (deadline - time.monotonic())) if k == 0 else (
            time.monotonic() + (deadline - time.monotonic()) / (len(tries) - k))
        order = tuple(getattr(given, "order", given))
        if jit:
            drawn = overlap.just_in_time(order, step.node_seconds, step.collectives, problem.edges)
            if drawn == order:
                continue
            order = drawn
        retimed = overlap.retime(order, step.node_seconds, step.collectives, problem.edges, allowed,
                         score, deadline=share)
        if retimed.order in seen:
            continue
        seen.add(retimed.order)
        if retimed.moves == 0 and not jit and hasattr(given, "order"):
            layout = given
        else:
            if found and deadline is not None and time.monotonic() + fit_s > deadline:
                continue   # no time for its placement (as long as the last one took)
            t = time.monotonic()
            pp, owners = graph.placement_problem(retimed.order)
            placement = place_lib.best_fit(pp, deadline=deadline)
            layout = layout_lib.realize(graph, retimed.order, placement, owners)
            fit_s = max(fit_s, time.monotonic() - t)
        met = retimed.exposure.exposed_s <= allowance_s + overlap.EPS
        found.append(Hidden(layout=layout, exposure=retimed.exposure,
                            source=name + ("+jit" if jit else "")
                            + ("+retimed" if retimed.moves else ""), met=met))
    within = [h for h in found if h.met]
    if within:
        return min(within, key=lambda h: (h.layout.temp_bytes, h.exposure.exposed_s))
    return min(found, key=lambda h: (h.exposure.exposed_s, h.layout.temp_bytes))
