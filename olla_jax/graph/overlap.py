"""Collective overlap as a quantity: a stated cost model, exposed communication
time under an order, and re-timing starts and dones to hide collectives.

The cost model (all figures per device, from the device description):

* an instruction takes ``max(FLOPs / peak FLOP/s, bytes accessed / memory
  bandwidth)`` (a roofline).  FLOPs are ``olla_jax.flops``'s count; bytes
  accessed are its operands' and result's sizes; the peak is the tensor-core
  rate of its result's element type (f32 dots as TF32, as XLA:GPU runs them by
  default) when it contains a dot, a convolution or a GEMM custom call, the
  vector rate (SMs x FP32 lanes x 2 x clock) otherwise.  A while loop's body
  counts once, as in ``olla_jax.flops``.
* a collective moves, over one direction of the device's interconnect, what a
  ring algorithm moves per device over a group of n: all-gather (n-1)/n of its
  output, reduce-scatter (n-1)/n of its input, all-reduce 2(n-1)/n of its
  input, all-to-all (n-1)/n, collective-permute all of it.  For all-gather and
  reduce-scatter n is read from the shapes (output/input); for the others it
  is the step's device count.  Other async pairs (host copies, async compute)
  cost no link time.  No fixed latency is added: a compile with one collective
  per array (``olla_jax.plan``'s uncombined baseline: two to four times as many
  collectives as XLA's combined ones on the examples) pays no more here for
  its count, while NCCL pays some microseconds per collective.
* one link, first come first served: collectives run one at a time in the
  order of their starts, each at the full bandwidth; compute runs one
  instruction at a time beside it.  A done waits until its collective has
  finished; the time the compute stream waits there is that collective's
  exposed time.  With one collective in flight at a time this is
  ``max(0, comm time - compute time between its start and done)``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

from olla_jax import flops as flops_lib
from olla_jax.errors import OllaJaxError

# Per direction per NVLink link: 50 GB/s bidirectional for NVLink 3 (A100,
# 12 links: 600 GB/s) and NVLink 4 (H100 SXM, 18 links: 900 GB/s), NVIDIA's
# A100 and H100 datasheets (and the H100 whitepaper's "NVLink: 18 links, 900
# GB/s total bandwidth").  Per GPU one way: 300 GB/s (A100), 450 GB/s (H100).
NVLINK_LINK_BYTES_PER_S_ONE_WAY = 25e9

_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 2, 8: 4, 9: 8, 10: 2, 11: 4, 12: 8, 15: 8,
          16: 2, 18: 16, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1, 24: 1, 25: 1}   # xla.PrimitiveType
_F32, _TF32_KEY = 11, 11
_NO_COST = frozenset({"parameter", "constant", "bitcast", "get-tuple-element", "tuple",
                      "after-all", "partition-id", "replica-id", "optimization-barrier"})
_RING = {"all-gather": "out", "reduce-scatter": "in", "all-reduce": "in2", "all-to-all": "in",
         "ragged-all-to-all": "in", "collective-permute": "all"}


class DeviceDescriptionError(OllaJaxError, ValueError):
    """A device description lacks what the cost model needs."""


@dataclasses.dataclass(frozen=True)
class DeviceCost:
    """Peak rates of one device (bytes and FLOPs per second)."""
    name: str
    vector_flops: float                      # FP32 FMA lanes x 2 x clock
    matrix_flops: dict[int, float]           # dense tensor-core rate by xla.PrimitiveType
    memory_bandwidth: float
    link_bandwidth: float                    # interconnect, one direction, per device


def device_cost(target_text: str, link_bandwidth: float | None = None) -> DeviceCost:
    """The cost model's rates from a ``GpuTargetConfigProto`` text (``targets/*.txtpb``).

    ``link_bandwidth``: bytes/s one way per device; by default NVLink's
    ``active_links`` x ``NVLINK_LINK_BYTES_PER_S_ONE_WAY``."""
    def number(field: str) -> float:
        m = re.search(rf"\b{field}:\s*([0-9.eE+]+)", target_text)
        if m is None:
            raise DeviceDescriptionError(f"the device description has no {field}; the overlap "
                                         "cost model needs it (see olla_jax/capture/targets)")
        return float(m.group(1))
    name = re.search(r'\bname:\s*"([^"]*)"', target_text)
    cores, lanes, clock = number("core_count"), number("fpus_per_core"), number("clock_rate_ghz")
    matrix = {}
    for key, ghz, units, ops in re.findall(
            r"key:\s*(\d+)\s*value\s*\{\s*clock_rate_ghz:\s*([0-9.]+)\s*units_per_core:\s*(\d+)"
            r"\s*ops_per_clock:\s*(\d+)", target_text):
        matrix[int(key)] = cores * int(units) * float(ghz) * 1e9 * int(ops) * 2
    if link_bandwidth is None:
        links = re.search(r"active_links:\s*(\d+)", target_text)
        if links is None:
            raise DeviceDescriptionError(
                "the device description has no device_interconnect_info.active_links; pass the "
                "interconnect bandwidth (bytes/s one way per device) explicitly")
        link_bandwidth = int(links.group(1)) * NVLINK_LINK_BYTES_PER_S_ONE_WAY
    return DeviceCost(name=name.group(1) if name else "?",
                      vector_flops=cores * lanes * 2 * clock * 1e9, matrix_flops=matrix,
                      memory_bandwidth=number("memory_bandwidth"),
                      link_bandwidth=float(link_bandwidth))


def shape_bytes(shape) -> int:
    if shape.tuple_shapes:
        return sum(shape_bytes(s) for s in shape.tuple_shapes)
    if shape.element_type in (13, 14, 17):   # tuple, opaque, token
        return 0
    return flops_lib.elements(shape) * _BYTES.get(shape.element_type, 4)


def _matrix_type(instr, comps) -> int | None:
    """The element type whose tensor-core rate applies, None for vector work."""
    if instr.opcode in ("dot", "convolution") or (
            instr.opcode == "custom-call" and any(
                k in instr.custom_call_target.lower() for k in ("gemm", "matmul", "conv"))):
        shape = instr.shape.tuple_shapes[0] if instr.shape.tuple_shapes else instr.shape
        return shape.element_type
    for c in instr.called_computation_ids:
        for inner in comps[c].instructions if c in comps else ():
            found = _matrix_type(inner, comps)
            if found is not None:
                return found
    return None


def instruction_seconds(module, names: Sequence[str], cost: DeviceCost) -> list[float]:
    """Per entry instruction named in ``names``, its roofline time (0 for starts,
    dones and instructions that move no data)."""
    comps = {c.id: c for c in module.computations}
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    by_name = {i.name: i for i in comps[module.entry_computation_id].instructions}
    out = []
    for name in names:
        instr = by_name.get(name)
        if instr is None or instr.opcode in _NO_COST or instr.opcode.endswith(("-start", "-done")):
            out.append(0.0)
            continue
        flops = flops_lib.instruction_flops(instr, by_id, comps)
        moved = shape_bytes(instr.shape) + sum(shape_bytes(by_id[o].shape)
                                               for o in instr.operand_ids if o in by_id)
        kind = _matrix_type(instr, comps)
        peak = cost.vector_flops
        if kind is not None:
            peak = cost.matrix_flops.get(_TF32_KEY if kind == _F32 else kind, cost.vector_flops)
        out.append(max(flops / peak, moved / cost.memory_bandwidth))
    return out


@dataclasses.dataclass(frozen=True)
class Collective:
    """One async pair as the cost model sees it (``start``/``done``: node indices)."""
    start: int
    done: int
    kind: str            # "all-gather", "reduce-scatter", ..., or the start's opcode
    group: int           # devices taking part
    link_bytes: float    # bytes this device sends one way
    seconds: float       # link_bytes / link bandwidth


def link_bytes(kind: str, in_bytes: int, out_bytes: int, group: int) -> float:
    """Bytes one device sends under a ring algorithm (module doc); 0 for non-collectives."""
    how = _RING.get(kind)
    if how is None or group <= 1:
        return 0.0
    share = (group - 1) / group
    return {"out": share * out_bytes, "in": share * in_bytes, "in2": 2 * share * in_bytes,
            "all": float(in_bytes)}[how]


def collective_kind(start, comps) -> str:
    if start.opcode == "async-start":
        for c in start.called_computation_ids:
            comp = comps.get(c)
            if comp is not None:
                root = next((i for i in comp.instructions if i.id == comp.root_id), None)
                if root is not None:
                    return root.opcode.removesuffix("-start")
    return start.opcode.removesuffix("-start")


def collectives(module, pairs, node_index: dict[str, int], cost: DeviceCost,
                num_devices: int) -> list[Collective]:
    """The cost model's view of ``collectives.async_pairs(module)``."""
    comps = {c.id: c for c in module.computations}
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    by_name = {i.name: i for i in comps[module.entry_computation_id].instructions}
    out = []
    for pair in pairs:
        if pair.start not in node_index or pair.done not in node_index:
            continue
        start, done = by_name[pair.start], by_name[pair.done]
        kind = collective_kind(start, comps)
        in_bytes = sum(shape_bytes(by_id[o].shape) for o in start.operand_ids if o in by_id)
        out_bytes = shape_bytes(done.shape)
        group = num_devices
        if kind == "all-gather" and in_bytes:
            group = round(out_bytes / in_bytes)
        elif kind == "reduce-scatter" and out_bytes:
            group = round(in_bytes / out_bytes)
        moved = link_bytes(kind, in_bytes, out_bytes, group)
        out.append(Collective(start=node_index[pair.start], done=node_index[pair.done], kind=kind,
                              group=group, link_bytes=moved, seconds=moved / cost.link_bandwidth))
    return out


