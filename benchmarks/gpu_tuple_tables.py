"""Do XLA:GPU's thunks touch tuple index tables?  Read from the executables.

    python -m benchmarks.gpu_tuple_tables --examples=mlp:small,lm_adamw:small \
        --offload=lm_adamw:small --out=benchmarks/results/gpu_tuple_tables

Each example step is compiled for a compile-only GPU target and its serialized
executable decoded (``olla_jax.apply.gpu_executable``).  Per step: the
allocations XLA flags ``is_tuple`` (those not live out, not parameters: the
ones a plan could resize), the tuple-shaped values' bytes (index tables) in
any allocation, the buffer slices of all thunks (any kind, any depth) that
overlap one of them, and the flags ``olla_jax.apply.tuple_tables`` finds
unheld (no thunk touches their tables).  ``--offload``: the same for the step
``olla_jax.offload.offload`` returns (values parked in host memory), where
XLA flags the temp arena.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings

from benchmarks import common


def measure(label: str, fn, args, static, donate, target: str) -> dict:
    from olla_jax.apply import gpu_executable, tuple_tables
    from olla_jax.capture.record import capture
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(fn, *args, backend=target, static_argnums=static, donate_argnums=donate)
    decoded = gpu_executable.decode(cap.executable)
    extents = tuple_tables.tuple_table_extents(decoded)
    touching = [(a, o, s) for a, o, s in tuple_tables.thunk_slices(decoded)
                if any(o < eo + en and eo < o + max(s, 1) for eo, en in extents.get(a, ()))]
    flagged = [a.index for a in decoded.allocations if a.is_tuple and not (
        a.maybe_live_out or a.is_entry_computation_parameter)]
    return {"step": label, "thunks": len(decoded.thunks),
            "flagged": flagged, "tables": sum(len(v) for v in extents.values()),
            "tables_in_flagged": sum(len(extents.get(a, ())) for a in flagged),
            "touching_slices": len(touching),
            "unheld": sorted(tuple_tables.unheld_tuple_flags(decoded)),
            "seconds": round(time.perf_counter() - t0, 1), "load": common.load()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", default="mlp:small,lstm:small,lm_adamw:small",
                   help="example:size, comma separated (examples/<example>.py make_step)")
    p.add_argument("--offload", default="", help="example:size steps to offload first")
    p.add_argument("--target", default="gpu:h100")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    common.gpu_environment(args.target)
    load_before = common.load()
    rows = []
    specs = [(s, False) for s in args.examples.split(",") if s] + \
        [(s, True) for s in args.offload.split(",") if s]
    for spec, offloaded in specs:
        name, _, size = spec.partition(":")
        st = importlib.import_module(f"examples.{name}").make_step(size or "small")
        fn, call = st.fn, st.abstract_args()
        if offloaded:
            from olla_jax import offload
            fn = offload.offload(st.fn, *call, backend=args.target,
                                 static_argnums=st.static_argnums,
                                 donate_argnums=st.donate_argnums).fn
        label = spec + (", offloaded (olla_jax.offload)" if offloaded else "")
        rows.append(measure(label, fn, call, st.static_argnums, st.donate_argnums, args.target))
        print(rows[-1], flush=True)
    lines = common.header("XLA:GPU thunks against tuple index tables",
                          {"target": f"{args.target} (compile-only: decoded, not run)",
                           "load average (1/5/15 min) at the start and end":
                               f"{load_before}, {common.load()}"})
    lines += common.table(
        ["step", "thunks", "flagged is_tuple (not live out)", "tuple tables",
         "in flagged", "thunk slices touching a table", "flags unheld", "seconds", "load"],
        [[r["step"], r["thunks"], r["flagged"] or "-", r["tables"], r["tables_in_flagged"],
          r["touching_slices"], r["unheld"] or "-", r["seconds"], r["load"]] for r in rows],
        right={1, 3, 4, 5, 7})
    text = "\n".join(lines) + "\n"
    common.print_and_write(text, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
