"""Our plan fed back into XLA:GPU's executable, run on a real GPU against XLA's.

    python -m benchmarks.gpu_feedback --out=$OUT/gpu_feedback               (machine with a GPU)
    python -m benchmarks.gpu_feedback --backend=gpu:h100 --out=/tmp/gpu_fb  (no GPU: build only)

Per example step (``name`` or ``name:size``), in a child process each:
``olla_jax.plan(step, backend="gpu")`` plans the step compiled for the local
GPU, rewrites XLA's serialized executable (``olla_jax.apply.gpu_rewrite``: thunk
order, entry schedule, buffer offsets, temp size), runs it and XLA's on the same
random inputs in a child process, compares outputs bit for bit, and loads it.
Then, on the verified executable and XLA's:

- temp: ``memory_analysis().temp_size_in_bytes`` of each loaded executable;
- real peak: what one call adds to the device's ``peak_bytes_in_use`` over the
  bytes in use just before it (the in-use bytes are first padded up to the
  process's peak so far, so the step's own peak shows);
- step time: median of interleaved calls (``olla_jax.apply.timing``), ratio ours/XLA.

With a compile-only ``--backend`` (no GPU) the rewritten executable is built and
decoded again but nothing runs: this checks the rewrite on every model.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import sys
import time

from benchmarks import common

DEFAULT_MODELS = "cnn_adam,resnet18,lm_adamw,gpt2,unet,lstm,bert,mlp_mixer,densenet,remat"


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, time_limit_s=10.0, out="gpu_feedback")
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated name[:size]")
    p.add_argument("--size", default="small", help="example size where a model names none")
    p.add_argument("--backend", default="gpu", help='"gpu" (local GPU) or a compile-only target')
    p.add_argument("--model_timeout_s", type=float, default=600.0, help="kill a model's child after")
    p.add_argument("--timing_repeats", type=int, default=30)
    return p.parse_args(argv)


def _stats(device) -> dict:
    try:
        return {k: int(v) for k, v in (device.memory_stats() or {}).items()
                if isinstance(v, (int, float))}
    except Exception:  # noqa: BLE001 - not every backend reports
        return {}


def step_added_bytes(fn, make_args, device) -> int | None:
    """Bytes one call of ``fn`` adds on top of what is in use before it."""
    import jax
    import jax.numpy as jnp
    if "peak_bytes_in_use" not in _stats(device):
        return None
    args = make_args()
    s = _stats(device)
    pad_bytes = max(0, s["peak_bytes_in_use"] - s["bytes_in_use"])
    pad = jnp.zeros((pad_bytes,), jnp.uint8) if pad_bytes else None
    if pad is not None:
        pad.block_until_ready()
    before = _stats(device)
    out = fn(*args)
    jax.block_until_ready(out)
    after = _stats(device)
    del out, args, pad
    return after["peak_bytes_in_use"] - before["bytes_in_use"]


def run_one(spec: str, args) -> dict:
    import jax
    import examples
    from olla_jax.apply import timing

    name, size = (spec.split(":", 1) + [args.size])[:2]
    step = examples.get(name, size)
    t0 = time.perf_counter()
    p = common.plan_quietly(step, backend=args.backend, time_limit_s=args.time_limit_s)
    row = {"model": f"{name}:{size}", "backend": args.backend, "plan_s": time.perf_counter() - t0,
           "instructions": len(p.graph.nodes) if p.graph else None,
           "xla_temp": p.xla_best_temp_bytes, "planned": p.planned_temp_bytes,
           "bound": p.lower_bound_bytes, "achieved": p.achieved_temp_bytes,
           "verified": p.verified, "source": p.source, "notes": list(p.notes),
           "executable_bytes": len(p.executable_bytes) if p.executable_bytes else None,
           "device": jax.devices()[0].device_kind}
    if not p.verified:
        return row
    device = jax.devices()[0]
    # plan's callables take every argument, static ones included (checked, then dropped).
    fresh = lambda: timing._fresh(step.args)  # noqa: E731 - donated inputs are consumed
    jax.block_until_ready(p.xla_compiled(*fresh()))
    jax.block_until_ready(p.compiled(*fresh()))
    row["xla_added"] = step_added_bytes(p.xla_compiled, fresh, device)
    row["ours_added"] = step_added_bytes(p.compiled, fresh, device)
    ratio = timing.time_ratio(p.xla_compiled, p.compiled, step.args, repeats=args.timing_repeats)
    row.update(time_ratio=ratio.ratio, xla_step_s=ratio.original_s, ours_step_s=ratio.rewritten_s)
    return row


def worker(args) -> None:
    common.write_worker_result(args.worker_out, lambda: run_one(args.worker, args),
                               lambda msg: {"model": args.worker, "error": msg[:600]})


def markdown(rows: list[dict], args, run: dict) -> str:
    machine, command = run["machine"], run["command"]
    lines = common.header(f"olla_jax plans fed back into XLA:GPU executables ({args.backend})",
                          {"plan time limit": f"{args.time_limit_s:g} s"},
                          command=command, machine_info=machine)
    lines += ["Temps in MiB. XLA = XLA's temp for the step; planned = our plan's temp; achieved = "
              "memory_analysis() of the loaded rewritten executable; added = real bytes one call "
              "adds to the device peak (XLA's / ours); time = step time ours/XLA (median of "
              "interleaved calls). Compile-only rows build and decode the rewritten executable "
              "but run nothing.", ""]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], f"ERROR: {r['error'][:300]}"] + [""] * 9)
            continue
        table.append([r["model"], r.get("instructions"), common.mib(r["xla_temp"]),
                      common.mib(r["planned"]), common.mib(r.get("achieved")),
                      common.mib(r["bound"]), "yes" if r["verified"] else "no",
                      f"{common.mib(r.get('xla_added'))} / {common.mib(r.get('ours_added'))}"
                      if r.get("ours_added") is not None else "-",
                      f"{r['time_ratio']:.3f}" if r.get("time_ratio") else "-",
                      f"{r['executable_bytes']:,}" if r.get("executable_bytes") else "-",
                      "; ".join(r["notes"])[:300] or "-"])
    lines += common.table(["model", "instr", "XLA", "planned", "achieved", "bound", "verified",
                           "added XLA / ours", "time", "exe bytes", "notes"], table,
                          right={1, 2, 3, 4, 5, 8, 9})
    ok = [r for r in rows if r.get("verified")]
    lines += ["", f"- models: {len(rows)}, rewritten executables built: "
              f"{sum(1 for r in rows if r.get('executable_bytes'))}, verified and loaded: {len(ok)}"]
    if ok:
        lines.append(f"- geomean achieved/XLA temp: "
                     f"{common.geomean([r['achieved'] / r['xla_temp'] for r in ok if r['xla_temp']]):.4f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker):
        return
    flags = common.forward(args, "backend", "time_limit_s", "size", "timing_repeats")
    common.run_rows("benchmarks.gpu_feedback", common.model_names(args.models), flags,
                    lambda spec, msg: {"model": spec, "error": msg},
                    lambda rows, run: markdown(rows, args, run), args.out,
                    timeout_s=args.model_timeout_s)


if __name__ == "__main__":
    main(sys.argv[1:])
