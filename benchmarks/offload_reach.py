"""Which of jax's host-offloading routes reach XLA's host memory, on the
compile-only H100 target and on CPU, for a transformer training step?

    python -m benchmarks.offload_reach --size=small --out=benchmarks/results/offload_reach

Issue 20.4: measure before building an offload lever.  The step is
``examples/lm_adamw`` (plain jax, hand-written AdamW), whose forward
activations are idle from their layer's forward to its backward.  Each route
is lowered and compiled (nothing runs: no GPU here); for each the table gives
XLA's device temp (``memory_analysis``), its host temp and host output bytes,
the copies into and out of host memory space ``S(5)`` in the optimized HLO
(their count and bytes: the cost), the FLOPs of the optimized module
(``olla_jax.flops``: XLA's ``cost_analysis`` is None on compile-only GPU; remat
routes recompute) and the device temp against the route's control (the same
step without the offload: the baseline, or the same checkpoint policy that
saves or recomputes what the route offloads).

Routes:

* ``device_put`` of the K longest-idle jaxpr values to ``jax.memory.Space.Host``
  and back inside jit, the moves bare (``tie=False``) or tied by
  ``optimization_barrier`` (``olla_jax.offload.rewrite``), against the same
  barriers without the moves (``move=False``, its control); and
  ``olla_jax.offload.offload`` (the lever: the top 1, 2, 4, ... values, the
  least device temp kept), on the GPU target only;
* ``jax.checkpoint`` per transformer block with an offloading policy:
  the MLP pre-activation named and offloaded, everything else saved (a custom
  policy from ``jax.ad_checkpoint.Offloadable``/``Saveable``); the block input
  offloaded, the rest recomputed (``save_and_offload_only_these_names``);
  ``offload_dot_with_no_batch_dims``;
* ``out_shardings`` with ``memory_kind="pinned_host"`` for the new optimizer state;
* ``compute_on("device_host")`` around the AdamW update.

What it found (figures in ``benchmarks/results/offload_reach.md``): on CPU
nothing reaches host memory (jax lowers no placement annotation there, or
XLA:CPU ignores it).  On the compile-only H100 every route compiles; a bare
``device_put`` pair leaves no copy to ``S(5)`` (XLA's per-pass dumps of a
small step, read by hand with ``xla_dump_hlo_pass_re=.*``: the host offloader
makes ``copy(copy(x))`` with the inner one in ``S(5)``, and the algebraic
simplifier right after it removes both); the
checkpoint offload policies do put bytes in ``S(5)`` but raise the device temp
above their save/recompute controls: XLA's scheduler overlaps each copy with
compute (in the HLO of "block input offloaded, rest recomputed", read by hand,
a copy-start comes 2 to 150 instructions before its copy-done), and the
device buffer stays live meanwhile; ``out_shardings`` with ``pinned_host`` is ignored
there (the compile-only device lists no memories); ``compute_on`` becomes a
``HostExecute`` call.  Only the tied moves of ``olla_jax.offload`` lower the
device temp.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Any, Callable

from benchmarks import common

OFFLOADED = "block_in"      # a block's input: a residual of every remat policy
HIDDEN = "mlp_pre"          # the MLP's pre-activation (batch, seq, 4d): computed inside the block


# --- the routes ------------------------------------------------------------------

def _policies():
    import jax
    from jax import ad_checkpoint as ac

    def offload_names_save_rest(prim, *_, **params):
        if prim.name == "name" and params.get("name") == HIDDEN:
            return ac.Offloadable(src="device", dst="pinned_host")
        return ac.Saveable

    def everything_saveable(prim, *_, **params):
        return ac.Saveable

    cp = jax.checkpoint_policies
    return {
        "everything saved": everything_saveable,
        "MLP pre-activation offloaded, rest saved": offload_names_save_rest,
        "block input saved, rest recomputed": cp.save_only_these_names(OFFLOADED),
        "block input offloaded, rest recomputed": cp.save_and_offload_only_these_names(
            names_which_can_be_saved=[], names_which_can_be_offloaded=[OFFLOADED],
            offload_src="device", offload_dst="pinned_host"),
        "dots without batch dims saved": cp.dots_with_no_batch_dims_saveable,
        "offload_dot_with_no_batch_dims": cp.offload_dot_with_no_batch_dims(
            "device", "pinned_host"),
    }


def checkpointed_step(policy) -> Callable:
    """``lm_adamw.train_step`` with each block under ``jax.checkpoint(policy)``,
    its input named ``OFFLOADED``, its MLP pre-activation ``HIDDEN``."""
    import jax
    from jax.ad_checkpoint import checkpoint_name
    from examples import common as ex
    from examples import lm_adamw as lm

    def block(x, p, heads):
        x = checkpoint_name(x, OFFLOADED)
        x = x + lm.attention(lm.layer_norm(x, p["ln1"]), p, heads)
        h = jax.nn.gelu(checkpoint_name(lm.layer_norm(x, p["ln2"]) @ p["up"] + p["up_b"], HIDDEN))
        return x + h @ p["down"] + p["down_b"]

    remat_block = jax.checkpoint(block, policy=policy, static_argnums=(2,))

    def forward(params, tokens, heads):
        x = params["embed"][tokens] + params["pos"][: tokens.shape[1]]
        for p in params["blocks"]:
            x = remat_block(x, p, heads)
        return lm.layer_norm(x, params["ln_f"]) @ params["embed"].T

    def train_step(params, opt_state, batch, heads):
        def loss_fn(p):
            return ex.next_token_loss(forward(p, batch["x"], heads), batch)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        params, opt_state = ex.adamw_update(params, grads, opt_state, lr=3e-4,
                                            weight_decay=0.01)
        return params, opt_state, loss

    return train_step


def host_update_step() -> Callable:
    """``lm_adamw.train_step`` with the AdamW update under ``compute_on("device_host")``."""
    import jax
    from jax.experimental.compute_on import compute_on
    from examples import common as ex
    from examples import lm_adamw as lm

    @compute_on("device_host")
    @jax.jit
    def update(params, grads, opt_state):
        return ex.adamw_update(params, grads, opt_state, lr=3e-4, weight_decay=0.01)

    def train_step(params, opt_state, batch, heads):
        def loss_fn(p):
            return ex.next_token_loss(lm.forward(p, batch["x"], heads), batch)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        params, opt_state = update(params, grads, opt_state)
        return params, opt_state, loss

    return train_step


# --- compiling one route -----------------------------------------------------------

def _mesh(target: str):
    import jax
    import numpy as np
    from jax.sharding import Mesh
    if target == "cpu":
        return Mesh(np.array(jax.devices("cpu")[:1]), ("x",))
    from olla_jax.capture import gpu
    return gpu.gpu_mesh(target.split(":", 1)[1], 1)


def _compile(fn, args, static_argnums, target: str, out_kinds=None):
    """Lowered and compiled ``fn(*args)`` for ``target``; ``out_kinds``: a memory
    kind per output (a prefix of the output pytree)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = _mesh(target)
    jit_kw: dict[str, Any] = {"static_argnums": tuple(static_argnums)}
    if out_kinds is not None:
        jit_kw["out_shardings"] = tuple(NamedSharding(mesh, P(), memory_kind=k) for k in out_kinds)
    shard = NamedSharding(mesh, P())
    abstract = tuple(a if i in static_argnums else jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shard), a)
        for i, a in enumerate(args))
    set_mesh = getattr(jax, "set_mesh", None) or getattr(jax.sharding, "use_mesh", None)
    with set_mesh(mesh) if set_mesh is not None else mesh:
        lowered = jax.jit(fn, **jit_kw).lower(*abstract)
    options = {}
    if target != "cpu":
        from olla_jax.capture import gpu
        options.update(gpu.DEVICELESS_OPTIONS)
    return lowered, lowered.compile(compiler_options=options or None)


