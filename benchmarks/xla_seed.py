"""What XLA:GPU's rematerialization computes again at one forced limit, and why our levers do not.

    python -m benchmarks.xla_seed --target=h100 --model=unet:small --fraction=0.5 \
        --time_limit_s=20 --out=benchmarks/results/xla_seed_unet_small

XLA's remat is forced as ``benchmarks/gpu_budget.py`` forces it (its limit at
``--fraction`` x XLA's own temp, ``xla_remat.target_file``), on the step
evaluated with one named scope per jaxpr equation (``offload.rewrite(...,
scoped=True)``): its clones (``olla_jax.xla_seed.clones``) are listed by kind,
bytes and FLOPs (``olla_jax.flops`` on the compiled module), and mapped to
jaxpr values (``xla_seed.seeded_values``).  Then, beside them:

* our kernel copies (``budget.candidates.screen`` on our plan of the step):
  the clones' originals that qualify, and why the others do not; the search
  (``budget.timed_search.search``, ``--time_limit_s`` each) asked for XLA's
  temp with candidates restricted to those originals, as on by default and
  with ``screen``'s ``gpu_extra`` kinds (the search's model figures), and with
  every candidate (the default lever); with ``--built=1`` (the default) the
  lever itself (``recompute_to_budget``: checked, rewritten and built) as by
  default, with parked candidates, and with those restricted to XLA's
  originals (its ``producers``);
* program recomputation (``olla_jax.program_remat``): which seeded values are
  among the values XLA keeps (``offload.materialized_names``) and among its
  candidates, with the chain FLOPs it would spend on each; with
  ``--program_seeded=1`` also ``program_remat`` at XLA's temp with the seeded
  values joined to the kept ones (minutes of compiles, ``check=False``).

Compile-only: no GPU is needed; nothing is run.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
import warnings

from benchmarks import common


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="h100")
    p.add_argument("--model", default="unet:small", help="example name:size")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="XLA's memory limit as a fraction of its own temp")
    p.add_argument("--time_limit_s", type=float, default=20.0,
                   help="our plan's and each recomputation search's time limit")
    p.add_argument("--program_seeded", type=int, default=0,
                   help="1: run program_remat with XLA's seeded values kept (minutes)")
    p.add_argument("--built", type=int, default=1,
                   help="1: our recomputation (budget.recompute_to_budget) asked for XLA's temp "
                        "as on by default, with parked candidates, and with those restricted "
                        "to XLA's originals: checked, rewritten and built (not run)")
    p.add_argument("--out", default=None, help="output path without extension")
    a = p.parse_args(argv)
    if not 0 < a.fraction <= 1:
        p.error(f"--fraction must be in (0, 1], not {a.fraction}")
    if a.time_limit_s <= 0:
        p.error(f"--time_limit_s must be > 0, not {a.time_limit_s}")
    if a.model.count(":") != 1:
        p.error(f"--model takes name:size, not {a.model!r}")
    return a


def _mib(n) -> str:
    return f"{n / 2**20:,.2f}"


def _clone_flops(compiled, names: set[str]) -> dict[str, int]:
    """FLOPs of each entry instruction of ``compiled`` named in ``names``."""
    from olla_jax import flops as flops_lib, protos
    module = protos.message_class("xla.HloModuleProto")()
    module.ParseFromString(compiled.runtime_executable().hlo_modules()[0]
                           .as_serialized_hlo_module_proto())
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    payloads = tuple(getattr(module, "payloads", ()))
    entry = comps[module.entry_computation_id]
    return {i.name: flops_lib.instruction_flops(i, by_id, comps, payloads)
            for i in entry.instructions if i.name in names}


def run(a) -> tuple[list[str], dict]:
    import examples
    import olla_jax
    from olla_jax import jaxpr_walk, program_remat, xla_remat, xla_seed
    from olla_jax.capture import gpu, record
    from olla_jax.capture.base import MemoryFigures
    from olla_jax.flops import compiled_flops
    from olla_jax.graph.layout import xla_layout
    from olla_jax.offload import materialized_names, rewrite as offload_rewrite, trace
    from olla_jax.budget.timed_search import search
    cands_lib = importlib.import_module("olla_jax.budget.candidates")

    name, size = a.model.split(":")
    step = examples.get(name, size)
    kw = dict(static_argnums=tuple(step.static_argnums), donate_argnums=tuple(step.donate_argnums))
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step.fn, *step.args, backend=f"gpu:{a.target}",
                             time_limit_s=a.time_limit_s, **kw)
    io = base.argument_bytes + base.output_bytes
    limit = int(a.fraction * base.xla_temp_bytes)
    traced = trace(step.fn, step.args, step.static_argnums)
    scoped = offload_rewrite(step.fn, step.args, (), static_argnums=step.static_argnums,
                             traced=traced, scoped=True)
    with tempfile.TemporaryDirectory(prefix="olla_jax_bench_seed_") as folder, \
            xla_remat.limit_warnings_held():
        path = xla_remat.target_file(a.target, limit, io, folder)
        plain = gpu.compile_for_target(step.fn, tuple(step.args), target=path, **kw)
        named = gpu.compile_for_target(scoped, tuple(step.args), target=path, **kw)
        own = gpu.compile_for_target(step.fn, tuple(step.args), target=a.target, **kw)
    step_flops, plain_flops = compiled_flops(own), compiled_flops(plain)
    plain_temp, named_temp = MemoryFigures.of(plain).temp, MemoryFigures.of(named).temp
    found = xla_seed.clones(named.as_text())
    flops = _clone_flops(named, {c.name for c in found})
    jaxpr = traced.closed.jaxpr
    seeds = xla_seed.seeded_values(found, traced.closed)
    compile_s = time.monotonic() - t0

    lines = common.header(f"What XLA's rematerialization computes again: {a.model} on {a.target} "
                          f"at {a.fraction} x its temp",
                          {"load at start": common.load()})
    lines += [f"- XLA's own temp {_mib(base.xla_temp_bytes)} MiB; its limit at {a.fraction}: "
              f"{_mib(limit)} MiB; rematerialized temp {_mib(plain_temp)} MiB (the step as "
              f"given), {_mib(named_temp)} MiB (scoped per equation, the one read below); extra "
              f"FLOPs {plain_flops - step_flops:,} ({(plain_flops - step_flops) / step_flops:.3%} "
              f"of {step_flops:,}); our plan's temp without recomputation "
              f"{_mib(base.runs_temp_bytes)} MiB",
              f"- clones (views left out): {len(found)}, {_mib(sum(c.nbytes for c in found))} MiB "
              f"of results, {sum(flops.values()):,} FLOPs by olla_jax.flops", "",
              "| clone kind | clones | MiB of results |", "|---|---:|---:|"]
    lines += [f"| {k} | {n} | {_mib(b)} |" for k, n, b in xla_seed.by_kind(found)]
    lines += ["", "Clones of 1 MiB or more (the jaxpr equation from the scope; op_name's tail):", "",
              "| clone | MiB | FLOPs | equation | op_name |", "|---|---:|---:|---|---|"]
    for c in sorted(found, key=lambda c: (-c.nbytes, c.name)):
        if c.nbytes >= 2**20:
            eq = (f"e{c.equation}: {jaxpr.eqns[c.equation].primitive.name}"
                  if c.equation is not None and c.equation < len(jaxpr.eqns) else "-")
            lines.append(f"| {c.name} | {_mib(c.nbytes)} | {flops.get(c.name, 0):,} | {eq} | "
                         f"{c.op_name.split('/', 2)[-1]} |")

    # --- our kernel copies ---------------------------------------------------------
    graph, cap = base.graph, base.capture
    originals = {c.original for c in found}
    cands, why = cands_lib.screen(graph, cap, "flops")
    why = cands_lib.named_refusals(graph, cands, why)
    qualified = {c.value for c in cands}
    status: dict[str, list[int]] = {}
    for v in graph.values.values():
        if graph.nodes[v.def_node] in originals:
            key = "candidate" if v.id in qualified else why.get(v.id, "?")
            row = status.setdefault(key, [0, 0])
            row[0] += 1
            row[1] += v.size
    lines += ["", f"Our kernel copies: values of the {len(originals)} cloned instructions in our "
              "plan's graph (their names are the executable's too):", "",
              "| status | values | MiB |", "|---|---:|---:|"]
    lines += [f"| {k} | {n} | {_mib(b)} |" for k, (n, b) in
              sorted(status.items(), key=lambda kv: -kv[1][1])]
    searches = []
    for tag, extra, only in (("XLA's originals", (), True),
                             ("XLA's originals + parked", ("parked",), True),
                             ("XLA's originals + parked + feeders", ("parked", "feeders"), True),
                             ("every candidate (the lever)", (), False)):
        cs = cands_lib.screen(graph, cap, "flops", gpu_extra=extra)[0] if extra else cands
        if only:
            cs = [c for c in cs if graph.nodes[c.producer] in originals]
        t = time.monotonic()
        for order_name, order, layout in (("ours", base.layout.order, base.layout),
                                          ("XLA's", graph.xla_order, xla_layout(graph))):
            if not only and order_name != "ours":
                continue
            got = search(graph, order, cs, plain_temp, time_limit_s=a.time_limit_s,
                         engine="cpsat", layout=layout)
            searches.append({"set": tag, "order": order_name, "candidates": len(cs),
                             "temp": None if got is None else got.temp_bytes,
                             "flops": None if got is None else got.extra_flops,
                             "picked": [] if got is None else sorted(got.picked),
                             "seconds": round(time.monotonic() - t, 1)})
            t = time.monotonic()
    lines += ["", f"Our search (model, not built) asked for XLA's temp {_mib(plain_temp)} MiB, "
              f"{a.time_limit_s:g} s each:", "",
              "| candidates | order | values | temp MiB | extra FLOPs | copies of |",
              "|---|---|---:|---:|---:|---|"]
    for s in searches:
        lines.append(f"| {s['set']} | {s['order']} | {s['candidates']} | "
                     f"{'-' if s['temp'] is None else _mib(s['temp'])} | "
                     f"{'-' if s['flops'] is None else format(s['flops'], ',')} | "
                     f"{', '.join(s['picked'])} |")

    built = []
    if a.built:
        from olla_jax import budget as budget_lib
        fixed = base.runs_total_bytes - base.runs_temp_bytes
        for tag, extra, only in (("as by default", (), None),
                                 ("+ parked", ("parked",), None),
                                 ("+ parked, XLA's originals only", ("parked",), originals)):
            t = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = budget_lib.recompute_to_budget(
                    base, fixed + plain_temp, measure_time=False, recompute_cost="flops",
                    time_limit_s=a.time_limit_s, gpu_extra=extra, producers=only)
            built.append({"set": tag, "temp": res.runs_temp_bytes, "flops": res.extra_flops or 0,
                          "recomputed": sorted(res.recomputed or ()),
                          "built": res.executable_bytes is not None,
                          "note": res.notes[-1] if res.notes else "",
                          "seconds": round(time.monotonic() - t, 1)})
        lines += ["", f"Our recomputation (budget.recompute_to_budget, recompute_cost='flops', "
                  f"{a.time_limit_s:g} s) asked for XLA's temp {_mib(plain_temp)} MiB: checked, "
                  "rewritten and built (not run):", "",
                  "| candidates | temp MiB | extra FLOPs | x XLA's FLOPs | built | seconds | "
                  "recomputed |", "|---|---:|---:|---:|---|---:|---|"]
        for b in built:
            lines.append(f"| {b['set']} | {_mib(b['temp'])} | {b['flops']:,} | "
                         f"{b['flops'] / max(plain_flops - step_flops, 1):.2f} | "
                         f"{'yes' if b['built'] else 'no'} | {b['seconds']} | "
                         f"{', '.join(b['recomputed'])} |")

    # --- program recomputation -----------------------------------------------------
    kw_cap = dict(backend=f"gpu:{a.target}", **kw)
    named_cap = record.capture(scoped, *step.args, **kw_cap)
    kept = materialized_names(named_cap.hlo_text, traced.closed)
    pool = {c.name: c for c in program_remat.candidates(traced.closed, kept)}
    seeded_pool = {c.name: c for c in program_remat.candidates(traced.closed, kept | set(seeds))}
    var_of = {n: v for v, n in jaxpr_walk.names(jaxpr).items()}
    lines += ["", "Program recomputation: the values XLA's clones compute again "
              "(``xla_seed.seeded_values``) against program_remat's pool:", "",
              "| value | MiB | XLA keeps it | in the pool | chain FLOPs | with seeds kept: chain "
              "FLOPs |", "|---|---:|---|---|---:|---:|"]
    for n in sorted(seeds, key=lambda n: (-jaxpr_walk.nbytes(var_of[n]), n)):
        if jaxpr_walk.nbytes(var_of[n]) < 2**19:
            continue
        c, s = pool.get(n), seeded_pool.get(n)
        lines.append(f"| {n} | {_mib(jaxpr_walk.nbytes(var_of[n]))} | "
                     f"{'yes' if n in kept else 'no'} | {'yes' if c else 'no'} | "
                     f"{'-' if c is None else format(c.flops, ',')} | "
                     f"{'-' if s is None else format(s.flops, ',')} |")
    program = None
    if a.program_seeded:
        memo = {"base": record.capture(step.fn, *step.args, **kw_cap), "traced": traced,
                "materialized": frozenset(kept | set(seeds))}
        memo["base_flops"] = program_remat._flops(memo["base"])
        t = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = program_remat.program_remat(step.fn, *step.args, budget=plain_temp, check=False,
                                            memo=memo, **kw_cap)
        program = {"summary": r.summary(), "tried": r.tried, "chosen": [c.name for c in r.chosen],
                   "seconds": round(time.monotonic() - t, 1)}
        lines += ["", f"- program_remat with the seeded values kept ({program['seconds']} s): "
                  f"{r.summary()}; tried (values, temp, extra FLOPs): "
                  + ", ".join(f"({n}, {_mib(tm)} MiB, {fl:,})" for n, tm, fl in r.tried)]
    lines += ["", f"- {time.monotonic() - t0:.0f} s in all ({compile_s:.0f} s to our plan and "
              f"XLA's compiles); load at end {common.load()}"]
    payload = {"model": a.model, "target": a.target, "fraction": a.fraction,
               "xla_temp": base.xla_temp_bytes, "limit": limit, "remat_temp": plain_temp,
               "scoped_remat_temp": named_temp, "step_flops": step_flops,
               "remat_flops": plain_flops,
               "clones": [{"name": c.name, "kind": f"{c.opcode} {c.kind}".strip(),
                           "bytes": c.nbytes, "flops": flops.get(c.name, 0),
                           "equation": c.equation, "op_name": c.op_name} for c in found],
               "seeds": seeds, "kernel_status": status, "searches": searches, "built": built,
               "program_seeded": program}
    return lines, payload


def main(argv=None) -> None:
    a = _args(argv)
    lines, payload = run(a)
    print("\n".join(lines))
    if a.out:
        common.write_results(a.out, {"command": common.command_line(), **payload},
                             "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