@dataclasses.dataclass(frozen=True)
class Exposure:
    """Exposed communication of one order (seconds)."""
    exposed_s: float                 # compute stream waiting at dones, all collectives
    per_collective: tuple[float, ...]  # in the order of the collectives given
    compute_s: float                 # the compute stream's own work
    comm_s: float                    # the link's work

    @property
    def step_s(self) -> float:
        return self.compute_s + self.exposed_s


def exposure(order: Sequence[int], node_seconds: Sequence[float],
             colls: Sequence[Collective]) -> Exposure:
    """Simulate ``order`` under the module doc's model."""
    return _simulate(order, node_seconds, colls)[0]


_TABLES: list = []   # [(colls, len(node_seconds), tables)] of the last tuple of collectives
SNAPSHOT_EVERY = 128  # retime: the simulation's state kept every so many steps


def _tables(node_seconds: Sequence[float], colls: Sequence[Collective]):
    """Per node -1 or the collective it starts / is the done of, and each
    collective's seconds (lists, not dicts: this runs for every candidate move
    of ``retime``); the last collectives' kept."""
    if _TABLES and _TABLES[0][0] is colls and _TABLES[0][1] == len(node_seconds):
        return _TABLES[0][2]
    size = max(len(node_seconds), 1 + max((max(c.start, c.done) for c in colls), default=-1))
    start_of = [-1] * size
    done_of = [-1] * size
    for k, c in enumerate(colls):
        start_of[c.start] = k
        done_of[c.done] = k
    tables = (start_of, done_of, [c.seconds for c in colls], sum(c.seconds for c in colls))
    if isinstance(colls, tuple):   # kept only when they cannot change in place
        _TABLES[:] = [(colls, len(node_seconds), tables)]
    return tables


