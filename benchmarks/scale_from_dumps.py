"""Store a capture for benchmarks/scale.py --capture_dir from XLA's dump folder.

    python -m benchmarks.scale_from_dumps DUMP_DIR --depth=720 --fast_capture \
        --capture_dir=/tmp/scale/captures --compile_s=2100

XLA writes the scheduled module, its buffer assignment, values and live ranges
(``xla_dump_to``) right after buffer assignment; what follows (LLVM, ptxas,
command buffers) does not change them.  On a 100k-instruction compile-only step
that tail took longer than the rest, so the planner can start from the dumps of
a compile still running.  ``memory_analysis()`` is not at hand then: XLA's
figures are summed from the buffer assignment (temp: the allocations that are
no parameter, constant, thread-local or live-out; the same figures as
``memory_analysis()`` on the stored 10k and 20k captures: ``--check``,
results/scale_from_dumps_check.txt).  ``--compile_s``: the seconds the capture took until its dumps
were written (the row's compile s).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def figures(hlo_proto: bytes):
    from olla_jax import dumps
    from olla_jax.capture.base import MemoryFigures
    allocs = dumps.parse_hlo_proto(hlo_proto).buffer_assignment.buffer_allocations
    temp = sum(a.size for a in allocs if not (a.is_thread_local or a.is_entry_computation_parameter
                                              or a.is_constant or a.maybe_live_out))
    arg = sum(a.size for a in allocs if a.is_entry_computation_parameter)
    out = sum(a.size for a in allocs if a.maybe_live_out and not a.is_entry_computation_parameter)
    return MemoryFigures(temp=temp, argument=arg, output=out, alias=0, generated_code=0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dump_dir", nargs="?")
    p.add_argument("--depth", type=int)
    p.add_argument("--family", default="transformer")
    p.add_argument("--capture_dir", default="/tmp/scale/captures")
    p.add_argument("--compile_s", type=float, default=0.0)
    p.add_argument("--check", nargs="*", default=None,
                   help="stored captures: compare the summed figures with memory_analysis()'s")
    args, rest = p.parse_known_args(argv)
    if args.check is not None:
        for path in args.check:
            for cap in pickle.load(open(path, "rb"))["captures"]:
                got = figures(cap.hlo_proto)
                print(path, "same" if got == cap.memory else f"DIFFERENT: {got} vs {cap.memory}")
        return
    from benchmarks import scale
    from olla_jax.capture.base import Capture
    sargs = scale.parse_args(["--backend=gpu:h100", *rest])

    def read(suffix, binary=False):
        (path,) = [f for f in glob.glob(os.path.join(args.dump_dir, f"*{suffix}"))
                   if "jit_step" in f]
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    after = "after_optimizations"
    proto = read(f"{after}.hlo.pb", binary=True)
    options = scale.compiler_options(sargs.opt_level, sargs.compiler_options)
    cap = Capture(backend=sargs.backend, scheduler="default", compiler_options=options,
                  hlo_text=read(f"{after}.txt"), hlo_proto=proto,
                  values_text=read(f"{after}-buffer-assignment-values.txt"),
                  live_range_text=read(f"{after}-live-range.txt"),
                  buffer_assignment_text=read(f"{after}-buffer-assignment.txt"),
                  memory=figures(proto), executable=None, compiled=None, lowered=None)
    path = scale._capture_path(args.capture_dir, args.family, args.depth, sargs.opt_level,
                               sargs.backend, sargs.mlp_batch, sargs.compiler_options)
    with open(path + ".tmp", "wb") as f:
        pickle.dump({"compile_s": args.compile_s, "captures": [cap]}, f)
    os.replace(path + ".tmp", path)
    print(json.dumps({"stored": path, "memory": str(cap.memory)}))


if __name__ == "__main__":
    main()
