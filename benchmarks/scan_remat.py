"""Scan residual stacks recomputed in the backward scan (olla_jax.scan_remat, issue 20).

For each scan model (written here, not tuned): XLA's temp for the step, ours
(olla_jax.plan, no budget) for the step as given and for the step with every
candidate stack dropped (``scan_remat(..., budget=0)``), XLA's temp for that
rewrite and for each of the greedy's smaller sets, the extra FLOPs (jaxpr count, against the step's), whether the
rewrite's outputs equal jax.jit's bit for bit (the lever's child comparison),
the measured step time ratio (rewrite / original: both jitted, called
alternately, median of per-round ratios, in this process), and whether
``plan(step, memory_budget=arguments + outputs + F x XLA's temp)`` meets it
without and with ``scan_remat=True``.

    python -m benchmarks.scan_remat --out=benchmarks/results/scan_remat

With ``--backend=gpu:h100`` (a compile-only target: built, not run; bits are
compared on CPU) each model gets instead: XLA:GPU's temp, ours without a
budget, and at ``memory_budget`` = arguments + outputs + F x XLA's temp: our
plan without and with ``scan_remat=True`` (the stacks chosen by the target's
temp), against XLA:GPU's own rematerialization at that memory limit
(``olla_jax.xla_remat.search``), each with its extra FLOPs; the lever's FLOPs
both as its jaxpr count and as olla_jax.flops of the target's compiles (the
counter XLA's points use).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

MODELS = ("lm_adamw", "gru_nnscan", "mlp_scan", "linen_attn_scan", "llama_scan", "lm_bf16",
          "stacked_lstm", "jit_layer_birnn")


def lm_adamw(compute_dtype=None):
    """Pre-norm transformer LM, layers in a lax.scan, adamw."""
    import jax
    import jax.numpy as jnp
    import optax
    L, B, S, d, H, V = 6, 4, 128, 128, 4, 512
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    params = {"emb": jax.random.normal(ks[0], (V, d)) * 0.02,
              "wqkv": jax.random.normal(ks[1], (L, d, 3 * d)) * 0.02,
              "wo": jax.random.normal(ks[2], (L, d, d)) * 0.02,
              "w1": jax.random.normal(ks[3], (L, d, 4 * d)) * 0.02,
              "w2": jax.random.normal(ks[4], (L, 4 * d, d)) * 0.02}
    tok = jax.random.randint(ks[5], (B, S), 0, V)
    opt = optax.adamw(1e-3)

    def norm(x):
        return x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)

    def cast(t):       # into the layer's compute dtype (lm_bf16), out of it: float32
        return t if compute_dtype is None else t.astype(compute_dtype)

    def back(t):
        return t if compute_dtype is None else t.astype(jnp.float32)

    def layer(x, w):
        w = jax.tree.map(cast, w)
        q, k, v = jnp.split(cast(norm(x)) @ w["wqkv"], 3, -1)
        q, k, v = (t.reshape(B, S, H, d // H) for t in (q, k, v))
        a = jax.nn.softmax(jnp.einsum("bshd,bthd->bhst", q, k) / cast(jnp.sqrt(d // H)), -1)
        x = x + back(jnp.einsum("bhst,bthd->bshd", a, v).reshape(B, S, d) @ w["wo"])
        return x + back(jax.nn.gelu(cast(norm(x)) @ w["w1"]) @ w["w2"]), None

    def loss(p, tok):
        x, _ = jax.lax.scan(layer, p["emb"][tok], {k: p[k] for k in ("wqkv", "wo", "w1", "w2")})
        logp = jax.nn.log_softmax(norm(x) @ p["emb"].T)
        return -jnp.mean(jnp.take_along_axis(logp, tok[..., None], -1))

    def step(p, s, tok):
        loss_value, g = jax.value_and_grad(loss)(p, tok)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss_value
    return step, (params, opt.init(params), tok)


def lm_bf16():
    """lm_adamw with its layers computed in bfloat16 (float32 weights and residual
    stream): some stacks' recomputation changes the gradients' last bits."""
    import jax.numpy as jnp
    return lm_adamw(jnp.bfloat16)


def _adam_step(m, shape, seed: int):
    """A flax model ``m`` of one input of ``shape`` (normal, from ``seed``) whose
    output is the loss, trained by adam: (step, (params, opt_state, xs))."""
    import jax
    import optax
    xs = jax.random.normal(jax.random.PRNGKey(seed), shape)
    params = m.init(jax.random.PRNGKey(0), xs)
    opt = optax.adam(1e-3)

    def step(p, s, xs):
        loss_value, g = jax.value_and_grad(lambda p: m.apply(p, xs))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss_value
    return step, (params, opt.init(params), xs)


def gru_nnscan():
    """A flax.linen nn.scan GRU over time, a dense head, adam."""
    import flax.linen as nn
    import jax.numpy as jnp
    B, T, F, Hd = 16, 128, 64, 256

    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            cell = nn.scan(nn.GRUCell, variable_broadcast="params",
                           split_rngs={"params": False}, in_axes=1, out_axes=1)(features=Hd)
            _, ys = cell(jnp.zeros((xs.shape[0], Hd)), xs)
            return jnp.mean(nn.Dense(1)(ys) ** 2)

    return _adam_step(Model(), (B, T, F), seed=1)


def mlp_scan():
    """A deep residual MLP (layer norm, tanh) with its blocks in a lax.scan, SGD with momentum."""
    import jax
    import jax.numpy as jnp
    import optax
    L, B, d, h = 12, 256, 256, 1024
    ks = jax.random.split(jax.random.PRNGKey(2), 4)
    params = {"w1": jax.random.normal(ks[0], (L, d, h)) / d ** 0.5,
              "w2": jax.random.normal(ks[1], (L, h, d)) / h ** 0.5,
              "g": jnp.ones((L, d))}
    x = jax.random.normal(ks[2], (B, d))
    y = jax.random.normal(ks[3], (B, d))
    opt = optax.sgd(1e-2, momentum=0.9)

    def block(x, w):
        mu = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
        n = (x - mu) / jnp.sqrt(var + 1e-5) * w["g"]
        return x + jnp.tanh(n @ w["w1"]) @ w["w2"], None

    def loss(p):
        out, _ = jax.lax.scan(block, x, p)
        return jnp.mean((out - y) ** 2)

    def step(p, s):
        loss_value, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss_value
    return step, (params, opt.init(params))


def linen_attn_scan():
    """A flax.linen LM: pre-norm blocks (nn.SelfAttention, nn.LayerNorm, a GELU MLP) in an
    nn.scan over 4 layers, tied embedding, clip_by_global_norm + adamw."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    V, d, B, S, L = 1000, 128, 8, 64, 4

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            x = x + nn.SelfAttention(num_heads=4, deterministic=True)(nn.LayerNorm()(x))
            h = nn.gelu(nn.Dense(4 * d)(nn.LayerNorm()(x)))
            return x + nn.Dense(d)(h), None

    class LM(nn.Module):
        @nn.compact
        def __call__(self, tok):
            embed = nn.Embed(V, d)
            x, _ = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                           length=L)()(embed(tok), None)
            return embed.attend(nn.LayerNorm()(x))

    m = LM()
    tok = jax.random.randint(jax.random.PRNGKey(3), (B, S), 0, V)
    params = m.init(jax.random.PRNGKey(0), tok)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))

    def step(p, s, tok):
        def loss(p):
            logits = m.apply(p, tok)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tok).mean()
        loss_value, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss_value
    return step, (params, opt.init(params), tok)