def _simulate(order: Sequence[int], node_seconds: Sequence[float], colls: Sequence[Collective],
              lo: int = 0, state=None, every: int = 0):
    """``exposure`` of ``order``, its steps from ``lo`` on simulated from
    ``state`` (clock, link, compute, finish, waited: the state before step
    ``lo``, as ``every`` > 0 keeps it at each multiple of ``every``); (Exposure,
    the states kept from ``lo`` on)."""
    start_of, done_of, seconds, comm = _tables(node_seconds, colls)
    if state is None:
        clock = link = compute = 0.0
        finish = [0.0] * len(colls)
        waited = [0.0] * len(colls)
    else:
        clock, link, compute = state[0], state[1], state[2]
        finish, waited = list(state[3]), list(state[4])
    kept = []
    step = every or max(len(order) - lo, 1)
    for chunk in range(lo, len(order), step):   # lo: a multiple of every
        if every:
            kept.append((clock, link, compute, finish[:], waited[:]))
        for node in order[chunk:chunk + step]:
            k = start_of[node]
            if k >= 0:
                link = (clock if clock > link else link) + seconds[k]
                finish[k] = link
            k = done_of[node]
            if k >= 0:
                if finish[k] > clock:
                    waited[k] = finish[k] - clock
                    clock = finish[k]
                continue
            t = node_seconds[node]
            clock += t
            compute += t
    return Exposure(exposed_s=sum(waited), per_collective=tuple(waited), compute_s=compute,
                    comm_s=comm), kept


