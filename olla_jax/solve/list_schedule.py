"""Memory-aware list schedulers: greedy orders in near-linear time.

Greedy rules pick, among the ready nodes, the one with the best key, where
``alloc`` is what running the node makes resident (new arena items, and the
capacity of an idle fixed region it makes busy) and ``free`` what it releases
(items it is the last toucher of, regions it leaves idle):

- ``growth``: least ``alloc - free`` (net memory growth);
- ``peak``: least ``alloc + node_extra`` (the step's own bump), then growth;
- ``frees``: most ``free``, then least ``alloc``;
- ``lookahead``: growth, counting also the best successor that running the node
  would make ready (a node that only enables a big free is taken early).

``dfs`` is a post-order walk from the sinks visiting the predecessors with more
extra users and bigger cumulative sizes first (the rule of XLA's DFS memory
scheduler); ``post-order`` the same walk in node id order. Each greedy rule
also runs backwards (``rev-<rule>``): on the reversed graph, where an item lives
from its last touch back to its first def, then reversed; that problem is only
an approximation when an item lacks touches, which is harmless because every
order is scored exactly.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import time
from typing import Callable, Sequence

from olla_jax.solve.dag import Dag
from olla_jax.solve.evaluate import Evaluator
from olla_jax.solve.problem import ARENA, Item, OrderProblem

GREEDY_RULES = ("growth", "peak", "frees", "lookahead")
RULES = (*GREEDY_RULES, "dfs", "post-order", *(f"rev-{r}" for r in GREEDY_RULES))
# The rules that weigh memory as they go (forwards or backwards): not the
# walks (``dfs``, ``post-order``), whose orders follow the program's.
MEMORY_RULES = tuple(r for r in RULES if r.removeprefix("rev-") in GREEDY_RULES)


@dataclasses.dataclass(frozen=True)
class ListResult:
    order: tuple[int, ...]
    cost: int
    rule: str


class _Greedy:
    """State of one forward greedy run."""

    def __init__(self, problem: OrderProblem, dag: Dag):
        self.p = problem
        self.dag = dag
        n = problem.num_nodes
        self.def_items: list[list[int]] = [[] for _ in range(n)]
        self.touch_items: list[list[int]] = [[] for _ in range(n)]
        self.touchers: list[set[int]] = []
        for i, it in enumerate(problem.items):
            for d in set(it.defs):
                self.def_items[d].append(i)
            ts = set(it.touches)
            self.touchers.append(ts)
            for t in ts:
                self.touch_items[t].append(i)
        self.region_nodes: list[set[int]] = [set() for _ in problem.region_sizes]
        for it in problem.items:
            if it.region != ARENA:
                self.region_nodes[it.region].update(it.defs, it.touches)

    def run(self, key_of: Callable[["_Greedy", int], tuple], rank: Sequence[float]) -> list[int]:
        p, n = self.p, self.p.num_nodes
        items = p.items
        self.started = [it.live_in or not it.defs for it in items]
        self.remaining = [len(ts) for ts in self.touchers]
        self.freed = [False] * len(items)
        self.region_live = [0] * len(p.region_sizes)
        self.done = [False] * n
        self.indeg = [len(ps) for ps in self.dag.preds]
        for i, it in enumerate(items):
            if self.started[i] and it.region != ARENA:
                self.region_live[it.region] += 1
        version = [0] * n
        heap: list[tuple] = []

        def push(v: int) -> None:
            version[v] += 1
            heapq.heappush(heap, (key_of(self, v), rank[v], v, version[v]))

        for v in range(n):
            if self.indeg[v] == 0:
                push(v)
        order: list[int] = []
        while heap:
            key, _, v, ver = heapq.heappop(heap)
            if self.done[v] or ver != version[v]:
                continue
            now = key_of(self, v)
            if now > key:  # got worse since pushed: requeue
                heapq.heappush(heap, (now, rank[v], v, ver))
                continue
            order.append(v)
            for w in self._run(v):
                if not self.done[w] and self.indeg[w] == 0:
                    push(w)
            for w in self.dag.succs[v]:
                self.indeg[w] -= 1
                if self.indeg[w] == 0:
                    push(w)
        return order

    def _run(self, v: int) -> set[int]:
        """Mark v as run; return the nodes whose key may have improved."""
        self.done[v] = True
        items = self.p.items
        dirty: set[int] = set()
        regions: set[int] = set()
        for i in self.def_items[v]:
            if not self.started[i]:
                self.started[i] = True
                dirty.update(items[i].defs)
                if items[i].region != ARENA:
                    self.region_live[items[i].region] += 1
                    regions.add(items[i].region)
        for i in self.touch_items[v]:
            self.remaining[i] -= 1
            if self.remaining[i] <= 1:
                dirty.update(self.touchers[i])
        for i in (*self.def_items[v], *self.touch_items[v]):
            it = items[i]
            if (self.remaining[i] == 0 and self.started[i] and not self.freed[i]
                    and not it.live_out):
                self.freed[i] = True
                if it.region != ARENA:
                    self.region_live[it.region] -= 1
                    regions.add(it.region)
        for r in regions:
            dirty.update(self.region_nodes[r])
        return dirty

    def alloc_free(self, v: int, also_done: int = -1) -> tuple[int, int]:
        """Bytes that running v makes resident and releases; ``also_done`` is a
        node to treat as already run (for lookahead)."""
        items, caps = self.p.items, self.p.region_sizes
        alloc = free = 0
        new_regions: set[int] = set()
        for i in self.def_items[v]:
            if not self.started[i]:
                it = items[i]
                if it.region == ARENA:
                    alloc += it.size
                elif self.region_live[it.region] == 0:
                    new_regions.add(it.region)
        alloc += sum(caps[r] for r in new_regions)
        ending: dict[int, int] = {}
        for i in self.touch_items[v]:
            it = items[i]
            left = self.remaining[i] - (also_done in self.touchers[i])
            if left != 1 or it.live_out or not (self.started[i] or v in it.defs):
                continue
            if it.region == ARENA:
                free += it.size
            elif self.started[i]:
                ending[it.region] = ending.get(it.region, 0) + 1
        free += sum(caps[r] for r, k in ending.items() if k == self.region_live[r])
        return alloc, free


def _key_growth(g: _Greedy, v: int) -> tuple:
    a, f = g.alloc_free(v)
    return (a - f,)


def _key_peak(g: _Greedy, v: int) -> tuple:
    a, f = g.alloc_free(v)
    return (a + g.p.node_extra[v], a - f)


def _key_frees(g: _Greedy, v: int) -> tuple:
    a, f = g.alloc_free(v)
    return (-f, a)


def _key_lookahead(g: _Greedy, v: int) -> tuple:
    a, f = g.alloc_free(v)
    best_next = 0
    for w in g.dag.succs[v]:
        if g.indeg[w] == 1:
            a2, f2 = g.alloc_free(w, also_done=v)
            best_next = min(best_next, a2 - f2)
    return (a - f + best_next, a - f)


_KEYS = {"growth": _key_growth, "peak": _key_peak, "frees": _key_frees,
         "lookahead": _key_lookahead}


def _noisy(key_of: Callable[[_Greedy, int], tuple], factor: Sequence[float]):
    def key(g: _Greedy, v: int) -> tuple:
        k = key_of(g, v)
        return (k[0] * factor[v], *k[1:])
    return key


def reversed_problem(problem: OrderProblem) -> OrderProblem:
    """The problem on the reversed graph (see module docstring)."""
    items = []
    for it in problem.items:
        touches = it.touches or it.defs
        items.append(Item(it.size, defs=touches, touches=it.defs, region=it.region,
                          live_in=it.live_out, live_out=it.live_in or not it.defs))
    return OrderProblem(problem.num_nodes, tuple((v, u) for u, v in problem.edges),
                        tuple(items), problem.node_extra, problem.region_sizes)


def dfs_order(problem: OrderProblem, dag: Dag, by_size: bool = True) -> list[int]:
    """Post-order from the sinks; with ``by_size``, XLA's DFS preference."""
    n = problem.num_nodes
    if by_size:
        own = [0] * n
        for it in problem.items:
            if it.region == ARENA and it.defs:
                own[min(it.defs)] += it.size
        extra_users = [0] * n
        total = [0] * n
        for v in dag.topo:
            extra_users[v] = max(0, len(dag.succs[v]) - 1) + sum(extra_users[u] for u in dag.preds[v])
            total[v] = own[v] + sum(total[u] for u in dag.preds[v])
        pref = {v: (-extra_users[v], -total[v], v) for v in range(n)}
    else:
        pref = {v: (v,) for v in range(n)}
    sinks = sorted((v for v in range(n) if not dag.succs[v]), key=pref.__getitem__)
    seen = [False] * n
    order: list[int] = []
    for root in sinks:
        if seen[root]:
            continue
        seen[root] = True
        stack = [(root, iter(sorted(dag.preds[root], key=pref.__getitem__)))]
        while stack:
            v, it = stack[-1]
            nxt = next((u for u in it if not seen[u]), None)
            if nxt is None:
                stack.pop()
                order.append(v)
            else:
                seen[nxt] = True
                stack.append((nxt, iter(sorted(dag.preds[nxt], key=pref.__getitem__))))
    return order


