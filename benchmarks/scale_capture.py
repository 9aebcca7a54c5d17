"""Where the capture of a big compile-only step spends its time, stage by stage.

    python -m benchmarks.scale_capture --depths=40,80,160 --fast_capture \
        --out=benchmarks/results/scale_capture

One child process per depth runs what plan() runs before solving, on
``benchmarks.scale.transformer_step(depth)`` for ``gpu:h100``, on one clock:
making the step's arguments (eager jax), tracing (``jax.make_jaxpr``, timed on
its own: the capture traces again), the capture (``olla_jax.capture.capture``,
which traces and lowers, then XLA compiles with dumps, then we read the dumps),
and the graph build (``olla_jax.graph.model.build``).  XLA's compile is split
with its own log (``TF_CPP_VMODULE=hlo_pass_pipeline=1``): until its first pass
on the step module (jax's lowering and the hand-over), its passes until the
buffer-assignment dump appears (polled in the dump folder), and the tail after
it (LLVM, ptxas, command buffers: nothing the planner reads).  Our own side is
reading the dumps back and the graph build.  Run with the GPU venv (the CUDA
plugin; no GPU needed).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

_RUN = re.compile(r"^I(\d{4} \d\d:\d\d:\d\d\.\d+)\s+(\d+) hlo_pass_pipeline\.cc:\d+\] "
                  r"Running HLO pass pipeline on module (\S+?): (\S+)")
_PASS = re.compile(r"^I\S+ \S+\s+(\d+) hlo_pass_pipeline\.cc:\d+\] HLO pass: (\S+) time: "
                   r"([\d.]+) (us|ms|s) ")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _log_epoch(stamp: str) -> float:
    """A glog ``MMDD HH:MM:SS.ffffff`` stamp (this machine's local time, this year) as epoch s."""
    now = datetime.datetime.now()
    t = datetime.datetime.strptime(f"{now.year}{stamp}", "%Y%m%d %H:%M:%S.%f")
    return t.timestamp()


def step_passes(log: str, module: str = "jit_step") -> tuple[float | None, dict[str, float]]:
    """The epoch of XLA's first pass pipeline on ``module``, and its seconds per pass."""
    current: dict[str, str] = {}
    first = None
    total: dict[str, float] = collections.Counter()
    for line in log.splitlines():
        m = _RUN.match(line)
        if m:
            current[m[2]] = m[3]
            if m[3] == module and first is None:
                first = _log_epoch(m[1])
            continue
        m = _PASS.match(line)
        if m and current.get(m[1]) == module:
            total[m[2]] += float(m[3]) * _UNIT[m[4]]
    return first, dict(total)


def child(depth: int, options_json: str, target: str) -> None:
    import jax
    from benchmarks.scale import compiler_options, transformer_step
    from olla_jax.capture.record import capture
    from olla_jax.graph import model
    out: dict = {"start": time.time()}
    t = time.time()
    fn, args = transformer_step(depth)
    jax.block_until_ready(args)
    out["args_s"] = time.time() - t
    t = time.time()
    jax.make_jaxpr(fn)(*args)
    out["trace_s"] = time.time() - t
    tempfile.tempdir = tempfile.mkdtemp(prefix="olla_scale_capture_")
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll():   # when XLA wrote the step's buffer assignment (what the planner reads)
        while not done.is_set() and "ba" not in seen:
            if glob.glob(os.path.join(tempfile.tempdir, "*", "*jit_step*after_optimizations"
                                      "-buffer-assignment.txt")):
                seen["ba"] = time.time()
            time.sleep(0.2)
    threading.Thread(target=poll, daemon=True).start()
    import jax.stages
    original = jax.stages.Lowered.compile

    def timed_compile(self, *a, **k):
        seen.setdefault("compile", time.time())
        result = original(self, *a, **k)
        seen.setdefault("compiled", time.time())
        return result
    jax.stages.Lowered.compile = timed_compile
    t = time.time()
    cap = capture(fn, *args, backend=f"gpu:{target}",
                  compiler_options=compiler_options(0, options_json))
    out["capture_s"] = time.time() - t
    done.set()
    out.update(capture_start=t, compile_start=seen.get("compile"), ba_dump=seen.get("ba"),
               compiled=seen.get("compiled"), captured=time.time())
    t = time.time()
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text, alignment=256)
    out["graph_s"] = time.time() - t
    out.update(instructions=len(graph.nodes), units=len(graph.units),
               hlo_text_mib=len(cap.hlo_text) / 2**20, temp=cap.memory.temp,
               max_rss_mib=_max_rss_mib())
    print("RESULT " + json.dumps(out), flush=True)


