"""Recomputing top-level residuals before XLA fuses (issue 20 probe, "flat remat").

    python -m benchmarks.flat_remat --target=h100 --models=vit:small,unet:small \
        --out=benchmarks/results/flat_remat_h100

A feasibility probe, not a lever of the product.  The step is traced to a
jaxpr (``scan_remat.trace``: top-level calls inlined).  A residual is a value
made before the jaxpr's peak of live bytes (the forward/backward junction)
that is read again after it, its producing chain cheap: elementwise ops,
layout ops (broadcast, reshape, transpose, convert) and, with
``--concat=1``, concatenate/slice/pad/split.  Its chain is walked back to
stops: the step's inputs, the outputs of costly equations (dots,
convolutions, reductions) and values read after the late use anyway.  The
rewrite evaluates the jaxpr again with each chosen residual's late readers
reading a copy of its chain, re-emitted just before its first late reader
from ``lax.optimization_barrier((stops, tie))`` (``tie``: that reader's
latest-made other operand), so that XLA cannot hoist the copy or merge it
with the original; XLA then fuses the copy into the backward's consumers.

Residuals are grouped into components (they share a stop that is not read
late otherwise, e.g. a dot's output the GeLU chain is recomputed from, or
one is another's stop).  Each component with a positive jaxpr-level saving is
compiled alone for the target (XLA's temp of the rewrite, its rematerialization
off), then the components that lowered it are taken together in growing sets
(best bytes per extra FLOP first).  Extra FLOPs: ``olla_jax.flops`` on the
compiled HLO against the step's, as ``benchmarks.gpu_budget`` counts them.
Each set is set against XLA's remat points (``gpu_budget``'s cache) with
``gpu_budget.against_xla``; the set with the least temp is also planned by
``olla_jax.plan`` (our order and placement of the rewritten step).
Compile-only: nothing is run, and the rewrite's outputs are not compared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import types
import warnings
from typing import Any

from benchmarks import common

CHEAP = frozenset({
    "mul", "add", "sub", "div", "neg", "max", "min", "select_n", "integer_pow", "square", "sqrt",
    "rsqrt", "exp", "tanh", "logistic", "eq", "lt", "gt", "ge", "le", "ne", "abs", "sign", "log",
    "erf", "pow", "stop_gradient", "add_any", "and", "or", "not",
    "broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims", "convert_element_type",
    "copy"})
LAYOUT = frozenset({"broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims",
                    "convert_element_type", "copy"})
COPIES = frozenset({"concatenate", "slice", "pad", "split"})


def _nbytes(aval) -> int:
    import numpy as np
    return int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize


class Residuals:
    """The jaxpr's recomputable residuals and their components."""

    def __init__(self, closed, *, cheap=CHEAP, gap: int = 100, max_cone: int = 60,
                 min_bytes: int = 64 * 1024):
        import numpy as np
        from jax.extend import core as jex
        from olla_jax import scan_remat
        self.jex = jex
        j = self.jaxpr = closed.jaxpr
        n = len(j.eqns)
        self.defn: dict[Any, int] = {}
        self.uses: dict[Any, list[int]] = {}
        for i, e in enumerate(j.eqns):
            for v in e.invars:
                if isinstance(v, jex.Var):
                    self.uses.setdefault(v, []).append(i)
            for v in e.outvars:
                if not isinstance(v, jex.DropVar):
                    self.defn[v] = i
        for v in j.outvars:
            if isinstance(v, jex.Var):
                self.uses.setdefault(v, []).append(n)
        self.free = set(j.invars) | set(j.constvars)
        delta = np.zeros(n + 2)
        for v, i in self.defn.items():
            if hasattr(v.aval, "shape"):
                delta[i] += _nbytes(v.aval)
                delta[max(self.uses.get(v, [i])) + 1] -= _nbytes(v.aval)
        self.peak = int(np.argmax(np.cumsum(delta)[:n]))
        self.cheap, self.max_cone = cheap, max_cone
        cands = []
        for v, i in self.defn.items():
            us = sorted(set(self.uses.get(v, [])))
            if (not us or us[-1] == n or not hasattr(v.aval, "shape")
                    or _nbytes(v.aval) < min_bytes):
                continue
            pts = [i] + us
            g, k = max((pts[q + 1] - pts[q], q) for q in range(len(pts) - 1))
            if g < gap or not pts[k] <= self.peak < pts[k + 1]:
                continue
            late = pts[k + 1:]
            cone = self._cone(v, late[0])
            if cone is None:
                continue
            eqns, stops, dead = cone
            cands.append(dict(v=v, late=late, first_late=late[0], eqns=eqns, stops=stops,
                              dead=dead, nbytes=_nbytes(v.aval), prim=j.eqns[i].primitive.name,
                              flops=sum(scan_remat.eqn_flops(j.eqns[q]) for q in eqns)))
        self.candidates = cands
        self.components = self._components(cands)

    def _live_at(self, u, t: int) -> bool:
        return u in self.free or max(self.uses.get(u, [-1])) >= t

    def _cone(self, v, t: int):
        """(equations recomputing v, its stops, the stops not read at or after t)."""
        j = self.jaxpr
        need, stops, todo, seen = set(), set(), [v], set()
        while todo:
            u = todo.pop()
            if u in seen:
                continue
            seen.add(u)
            if u in self.free:
                stops.add(u)
                continue
            e = j.eqns[self.defn[u]]
            cheap = e.primitive.name in self.cheap and not e.effects
            if u is not v:
                if not cheap or (self._live_at(u, t) and e.primitive.name not in LAYOUT):
                    stops.add(u)
                    continue
            elif not cheap:
                return None
            need.add(self.defn[u])
            if len(need) > self.max_cone:
                return None
            todo += [w for w in e.invars if isinstance(w, self.jex.Var)]
        return sorted(need), stops, frozenset(u for u in stops if not self._live_at(u, t))

    def _components(self, cands: list[dict]) -> list[dict]:
        parent = list(range(len(cands)))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x
        index = {c["v"]: k for k, c in enumerate(cands)}
        owner: dict[Any, int] = {}
        for k, c in enumerate(cands):
            for u in c["stops"]:
                if u in index:
                    parent[find(k)] = find(index[u])
            for u in c["dead"]:
                if u in owner:
                    parent[find(k)] = find(owner[u])
                owner[u] = k
        groups: dict[int, list[dict]] = {}
        for k in range(len(cands)):
            groups.setdefault(find(k), []).append(cands[k])
        out = []
        for cs in groups.values():
            members = {c["v"] for c in cs}
            kept = set().union(*[c["dead"] for c in cs]) - members
            out.append(dict(members=cs, net=sum(c["nbytes"] for c in cs)
                            - sum(_nbytes(u.aval) for u in kept),
                            what=sorted({c["prim"] for c in cs}),
                            kept=sorted({self.jaxpr.eqns[self.defn[u]].primitive.name
                                         for u in kept})))
        return sorted(out, key=lambda c: -c["net"])

    def evaluate(self, closed, args, chosen: list[dict], per_reader: bool = False) -> list[Any]:
        """``closed`` on ``args`` with ``chosen``'s late readers reading copies: one
        copy made before the first late reader, or (``per_reader``) one before each."""
        import jax
        from olla_jax import jax_compat
        jex, j = self.jex, closed.jaxpr
        env = dict(zip(j.constvars, closed.consts))
        env.update(zip(j.invars, args))
        by_v = {c["v"]: c for c in chosen}
        made_at = {(q, c["v"]): (q if per_reader else c["first_late"])
                   for c in chosen for q in c["late"]}
        # a copy is keyed by where it is made (per_reader), else by its value alone:
        # one residual's copy made for another's chain is the one its readers read
        key = (lambda v, m: (v, m)) if per_reader else (lambda v, m: (v, None))
        at: dict[int, list[dict]] = {}
        for (q, v), m in made_at.items():
            if by_v[v] not in at.setdefault(m, []):
                at[m].append(by_v[v])
        copies: dict[tuple[Any, int], Any] = {}

        def copy_of(c, tie, m):
            if key(c["v"], m) in copies:
                return copies[key(c["v"], m)]
            stops = sorted(c["stops"], key=lambda w: self.defn.get(w, -1))
            vals = [copy_of(by_v[w], tie, m) if w in by_v else env[w] for w in stops]
            local = dict(zip(stops, jax.lax.optimization_barrier((vals, tie))[0]))
            for q in c["eqns"]:
                eq = j.eqns[q]
                ins = [w.val if isinstance(w, jex.Literal) else local[w] for w in eq.invars]
                for w, x in zip(eq.outvars, jax_compat.bind_equation(eq, ins)):
                    if not isinstance(w, jex.DropVar):
                        local[w] = x
            copies[key(c["v"], m)] = local[c["v"]]
            return local[c["v"]]

        for i, e in enumerate(j.eqns):
            if i in at:
                others = [w for w in e.invars if isinstance(w, jex.Var) and w not in by_v]
                if others:
                    tie = env[max(others, key=lambda w: self.defn.get(w, -1))]
                else:
                    tie = next(env[w] for q in range(i - 1, -1, -1) for w in j.eqns[q].outvars
                               if not isinstance(w, jex.DropVar))
                for c in sorted(at[i], key=lambda c: self.defn[c["v"]]):
                    copy_of(c, tie, i)
            ins = [w.val if isinstance(w, jex.Literal) else
                   (copies[key(w, made_at[i, w])] if (i, w) in made_at else env[w])
                   for w in e.invars]
            for w, x in zip(e.outvars, jax_compat.bind_equation(e, ins)):
                if not isinstance(w, jex.DropVar):
                    env[w] = x
        return [w.val if isinstance(w, jex.Literal) else env[w] for w in j.outvars]


