"""Peak memory of XLA:CPU's own compile against olla_jax's capture, on the synthetic transformer.

    python -m benchmarks.compile_memory --depths=16,40 --out=benchmarks/results/compile_memory

Each measurement runs in a fresh process (peak resident set size, ``ru_maxrss``): ``plain`` is
``jax.jit(step).lower(...).compile()``; ``capture`` is ``olla_jax``'s capture of the same step
(XLA's compile with its dumps, then reading them).  Both at xla_backend_optimization_level=0,
as in benchmarks.scale.  It tells whether a step too large to plan fails in XLA or in olla_jax.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

_CHILD = """
import json, resource, sys, time
from benchmarks import scale
mode, depth = sys.argv[1], int(sys.argv[2])
fn, args = scale.FAMILIES["transformer"](depth)
options = {"xla_backend_optimization_level": 0}
t = time.perf_counter()
if mode == "plain":
    import jax
    jax.jit(fn).lower(*args).compile(compiler_options=options)
else:
    from olla_jax.capture.record import capture
    capture(fn, *args, scheduler="memory", compiler_options=options)
print(json.dumps({"mode": mode, "depth": depth, "seconds": time.perf_counter() - t,
                  "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main(argv=None) -> None:
    p = common.parser(__doc__, out="benchmarks/results/compile_memory")
    p.add_argument("--depths", default="16,40")
    args = p.parse_args(argv)
    common.gpu_environment("cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    meta = common.run_meta()
    rows = []
    for depth in [int(d) for d in args.depths.split(",")]:
        for mode in ("plain", "capture"):
            done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(depth)], env=env,
                                  capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {
                "mode": mode, "depth": depth, "error": f"exit {done.returncode}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta["load_end"] = common.load()
    out = common.header("XLA:CPU compile memory vs olla_jax capture (synthetic transformer)", {
        "load average at start, end": f"{meta['load_start']}; {meta['load_end']}"},
        command=meta["command"], machine_info=meta["machine"], date=meta["date"])
    body = [[r["depth"], r["mode"], f"{r['seconds']:.0f}" if "seconds" in r else "-",
             f"{r['max_rss_gib']:.2f}" if "max_rss_gib" in r else r.get("error", "-")] for r in rows]
    out += common.table(["depth", "mode", "seconds", "peak RSS GiB"], body)
    common.write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