def list_schedule(problem: OrderProblem, rule: str, *, dag: Dag | None = None,
                  reference: Sequence[int] | None = None, noise: float = 0.0,
                  seed: int = 0) -> list[int]:
    """One order by ``rule`` (see RULES). Ties go to the node earlier in
    ``reference`` (default: a topological order). ``noise`` > 0 scales each
    node's first key by a random factor in [1-noise, 1+noise] and shuffles ties."""
    if rule not in RULES:
        raise ValueError(f"unknown list rule {rule!r}; choose from {', '.join(RULES)}")
    dag = dag or Dag.of(problem)
    if rule == "dfs" or rule == "post-order":
        return dfs_order(problem, dag, by_size=rule == "dfs")
    n = problem.num_nodes
    reference = list(reference if reference is not None else dag.topo)
    if rule.startswith("rev-"):
        order = list_schedule(reversed_problem(problem), rule[4:], reference=reference[::-1],
                              noise=noise, seed=seed)
        return order[::-1]
    rng = random.Random(seed)
    rank: list[float] = [0.0] * n
    for step, v in enumerate(reference):
        rank[v] = step + (rng.random() * n * noise if noise else 0.0)
    key_of = _KEYS[rule]
    if noise:
        key_of = _noisy(key_of, [1.0 + noise * (2 * rng.random() - 1) for _ in range(n)])
    return _Greedy(problem, dag).run(key_of, rank)


