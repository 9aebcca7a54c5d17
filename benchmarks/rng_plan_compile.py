"""XLA's compiles inside ``olla_jax.plan`` of a dropout step planned with
threefry2x32 unrolled, this tree against a baseline commit, alternating.

    python -m benchmarks.rng_plan_compile --baseline=735433b \\
        --out=benchmarks/results/rng_plan_compile

Per step (those of ``benchmarks.rng_unrolled``) and round, one fresh process
each, in alternating order (A B C, then C B A): the baseline commit's plan
with ``rng_lowering="unrolled"`` (checked out into a temporary git worktree),
this tree's with "unrolled", and this tree's with "jax" (one program).  Each
records ``Plan.capture_seconds`` (wall) and the process CPU seconds of the
same compiles (``plan._compile_baselines`` timed), with XLA's figures and
whether the plan was verified, so that a change in the compiles shows beside
figures that must not change.  Then, in this process, the part that changed
alone: jax.jit's program of each step compiled with XLA's dumps (as the
baseline did, ``record.compile_with_dumps``) and without (as now,
``record.compile_without_dumps``), each scheduler, alternating, a fresh
lowering each time (jax caches nothing), process CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent
STEPS = {"mlp": (3, 256, 512), "linen": (2, 128, 8), "nnx": (3, 256, 512)}

# One plan in a fresh process, in the tree it runs in (its own olla_jax).
CHILD = r"""
import json, sys, time, warnings
import olla_jax
plan_module = sys.modules["olla_jax.plan"]
from benchmarks.rng_unrolled import _jitted
name, rng, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
shape = tuple(int(v) for v in sys.argv[4].split(","))
clock = {}
real = plan_module._compile_baselines
def timed(*a, **k):
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        return real(*a, **k)
    finally:
        clock["wall"], clock["cpu"] = time.perf_counter() - wall, time.process_time() - cpu
plan_module._compile_baselines = timed
jitted, args = _jitted(name, *shape)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    p = olla_jax.plan(jitted, *args, time_limit_s=limit, rng_lowering=rng)
print("RESULT " + json.dumps({
    "capture_s": p.capture_seconds, "compile_wall_s": clock["wall"],
    "compile_cpu_s": clock["cpu"], "xla_temp": p.xla_temp_bytes,
    "jax_program_temp": p.jax_program_temp_bytes, "planned_program_temp": p.xla_best_temp_bytes,
    "runs_temp": p.runs_temp_bytes, "verified": p.verified, "source": p.source}))
"""


def run_one(tree: Path, name: str, rng: str, limit: float) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(tree))
    shape = ",".join(str(v) for v in STEPS[name])
    load = common.load()
    done = subprocess.run([sys.executable, "-c", CHILD, name, rng, str(limit), shape],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{tree} {name} {rng} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "load": load}


def dumps_cost(name: str, rounds: int) -> dict:
    """CPU seconds of compiling jax.jit's program of step ``name`` with dumps
    and without, per scheduler, ``rounds`` times alternating (A B, B A)."""
    import time
    from benchmarks.rng_unrolled import _jitted
    from olla_jax import calls
    from olla_jax.capture import record
    times: dict = {}
    for r in range(rounds):
        for dumps in ((True, False) if r % 2 == 0 else (False, True)):
            for scheduler in ("default", "memory"):
                jitted, args = _jitted(name, *STEPS[name], fresh=True)
                lowered = calls.lower_call(jitted, args, {}, rng_lowering="jax").lowered
                start = time.process_time()
                if dumps:
                    record.compile_with_dumps(lowered, record.cpu_scheduler_options(scheduler),
                                              backend="cpu", scheduler=scheduler)
                else:
                    record.compile_without_dumps(lowered, scheduler=scheduler)
                times.setdefault(("with dumps" if dumps else "without", scheduler), []).append(
                    time.process_time() - start)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="git commit to compare this tree with")
    p.add_argument("--out", default="rng_plan_compile")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--time_limit_s", type=float, default=5.0)
    p.add_argument("--steps", default="mlp,linen,nnx")
    p.add_argument("--dumps_rounds", type=int, default=4,
                   help="rounds of jax.jit's program compiled with and without dumps")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                            check=True, capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()
    base = Path(tempfile.mkdtemp(prefix="olla_baseline_")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), commit],
                   check=True, capture_output=True)
    sides = (("before", base, "unrolled"), ("after", ROOT, "unrolled"), ("after", ROOT, "jax"))
    runs: dict = {}
    try:
        for name in args.steps.split(","):
            for r in range(args.rounds):
                for side, tree, rng in (sides if r % 2 == 0 else sides[::-1]):
                    row = run_one(tree, name, rng, args.time_limit_s)
                    runs.setdefault((name, side, rng), []).append(row)
                    print(name, side, rng, row, flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                       capture_output=True)
        base.parent.rmdir()
    m = common.mib

    def med(rows, key):
        return statistics.median(x[key] for x in rows)
    lines = common.header("XLA's compiles in plan, threefry2x32 unrolled: before/after",
                          {"baseline (before)": commit, "this tree (after)": head,
                           "load at the end": common.load()})
    table = []
    for (name, side, rng), rows in runs.items():
        table.append([f"{name} {'x'.join(str(v) for v in STEPS[name])}", side, rng,
                      f"{med(rows, 'compile_cpu_s'):.2f}",
                      ", ".join(f"{x['compile_cpu_s']:.2f}" for x in rows),
                      f"{med(rows, 'capture_s'):.2f}",
                      m(rows[0]["xla_temp"]), m(rows[0]["planned_program_temp"]),
                      m(rows[0]["runs_temp"]),
                      "yes" if all(x["verified"] for x in rows) else "no",
                      "; ".join(x["load"] for x in rows)])
    lines += common.table(
        ["step", "tree", "rng_lowering", "compiles CPU s (median)", "each round",
         "capture_seconds wall (median)", "XLA temp, jax.jit's program (headline)",
         "XLA temp, program planned", "runs", "verified", "load at each start"], table)
    costs = {name: dumps_cost(name, args.dumps_rounds) for name in args.steps.split(",")}
    lines += ["", f"jax.jit's program alone, compiled with XLA's dumps and without (CPU s, "
              f"{args.dumps_rounds} rounds alternating, median; load at the end {common.load()}):",
              ""]
    lines += common.table(
        ["step", "scheduler", "with dumps", "without", "each round with", "each round without"],
        [[name, scheduler, f"{statistics.median(t[('with dumps', scheduler)]):.2f}",
          f"{statistics.median(t[('without', scheduler)]):.2f}",
          ", ".join(f"{x:.2f}" for x in t[("with dumps", scheduler)]),
          ", ".join(f"{x:.2f}" for x in t[("without", scheduler)])]
         for name, t in costs.items() for scheduler in ("default", "memory")])
    print("\n".join(lines))
    common.write_lines_and_rows(args.out, [*lines], {
        "plans": [{"step": k[0], "tree": k[1], "rng_lowering": k[2], "runs": v}
                  for k, v in runs.items()],
        "dumps_cost": {name: {f"{k[0]} {k[1]}": v for k, v in t.items()}
                       for name, t in costs.items()}})


if __name__ == "__main__":
    main()
