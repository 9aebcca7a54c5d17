"""Where XLA's compile-only GPU compile of the scale benchmark's steps spends its time.

    python -m benchmarks.scale_compile --depths=20,40 --out=benchmarks/results/scale_compile

Compiles ``benchmarks.scale.transformer_step(depth)`` for a compile-only target
in a child process per depth and option set, with XLA's pass timing log on
(``TF_CPP_VMODULE=hlo_pass_pipeline=1``), and prints the compile seconds, the
step module's slowest passes, XLA's temp and the entry instruction count.
Option sets: ``default`` (what plan() uses) and ``fast``
(``olla_jax.capture.gpu.FAST_CAPTURE_OPTIONS``).  Run with the GPU venv (the
CUDA plugin; no GPU needed).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

_PASS = re.compile(r"HLO pass: (\S+) time: ([\d.]+) (us|ms|s) ")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def child(depth: int, options: str, target: str) -> None:
    from benchmarks.scale import transformer_step
    from olla_jax.capture import gpu
    fn, args = transformer_step(depth)
    opts = {"xla_backend_optimization_level": 0}
    if options == "fast":
        opts = gpu.with_fast_capture(opts)
    t0 = time.perf_counter()
    compiled = gpu.compile_for_target(fn, args, target=target, compiler_options=opts)
    seconds = time.perf_counter() - t0
    text = compiled.as_text()
    entry = text[text.index("\nENTRY "):]
    instructions = sum(1 for ln in entry.splitlines()[1:] if " = " in ln and ln.startswith("  "))
    print("RESULT " + json.dumps({"compile_s": seconds, "instructions": instructions,
                                  "temp": compiled.memory_analysis().temp_size_in_bytes}), flush=True)


def pass_seconds(log: str) -> dict[str, float]:
    """Seconds per pass name, each run's time summed (all modules of the process)."""
    total: dict[str, float] = collections.Counter()
    for line in log.splitlines():
        m = _PASS.search(line)
        if m:
            total[m[1]] += float(m[2]) * _UNIT[m[3]]
    return dict(total)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default="20,40")
    p.add_argument("--options", default="default,fast")
    p.add_argument("--target", default="h100")
    p.add_argument("--top", type=int, default=4)
    p.add_argument("--out", default="")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        depth, options = args.child.split(":")
        child(int(depth), options, args.target)
        return
    lines = common.header("XLA's compile-only GPU compile of the scale steps, by pass",
                          extra={"load average at start (1/5/15 min)": common.load() + " (2 cores "
                                 "shared with other jobs: seconds are inflated)"})
    lines += ["", "Pass seconds: XLA's own timing of each pass (TF_CPP_VMODULE=hlo_pass_pipeline=1), "
              "summed over its runs; compile s includes tracing and lowering the step.", ""]
    print("\n".join(lines), flush=True)
    body = []
    for options in args.options.split(","):
        for depth in [int(d) for d in args.depths.split(",") if d]:
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="hlo_pass_pipeline=1")
            proc = subprocess.run([sys.executable, "-m", "benchmarks.scale_compile",
                                   f"--child={depth}:{options}", f"--target={args.target}"],
                                  env=env, capture_output=True, text=True)
            result = next((json.loads(ln[7:]) for ln in proc.stdout.splitlines()
                           if ln.startswith("RESULT ")), None)
            if result is None:
                body.append([options, depth, "-", "-", "-", "failed: " + proc.stderr[-200:]])
                continue
            passes = sorted(pass_seconds(proc.stderr).items(), key=lambda kv: -kv[1])[:args.top]
            body.append([options, depth, result["instructions"], f"{result['compile_s']:.1f}",
                         common.mib(result["temp"]),
                         ", ".join(f"{name} {s:.2f}" for name, s in passes)])
            print(" | ".join(map(str, body[-1])), flush=True)
    table = common.table(["options", "depth", "entry instr", "compile s", "XLA temp MiB",
                          "slowest passes (s)"], body, right={1, 2, 3, 4})
    print("\n".join(table))
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write("\n".join(lines + table) + "\n")


if __name__ == "__main__":
    main()