def run_one(item: str, args) -> dict:
    import jax
    import examples
    import olla_jax
    from benchmarks import gpu_budget as gb
    from olla_jax import budget, flops, gpu_budget, scan_remat
    from olla_jax.capture import record

    name, size = item.split(":")
    step = examples.get(name, size)
    backend = f"gpu:{args.target}"
    kw = dict(backend=backend, static_argnums=step.static_argnums,
              donate_argnums=step.donate_argnums)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = olla_jax.plan(step.fn, *step.args, time_limit_s=args.plan_time_limit_s, **kw)
    step_flops = budget.step_flops(base.capture)
    cache = gb._cache_load(args.cache)
    points, compiled = gb.xla_points(step, item, base, types.SimpleNamespace(
        limits=args.limits, target=args.target), cache)
    if compiled:
        gb._cache_save(args.cache, cache)
    xla = sorted({(p["temp"], max(0, p["flops"] - step_flops)) for p in points
                  if p["temp"] < base.xla_temp_bytes})
    traced = scan_remat.trace(step.fn, step.args, step.static_argnums)
    res = Residuals(traced.closed, cheap=CHEAP | (COPIES if args.concat else frozenset()))
    out_tree = jax.tree.structure(traced.out_shape)

    def rewritten(chosen):
        def fn(*xs):
            return jax.tree.unflatten(out_tree, res.evaluate(traced.closed,
                                                             jax.tree.leaves(list(xs)), chosen,
                                                             args.per_reader))
        fn.__name__ = f"{name}_flat_remat"
        return fn

    def measure(chosen) -> dict:
        t = time.monotonic()
        cap = record.capture(rewritten(chosen), *step.args, **kw)
        return {"temp": cap.memory.temp,
                "flops": flops.compiled_flops(cap.compiled) - step_flops,
                "seconds": round(time.monotonic() - t, 1)}

    row = {"example": item, "xla_temp": base.xla_temp_bytes, "plan_temp": base.runs_temp_bytes,
           "step_flops": step_flops, "xla_points": [list(p) for p in xla],
           "jaxpr_eqns": len(traced.closed.jaxpr.eqns), "peak_eqn": res.peak,
           "candidates": len(res.candidates), "components": len(res.components),
           "singles": [], "sets": []}
    comps = [c for c in res.components if c["net"] > 0]
    for k, c in enumerate(comps):
        m = measure(c["members"])
        row["singles"].append(dict(m, index=k, residuals=len(c["members"]),
                                   jaxpr_net=c["net"], what=c["what"], kept=c["kept"]))
        print(item, "component", k, json.dumps(row["singles"][-1]), flush=True)
    gains = [s for s in row["singles"] if s["temp"] < base.xla_temp_bytes]
    gains.sort(key=lambda s: (s["temp"] - base.xla_temp_bytes) / max(s["flops"], 1e5))
    sizes, k = [], 1
    while k < len(gains):
        sizes.append(k)
        k *= 2
    sizes += [len(gains)] if gains else []
    best = None
    for k in sizes:
        chosen = [m for s in gains[:k] for m in comps[s["index"]]["members"]]
        m = dict(measure(chosen), components=k, residuals=len(chosen))
        m["verdicts"] = [gpu_budget.against_xla(m["temp"], max(0, m["flops"]), t, f).met
                         for t, f in xla]
        row["sets"].append(m)
        print(item, "set", json.dumps(m), flush=True)
        if best is None or m["temp"] < best[0]["temp"]:
            best = (m, chosen)
    if best is not None:     # our order and placement on the least-temp rewrite
        t = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            planned = olla_jax.plan(rewritten(best[1]), *step.args,
                                    time_limit_s=args.plan_time_limit_s, **kw)
        row["best_planned"] = {
            "temp": planned.runs_temp_bytes, "flops": best[0]["flops"],
            "components": best[0]["components"], "seconds": round(time.monotonic() - t, 1),
            "verdicts": [gpu_budget.against_xla(planned.runs_temp_bytes,
                                                max(0, best[0]["flops"]), t_, f).met
                         for t_, f in xla]}
    return row