def stacked_lstm():
    """A flax.linen stacked LSTM: an nn.scan over 3 layers, each an nn.RNN
    (OptimizedLSTMCell) over time (a scan nested in the layer scan's body) with a
    residual connection, adam."""
    import flax.linen as nn
    import jax.numpy as jnp
    L, B, T, H = 3, 16, 64, 128

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return x + nn.RNN(nn.OptimizedLSTMCell(H))(x), None

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            x, _ = nn.scan(Layer, variable_axes={"params": 0}, split_rngs={"params": True},
                           length=L)()(x, None)
            return jnp.mean(nn.Dense(1)(x) ** 2)

    return _adam_step(Model(), (B, T, H), seed=4)


def jit_layer_birnn():
    """A stacked bidirectional RNN: a lax.scan over 3 layers, each a jax.jit function
    running two tanh RNNs over time (lax.scans forward and reverse, h = tanh(x + h W))
    merged by a product, adam.  Its layer input is no residual: the layer scan's
    stacks are all the inner scans' (the rewrite stacks the layer input to drop them)."""
    import jax
    import jax.numpy as jnp
    import optax
    L, B, T, H = 3, 16, 64, 128
    ks = jax.random.split(jax.random.PRNGKey(5), 3)
    params = {n: jax.random.normal(k, (L, H, H)) / H ** 0.5 for n, k in zip(("f", "b"), ks[:2])}
    xs = jax.random.normal(ks[2], (T, B, H))
    opt = optax.adam(1e-3)

    @jax.jit
    def layer(seq, w):
        def cell(wh):
            def f(h, x):
                h = jnp.tanh(x + h @ wh)
                return h, h
            return f
        _, fwd = jax.lax.scan(cell(w["f"]), jnp.zeros((B, H)), seq)
        _, bwd = jax.lax.scan(cell(w["b"]), jnp.zeros((B, H)), seq, reverse=True)
        return seq + fwd * bwd, None

    def loss(p):
        return jnp.mean(jax.lax.scan(layer, xs, p)[0] ** 2)

    def step(p, s):
        loss_value, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss_value
    return step, (params, opt.init(params))