@dataclasses.dataclass(frozen=True)
class Retimed:
    order: tuple[int, ...]
    exposure: Exposure
    memory: int          # memory_cost(order)
    moves: int           # starts moved earlier / dones moved later


EPS = 1e-12


def _moved(order: list[int], src: int, dst: int) -> list[int]:
    """``order`` with the node at position ``src`` moved to position ``dst``."""
    node = order[src]
    rest = order[:src] + order[src + 1:]
    return rest[:dst] + [node] + rest[dst:]


# Which end of a collective to pull in: an all-gather's output (the gathered
# array) is allocated at its start, so its start goes late; a reduce-scatter's
# or all-reduce's operand (a full-size gradient) waits until its done, so its
# start goes right after the operand exists and its done early.
LATE_START = frozenset({"all-gather"})
EARLY_PAIR = frozenset({"reduce-scatter", "all-reduce"})


def _neighbours(edges: Sequence[tuple[int, int]]) -> tuple[dict[int, list[int]],
                                                            dict[int, list[int]]]:
    """(predecessors, successors) of each node that has any, from ``edges``."""
    preds: dict[int, list[int]] = {}
    succs: dict[int, list[int]] = {}
    for u, v in edges:
        succs.setdefault(u, []).append(v)
        preds.setdefault(v, []).append(u)
    return preds, succs


