"""The threshold bound problems' node extras, before and after counting only
the inner units above the threshold (graph.model.ScheduleGraph.threshold_problem).

    python -m benchmarks.threshold_extras --models=grad_accum,lstm > benchmarks/results/threshold_extras.txt

Per example (CPU, planned at --time_limit_s without feed-back): the plan, its
bound, and per threshold whose min-cut differs, the min-cut with every inner
unit in the extras (as before) and with only those above the threshold.  A
min-cut above the plan is not a bound.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def main(argv=None) -> None:
    args = common.parser(__doc__, models="grad_accum,lstm", size="small",
                         time_limit_s=10.0).parse_args(argv)
    import examples
    import olla_jax
    from olla_jax.solve import bounds
    warnings.simplefilter("ignore")
    print(f"$ {common.command_line()}\n- date: {common.now()}\n- load: {common.load()}", flush=True)
    for name in common.model_names(args.models):
        step = examples.get(name, args.size)
        plan = olla_jax.plan(step.fn, *step.args, time_limit_s=args.time_limit_s, feed_back=False,
                             static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums)
        g = plan.graph
        print(f"{name}: planned {common.mib(plan.planned_temp_bytes)} MiB, "
              f"bound {common.mib(plan.lower_bound_bytes)} MiB", flush=True)
        base = g.order_problem_for_bound
        for c in sorted({0, *base.region_sizes}):
            new = g.threshold_problem(c, for_bound=True)
            old = dataclasses.replace(new, node_extra=base.node_extra)
            a = bounds.min_cut_bound(old, time_limit_s=60).value
            b = bounds.min_cut_bound(new, time_limit_s=60).value
            if a != b:
                print(f"  threshold {common.mib(c)} MiB: min-cut {common.mib(a)} MiB with every "
                      f"inner unit, {common.mib(b)} with those above it", flush=True)


if __name__ == "__main__":
    main()
