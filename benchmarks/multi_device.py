"""Sharded steps on several GPUs (compile-only): memory against collective overlap.

    python -m benchmarks.multi_device --out=benchmarks/results/multi_device_h100

(4 devices by default: the small examples' batches of 4 split evenly.)

Each example step is compiled for ``--devices`` H100s (no GPU needed) in two
shardings: data-parallel (batch split over the devices, parameters and
optimizer state replicated: gradients are all-reduced) and FSDP-style
(parameters and optimizer state split along their first dimension where it
divides, batch split: parameters are all-gathered, gradients reduced). XLA:GPU
splits the collectives into asynchronous start/done pairs and schedules compute
between them; their buffers stay live across each pair.  For each step,
``olla_jax.plan(..., collective_overlap=f)`` at several fractions f of XLA's
overlap (1 = keep everything XLA runs between each start and done between
them; 0 = free) gives one point of the trade curve: planned temp against the
FLOPs still overlapping the collectives.  Planned figures (the per-device
executable is rewritten and decoded, not run: no GPU here).
"""

from __future__ import annotations

import sys

from benchmarks import common


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, models="lm_adamw,gpt2,bert,resnet18", size="small",
                      time_limit_s=10.0, out="multi_device")
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--shardings", default="dp,fsdp")
    p.add_argument("--fractions", default="1,0.5,0")
    p.add_argument("--target", default="h100")
    return p.parse_args(argv)


def in_shardings(step, kind: str, devices: int):
    """PartitionSpecs per dynamic argument: the last one is the batch."""
    import jax
    from jax.sharding import PartitionSpec as P
    dynamic = [i for i in range(len(step.args)) if i not in step.static_argnums]

    def split_first(x):
        shape = getattr(x, "shape", ())
        return P("x") if shape and shape[0] % devices == 0 else P()
    specs = []
    for i in dynamic:
        if i == dynamic[-1]:
            specs.append(jax.tree.map(split_first, step.args[i]))
        elif kind == "fsdp":
            specs.append(jax.tree.map(split_first, step.args[i]))
        else:
            specs.append(jax.tree.map(lambda x: P(), step.args[i]))
    return tuple(specs)


def run_one(spec: str, args) -> dict:
    import examples
    model, kind, fraction = spec.split(":")
    step = examples.get(model, args.size)
    timer = common.Timer()
    p = common.plan_quietly(step, backend=f"gpu:{args.target}", time_limit_s=args.time_limit_s,
                            num_devices=args.devices,
                            in_shardings=in_shardings(step, kind, args.devices),
                            collective_overlap=float(fraction))
    s = p.settings
    return {"model": model, "sharding": kind, "fraction": float(fraction),
            "instructions": len(p.graph.nodes) if p.graph else None,
            "xla": p.xla_best_temp_bytes, "planned": p.planned_temp_bytes,
            "bound": p.lower_bound_bytes, "pairs": s.get("async_pairs", 0),
            "pairs_kept": s.get("pairs_kept"), "overlap_xla": s.get("overlapped_flops_xla"),
            "overlap": s.get("overlapped_flops"), "source": p.source,
            "built": p.executable_bytes is not None, "notes": list(p.notes),
            "solve_s": timer.solve_s()}


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: error_row(args.worker, msg[:500]))


def error_row(spec: str, msg: str) -> dict:
    model, kind, fraction = spec.split(":")
    return {"model": model, "sharding": kind, "fraction": float(fraction), "error": msg}


def markdown(rows, args, run) -> str:
    machine, command = run["machine"], run["command"]
    lines = common.header(f"olla_jax on sharded steps: {args.devices} x {args.target} (compile-only)",
                          {"example size": args.size, "plan time limit": f"{args.time_limit_s:g} s"},
                          command=command, machine_info=machine)
    lines += ["Per-device temp in MiB. kept = fraction of XLA's overlap asked for "
              "(`collective_overlap`); pairs = async collective start/done pairs (kept / all); "
              "overlap = FLOPs between each start and its done under our order / under XLA's; "
              "planned/XLA < 1 is memory saved. 'built': the rewritten per-device executable was "
              "built and decoded (not run: no GPU here). When no plan below XLA's is found, "
              "planned = XLA and the overlap is XLA's.", ""]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], r["sharding"], r["fraction"], f"ERROR: {r['error'][:200]}"]
                         + [""] * 7)
            continue
        ratio = r["overlap"] / r["overlap_xla"] if r.get("overlap_xla") and r.get("overlap") is not None \
            else (1.0 if r["source"] == "xla" else None)
        table.append([r["model"], r["sharding"], f"{r['fraction']:g}", r["instructions"],
                      f"{r['pairs_kept']} / {r['pairs']}" if r["pairs_kept"] is not None else r["pairs"],
                      common.mib(r["xla"]), common.mib(r["planned"]), common.mib(r["bound"]),
                      f"{r['planned'] / r['xla']:.3f}" if r["xla"] else "-",
                      "-" if ratio is None else f"{ratio:.3f}",
                      "yes" if r["built"] else "no"])
    lines += common.table(["model", "sharding", "kept", "instr", "pairs", "XLA", "planned", "bound",
                           "planned/XLA", "overlap ours/XLA", "built"], table,
                          right={2, 3, 5, 6, 7, 8, 9})
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker, backend="gpu"):
        return
    flags = common.forward(args, "size", "devices", "target", "time_limit_s")
    specs = [f"{model}:{kind}:{fraction}" for model in common.model_names(args.models)
             for kind in args.shardings.split(",") for fraction in args.fractions.split(",")]
    common.run_rows("benchmarks.multi_device", specs, flags, error_row,
                    lambda rows, run: markdown(rows, args, run), args.out, timeout_s=900)


if __name__ == "__main__":
    main(sys.argv[1:])