def measure(name: str, target: str, fn, args, static_argnums, *, control: str,
            out_kinds=None) -> dict:
    from olla_jax import flops, offload
    row: dict[str, Any] = {"route": name, "target": target, "control": control,
                           "lowered": False, "compiled": False}
    t0 = time.perf_counter()
    try:
        lowered, compiled = _compile(fn, args, static_argnums, target, out_kinds)
        row["lowered"] = row["compiled"] = True
        text = lowered.as_text()
        row["host_annotations_in_lowering"] = text.count('_xla_buffer_placement = "pinned_host"')
        stats = compiled.memory_analysis()
        row["temp"] = int(stats.temp_size_in_bytes)
        row["output"] = int(stats.output_size_in_bytes)
        row["host_temp"] = int(getattr(stats, "host_temp_size_in_bytes", 0) or 0)
        row["host_output"] = int(getattr(stats, "host_output_size_in_bytes", 0) or 0)
        row["flops"] = flops.compiled_flops(compiled)
        row["host_calls"] = _host_calls(compiled.as_text())
        row.update(_transfers(offload.transfers(compiled.as_text())))
    except Exception as err:  # noqa: BLE001 - the error is the answer
        row["error"] = traceback.format_exception_only(type(err), err)[-1].strip()[:600]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _host_calls(hlo_text: str) -> int:
    """Calls run on the host (compute_on): XLA:GPU's ``HostExecute`` custom calls."""
    return hlo_text.count('custom_call_target="HostExecute"')


