"""Each example with and without donation: XLA's temp against the planned temp.

    python -m benchmarks.donation --size=tiny --time_limit_s=3

Donated variant: every dynamic argument but the last (the batch) is donated,
as ``donate_argnums=(0, 1)`` does for (params, opt_state, batch).  For each
variant it prints XLA's best temp (of its two CPU schedulers), the planned temp,
whether the plan was fed back and verified bit-for-bit, and the first note.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings

from absl import app, flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("size", "tiny", "example size")
flags.DEFINE_list("models", [], "examples (default: all)")
flags.DEFINE_float("time_limit_s", 3.0, "planner time limit per step")


def donated(step):
    dynamic = [i for i in range(len(step.args)) if i not in step.static_argnums]
    return dataclasses.replace(step, donate_argnums=tuple(dynamic[:-1]))


def main(argv):
    del argv
    common.gpu_environment("cpu")
    import examples
    import olla_jax
    print(f"command: {common.command_line()}")
    print("| example | donated | alias KiB | XLA temp KiB | planned KiB | saved % | source | "
          "verified | s | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in FLAGS.models or examples.names():
        base = examples.get(name, FLAGS.size)
        for step in (dataclasses.replace(base, donate_argnums=()), donated(base)):
            t = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", olla_jax.PlanWarning)
                plan = olla_jax.plan(step.fn, *step.args, static_argnums=step.static_argnums,
                                     donate_argnums=step.donate_argnums,
                                     time_limit_s=FLAGS.time_limit_s)
            xla, ours = plan.xla_best_temp_bytes, plan.runs_temp_bytes
            note = plan.notes[0][:70] if plan.notes else ""
            print(f"| {name} | {step.donate_argnums or '-'} | {plan.alias_bytes / 1024:.1f} | "
                  f"{xla / 1024:.1f} | {ours / 1024:.1f} | "
                  f"{100 * (xla - ours) / xla if xla else 0:.1f} | {plan.source} | "
                  f"{plan.verified} | {time.monotonic() - t:.0f} | {note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
