"""The lower bound per example: XLA's temp, the planned temp and the proven bound,
with the bound's parts (min-cut over the threshold problems; graph.resident's
floor) computed again on the planned graph.

Usage: python benchmarks/bounds_examples.py [--size tiny] [--time_limit_s 3] [NAME ...]
Names: the examples, plus "scan" and "conv" (the steps of tests/graph/test_resident.py).
Planned without feed-back (nothing is run).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "graph"))   # test_resident.py: the scan and conv steps

import examples  # noqa: E402
import olla_jax  # noqa: E402
from olla_jax.graph import resident  # noqa: E402
from olla_jax.solve import bounds  # noqa: E402


def _step(name: str, size: str):
    if name in ("scan", "conv"):
        import test_resident as t
        if name == "scan":
            return t.scan_step, t.scan_args(), (), (0,)
        return t.conv_step, t.conv_args(), (), ()
    step = examples.get(name, size)
    return step.fn, step.args, step.static_argnums, step.donate_argnums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--time_limit_s", type=float, default=3.0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"{'step':10s} {'xla':>12s} {'planned':>12s} {'bound':>12s} {'min-cut':>12s} "
          f"{'floor':>12s} {'floor s':>8s}")
    for name in args.names or [*examples.names(), "scan", "conv"]:
        fn, step_args, static, donate = _step(name, args.size)
        plan = olla_jax.plan(fn, *step_args, static_argnums=static, donate_argnums=donate,
                             time_limit_s=args.time_limit_s, feed_back=False)
        graph = plan.graph
        cut = floor = seconds = 0
        if graph is not None:
            cut = max(bounds.min_cut_bound(p, time_limit_s=10).value
                      for p in graph.bound_problems())
            t0 = time.perf_counter()
            floor = resident.floor_bound(graph).value
            seconds = time.perf_counter() - t0
        print(f"{name:10s} {plan.xla_best_temp_bytes:>12,} {plan.planned_temp_bytes:>12,} "
              f"{plan.lower_bound_bytes:>12,} {cut:>12,} {floor:>12,} {seconds:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