def _transfers(t) -> dict:
    return {"host_shapes": t.host_shapes, "to_host": t.to_host, "to_host_bytes": t.to_host_bytes,
            "to_device": t.to_device, "to_device_bytes": t.to_device_bytes}


def routes(size: str, values: int):
    """(name, fn, args, static_argnums, control, out_kinds) for every route."""
    import jax
    from examples import lm_adamw
    from olla_jax import offload
    st = lm_adamw.make_step(size)
    args = st.abstract_args()
    static = st.static_argnums
    traced = offload.trace(st.fn, args, static)
    chosen = offload.idle_values(traced.closed)[:values]
    out = [("baseline (lm_adamw as given)", st.fn, "", None)]
    ties_only = (f"optimization_barriers of the tied route alone, no device_put "
                 f"({len(chosen)} values)")
    for tie, move, label, control in (
            (False, True, "bare", "baseline (lm_adamw as given)"),
            (True, False, None, "baseline (lm_adamw as given)"),
            (True, True, "tied by optimization_barrier (olla_jax.offload.rewrite)", ties_only)):
        name = ties_only if label is None else (
            f"device_put to Space.Host and back, {len(chosen)} longest-idle values, {label}")
        out.append((name, offload.rewrite(st.fn, args, chosen, static_argnums=static,
                                          traced=traced, tie=tie, move=move), control, None))
    policies = _policies()
    controls = {"MLP pre-activation offloaded, rest saved": "everything saved",
                "block input offloaded, rest recomputed": "block input saved, rest recomputed",
                "offload_dot_with_no_batch_dims": "dots without batch dims saved"}
    for name, policy in policies.items():
        control = controls.get(name)
        out.append((f"jax.checkpoint per block: {name}", checkpointed_step(policy),
                    f"jax.checkpoint per block: {control}" if control else
                    "baseline (lm_adamw as given)", None))
    out.append(("out_shardings: new optimizer state in pinned_host", st.fn,
                "baseline (lm_adamw as given)", ("device", "pinned_host", "device")))
    out.append(('compute_on("device_host") around the AdamW update', host_update_step(),
                "baseline (lm_adamw as given)", None))
    del jax
    return st, [(n, f, args, static, c, k) for n, f, c, k in out], chosen


def lever(st, target: str, max_values: int | None) -> dict:
    """``olla_jax.offload.offload`` on the step (GPU targets only)."""
    from olla_jax import offload
    row: dict[str, Any] = {"route": "olla_jax.offload.offload (top 1, 2, 4, ... of "
                                    f"{max_values or 'all'} candidates, least temp kept)",
                           "target": target, "control": "baseline (lm_adamw as given)"}
    t0 = time.perf_counter()
    try:
        r = offload.offload(st.fn, *st.abstract_args(), backend=target,
                            static_argnums=st.static_argnums, max_values=max_values)
        from olla_jax import flops
        row.update(flops=flops.compiled_flops(r.capture.compiled),
                   host_calls=_host_calls(r.capture.hlo_text))
        row.update(lowered=True, compiled=True, temp=r.temp, host_temp=r.host_temp,
                   xla_temp=r.xla_temp, values=len(r.chosen), tried=[list(t) for t in r.tried],
                   **_transfers(r.transfers))
        row["summary"] = r.summary()
    except Exception as err:  # noqa: BLE001
        row.update(lowered=False, compiled=False,
                   error=traceback.format_exception_only(type(err), err)[-1].strip()[:600])
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# --- the table --------------------------------------------------------------------