def just_in_time(order: Sequence[int], node_seconds: Sequence[float],
                 colls: Sequence[Collective], edges: Sequence[tuple[int, int]],
                 slack: float = 1.0) -> tuple[int, ...]:
    """``order`` with each collective's pair drawn in to the compute that hides
    it and no further: an all-gather is done just before its first reader and
    starts ``slack`` x its link time of compute before its done (no earlier
    than it was, never before what it depends on);
    a reduce-scatter or all-reduce starts right after its operands and is done
    after ``slack`` x its link time of compute (never after what depends on it).
    Less memory than starting early (what XLA's latency-hiding scheduler does,
    up to its memory limit); exposure is not checked here (the link is shared,
    first come first served: see ``exposure``).  Every move keeps ``edges``."""
    order = list(order)
    preds, succs = _neighbours(edges)
    pos = {n: k for k, n in enumerate(order)}   # kept up to date: each move shifts a span

    def repos(lo: int, hi: int) -> None:
        for k in range(lo, hi + 1):
            pos[order[k]] = k

    for c in sorted(colls, key=lambda c: order.index(c.done)):
        if c.seconds <= 0 or (c.kind not in LATE_START and c.kind not in EARLY_PAIR):
            continue
        need = slack * c.seconds
        s, d = pos[c.start], pos[c.done]
        if c.kind in LATE_START:
            # the done first goes right before its first reader (XLA may have
            # put it, and so the gathered array, long before it is read)
            first = min((pos[x] for x in succs.get(c.done, ())), default=len(order))
            if first - 1 > d:
                order.insert(first - 1, order.pop(d))
                repos(d, first - 1)
                s, d = pos[c.start], pos[c.done]
            floor = max((pos[p] for p in preds.get(c.start, ())), default=-1)
            ceiling = min(pos[x] for x in succs.get(c.start, [c.done]))
            k, acc = d - 1, 0.0
            while k > max(s, floor) and acc < need:
                acc += node_seconds[order[k]]
                k -= 1
            at = min(k + 1, ceiling)   # the start goes right before order[at]
            if at > s + 1:
                order.insert(at, c.start)
                del order[s]
                repos(s, at - 1)
            continue
        floor = max((pos[p] for p in preds.get(c.start, ())), default=-1)
        if floor + 1 < s:
            order.insert(floor + 1, order.pop(s))
            repos(floor + 1, s)
        s, d = pos[c.start], pos[c.done]
        ceiling = min([pos[x] for x in succs.get(c.done, ()) if x != c.done] or [len(order)])
        k, acc = s + 1, 0.0
        while k < min(d, ceiling) and acc < need:
            acc += node_seconds[order[k]]
            k += 1
        floor_done = max((pos[p] for p in preds.get(c.done, ())), default=s)
        k = max(k, floor_done + 1)
        if k < d:
            order.insert(k, order.pop(d))
            repos(k, d)
    return tuple(order)


def retime(order: Sequence[int], node_seconds: Sequence[float], colls: Sequence[Collective],
           edges: Sequence[tuple[int, int]], allowance_s: float,
           memory_cost: Callable[[Sequence[int]], int], max_moves: int = 10_000,
           deadline: float | None = None) -> Retimed:
    """Move starts earlier and dones later until at most ``allowance_s`` of
    communication is exposed, or nothing more helps.

    Each round takes the first collective (by its done) that still waits and
    tries: its done later, past just enough compute that does not depend on it
    to hide it (what depends on the done moves along after it, in its order),
    its start earlier likewise (what it depends on moves along before it), and
    both; of those that lower the exposed time, the one with the least
    ``memory_cost`` wins.  Every move keeps ``edges``."""
    order = list(order)
    preds, succs = _neighbours(edges)
    every = SNAPSHOT_EVERY
    # the simulation's state every ``every`` steps of ``order``: a candidate is
    # simulated from the last state before the first step it changes
    current, kept = _simulate(order, node_seconds, colls, every=every)
    memory = memory_cost(order)
    stuck: set[int] = set()
    moves = 0

    def draw_in(o: list[int], node: int, need: float, deps: dict[int, list[int]]):
        # Nodes after ``node`` that do not depend on it (``deps``: what each
        # node reads from) move before it, ``need`` seconds of them; ``node``
        # and its dependents keep their order.  None when nothing moves.
        # (with the steps it changes: o[at:k + 1])
        at = o.index(node)
        cone, ahead, acc, k = {node}, [], 0.0, at
        while k + 1 < len(o) and acc < need:
            k += 1
            n = o[k]
            if not cone.isdisjoint(deps.get(n, ())):
                cone.add(n)
            else:
                ahead.append(n)
                acc += node_seconds[n]
        if not ahead:
            return None, at, k
        return o[:at] + ahead + [n for n in o[at:k + 1] if n in cone] + o[k + 1:], at, k

    def later_done(o: list[int], c: Collective, need: float) -> tuple[list[int], int]:
        # compute after the done runs inside the pair; (the order, its first changed step)
        moved, at, _ = draw_in(o, c.done, need, preds)
        return (o, len(o)) if moved is None else (moved, at)

    def earlier_start(o: list[int], c: Collective, need: float) -> tuple[list[int], int]:
        # the mirror image: compute before the start that it does not depend on moves after it
        moved, _, k = draw_in(o[::-1], c.start, need, succs)
        return (o, len(o)) if moved is None else (moved[::-1], len(o) - 1 - k)

    import time
    while current.exposed_s > allowance_s + EPS and moves < max_moves and (
            deadline is None or time.monotonic() < deadline):
        pos = {n: k for k, n in enumerate(order)}
        waiting = [k for k, w in enumerate(current.per_collective) if w > EPS and k not in stuck]
        if not waiting:
            break
        k = min(waiting, key=lambda j: pos[colls[j].done])
        c, need = colls[k], current.per_collective[k]
        tries = []
        late, at_late = later_done(order, c, need)
        early, at_early = earlier_start(order, c, need)
        both, at_both = later_done(early, c, need)
        for candidate, at in ((late, at_late), (early, at_early),
                              (both, min(at_early, at_both))):
            if candidate is order:
                continue
            lo = at // every
            e, more = _simulate(candidate, node_seconds, colls, lo * every, kept[lo], every)
            if e.exposed_s < current.exposed_s - EPS:
                tries.append((memory_cost(candidate), e.exposed_s, candidate, e,
                              kept[:lo] + more))
        if not tries:
            stuck.add(k)
            continue
        memory, _, order, current, kept = min(tries, key=lambda t: (t[0], t[1]))
        moves += 1
    return Retimed(order=tuple(order), exposure=current, memory=memory, moves=moves)


