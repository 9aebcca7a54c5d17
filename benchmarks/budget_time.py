"""Wall time of the recomputation search against its limit (the planner's part only).

    python -m benchmarks.budget_time --models=lm_adamw,vit,donated,densenet \
        --fractions=0.75,0 --time_limit_s=10 --out=benchmarks/results/budget_time_cpu

Per model: the order-and-placement plan (``--time_limit_s``), then
``budget.recompute_to_budget`` for each budget (fraction x XLA's best temp;
0: as little as it reaches) with its feed-back (check, rewrite, verification:
not bounded by the limit, reported apart by the library) left out, so the
wall time measured is the planner's part the limit bounds: candidates, the
search, the working-set bound.  Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, size="small", models="lm_adamw,vit,donated,densenet",
                      time_limit_s=10.0, out="benchmarks/results/budget_time_cpu")
    p.add_argument("--fractions", default="0.75,0")
    return p.parse_args(argv)


def run_one(name: str, args) -> list[dict]:
    import warnings
    import examples
    from olla_jax import budget
    from olla_jax.budget import feed_back

    step = examples.get(name, args.size)
    base = common.plan_quietly(step, time_limit_s=args.time_limit_s)
    fixed = base.argument_bytes + base.output_bytes - base.alias_bytes
    seen = {}
    real = feed_back.feed_back_plan

    def found_only(result, found, *, search_s=0.0, **kw):
        seen.update(temp=found.temp_bytes, how=found.how)
        return result
    rows = []
    feed_back.feed_back_plan = found_only
    try:
        for fraction in [float(f) for f in args.fractions.split(",")]:
            seen.clear()
            target = int(fraction * base.xla_best_temp_bytes)
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                budget.recompute_to_budget(base, fixed + max(target, 1), args=step.args,
                                           static_argnums=step.static_argnums,
                                           time_limit_s=args.time_limit_s, measure_time=False)
            wall = time.monotonic() - t0
            rows.append({"model": name, "fraction": fraction, "limit": args.time_limit_s,
                         "wall": wall, "xla_best": base.xla_best_temp_bytes,
                         "order_placement": base.runs_temp_bytes, "target": target,
                         "temp": seen.get("temp"), "how": seen.get("how"), "load": load})
    finally:
        feed_back.feed_back_plan = real
    return rows


def main(argv=None):
    args = parse_args(argv)
    rows = [r for name in common.model_names(args.models) for r in run_one(name, args)]
    lines = common.header("olla_jax recomputation search: wall time against its limit (cpu)",
                          {"load average at end": common.load()})
    lines += ["Temps in MiB.  wall: recompute_to_budget without its feed-back (the part the "
              "limit bounds).  The machine is shared: load is the 1-minute average at each start.",
              ""]
    cols = ["model", "fraction", "limit s", "wall s", "wall/limit", "order+placement", "budget temp",
            "found", "how", "load"]
    lines += common.table(cols, [[r["model"], f"{r['fraction']:g}", f"{r['limit']:g}",
                                  f"{r['wall']:.2f}", f"{r['wall'] / r['limit']:.3f}",
                                  common.mib(r["order_placement"]), common.mib(r["target"]),
                                  common.mib(r["temp"]), r["how"] or "-", f"{r['load']:.1f}"]
                                 for r in rows], right={1, 2, 3, 4, 5, 6, 7, 9})
    worst = max(r["wall"] / r["limit"] for r in rows)
    lines += ["", f"- most wall/limit: {worst:.3f}"]
    common.write_lines_and_rows(args.out, lines, rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