def _mib(x) -> str:
    return "" if x is None else f"{x / 2**20:,.2f}"


def render(rows: list[dict], header: list[str]) -> str:
    by = {(r["target"], r["route"]): r for r in rows}
    lines = list(header)
    cols = ["target", "route", "compiles", "device temp MiB", "vs control", "host temp MiB",
            "host out MiB", "to host: n / MiB", "back: n / MiB", "host calls", "GFLOP"]
    body = []
    for r in rows:
        ctrl = by.get((r["target"], r["control"]))
        ratio = ""
        if ctrl and r.get("temp") is not None and ctrl.get("temp"):
            ratio = f"{r['temp'] / ctrl['temp']:.3f}"
        ok = "yes" if r.get("compiled") else "no"
        body.append([r["target"], r["route"], ok, _mib(r.get("temp")), ratio,
                     _mib(r.get("host_temp")), _mib(r.get("host_output")),
                     f"{r['to_host']} / {_mib(r['to_host_bytes'])}" if "to_host" in r else "",
                     f"{r['to_device']} / {_mib(r['to_device_bytes'])}" if "to_device" in r else "",
                     r.get("host_calls", ""),
                     f"{r['flops'] / 1e9:,.2f}" if r.get("flops", -1) >= 0 else ""])
    lines += common.table(cols, body, right={3, 4, 5, 6, 7, 8, 9, 10})
    lines.append("")
    for target in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == target and r.get("compiled")]
        host_rows = [r for r in mine if r.get("to_host") or r.get("host_temp")
                     or r.get("host_output")]
        host = [r["route"] for r in host_rows]
        lower = [f"{r['route']} ({r['temp'] / by[(target, r['control'])]['temp']:.3f})"
                 for r in host_rows if by.get((target, r["control"]), {}).get("temp")
                 and r["temp"] < by[(target, r["control"])]["temp"]]
        calls = [r["route"] for r in mine if r.get("host_calls")]
        lines.append(f"- {target}: {len(mine)} of "
                     f"{sum(r['target'] == target for r in rows)} routes compile; "
                     f"{len(host)} put bytes in host memory"
                     + (f" ({'; '.join(host)})" if host else "")
                     + "; of those, below their control's device temp: "
                     + ("; ".join(lower) if lower else "none")
                     + "; computing on the host (HostExecute calls): "
                     + ("; ".join(calls) if calls else "none"))
    lines.append("")
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines.append("Errors, as XLA or jax gave them:")
        lines += [f"- {r['target']}, {r['route']}: `{r['error']}`" for r in errors]
        lines.append("")
    for r in rows:
        if r.get("summary"):
            lines.append(f"- {r['target']}: {r['summary']}; tried (values, device temp B): "
                         f"{r.get('tried')}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="small", help="examples/lm_adamw size")
    p.add_argument("--targets", default="gpu:h100,cpu")
    p.add_argument("--values", type=int, default=16,
                   help="longest-idle values moved by the device_put routes")
    p.add_argument("--lever_values", type=int, default=-1,
                   help="at most this many values for olla_jax.offload (-1: all "
                        "candidates, 0: skip the lever)")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    st, todo, chosen = routes(args.size, args.values)
    rows = []
    for target in [t for t in args.targets.split(",") if t]:
        for name, fn, fargs, static, control, kinds in todo:
            row = measure(name, target, fn, fargs, static, control=control, out_kinds=kinds)
            print(f"{target} | {name}: temp {_mib(row.get('temp'))} MiB, "
                  f"{row.get('error', '')[:160]} ({row['seconds']} s)", flush=True)
            rows.append(row)
        if target != "cpu" and args.lever_values:
            rows.append(lever(st, target, None if args.lever_values < 0 else args.lever_values))
            print(rows[-1].get("summary", rows[-1].get("error")), flush=True)
    header = common.header(
        "Host offloading: which jax routes reach XLA's host memory (issue 20.4)",
        {"step": f"examples/lm_adamw size {args.size}: {st.description}",
         "device_put routes move": ", ".join(f"{c.name} {c.shape} idle over {c.gap} equations"
                                             for c in chosen),
         "load average (1/5/15 min; the machine is shared by several jobs)": common.load(),
         "nothing ran": "compiled only (no GPU here); temp and host bytes are XLA's own figures"})
    text = render(rows, header)
    common.print_and_write(text, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