# ---- on a scheduling graph ------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StepModel:
    """The cost model of one sharded step's graph: per node its seconds, the
    collectives, and what XLA's own order exposes.  ``reference``: what XLA's
    order of the step as compiled by default exposes, when the graph is of
    another compile of it (one collective per array, say); None when the same."""
    cost: DeviceCost
    node_seconds: tuple[float, ...]
    collectives: tuple[Collective, ...]
    xla: Exposure
    reference: Exposure | None = None

    def exposure(self, order: Sequence[int]) -> Exposure:
        return exposure(order, self.node_seconds, self.collectives)

    def allowance(self, mode) -> float:
        """Seconds of exposed communication ``mode`` allows ("hidden": what XLA's
        order of the default compile exposes)."""
        seconds = getattr(mode, "seconds", None)
        if seconds is not None:
            return float(seconds)
        return (self.reference or self.xla).exposed_s


def module_exposure(module, cost: DeviceCost, num_devices: int) -> Exposure:
    """What XLA's own order of ``module`` (its entry schedule) exposes; no graph needed."""
    from olla_jax.graph import collectives as collectives_lib
    comps = {c.id: c for c in module.computations}
    entry = module.entry_computation_id
    by_id = {i.id: i for i in comps[entry].instructions}
    names = [by_id[i].name for i in module.schedule.sequences[entry].instruction_ids]
    index = {n: k for k, n in enumerate(names)}
    seconds = instruction_seconds(module, names, cost)
    colls = collectives(module, collectives_lib.async_pairs(module), index, cost, num_devices)
    return exposure(range(len(names)), seconds, colls)


def step_model(module, graph, pairs, cost: DeviceCost, num_devices: int) -> StepModel:
    """``StepModel`` of a ``model.ScheduleGraph`` built from ``module``."""
    seconds = tuple(instruction_seconds(module, graph.nodes, cost))
    colls = tuple(collectives(module, pairs, graph.node_index, cost, num_devices))
    return StepModel(cost=cost, node_seconds=seconds, collectives=colls,
                     xla=exposure(graph.xla_order, seconds, colls))


def order_problem_cost(problem, order: Sequence[int]) -> int:
    from olla_jax.solve import problem as sp
    return sp.order_cost(problem, order)
