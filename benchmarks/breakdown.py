"""What is live at the memory peak of each example step, by kind.

    python -m benchmarks.breakdown --plans_dir=benchmarks/results/suite_cpu_final_plans --size=small \
        --models=all --out=benchmarks/results/breakdown

For each example, the order of our plan (read from the suite's saved plan, or
planned here when there is none) and XLA's own order are replayed on the memory
model of XLA's buffers.  At the peak, the step with the most bytes of
temporaries live (what the planner minimises), each live buffer gets a kind:

- entry parameters, by argument position (``tree_flatten_with_path`` of the
  dynamic arguments; entry parameter i is leaf i, through jax's kept_var_idx when
  it pruned unused ones): first argument = parameters, second-to-last =
  optimizer state, last = batch, any other = model state (e.g. batch_stats).
  Arguments are resident for the whole step (the caller holds them).
- live-out values (written outputs), by output position the same way: first =
  new parameters, second-to-last = new optimizer state, last = loss.  Donated
  outputs share their argument's allocation and are counted there.
- everything else (the temp arena, and temporaries XLA parks in idle output
  allocations), from XLA's ``op_name`` metadata: an instruction is backward
  under ``transpose(``, else forward under ``jvp(``, else "other" (loss,
  optimizer); XLA's own instructions without op_name (layout copies, kernel
  reversals) take the pass of their nearest named operands, or, when those are
  only entry parameters, of their nearest named users.  Then a value defined
  - in the backward pass is a *gradient* when some user is "other" (the
    optimizer reads it), else *backward workspace*;
  - in the forward pass is a *saved activation* when some user is backward,
    else *forward workspace*;
  (users without op_name are looked through to their nearest named users);
  - elsewhere is *other workspace*.

Heuristic limits: op_name is XLA's best guess after fusion (a fusion carries
its root's name), so a fused value may be mis-kinded; remat recomputation runs
under ``transpose(`` and counts as backward workspace; gradient accumulators of
a ``scan`` (grad_accum) are "other"; a gradient that is first summed in the
backward pass (tied weights) counts as backward workspace until the sum.  The
"idle output" column is output allocation bytes not live at the peak (reserved
by XLA for the whole step, possibly holding nothing yet).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections import defaultdict

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

KINDS = ("parameters", "optimizer state", "batch", "model state", "new parameters",
         "new optimizer state", "new model state", "loss", "saved activations", "gradients",
         "forward workspace", "backward workspace", "other workspace", "constants")
WORKSPACE = ("forward workspace", "backward workspace", "other workspace")


def parse_args(argv=None):
    p = common.parser(__doc__, backend="cpu", size="small", models="all",
                      out="benchmarks/results/breakdown")
    p.add_argument("--plans_dir", default="benchmarks/results/suite_cpu_final_plans",
                   help="saved plans of the suite; models without one are planned here")
    p.add_argument("--time_limit_s", type=float, default=30.0, help="for models planned here")
    p.add_argument("--wait_s", type=float, default=0,
                   help="wait up to this long for the suite's saved plans before planning here")
    return p.parse_args(argv)


def _arg_kind(position: int, count: int) -> str:
    if position == 0:
        return "parameters"
    if position == count - 1:
        return "batch"
    if position == count - 2:
        return "optimizer state"
    return "model state"


def _out_kind(position: int, count: int) -> str:
    if position == 0:
        return "new parameters"
    if position == count - 1:
        return "loss"
    if position == count - 2:
        return "new optimizer state"
    return "new model state"


def leaf_kinds(tree, kind_of) -> list[str]:
    """Per flattened leaf, the kind of the top-level tuple position it sits in."""
    import jax
    top = len(tree) if isinstance(tree, (tuple, list)) else 1
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        pos = path[0].idx if path and hasattr(path[0], "idx") else 0
        out.append(kind_of(pos, top))
    return out


def step_kinds(step, cap) -> tuple[dict[int, str], list[str]]:
    """Entry parameter number -> kind, and output leaf -> kind."""
    import jax
    dynamic = step.dynamic_args()
    arg_kinds = leaf_kinds(dynamic, _arg_kind)
    kept = None
    lowering = getattr(cap.lowered, "_lowering", None)
    if lowering is not None:
        kept = lowering.compile_args.get("kept_var_idx")
    kept = sorted(kept) if kept is not None else list(range(len(arg_kinds)))
    params = {i: arg_kinds[leaf] for i, leaf in enumerate(kept)}
    static = dict((i, step.args[i]) for i in step.static_argnums)

    def call(*dyn):
        it = iter(dyn)
        return step.fn(*(static[i] if i in static else next(it) for i in range(len(step.args))))
    outs = jax.eval_shape(call, *dynamic)
    return params, leaf_kinds(outs, _out_kind)


class Phases:
    """The pass (forward "fwd", backward "bwd", or "other") of each instruction, from XLA's
    op_name metadata: ``transpose(`` = backward, else ``jvp(`` = forward, else other.  XLA's
    own instructions (layout copies, kernel reversals...) have no op_name: they take the pass
    of their nearest named operands (a copy of an activation is forward), or when those are only
    entry parameters (a copy of a weight), of their nearest named users."""

    def __init__(self, proto, depth: int = 4):
        instrs = [i for c in proto.hlo_module.computations for i in c.instructions]
        by_id = {i.id: i for i in instrs}
        self.op = {i.name: i.metadata.op_name for i in instrs}
        self.operands = {i.name: [by_id[o].name for o in i.operand_ids if o in by_id] for i in instrs}
        self.users = defaultdict(list)
        for i in instrs:
            for o in self.operands[i.name]:
                self.users[o].append(i.name)
        self.param = {i.name for i in instrs if i.opcode == "parameter"}
        self.depth = depth
        self.memo: dict[str, str] = {}

    @staticmethod
    def _named(op: str) -> str | None:
        if "transpose(" in op:
            return "bwd"
        if "jvp(" in op:
            return "fwd"
        return "other" if op.startswith("jit(") else None

    def _search(self, name: str, edges) -> set[str]:
        found, frontier, seen = set(), [name], {name}
        for _ in range(self.depth):
            nxt = []
            for n in frontier:
                for m in edges[n]:
                    if m in seen:
                        continue
                    seen.add(m)
                    phase = self._named(self.op.get(m, ""))
                    if phase:
                        found.add(phase)
                    elif m not in self.param:
                        nxt.append(m)
            if found:
                break
            frontier = nxt
        return found

    def of(self, name: str) -> str:
        if name not in self.memo:
            phase = self._named(self.op.get(name, ""))
            if phase is None:
                near = self._search(name, self.operands) or self._search(name, self.users)
                phase = "bwd" if "bwd" in near else "fwd" if "fwd" in near else "other"
            self.memo[name] = phase
        return self.memo[name]


def temp_kind(record, phases: Phases) -> str:
    phase = phases.of(record.defining_instruction)
    users = set()  # the passes that read it, looking through unnamed (copy-like) users
    for u in record.uses:
        named = phases._named(phases.op.get(u.instruction, ""))
        users |= {named} if named else phases._search(u.instruction, phases.users)
    if phase == "bwd":
        return "gradients" if "other" in users else "backward workspace"
    if phase == "fwd":
        return "saved activations" if "bwd" in users else "forward workspace"
    return "other workspace"


def breakdown(graph, order, cap, param_kind, out_kinds, places=None) -> dict:
    """Bytes per kind at the step of ``order`` where the most temporary bytes are live."""
    from olla_jax import dumps
    proto = dumps.parse_hlo_proto(cap.hlo_proto)
    records = dumps.parse_values(cap.values_text)
    phases = Phases(proto)
    root = next(i.name for c in proto.hlo_module.computations if c.id == proto.hlo_module.entry_computation_id
                for i in c.instructions if i.id == c.root_id)
    allocs = graph.allocations
    pos = [0] * len(graph.nodes)
    for i, n in enumerate(order):
        pos[n] = i
    flat_start = graph.flat_layout(order)
    horizon = len(graph.flat)
    spans = graph.unit_spans(order)
    # Units outside parameter/constant allocations are live over their spans.
    dynamic = [u for u in graph.units if allocs[u.allocation].kind in ("temp", "output")]
    delta = [0] * (horizon + 1)   # the peak: most bytes of temporaries (movable units) live
    for u in dynamic:
        if not u.movable:
            continue
        for s, e in spans[u.id]:
            delta[s] += u.size
            delta[e + 1] -= u.size
    live, peak_step, peak = 0, 0, -1
    for t in range(horizon):
        live += delta[t]
        if live > peak:
            peak, peak_step = live, t
    out = defaultdict(int)
    for a in allocs:
        if a.kind == "parameter":
            out[param_kind.get(a.parameter_number, "batch")] += a.size
        elif a.kind == "constant":
            out["constants"] += a.size
    output_live = 0
    for u in dynamic:
        if not any(s <= peak_step <= e for s, e in spans[u.id]):
            continue
        here = [graph.values[v] for v in u.values
                if (lambda iv: iv[0] <= peak_step <= iv[1])(
                    graph.value_interval(graph.values[v], pos, flat_start, horizon))]
        value = max(here, key=lambda v: v.xla_range[0]) if here else graph.values[u.values[0]]
        rec = records[value.id]
        where = (places or {}).get(u.values[0], (u.allocation, 0))[0]  # the plan may move it
        if allocs[where].kind == "output":
            output_live += u.size
        if value.live_out:
            leaf = next((p.index[0] for p in rec.positions if p.instruction == root and p.index), None)
            kind = out_kinds[leaf] if leaf is not None and leaf < len(out_kinds) else "loss"
        else:
            kind = temp_kind(rec, phases)
        out[kind] += u.size
    out["idle output"] = sum(a.size for a in allocs if a.kind == "output") - output_live
    # How tight the models are for this order: the order model's cost (arena live bytes less
    # idle output space, the planner's relaxation) and the placement's live-bytes bound.
    from olla_jax.solve import problem as sp
    from olla_jax.solve.place_check import live_bytes_bound
    out["order model cost"] = sp.order_cost(graph.order_problem(), order)
    out["placement bound"] = live_bytes_bound(graph.placement_problem(order)[0])
    out["peak step"] = peak_step
    out["live at peak"] = sum(out[k] for k in KINDS)
    return dict(out)


def run_model(name: str, args) -> dict:
    import examples
    from olla_jax import saved as saved_lib
    from olla_jax.capture import capture
    from olla_jax.graph import model

    step = examples.get(name, args.size)
    path = os.path.join(args.plans_dir, f"{name}.json")
    if os.path.exists(path):
        saved = saved_lib.load_plan(path)
        cap = capture(step.fn, *step.args, backend=args.backend, scheduler=saved.xla_scheduler,
                      static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
        graph = model.build(cap.hlo_proto, cap.values_text, cap.live_range_text)
        # Not saved.fingerprint: it hashes the HLO text, whose stack-frame metadata names the
        # calling script, so a plan saved by benchmarks.suite never matches here.  The same
        # entry instructions and XLA's same temp size identify the module well enough.
        if sorted(saved.order) != sorted(graph.nodes) or \
                saved.figures["xla_best_temp_bytes"] != cap.memory.temp:
            raise RuntimeError(f"the saved plan {path} was made for another module")
        order = tuple(graph.node_index[n] for n in saved.order)
        temp, places = saved.figures["planned_temp_bytes"], saved.places
        source = f"saved plan ({saved.engine})"
    else:
        p = common.plan_quietly(step, backend=args.backend, time_limit_s=args.time_limit_s,
                                feed_back=False)
        if p.graph is None:
            raise RuntimeError("; ".join(p.notes))
        cap, graph = p.capture, p.graph
        order = p.layout.order if p.layout is not None else graph.xla_order
        temp = p.planned_temp_bytes
        places = dict(p.layout.places) if p.layout is not None else {}
        source = f"planned here ({p.engine}, {args.time_limit_s:g} s)"
    param_kind, out_kinds = step_kinds(step, cap)
    xla_temp = cap.memory.temp
    return {"model": name, "source": source, "scheduler": cap.scheduler,
            "ours": breakdown(graph, order, cap, param_kind, out_kinds, places), "ours_temp": temp,
            "xla": breakdown(graph, graph.xla_order, cap, param_kind, out_kinds), "xla_temp": xla_temp}


COLS = ["parameters", "optimizer state", "batch + model state", "new params + opt state",
        "saved activations", "gradients", "workspace", "idle output", "live at peak", "temp arena"]


def cells(b: dict, temp: int) -> list[str]:
    g = lambda *ks: sum(b.get(k, 0) for k in ks)  # noqa: E731
    return [common.mib(x) for x in (
        g("parameters"), g("optimizer state"), g("batch", "model state", "constants"),
        g("new parameters", "new optimizer state", "new model state", "loss"),
        g("saved activations"), g("gradients"), g(*WORKSPACE), g("idle output"),
        g("live at peak"), temp)]


def markdown(rows: list[dict], args) -> str:
    lines = common.header("olla_jax: what is live at the peak, by kind",
                          {"backend": args.backend, "example size": args.size,
                           "plans": args.plans_dir})
    doc = __doc__.split("\n\n", 2)[2].strip()
    lines += ["MiB live at the step of the order where the most bytes of temporaries (the buffers "
              "the planner places: everything but arguments and written outputs) are live; "
              "live at peak also counts the arguments (resident throughout) and the outputs written "
              "so far. *ours* = the order of our plan, *XLA* = the order of XLA's best scheduler; "
              "temp arena = the temp allocation (ours: planned). How kinds are assigned:", "", doc, ""]
    body, detail = [], []
    for r in rows:
        if "error" in r:
            body.append([r["model"], "-", *["-"] * len(COLS), "ERROR: " + r["error"][:200]])
            continue
        for who in ("ours", "xla"):
            b = r[who]
            body.append([r["model"], who if who == "ours" else f"XLA ({r['scheduler']})",
                         *cells(b, r[f"{who}_temp"]), r["source"] if who == "ours" else ""])
            detail.append([r["model"], who, *(common.mib(b.get(k, 0)) for k in WORKSPACE),
                           b["peak step"], common.mib(b.get("order model cost")),
                           common.mib(b.get("placement bound")), common.mib(r[f"{who}_temp"])])
    lines += common.table(["model", "order", *COLS, "plan"], body, right=set(range(2, 12)))
    lines += ["", "Workspace split (MiB), the peak's step on the flattened schedule, and how tight the "
              "planner's models are for each order: *order model* = the order search's cost (arena live "
              "bytes less idle output space it assumes temporaries can use), *placement bound* = the "
              "most bytes live at once under that order less the free space of output allocations "
              "then (`live_bytes_bound`: no placement of this order needs less arena), *temp* = the "
              "arena actually planned (temp - placement bound: placement slack, or a loose bound).", ""]
    lines += common.table(["model", "order", "forward", "backward", "other", "peak step",
                           "order model", "placement bound", "temp"], detail)
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    common.gpu_environment(args.backend)
    print(f"$ {common.command_line()}", flush=True)
    models = common.model_names(args.models)
    rows, pending, deadline = [], list(models), time.monotonic() + args.wait_s
    while pending:
        ready = [m for m in pending if os.path.exists(os.path.join(args.plans_dir, f"{m}.json"))]
        if not ready and time.monotonic() < deadline:
            time.sleep(10)  # the suite is still planning: wait for its saved plans
            continue
        name = (ready or pending)[0]
        pending.remove(name)
        t0 = time.perf_counter()
        try:
            row = run_model(name, args)
            b = row["ours"]
            print(f"{name:12s} live at peak {common.mib(b['live at peak'])} MiB: "
                  + ", ".join(f"{k} {common.mib(v)}" for k, v in b.items()
                              if k in KINDS and v) + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        except Exception as err:  # noqa: BLE001 - one model's failure is a row
            traceback.print_exc()
            row = {"model": name, "error": f"{type(err).__name__}: {err}"}
            print(f"{name:12s} ERROR {row['error'][:200]}", flush=True)
        rows.append(row)
        rows.sort(key=lambda r: models.index(r["model"]))
        with open(args.out + ".md", "w") as f:
            f.write(markdown(rows, args))
        with open(args.out + ".json", "w") as f:
            json.dump({"command": common.command_line(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
