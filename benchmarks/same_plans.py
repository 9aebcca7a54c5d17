"""Plan a few small CPU examples at a fixed seed and time limit; print the planned bytes.

    python -m benchmarks.same_plans --models=mlp,cnn_adam,lstm --size=tiny \
        --time_limit_s=2 --seed=0 --repeats=2 --out=benchmarks/results/same_plans/NAME

Run on two trees (each with PYTHONPATH set to its own root) to see whether a
refactor changed what the planner finds: same planned temp bytes at the same
seed and limit, or not.  Each example is planned ``--repeats`` times in this
process, so a difference between trees can be told from the run-to-run
variation of one tree (the search stops on wall-clock deadlines: see the
README of the results).  No feed-back (nothing is rewritten or run): only the
planner's figures.  Writes ``<out>.json`` and ``<out>.md`` when ``--out`` is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def parse_args(argv=None):
    p = common.parser(__doc__, models="mlp,cnn_adam,lstm", size="tiny", time_limit_s=2.0,
                      out=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="plans per example, in this process")
    p.add_argument("--render", default=None, help="only rewrite the markdown of a run's <out>.json")
    return p.parse_args(argv)


def _tree() -> dict:
    """Which olla_jax this is: its folder and that folder's git commit (and whether dirty)."""
    import olla_jax
    root = os.path.dirname(os.path.dirname(os.path.abspath(olla_jax.__file__)))

    def git(*a):
        try:
            return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"olla_jax": root, "commit": git("rev-parse", "--short", "HEAD"),
            "tracked_changes": bool(dirty)}


def plan_one(name: str, args) -> dict:
    import examples

    step = examples.get(name, args.size)
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        p = common.plan_quietly(step, backend="cpu", time_limit_s=args.time_limit_s,
                                seed=args.seed, feed_back=False)
        runs.append({"planned_temp_bytes": int(p.planned_temp_bytes),
                     "lower_bound_bytes": int(p.lower_bound_bytes),
                     "xla_best_temp_bytes": int(p.xla_best_temp_bytes),
                     "engine": p.engine, "source": p.source,
                     "seconds": round(time.perf_counter() - t0, 2)})
    planned = {r["planned_temp_bytes"] for r in runs}
    return {"model": name, "runs": runs, "same_across_repeats": len(planned) == 1}


def markdown(report: dict) -> str:
    lines = common.header("Same plans: planned temp bytes at a fixed seed and limit", {
        "tree": f"{report['tree']['olla_jax']} at {report['tree']['commit']}"
                + (" (with uncommitted changes)" if report["tree"]["tracked_changes"] else ""),
        "settings": f"size {report['size']}, time_limit_s {report['time_limit_s']}, "
                    f"seed {report['seed']}, repeats {report['repeats']}, backend cpu, "
                    "feed_back=False",
        "load average (1/5/15 min)": f"before {report['load_before']}, after "
                                     f"{report['load_after']} (a shared machine)",
    }, command=report["command"], machine_info=report["machine"], date=report["date"])
    lines += ["| model | run | planned temp | lower bound | XLA best temp | engine | source | s |",
              "|---|---|---:|---:|---:|---|---|---:|"]
    for row in report["rows"]:
        for k, r in enumerate(row["runs"]):
            lines.append(f"| {row['model']} | {k + 1} | {r['planned_temp_bytes']:,} | "
                         f"{r['lower_bound_bytes']:,} | {r['xla_best_temp_bytes']:,} | "
                         f"{r['engine']} | {r['source']} | {r['seconds']} |")
    same = [f"{row['model']} {'yes' if row['same_across_repeats'] else 'no'}"
            for row in report["rows"]]
    lines += ["", "Same planned bytes across the repeats: " + ", ".join(same)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            text = markdown(json.load(f))
        with open(args.render[:-len(".json")] + ".md", "w") as f:
            f.write(text)
        print(text)
        return 0
    common.gpu_environment("cpu")
    report = {"command": common.command_line(), "date": common.now(), "machine": common.machine(),
              "tree": _tree(), "size": args.size, "time_limit_s": args.time_limit_s,
              "seed": args.seed, "repeats": args.repeats, "load_before": common.load(),
              "rows": []}
    for name in common.model_names(args.models):
        report["rows"].append(plan_one(name, args))
        print(json.dumps(report["rows"][-1]), flush=True)
    report["load_after"] = common.load()
    text = markdown(report)
    print(text)
    if args.out:
        common.write_results(args.out, report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