def llama_scan():
    """examples/llama.py with its blocks in a lax.scan, no per-block jax.checkpoint (which
    leaves the scan no residual stack), abstract arguments; donation not passed (as for
    the other models here)."""
    from examples import llama
    step = llama.make_step(llama.Config(scan=True, remat=False))
    return step.fn, step.args


def step_time_ratio(a, b, args, rounds: int) -> float:
    """Median over ``rounds`` of (time of ``b``) / (time of ``a``), called alternately."""
    import jax
    for f in (a, b):
        jax.block_until_ready(f(*args))
    ratios = []
    for _ in range(rounds):
        times = []
        for f in (a, b):
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t)
        ratios.append(times[1] / times[0])
    return statistics.median(ratios)


def run(name: str, time_limit_s: float, rounds: int, budget_fraction: float) -> dict:
    import warnings

    from olla_jax import BudgetNotMet

    import jax
    from olla_jax import scan_remat
    from olla_jax.plan import plan
    step, args = globals()[name]()
    row = {"model": name, "load_start": common.load()}
    lever = scan_remat.scan_remat(step, *args, budget=0)
    traced = scan_remat.trace(step, args)
    stacks = scan_remat.residual_stacks(traced.closed)     # the lever's order
    row.update(xla_temp=lever.xla_temp, xla_temp_remat=lever.temp,
               candidates=lever.candidates, dropped=len(lever.dropped),
               dropped_bytes=sum(s.nbytes for s in lever.dropped),
               extra_flops=lever.extra_flops,
               step_flops=sum(scan_remat.eqn_flops(e) for e in traced.closed.jaxpr.eqns),
               identical=lever.identical, differs=lever.differs,
               # the greedy's sets: (stacks dropped, XLA temp, extra FLOPs)
               growth=[(k, temp, scan_remat.extra_flops(traced.closed, stacks[:k]))
                       for k, temp in lever.tried])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = plan(step, *args, time_limit_s=time_limit_s)
        ours_remat = plan(lever.fn, *args, time_limit_s=time_limit_s) if lever.dropped else ours
    row.update(ours_temp=ours.planned_temp_bytes, ours_temp_remat=ours_remat.planned_temp_bytes,
               ours_fed_back=ours.achieved_temp_bytes is not None,
               ours_remat_fed_back=ours_remat.achieved_temp_bytes is not None)
    if budget_fraction:
        # the step's arguments and outputs and this share of XLA's temp: without the lever, then with
        budget = int(ours.xla_total_bytes - (1 - budget_fraction) * ours.xla_temp_bytes)
        row["budget"] = budget
        for key, flag in (("budget_plain", False), ("budget_scan_remat", True)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    met = plan(step, *args, time_limit_s=time_limit_s, memory_budget=budget,
                               scan_remat=flag)
                    row[key] = {"met": True, "total": met.runs_total_bytes,
                                "extra_flops": met.extra_flops,
                                "notes": [n for n in met.notes if "scan rematerialization" in n]}
                except BudgetNotMet as err:
                    row[key] = {"met": False, "total": err.plan.runs_total_bytes}
    row["time_ratio"] = step_time_ratio(jax.jit(step), jax.jit(lever.fn), args, rounds)
    row["load_end"] = common.load()
    return row


def run_target(name: str, backend: str, time_limit_s: float, fraction: float) -> dict:
    """A compile-only target: ours without and with the lever at the budget against
    XLA's own rematerialization at that limit, with the extra FLOPs of each."""
    import warnings

    from olla_jax import BudgetNotMet, scan_remat, xla_remat
    from olla_jax.capture import gpu
    from olla_jax.flops import compiled_flops
    from olla_jax.plan import plan
    step, args = globals()[name]()
    target = backend.split(":", 1)[1]
    row = {"model": name, "load_start": common.load()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = plan(step, *args, backend=backend, time_limit_s=time_limit_s)
    io = ours.xla_total_bytes - ours.xla_temp_bytes
    budget = int(io + fraction * ours.xla_temp_bytes)
    base_flops = compiled_flops(gpu.compile_for_target(step, tuple(args), target=target))
    row.update(xla_temp=ours.xla_temp_bytes, ours_temp=ours.planned_temp_bytes, io=io,
               budget=budget, step_flops=base_flops)
    for key, flag in (("budget_plain", False), ("budget_scan_remat", True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                met = plan(step, *args, backend=backend, time_limit_s=time_limit_s,
                           memory_budget=budget, scan_remat=flag)
                row[key] = {"met": True, "total": met.runs_total_bytes,
                            "extra_flops": met.extra_flops,
                            "lever_flops": met.settings.get("scan_remat_flops", 0),
                            "stacks": met.settings.get("scan_remat_stacks", 0),
                            "notes": [n for n in met.notes if "scan rematerialization" in n]}
            except BudgetNotMet as err:
                row[key] = {"met": False, "total": err.plan.runs_total_bytes,
                            "reasons": [r for r in err.reasons if "scan" in r]}
    # the lever's set as plan() chose it (the same call: the XLA temp to reach), its
    # FLOPs counted on the target's compiles as XLA's points are
    lever = scan_remat.scan_remat(step, *args, budget=max(budget - io, 0), backend=backend)
    row["lever"] = {"stacks": len(lever.dropped), "candidates": lever.candidates,
                    "temp": lever.temp, "jaxpr_flops": lever.extra_flops,
                    "identical_on_cpu": lever.identical, "tried": list(lever.tried)}
    if lever.dropped:
        rewritten = compiled_flops(gpu.compile_for_target(lever.fn, tuple(args), target=target))
        row["lever"]["hlo_flops"] = rewritten - base_flops
    # the set chosen by CPU's temp at the same temp budget (what plan() did before the
    # lever took the backend), and the target's temp with it
    from olla_jax.capture import record
    by_cpu = scan_remat.scan_remat(step, *args, budget=max(budget - io, 0), check=False)
    cpu_choice = {"stacks": len(by_cpu.dropped), "cpu_temp": by_cpu.temp}
    if by_cpu.dropped:
        temp = record.capture(by_cpu.fn, *args, backend=backend).memory.temp
        cpu_choice.update(target_temp=temp, met=temp <= budget - io)
    row["cpu_choice"] = cpu_choice
    points = xla_remat.search(step, *args, backend=backend, budget_bytes=ours.xla_temp_bytes,
                              fractions=[fraction], io_bytes=io)
    row["xla_remat"] = [{"limit": p.limit_bytes, "temp": p.memory.temp, "total": p.total,
                         "extra_flops": p.flops - base_flops, "met": p.total <= budget}
                        for p in points]
    row["load_end"] = common.load()
    return row


def run_budgets(name: str, fractions: list[float]) -> dict:
    """The lever's choice at temp budgets of ``fractions`` x XLA's temp: the plain
    doubling (``refine=False``) and the refined search, called alternately (which
    goes first alternates per budget), each with its compiles and wall seconds."""
    from olla_jax import scan_remat
    from olla_jax.capture import record
    step, args = globals()[name]()
    row = {"model": name, "load_start": common.load(), "budgets": []}
    traced = scan_remat.trace(step, args)
    row["step_flops"] = sum(scan_remat.eqn_flops(e) for e in traced.closed.jaxpr.eqns)
    row["xla_temp"] = record.capture(step, *args).memory.temp
    for n, fraction in enumerate(fractions):
        budget = int(fraction * row["xla_temp"])
        got = {}
        for refine in ((False, True) if n % 2 == 0 else (True, False)):
            t = time.perf_counter()
            r = scan_remat.scan_remat(step, *args, budget=budget, refine=refine)
            got["refined" if refine else "doubling"] = {
                "stacks": len(r.dropped), "temp": r.temp, "met": r.met,
                "extra_flops": r.extra_flops, "compiles": len(r.tried) + 1,
                # the sets refused for their bits and the one used (not the comparisons
                # of the culprit search that kept the bits)
                "compares": len(r.refused) + (1 if r.dropped else 0), "identical": r.identical,
                "left_out": list(r.left_out), "wall_s": time.perf_counter() - t,
                "compare_s": r.compare_seconds, "tried": list(r.tried),
                "load": common.load()}
        row["budgets"].append({"fraction": fraction, "budget": budget, **got})
        print(name, row["budgets"][-1], flush=True)
    row["load_end"] = common.load()
    return row


def budgets_text(rows: list[dict]) -> list[str]:
    mib = common.mib

    def side(r, v):
        left = f", left out {len(v['left_out'])}" if v["left_out"] else ""
        return (f"{v['stacks']}{left}, {mib(v['temp'])} {'met' if v['met'] else 'missed'}, "
                f"+{v['extra_flops']:,} ({v['extra_flops'] / max(r['step_flops'], 1):.2%}), "
                f"{v['compiles']} compiles, {v['compares'] - bool(v['stacks'])} refused for "
                f"bits, {v['wall_s']:.1f} s "
                f"({v['compare_s']:.1f} s comparing){'' if v['identical'] else ', bits differ'}")
    return ["The lever's set at temp budgets of a share of XLA's temp: the plain doubling "
            "(refine=False) against the refined search (refine=True), called alternately "
            "(stacks dropped, stacks left out for their bits, XLA temp (MiB), extra FLOPs "
            "against the step's, compiles with jax.jit's own, sets refused for their bits, "
            "wall seconds of the call, of which comparing bits):", ""] + common.table(
        ["model", "XLA temp", "budget", "doubling", "refined"],
        [[r["model"], mib(r["xla_temp"]), f"{b['fraction']:g} x = {mib(b['budget'])}",
          side(r, b["doubling"]), side(r, b["refined"])] for r in rows for b in r["budgets"]],
        right={1})


def target_text(rows: list[dict], backend: str, fraction: float) -> list[str]:
    mib = common.mib

    def ours(b):
        if not b["met"]:
            return f"missed ({mib(b['total'])})"
        lever = f", {b['stacks']} stack(s)" if b.get("stacks") else ""
        return f"met, {mib(b['total'])}, +{b['extra_flops']:,} FLOPs{lever}"

    def xla(r):
        return "; ".join(f"{'met' if p['met'] else 'missed'}, {mib(p['total'])} "
                         f"(temp {mib(p['temp'])}), +{p['extra_flops']:,} FLOPs"
                         for p in r["xla_remat"]) or "no point"

    def lever(r):
        v = r["lever"]
        hlo = f"{v['hlo_flops']:,}" if "hlo_flops" in v else "-"
        return (f"{v['stacks']}/{v['candidates']}, temp {mib(v['temp'] or 0)}, jaxpr "
                f"+{v['jaxpr_flops']:,}, HLO +{hlo}, bits on CPU "
                f"{'same' if v['identical_on_cpu'] else 'differ'}")
    return [f"{backend} (compile-only: built, not run), budget = arguments + outputs + "
            f"{fraction:g} x XLA's temp (MiB):", ""] + common.table(
        ["model", "XLA temp", "ours temp", "budget", "ours, scan_remat=False",
         "ours, scan_remat=True", f"XLA remat at limit {fraction:g} x temp"],
        [[r["model"], mib(r["xla_temp"]), mib(r["ours_temp"]), mib(r["budget"]),
          ours(r["budget_plain"]), ours(r["budget_scan_remat"]), xla(r)] for r in rows],
        right={1, 2, 3}) + ["", "The lever's set at that budget (stacks, XLA temp on the "
                            "target, extra FLOPs: jaxpr count and olla_jax.flops of the "
                            "target's compiles, rewrite minus step):", ""] + common.table(
        ["model", "step FLOPs (HLO)", "lever"],
        [[r["model"], f"{r['step_flops']:,}", lever(r)] for r in rows]) + [
        "", "The set CPU's temp chooses at the same temp budget (stacks, XLA:CPU's temp, the "
        "target's temp with that set, whether that meets the budget's temp):", ""] + common.table(
        ["model", "temp budget", "stacks by CPU temp", "XLA:CPU temp", "target temp", "met"],
        [[r["model"], mib(r["budget"] - r["io"]), r["cpu_choice"]["stacks"],
          mib(r["cpu_choice"]["cpu_temp"] or 0),
          mib(r["cpu_choice"].get("target_temp", r["xla_temp"])),
          "yes" if r["cpu_choice"].get("met") else "no"] for r in rows],
        right={1, 2, 3, 4}) + [
        "", "Extra FLOPs of ours: the plan's extra_flops (the lever's jaxpr count plus the "
        "planner's own recomputation); of XLA's: olla_jax.flops of its compile at the limit "
        "minus its own compile's. olla_jax.flops counts a while loop's body once, so the "
        "lever's HLO figure is about one iteration's; its jaxpr count is all iterations'."]


def main(argv=None) -> None:
    p = common.parser(__doc__, time_limit_s=20.0, out="benchmarks/results/scan_remat")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--rounds", type=int, default=30, help="alternate timing rounds per model")
    p.add_argument("--budget_fraction", type=float, default=0.3,
                   help="also plan with a memory budget of the step's arguments and outputs and "
                        "this share of XLA's temp (0: not)")
    p.add_argument("--backend", default="cpu",
                   help="cpu, or a compile-only GPU target (gpu:h100): ours with and without "
                        "the lever against XLA's rematerialization at --budget_fraction")
    p.add_argument("--budgets", default="",
                   help="comma-separated shares of XLA's temp: instead of the above, the "
                        "lever's choice at each as a temp budget, the plain doubling against "
                        "the refined search (CPU)")
    args = p.parse_args(argv)
    common.gpu_environment(args.backend)
    print(f"$ {common.command_line()}", flush=True)
    meta = common.run_meta()
    if args.budgets:
        fractions = [float(x) for x in args.budgets.split(",")]
        rows = [run_budgets(name, fractions) for name in common.model_names(args.models)]
        lines = common.header("Scan rematerialization: the set chosen at a temp budget",
                              {"loads (1/5/15 min)": common.row_loads(rows)},
                              command=meta["command"], machine_info=meta["machine"],
                              date=meta["date"])
        text = "\n".join(lines + budgets_text(rows)) + "\n"
        print(text)
        common.write_results(args.out, {**meta, "load_end": common.load(), "rows": rows}, text)
        return
    if args.backend != "cpu":
        if not args.backend.startswith("gpu:") or not args.budget_fraction:
            p.error("--backend takes a compile-only GPU target such as gpu:h100, with a "
                    "--budget_fraction above 0")
        rows = []
        for name in common.model_names(args.models):
            row = run_target(name, args.backend, float(args.time_limit_s), args.budget_fraction)
            print(row, flush=True)
            rows.append(row)
        lines = common.header(f"Scan rematerialization on {args.backend} against XLA's own",
                              {"loads (1/5/15 min)": common.row_loads(rows),
                               "time_limit_s": args.time_limit_s},
                              command=meta["command"], machine_info=meta["machine"],
                              date=meta["date"])
        text = "\n".join(lines + target_text(rows, args.backend, args.budget_fraction)) + "\n"
        print(text)
        common.write_results(args.out, {**meta, "load_end": common.load(), "rows": rows}, text)
        return
    rows = []
    for name in common.model_names(args.models):
        row = run(name, float(args.time_limit_s), args.rounds, args.budget_fraction)
        print(row, flush=True)
        rows.append(row)
    mib = common.mib
    table = common.table(
        ["model", "XLA temp", "ours", "XLA temp, remat", "ours, remat", "dropped",
         "extra FLOPs", "time ratio", "bit-identical"],
        [[r["model"], mib(r["xla_temp"]), mib(r["ours_temp"]), mib(r["xla_temp_remat"]),
          mib(r["ours_temp_remat"]), f"{r['dropped']}/{r['candidates']} ({mib(r['dropped_bytes'])})",
          f"{r['extra_flops']:,} ({r['extra_flops'] / max(r['step_flops'], 1):.0%})",
          f"{r['time_ratio']:.2f}", "yes" if r["identical"] else f"no: {r['differs']}"]
         for r in rows], right={1, 2, 3, 4, 6, 7})
    lines = common.header("Scan residual stacks recomputed in the backward scan (scan_remat)",
                          {"loads (1/5/15 min)": common.row_loads(rows),
                           "time_limit_s": args.time_limit_s, "rounds": args.rounds},
                          command=meta["command"], machine_info=meta["machine"],
                          date=meta["date"])
    growth = common.table(
        ["model", "stacks dropped", "XLA temp", "extra FLOPs"],
        [[r["model"], k, mib(temp), f"{flops:,} ({flops / max(r['step_flops'], 1):.1%})"]
         for r in rows for k, temp, flops in r["growth"]])
    lines += table + ["", "The greedy's sets (most bytes per extra FLOP first, each stack's "
                      "FLOPs counted with the others kept):", ""] + growth + ["",
                      "ours: olla_jax.plan's planned temp (order, placement, its own "
                      "recomputation), no budget; remat: every candidate stack dropped "
                      "(scan_remat budget=0). Extra FLOPs: jaxpr count of the recomputation, "
                      "in parentheses against the step's. Time ratio: jitted rewrite / "
                      "jitted step on CPU, median of alternate calls."]
    if args.budget_fraction:
        def said(b):
            return (f"met, {mib(b['total'])}" if b["met"] else f"missed ({mib(b['total'])} reached)")
        lines += ["", f"plan(step, memory_budget=arguments + outputs + {args.budget_fraction:g} x "
                  "XLA's temp), without and with scan_remat=True (totals, MiB):", ""] + common.table(
            ["model", "budget", "scan_remat=False", "scan_remat=True"],
            [[r["model"], mib(r["budget"]), said(r["budget_plain"]), said(r["budget_scan_remat"])]
             for r in rows])
    text = "\n".join(lines) + "\n"
    print(text)
    common.write_results(args.out, {**meta, "load_end": common.load(), "rows": rows}, text)


if __name__ == "__main__":
    main()