def list_schedules(problem: OrderProblem, *, rules: Sequence[str] = RULES,
                   reference: Sequence[int] | None = None, dag: Dag | None = None,
                   evaluator: Evaluator | None = None,
                   deadline: float | None = None) -> list[ListResult]:
    """Each rule's order and cost, in ``rules``' order, until ``deadline`` (a
    time.monotonic() value).  The first rule always runs."""
    dag = dag or Dag.of(problem)
    evaluator = evaluator or Evaluator(problem)
    found: list[ListResult] = []
    for rule in rules:
        if found and deadline is not None and time.monotonic() >= deadline:
            break
        order = list_schedule(problem, rule, dag=dag, reference=reference)
        found.append(ListResult(tuple(order), evaluator.cost(order), rule))
    if not found:
        raise ValueError("no list rule given")
    return found


def best_list_schedule(problem: OrderProblem, *, rules: Sequence[str] = RULES,
                       reference: Sequence[int] | None = None, dag: Dag | None = None,
                       evaluator: Evaluator | None = None,
                       deadline: float | None = None,
                       found_all: list | None = None) -> ListResult:
    """Run each rule (until ``deadline``, a time.monotonic() value) and keep the best.
    The first rule always runs.  ``found_all``: every rule's result is appended to it."""
    found = list_schedules(problem, rules=rules, reference=reference, dag=dag,
                           evaluator=evaluator, deadline=deadline)
    if found_all is not None:
        found_all.extend(found)
    return min(found, key=lambda r: r.cost)   # the first of equal costs, as before
