"""Which gathered arrays are live at the peak of a sharded step's re-timed order, and why
re-gathering (``olla_jax.graph.regather``) does or does not take them.

    python -m benchmarks.regather_peak --size=4x256 --out=benchmarks/results/regather_peak_4x256

The Llama-style step of ``benchmarks/sharded_llm.py`` (FSDP, per-block remat) on
8 compile-only H100s, compiled with XLA's collective combining off (what
``olla_jax.plan`` plans on).  XLA's order is drawn in (``overlap.just_in_time``)
and re-timed to XLA's default compile's exposure, as "hidden" does; then, at the
live-bytes peak of that order, each gathered array still live: its size, whether
XLA made its all-gather synchronous (no async thunks: re-gathering skips it),
and the flat steps of its start and readers.  Then what ``regather.plan`` takes.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import common


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="4x256", help="layers x d_model")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--out", default="regather_peak")
    args = p.parse_args(argv)
    common.gpu_environment("gpu")
    from examples import llama
    from olla_jax import dumps
    from olla_jax.capture import capture, gpu
    from olla_jax.graph import collectives, model, overlap, regather

    layers, d = (int(x) for x in args.size.lower().split("x"))
    heads = max(1, d // 64)
    step = llama.make_step(llama.Config(layers=layers, d_model=d, heads=heads,
                                        kv_heads=max(1, heads // 2), seq=256, batch=16,
                                        vocab=8192, remat=True))
    spmd = dict(num_devices=args.devices, in_shardings=llama.shardings(step, "fsdp", args.devices))
    cost = overlap.device_cost(gpu._target_path("h100").read_text())
    default = capture(step.fn, *step.args, backend="gpu:h100", donate_argnums=step.donate_argnums,
                      spmd=spmd)
    allowance = overlap.module_exposure(dumps.parse_hlo_proto(default.hlo_proto).hlo_module,
                                        cost, args.devices).exposed_s
    cap = capture(step.fn, *step.args, backend="gpu:h100", donate_argnums=step.donate_argnums,
                  compiler_options={k: 0 for k in collectives.COMBINE_THRESHOLD_OPTIONS}, spmd=spmd)
    graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text, alignment=256)
    module = dumps.parse_hlo_proto(cap.hlo_proto).hlo_module
    model_ = overlap.step_model(module, graph, collectives.async_pairs(module), cost, args.devices)
    sync = collectives.sync_starts(module)
    problem = graph.order_problem()
    t0 = time.monotonic()
    drawn = overlap.just_in_time(graph.xla_order, model_.node_seconds, model_.collectives,
                                 problem.edges)
    retimed = overlap.retime(drawn, model_.node_seconds, model_.collectives, problem.edges,
                             allowance, lambda o: overlap.order_problem_cost(problem, o))
    order = retimed.order
    spans = graph.unit_spans(order)
    layout = graph.flat_layout(order)
    live = regather._profile(graph, spans)
    at = int(live.argmax())
    lines = common.header(f"Gathered arrays at the peak of the re-timed order ({args.size}, FSDP, "
                          f"remat, {args.devices} x h100, compile-only)",
                          {"note": "the machine (2 cores) was shared with other jobs"},
                          command=common.command_line(), machine_info=common.machine())
    lines += [f"Re-timed order: exposed {retimed.exposure.exposed_s * 1e6:,.0f} us (allowed "
              f"{allowance * 1e6:,.0f} us, XLA's default compile), live-bytes peak "
              f"{common.mib(int(live[at]))} MiB at flat step {at} of {len(live)} "
              f"({time.monotonic() - t0:.1f} s to draw in and re-time).", ""]
    rows = []
    for c in model_.collectives:
        if c.kind != "all-gather":
            continue
        units = {graph.unit_of_value[v.id] for v in graph.values.values()
                 if v.def_node == c.start and v.size > 64}
        for u in units:
            if not any(a <= at <= b for a, b in spans[u]):
                continue
            readers = sorted({layout[t] for v in graph.units[u].values
                              for t in graph.values[v].touches} - {layout[c.start],
                                                                   layout[c.done]})
            rows.append([graph.nodes[c.start], common.mib(graph.units[u].size),
                         "sync" if graph.nodes[c.start] in sync else "async",
                         layout[c.start], ", ".join(map(str, readers))])
    rows.sort(key=lambda r: -float(r[1].replace(",", "")))
    lines += common.table(["all-gather", "MiB", "XLA made it", "start step", "reader steps"],
                          rows, right={1, 3})
    rp = regather.plan(graph, order, model_, allowance, exclude=sync)
    lines += ["", f"regather.plan (synchronous all-gathers excluded): {len(rp.regathers)} "
                  f"re-gathers, live-bytes peak {common.mib(rp.peak_before)} -> "
                  f"{common.mib(rp.peak)} MiB, exposed {rp.exposure.exposed_s * 1e6:,.0f} us."]
    text = "\n".join(lines) + "\n"
    common.write_results(args.out, {"command": common.command_line(), "machine": common.machine(),
                                    "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