def _max_rss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(result: dict, log: str, top: int) -> dict:
    first, passes = step_passes(log)
    r = dict(result)
    r["lower_s"] = r["compile_start"] - r["capture_start"]        # trace + lower inside capture
    if first is not None:
        r["handover_s"] = first - r["compile_start"]               # MLIR -> HLO, module set-up
        r["passes_wall_s"] = (r["ba_dump"] or r["compiled"]) - first
    r["passes_sum_s"] = sum(passes.values())
    r["tail_s"] = r["compiled"] - r["ba_dump"] if r["ba_dump"] else None
    r["read_dumps_s"] = r["captured"] - r["compiled"]
    r["top_passes"] = sorted(passes.items(), key=lambda kv: -kv[1])[:top]
    return r


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default="40,80,160")
    p.add_argument("--target", default="h100")
    p.add_argument("--fast_capture", action="store_true")
    p.add_argument("--compiler_options", default="")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--out", default="")
    p.add_argument("--from_log", default="",
                   help="rebuild <out>.md/.json from this run's printed output (a run stopped early)")
    p.add_argument("--worker_log", default="",
                   help="summarize the XLA pass log (stderr) of a capture still running or stopped, "
                        "e.g. a benchmarks.scale --capture_only worker's")
    p.add_argument("--worker_start", type=float, default=0.0, help="its start, epoch seconds")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(int(args.child), args.compiler_options, args.target)
        return
    if args.worker_log:
        print("\n".join(worker_summary(open(args.worker_log).read(), args.worker_start, args.top)))
        return
    if args.from_log:
        text = open(args.from_log).read().splitlines()
        head = [ln for ln in text if not ln.startswith("{")]
        head = head[:next((i for i, ln in enumerate(head) if ln.startswith("Seconds on one")),
                          len(head))]
        while head and not head[-1]:
            head.pop()
        rows = [json.loads(ln) for ln in text if ln.startswith("{")]
        head.insert(3, f"- rebuilt from its printed rows: `python -m benchmarks.scale_capture "
                       f"--from_log={args.from_log} --out={args.out}` (the run was stopped "
                       "before its last depth)")
        write(args.out, head, rows)
        return
    if args.fast_capture:
        from olla_jax.capture import gpu
        args.compiler_options = json.dumps(gpu.with_fast_capture(
            json.loads(args.compiler_options) if args.compiler_options else {}), sort_keys=True)
    lines = common.header("Where a compile-only capture's time goes (transformer steps, gpu:"
                          f"{args.target})", extra={
                              "compiler options": args.compiler_options or "(plan()'s defaults)",
                              "load average at start (1/5/15 min)": common.load() + " (2 cores "
                              "shared with other helpers' jobs: seconds are inflated)"})
    print("\n".join(lines), flush=True)
    rows = []
    for depth in [int(d) for d in args.depths.split(",") if d]:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="hlo_pass_pipeline=1")
        proc = subprocess.run([sys.executable, "-m", "benchmarks.scale_capture",
                               f"--child={depth}", f"--target={args.target}",
                               f"--compiler_options={args.compiler_options}"],
                              env=env, capture_output=True, text=True)
        result = next((json.loads(ln[7:]) for ln in proc.stdout.splitlines()
                       if ln.startswith("RESULT ")), None)
        if result is None:
            print(f"depth {depth} failed: {proc.stderr[-500:]}", flush=True)
            continue
        rows.append(dict(row(result, proc.stderr, args.top), depth=depth))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:   # after each depth: a run stopped early keeps what it measured
            write(args.out, lines, rows)
    print("\n".join(lines + ["", *explain(), "", *table(rows)]))


def write(out: str, head: list[str], rows: list[dict]) -> None:
    with open(out + ".md", "w") as f:
        f.write("\n".join(head + ["", *explain(), "", *table(rows)]) + "\n")
    with open(out + ".json", "w") as f:
        json.dump(rows, f, indent=1)


def worker_summary(log: str, start: float, top: int) -> list[str]:
    """Where a capture whose pass log is ``log`` stands: seconds from ``start`` to XLA's first
    pass on the step module (making the arguments, tracing, lowering, hand-over), the passes
    logged since, and the last pipeline entered."""
    first, passes = step_passes(log)
    if first is None:
        return [f"no pass on the step module yet"]
    stamps = [m[1] for m in map(_RUN.match, log.splitlines()) if m and m[3] == "jit_step"]
    pipes = [m[4] for m in map(_RUN.match, log.splitlines()) if m and m[3] == "jit_step"]
    last = _log_epoch(stamps[-1])
    return [f"to the first pass on the step module: {first - start:.0f} s (arguments, trace, "
            "lower, hand-over)",
            f"XLA's passes logged since: {sum(passes.values()):.0f} s (sum of their own times), "
            f"{last - first:.0f} s of wall clock to the last pipeline entered ({pipes[-1]})",
            "slowest passes (s): " + ", ".join(f"{n} {v:.1f}" for n, v in
                                               sorted(passes.items(), key=lambda kv: -kv[1])[:top])]


def explain() -> list[str]:
    return ["Seconds on one wall clock per depth (child process each). args: making the step's "
            "parameters (eager jax); trace: `jax.make_jaxpr` alone; lower: trace + lower inside "
            "the capture; hand-over: from `Lowered.compile` to XLA's first pass on the step "
            "module; passes: XLA's passes until the buffer-assignment dump appears (wall; sum of "
            "XLA's own pass times in brackets); tail: after the dump until the compile returns "
            "(codegen: not read by the planner); read: reading the dumps back and serializing "
            "the executable; graph: `graph.model.build` (ours)."]


def table(rows: list[dict]) -> list[str]:
    def s(v):
        return "-" if v is None else f"{v:.1f}"
    body = [[r["depth"], r["instructions"], s(r["args_s"]), s(r["trace_s"]), s(r["lower_s"]),
             s(r.get("handover_s")), f"{s(r.get('passes_wall_s'))} ({r['passes_sum_s']:.1f})",
             s(r["tail_s"]), s(r["read_dumps_s"]), s(r["graph_s"]), f"{r['max_rss_mib'] / 1024:.2f}",
             ", ".join(f"{n} {v:.1f}" for n, v in r["top_passes"])] for r in rows]
    return common.table(["depth", "instr", "args", "trace", "lower", "hand-over", "passes",
                         "tail", "read", "graph", "max RSS GiB", "slowest passes (s)"], body,
                        right=set(range(11)))


if __name__ == "__main__":
    main()