def render(rows: list[dict], args, loads: tuple[str, str]) -> str:
    mib = common.mib
    lines = common.header(
        f"Top-level residuals recomputed before XLA fuses, compile-only {args.target}",
        {"load average at start / end (1/5/15 min; 2 cores shared by several helpers)":
         f"{loads[0]} ; {loads[1]}",
         "cheap chains": "elementwise and layout ops" + (", concatenate/slice/pad/split"
                                                         if args.concat else ""),
         "copies": "one before each late reader" if args.per_reader
                   else "one before the first late reader",
         "XLA's remat points": f"limits {', '.join(map(str, args.limits))} x its temp "
                               f"(benchmarks.gpu_budget's cache)"})
    lines += ["Temps in MiB (XLA's temp of each compiled program, its rematerialization off); "
              "extra FLOPs by olla_jax.flops against the step's. Target per XLA point (temp M, "
              "extra FLOPs F): M at <= 0.5 F, or 0.85 M at <= F (gpu_budget.against_xla). "
              "Compile-only: not run, outputs not compared.", ""]
    for r in rows:
        if "error" in r:
            lines += [f"## {r['example']}: error", "", r["error"], ""]
            continue
        share = lambda f: f"{f:,} ({100 * f / r['step_flops']:.3f}%)"   # noqa: E731
        pts = "; ".join(f"{mib(t)} at {share(f)}" for t, f in r["xla_points"])
        lines += [f"## {r['example']}", "",
                  f"- XLA's temp {mib(r['xla_temp'])}, our order and placement "
                  f"{mib(r['plan_temp'])}; XLA's remat points: {pts}",
                  f"- jaxpr: {r['jaxpr_eqns']} equations, live-bytes peak at equation "
                  f"{r['peak_eqn']}; {r['candidates']} residuals in {r['components']} "
                  f"components, {len(r['singles'])} with a positive jaxpr-level saving", "",
                  "Each component alone:", ""]
        lines += common.table(
            ["component", "residuals", "what", "kept instead", "jaxpr saving", "temp",
             "vs XLA's", "extra FLOPs"],
            [[s["index"], s["residuals"], ",".join(s["what"]), ",".join(s["kept"]) or "-",
              mib(s["jaxpr_net"]), mib(s["temp"]), f"{(s['temp'] - r['xla_temp']) / 2**20:+.2f}",
              share(s["flops"])] for s in r["singles"]], right={1, 4, 5, 6, 7})
        lines += ["", "Those that lowered it, together (best saving per extra FLOP first):", ""]
        lines += common.table(
            ["components", "residuals", "temp", "extra FLOPs", "meets XLA's points"],
            [[s["components"], s["residuals"], mib(s["temp"]), share(s["flops"]),
              ", ".join("yes" if v else "no" for v in s["verdicts"])] for s in r["sets"]],
            right={0, 1, 2, 3})
        bp = r.get("best_planned")
        if bp:
            lines += ["", f"Least-temp set ({bp['components']} components) ordered and placed "
                          f"by olla_jax.plan: {mib(bp['temp'])} at {share(bp['flops'])}; meets "
                          f"XLA's points: {', '.join('yes' if v else 'no' for v in bp['verdicts'])}"
                          f" ({bp['seconds']} s)"]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="h100")
    p.add_argument("--models", default="vit:small,unet:small")
    p.add_argument("--limits", default="0.8,0.5")
    p.add_argument("--concat", type=int, default=0, choices=(0, 1),
                   help="also recompute through concatenate/slice/pad/split")
    p.add_argument("--per_reader", type=int, default=0, choices=(0, 1),
                   help="a copy before each late reader (else one before the first)")
    p.add_argument("--plan_time_limit_s", type=float, default=3.0)
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "olla_jax",
                                                   "xla_remat_points.json"))
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    args.limits = [float(x) for x in args.limits.split(",") if x]
    start = common.load()
    rows = []
    for item in args.models.split(","):
        try:
            rows.append(run_one(item, args))
        except Exception as err:  # noqa: BLE001 - one example's failure is its row
            traceback.print_exc()
            rows.append({"example": item, "error": f"{type(err).__name__}: {err}"[:300]})
        text = render(rows, args, (start, common.load()))
        if args.out:
            common.write_results(args.out, {"rows": rows, "command": common.command_line()}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
