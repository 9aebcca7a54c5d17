"""What the README's training loop costs on its first call: a fresh process
with an empty plan cache, then another process that finds the plan cached.

    python -m benchmarks.first_call [--runs=1]

Each run prints the wall time of the first three calls of the loop and the
plan's solve time; the planner's share is `solve_seconds`, the rest is XLA's
compiles, the checker and the verification child.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
_RUNS = flags.DEFINE_integer("runs", 1, "cold/warm pairs to run")

_TIMED = '''
import time as _time
_calls = []
_train_step = train_step
def train_step(*a, **k):
    t0 = _time.monotonic()
    out = _train_step(*a, **k)
    jax.block_until_ready(out)
    _calls.append(_time.monotonic() - t0)
    return out
'''


def _instrumented() -> str:
    code = (ROOT / "examples" / "readme_loop.py").read_text().split('"""', 2)[2]
    head, loop = code.split("for step in range(20):", 1)
    loop = loop.split("print(train_step.plan_for", 1)[0]
    tail = ("_plan = _train_step.plan_for(params, opt_state, x, y=y)\n"
            "print('RESULT ' + json.dumps({'calls': _calls[:3], 'solve_s': _plan.solve_seconds, "
            "'source': _plan.source, 'verified': _plan.verified}))\n")
    return "import json\n" + head + _TIMED + "for step in range(20):" + loop + tail


def main(argv):
    del argv
    code = _instrumented()
    print("command: python -m benchmarks.first_call " + " ".join(sys.argv[1:]))
    print("| run | process | call 1 s | call 2 s | call 3 s | planner s | plan | verified |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for run in range(_RUNS.value):
        with tempfile.TemporaryDirectory() as cache:
            for which in ("empty cache", "plan cached"):
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      env={**__import__("os").environ, "OLLA_JAX_CACHE_DIR": cache},
                                      cwd=ROOT, check=False)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode or not line:
                    raise SystemExit(f"the loop failed ({which}):\n{proc.stderr[-3000:]}")
                r = json.loads(line[0][7:])
                c = r["calls"]
                print(f"| {run + 1} | {which} | {c[0]:.2f} | {c[1]:.3f} | {c[2]:.3f} | "
                      f"{r['solve_s']:.1f} | {r['source']} | {r['verified']} |")


if __name__ == "__main__":
    app.run(main)
