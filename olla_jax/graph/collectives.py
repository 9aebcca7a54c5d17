"""Asynchronous collectives of a sharded step: their start/done pairs and overlap.

On several devices XLA:GPU splits collectives into a start and a done
(all-reduce-start/done, all-gather-start/done, collective-permute-start/done,
async-start/done) and schedules compute between them so that communication
overlaps it; the buffers of a pair stay live from start to done (XLA's own
value dumps say so), so overlap costs memory.  Two ways to plan such a step:

* ``keep``: every instruction XLA put between a start and its done stays
  between them (extra precedence edges): the least memory at XLA's overlap.
* ``free``: no such edges: the least memory, overlap whatever the order gives.

* a fraction f: the pairs with the most overlapped FLOPs are kept until they
  hold f of XLA's overlapped FLOPs; the others are free (a point on the trade
  curve between the two).

* ``"hidden"``, or ``ExposedAtMost(seconds)``: overlap as a quantity (see
  ``olla_jax.graph.overlap``'s cost model): the order may re-time starts and
  dones as long as no more communication is exposed than XLA's order exposes
  (``"hidden"``) or than the given seconds.

Overlap is measured as the FLOPs of the entry instructions that run between
each start and its done, summed over pairs, and, where the device description
gives the cost model its rates, as exposed communication seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from olla_jax import flops as flops_lib

MODES = ("keep", "free", "hidden")


@dataclasses.dataclass(frozen=True)
class ExposedAtMost:
    """``collective_overlap`` as an allowance: at most ``seconds`` of exposed
    communication per step under ``olla_jax.graph.overlap``'s cost model."""
    seconds: float

    def __post_init__(self):
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) \
                or not self.seconds >= 0:
            raise ValueError(f"ExposedAtMost takes seconds >= 0, not {self.seconds!r}")


def keep_fraction(mode) -> float:
    """``"keep"`` -> 1.0, ``"free"`` -> 0.0, a number in [0, 1] as it is;
    ``"hidden"`` and ``ExposedAtMost`` keep no pair as it was (0.0): the
    allowance decides (``exposure_mode``)."""
    if mode in MODES:
        return 1.0 if mode == "keep" else 0.0
    if isinstance(mode, ExposedAtMost):
        return 0.0
    if isinstance(mode, (int, float)) and not isinstance(mode, bool) and 0.0 <= mode <= 1.0:
        return float(mode)
    raise ValueError(f"collective_overlap must be 'keep', 'free', 'hidden', a fraction in "
                     f"[0, 1] or collectives.ExposedAtMost(seconds), not {mode!r}")


def exposure_mode(mode) -> bool:
    """Whether ``mode`` plans against exposed communication time."""
    return mode == "hidden" or isinstance(mode, ExposedAtMost)


@dataclasses.dataclass(frozen=True)
class AsyncPair:
    start: str
    done: str
    kind: str   # the start's opcode, e.g. "all-reduce-start"


def async_pairs(module) -> list[AsyncPair]:
    """The start/done pairs of an ``xla.HloModuleProto``'s entry computation."""
    comps = {c.id: c for c in module.computations}
    entry = comps[module.entry_computation_id]
    by_id = {i.id: i for i in entry.instructions}
    pairs = []
    for instr in entry.instructions:
        if not instr.opcode.endswith("-done") or not instr.operand_ids:
            continue
        start = by_id.get(instr.operand_ids[0])
        if start is not None and start.opcode.endswith("-start"):
            pairs.append(AsyncPair(start.name, instr.name, start.opcode))
    return pairs


# XLA:GPU's collective combiners' size thresholds; 0 keeps one collective per array.
COMBINE_THRESHOLD_OPTIONS = tuple(f"xla_gpu_{kind}_combine_threshold_bytes"
                                  for kind in ("all_gather", "reduce_scatter", "all_reduce"))


def combined_pairs(module) -> list[AsyncPair]:
    """The async collectives XLA's combiners made of several arrays (a start
    with more than one operand).  Such a start waits for every operand: a
    reduce-scatter combined over all layers' gradients cannot start, in any
    order, before the last gradient exists, and holds all of them full-size
    until then."""
    comps = {c.id: c for c in module.computations}
    by_name = {i.name: i for i in comps[module.entry_computation_id].instructions}
    combinable = ("all-gather-start", "all-reduce-start", "async-start")  # async-start: reduce-scatter
    return [p for p in async_pairs(module)
            if p.kind in combinable and len(by_name[p.start].operand_ids) > 1]


def overlap_edges(nodes: Sequence[str], pairs: Sequence[AsyncPair]) -> tuple[tuple[int, int], ...]:
    """Edges keeping, for each pair, what runs between start and done in
    ``nodes`` (XLA's order) between them."""
    index = {name: k for k, name in enumerate(nodes)}
    edges = []
    for pair in pairs:
        s, d = index.get(pair.start), index.get(pair.done)
        if s is None or d is None or d <= s:
            continue
        for k in range(s + 1, d):
            edges += [(s, k), (k, d)]
    return tuple(edges)


def node_flops(module, nodes: Sequence[str]) -> list[int]:
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    by_name = {i.name: i for i in comps[module.entry_computation_id].instructions}
    return [flops_lib.instruction_flops(by_name[n], by_id, comps) if n in by_name else 0
            for n in nodes]


def overlapped_flops(order_names: Sequence[str], pairs: Sequence[AsyncPair],
                     weights: dict[str, int]) -> int:
    """FLOPs of what runs between each start and its done under an order."""
    position = {name: k for k, name in enumerate(order_names)}
    total = 0
    for pair in pairs:
        s, d = position.get(pair.start), position.get(pair.done)
        if s is None or d is None:
            continue
        total += sum(weights.get(n, 0) for n in order_names[s + 1:d])
    return total


def pairs_to_keep(nodes: Sequence[str], pairs: Sequence[AsyncPair], weights: dict[str, int],
                  fraction: float) -> list[AsyncPair]:
    """The pairs kept at ``fraction`` of XLA's overlap (see module doc)."""
    if fraction >= 1.0:
        return list(pairs)
    each = sorted(((overlapped_flops(nodes, [p], weights), k) for k, p in enumerate(pairs)),
                  reverse=True)
    total, kept, held = sum(f for f, _ in each), [], 0
    for f, k in each:
        if held >= fraction * total or f == 0:
            break
        kept.append(pairs[k])
        held += f
    return kept


def sync_starts(module) -> frozenset[str]:
    """Entry starts XLA:GPU made synchronous (``"is_sync":true`` in their
    collective backend config: it found nothing to overlap them with); their
    thunk runs the whole collective on the compute stream, with no done thunk."""
    entry = next(c for c in module.computations if c.id == module.entry_computation_id)
    def config(i) -> str:
        c = i.backend_config
        return (c.decode(errors="replace") if isinstance(c, bytes) else c).replace(" ", "")
    return frozenset(i.name for i in entry.instructions
                     if i.opcode.endswith("-start") and '"is_sync":true' in config(i))
