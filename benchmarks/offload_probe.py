"""Is host offloading reachable from jax on a compile-only GPU target?

    python -m benchmarks.offload_probe --target=h100 --out=benchmarks/results/offload_probe_h100

Issue 20.4 asks, before any offload planning is built, whether jax's memory
kinds and XLA's host offloading compile for a GPU described by a target
config (no GPU on this machine), and what the executable's buffers then look
like.  Each probe jits a small step that asks for host memory one way:

* ``device_put_in_jit``: ``jax.device_put(x, memory_kind="pinned_host")`` of
  an intermediate inside jit, then back to ``"device"`` before use;
* ``out_sharding_host``: an output whose sharding has ``memory_kind="pinned_host"``;
* ``remat_offload``: ``jax.checkpoint`` with
  ``save_and_offload_only_these_names`` (activations offloaded to pinned host
  between forward and backward);
* ``compute_on_host``: ``jax.experimental.compute_on.compute_on("device_host")``.

For each it prints whether lowering and compiling succeeded (or the error),
XLA's memory_analysis (device temp, host temp, host argument/output bytes
where reported), the host-memory transfers left in the optimized HLO
(``MoveToHost``/``MoveToDevice`` annotations, copy-start/copy-done with a
host memory space ``S(5)``) and the thunk kinds of the serialized executable.
Nothing runs: the answer is only "XLA compiles it for this target, like this".
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import traceback
from typing import Any, Callable

from benchmarks import common


def _probes() -> dict[str, tuple[Callable, tuple, dict]]:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    S = jax.ShapeDtypeStruct
    x = S((256, 512), jnp.float32)
    w = S((512, 512), jnp.float32)

    def device_put_in_jit(x, w):
        h = jnp.tanh(x @ w)
        parked = jax.device_put(h, jax.memory.Space.Host) if hasattr(jax, "memory") else \
            jax.device_put(h, memory_kind="pinned_host")
        h2 = jnp.tanh(h @ w)
        back = jax.device_put(parked, jax.memory.Space.Device) if hasattr(jax, "memory") else \
            jax.device_put(parked, memory_kind="device")
        return (h2 * back).sum()

    def device_put_memory_kind(x, w):
        h = jnp.tanh(x @ w)
        parked = jax.device_put(h, _sharding_with_kind("pinned_host"))
        h2 = jnp.tanh(h @ w)
        back = jax.device_put(parked, _sharding_with_kind("device"))
        return (h2 * back).sum()

    mesh_holder: dict[str, Any] = {}

    def _sharding_with_kind(kind):
        return NamedSharding(mesh_holder["mesh"], P(), memory_kind=kind)

    def out_sharding_host(x, w):
        return jnp.tanh(x @ w)

    def remat_offload(x, w):
        from jax.ad_checkpoint import checkpoint_name

        def layer(h, w):
            return checkpoint_name(jnp.tanh(h @ w), "act")

        policy = jax.checkpoint_policies.save_and_offload_only_these_names(
            names_which_can_be_saved=[], names_which_can_be_offloaded=["act"],
            offload_src="device", offload_dst="pinned_host")
        f = jax.checkpoint(lambda w: layer(layer(layer(x, w), w), w).sum(), policy=policy)
        return jax.grad(f)(w)

    def compute_on_host(x, w):
        from jax.experimental.compute_on import compute_on
        h = x @ w

        @compute_on("device_host")
        @jax.jit
        def host_part(h):
            return h * 2.0

        return host_part(h).sum()

    return {
        "device_put_in_jit (jax.memory.Space.Host)": (device_put_in_jit, (x, w), {}),
        "device_put_in_jit (NamedSharding memory_kind)": (device_put_memory_kind, (x, w),
                                                          {"mesh_holder": mesh_holder}),
        "out_sharding_host (output in pinned_host)": (out_sharding_host, (x, w),
                                                      {"out_kind": "pinned_host",
                                                       "mesh_holder": mesh_holder}),
        "remat_offload (save_and_offload_only_these_names)": (remat_offload, (x, w), {}),
        "compute_on_host (compute_on('device_host'))": (compute_on_host, (x, w), {}),
    }


def _describe(compiled) -> dict:
    """What the compiled executable says about host memory."""
    out: dict[str, Any] = {}
    stats = compiled.memory_analysis()
    for field in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
                  "host_temp_size_in_bytes", "host_argument_size_in_bytes",
                  "host_output_size_in_bytes", "host_generated_code_size_in_bytes"):
        if hasattr(stats, field):
            out[field] = int(getattr(stats, field))
    text = compiled.as_text()
    out["host_annotations"] = sorted(set(re.findall(r'custom_call_target="(MoveTo\w+)"', text)))
    out["host_space_shapes"] = len(re.findall(r"S\(5\)", text))
    out["copy_start"] = len(re.findall(r"\bcopy-start\b", text))
    out["dynamic_update_slice_to_host"] = len(re.findall(r"dynamic-update-slice[^\n]*S\(5\)", text))
    try:
        from olla_jax.apply import gpu_executable, gpu_rewrite
        from olla_jax.capture.record import serialize_executable
        raw = serialize_executable(compiled)
        decoded = gpu_executable.decode(raw)
        kinds = collections.Counter(gpu_rewrite.thunk_kind(t) for t in decoded.thunks)
        out["thunks"] = dict(sorted(kinds.items()))
        out["allocations"] = len(decoded.allocations)
        spaces = collections.Counter(int(getattr(a, "color", 0)) for a in decoded.allocations)
        out["allocation_colors"] = {str(k): v for k, v in sorted(spaces.items())}
    except Exception as err:  # noqa: BLE001 - a probe reports, it does not stop
        out["executable"] = f"not decoded: {type(err).__name__}: {str(err)[:200]}"
    return out


def probe(target: str) -> list[dict]:
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from olla_jax.capture import gpu

    mesh = gpu.gpu_mesh(target, 1)
    rows = []
    for name, (fn, args, extra) in _probes().items():
        if "mesh_holder" in extra:
            extra["mesh_holder"]["mesh"] = mesh
        row: dict[str, Any] = {"probe": name}
        try:
            shard = NamedSharding(mesh, P())
            abstract = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shard) for a in args)
            kw = {}
            if extra.get("out_kind"):
                kw["out_shardings"] = NamedSharding(mesh, P(), memory_kind=extra["out_kind"])
            lowered = jax.jit(fn, **kw).lower(*abstract)
            row["lowered"] = True
            compiled = lowered.compile()
            row["compiled"] = True
            row.update(_describe(compiled))
        except Exception as err:  # noqa: BLE001 - the error is the answer
            row.setdefault("lowered", False)
            row["compiled"] = False
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            row["error"] = last[:400]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="h100")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    rows = probe(args.target)
    lines = common.header(f"Host offloading on a compile-only GPU target ({args.target})",
                          {"load average (1/5/15 min; machine shared by several jobs)": common.load()})
    from olla_jax.capture import gpu
    dev = gpu.gpu_devices(args.target, 1)[0]
    try:
        lines.append(f"- memory kinds of the compile-only device: "
                     f"{[m.kind for m in dev.addressable_memories()]}")
    except Exception as err:  # noqa: BLE001
        lines.append(f"- memory kinds of the compile-only device: not listed ({err})")
    reached = [r["probe"] for r in rows if r.get("host_temp_size_in_bytes", 0) > 0
               or r.get("host_output_size_in_bytes", 0) > 0
               or any(c != "0" for c in r.get("allocation_colors", {}))]
    lines.append("- host memory in the compiled executable (host bytes in memory_analysis or an "
                 "allocation of another memory color): "
                 + (", ".join(reached) if reached else "none of the probes"))
    lines.append("")
    for row in rows:
        lines.append(f"## {row['probe']}")
        for k, v in row.items():
            if k != "probe":
                lines.append(f"- {k}: {v}")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        common.write_results(args.out, {"rows": rows, "command": common.command_line()}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
