"""Is there room below XLA's plan of a big step, and whose is the gap: the search's or the bound's?

    python -m benchmarks.scale_room /tmp/captures/transformer-80-<key>.pkl --bound_s=600

On a stored capture (``benchmarks/scale.py --capture_dir``), no order search:
XLA's temp (its order and placement); the live-bytes floor of XLA's own order
(``place_check.live_bytes_bound`` of its placement problem: no placement of
that order goes below it) and its cost under the plain order objective; then
the min-cut lower bound of every threshold problem (``bounds.min_cut_bound``,
each a valid bound on any order's arena, see ``ScheduleGraph.bound_problems``)
with ``bound_s`` seconds in all, largest threshold first, from XLA's order.
XLA's floor close to the bound says XLA's order is already as good as any
(the room left is its placement's, XLA temp - XLA's floor); a bound well below
XLA's floor with every min-cut complete says an order below it may exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Room:
    """Bytes: XLA's temp, the live-bytes floor of XLA's order, the bound proven
    (every threshold's min-cut that ran), and how many thresholds ran to the end."""
    xla_temp: int
    xla_floor: int
    bound: int
    complete: int
    thresholds: int


def room(capture, *, bound_s: float, alignment: int, say=print) -> Room:
    """The figures of the module docstring for one capture (``say``: each line)."""
    from olla_jax.graph import model
    from olla_jax.solve import bounds, place_check
    from olla_jax.solve.evaluate import Evaluator
    t0 = time.monotonic()
    graph = model.build(capture.hlo_proto, capture.values_text, capture.live_range_text,
                        alignment=alignment)
    temp, mib = capture.memory.temp, 2**20
    say(f"graph: {len(graph.nodes)} nodes, {len(graph.units)} units in "
        f"{time.monotonic() - t0:.1f} s; XLA temp {temp / mib:.2f} MiB")
    xla = graph.xla_order
    plain = graph.order_problem()
    floor = place_check.live_bytes_bound(graph.placement_problem(xla)[0])
    say(f"XLA's order: live-bytes floor of its placement {floor / mib:.2f} MiB, plain "
        f"objective {Evaluator(plain).cost(xla) / mib:.2f} MiB (XLA's placement is "
        f"{(temp - floor) / mib:.2f} MiB above its floor)")
    thresholds = sorted({0, *plain.region_sizes})
    thresholds = [thresholds[-1], *thresholds[:-1]]
    end = time.monotonic() + bound_s
    value = complete = 0
    for k, cap in enumerate(thresholds):
        left = end - time.monotonic()
        if left <= 0:
            say(f"time limit: {len(thresholds) - k} of {len(thresholds)} thresholds not solved")
            break
        t = time.monotonic()
        found = bounds.min_cut_bound(graph.threshold_problem(cap, for_bound=True),
                                     time_limit_s=left / (len(thresholds) - k), orders=[xla],
                                     floor=value)
        value, complete = max(value, found.value), complete + found.complete
        say(f"threshold {cap}: min-cut {found.value / mib:.2f} MiB "
            f"({'complete' if found.complete else 'cut by time'}, {found.flows} flows, "
            f"{time.monotonic() - t:.1f} s); bound so far {value / mib:.2f} MiB")
    say(f"bound {value / mib:.2f} MiB; XLA temp {temp / mib:.2f}, XLA's order's floor "
        f"{floor / mib:.2f}: room below XLA's plan at most {(temp - value) / temp:.2%} of it, "
        f"of which its placement's {(temp - floor) / temp:.2%}")
    return Room(temp, floor, value, complete, len(thresholds))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("capture")
    p.add_argument("--bound_s", type=float, default=300.0, help="for all the threshold min-cuts")
    p.add_argument("--alignment", type=int, default=256, help="the backend's (gpu: 256, cpu: 64)")
    args = p.parse_args(argv)
    with open(args.capture, "rb") as f:
        caps = pickle.load(f)["captures"]
    room(min(caps, key=lambda c: c.memory.temp), bound_s=args.bound_s,
         alignment=args.alignment, say=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
