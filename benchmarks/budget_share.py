"""A budgeted plan() against an unbudgeted one of a smaller limit, two checkouts alternating.

    python -m benchmarks.budget_share --old=/tmp/old_checkout --limits=2,4 --rounds=2 \
        --out=benchmarks/results/budget_share

Per step, limit L and round: plan() with no budget at ``--plain_share`` x L
(this checkout) gives a total T; then plan() with ``memory_budget=T`` at L,
the ``--old`` checkout's code and this one's, one after the other.  A
budgeted call should meet T (it has the longer limit).  Then each code's
unbudgeted plan() at each ``--short_limits`` (fresh process: what the
planner's part took against its limit).  Each plan() runs in a child of its
own (a fresh process, as a user's first call).  Figures in MiB (the step's
total: arguments, outputs, temp).
"""

from __future__ import annotations

import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, out="benchmarks/results/budget_share", old=None)
    p.add_argument("--steps", default="flax_lm,lm_adamw:small",
                   help="flax_lm (a 6-layer flax linen LM with optax adam, defined here) or "
                        "example:size")
    p.add_argument("--limits", default="2,4")
    p.add_argument("--plain_share", type=float, default=0.6)
    p.add_argument("--short_limits", default="0.3")
    p.add_argument("--rounds", type=int, default=2)
    return p.parse_args(argv)


def flax_lm():
    """A 6-layer pre-norm flax linen transformer LM (d 64, vocab 256, 4 x 64
    tokens) with optax adam: the step of the report this benchmark answers."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    vocab, d, layers, seq, batch, heads = 256, 64, 6, 64, 4, 4

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm()(x)
            h = nn.SelfAttention(num_heads=heads, deterministic=True)(
                h, mask=nn.make_causal_mask(jnp.ones(x.shape[:2])))
            x = x + h
            h = nn.Dense(d)(nn.gelu(nn.Dense(4 * d)(nn.LayerNorm()(x))))
            return x + h

    class LM(nn.Module):
        @nn.compact
        def __call__(self, tok):
            x = nn.Embed(vocab, d)(tok) + self.param("pos", nn.initializers.normal(0.02),
                                                     (seq, d))
            for _ in range(layers):
                x = Block()(x)
            return nn.Dense(vocab)(nn.LayerNorm()(x))

    model, tok = LM(), jnp.zeros((batch, seq), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), tok)
    opt = optax.adam(1e-3)

    def step(params, state, tok):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, tok),
                                                                  tok).mean()
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value
    return step, (params, opt.init(params, ), tok), ()


def worker(job: dict) -> dict:
    """One plan() in this process, on the code at ``job['code']``."""
    olla_jax = common.olla_jax_at(job["code"])
    import warnings
    from olla_jax.plan import BudgetNotMet
    if job["step"] == "flax_lm":
        fn, args, static = flax_lm()
    else:
        import examples
        name, _, size = job["step"].partition(":")
        ex = examples.get(name, size or "tiny")
        fn, args, static = ex.fn, ex.args, ex.static_argnums
    load_start = common.load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = olla_jax.plan(fn, *args, static_argnums=static, time_limit_s=job["limit"],
                              memory_budget=job["budget"])
            met = job["budget"] is not None
        except BudgetNotMet as err:
            p, met = err.plan, False
    stages = p.settings.get("stage_ends_s") or {}
    return dict(total=p.runs_total_bytes, solve_s=p.solve_seconds, met=met,
                order_search=any(k.startswith("order search") for k in stages),
                recomputed=bool(getattr(p, "recomputed", ())), kept_xla=p.source == "xla",
                load_start=load_start, load_end=common.load())


def run_child(job: dict) -> dict:
    return common.child_row(job, [sys.executable, os.path.abspath(__file__), "--old=-"],
                            cwd=job["code"], timeout=900)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    codes = {"old": os.path.abspath(args.old), "new": HERE}
    steps = args.steps.split(",")
    limits = [float(x) for x in args.limits.split(",") if x]
    rows, short = [], []
    for r in range(args.rounds):
        for step in steps:
            for limit in limits:
                plain = run_child(dict(code=HERE, step=step, limit=args.plain_share * limit,
                                       budget=None))
                budget = plain["total"]
                for code in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    got = run_child(dict(code=codes[code], step=step, limit=limit,
                                         budget=budget))
                    rows.append(dict(got, round=r, which=code, plain=plain))
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "plain"}),
                          flush=True)
        for step in steps:
            for limit in [float(x) for x in args.short_limits.split(",") if x]:
                for code in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    got = run_child(dict(code=codes[code], step=step, limit=limit, budget=None))
                    short.append(dict(got, round=r, which=code))
                    print(json.dumps(short[-1]), flush=True)
    lines = common.header("A budgeted plan() against an unbudgeted one of a smaller limit",
                          {"old": f"{args.old} (the checkout compared against)",
                           "new": "this checkout"})
    lines += [f"Budget: the total of plan() with no budget at {args.plain_share:g} x the limit "
              "(new code, same round). MiB: the step's total (arguments, outputs, temp).", "",
              "| round | step | limit s | budget MiB | code | met | total MiB | order search "
              "| recomputed | planner s | load start -> end |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['round']} | {x['step']} | {x['limit']:g} | "
                     f"{common.mib(x['budget'])} | {x['which']} | {x['met']} | "
                     f"{common.mib(x['total'])} | {x['order_search']} | "
                     f"{x['recomputed']} | {x['solve_s']:.2f} | {x['load_start']} -> "
                     f"{x['load_end']} |")
    lines += ["", "Short limits, no budget (fresh process each): the planner's part against "
              "its limit.", "",
              "| round | step | limit s | code | planner s | ratio | kept XLA's | total MiB "
              "| load start -> end |", "|---|---|---|---|---|---|---|---|---|"]
    for x in short:
        lines.append(f"| {x['round']} | {x['step']} | {x['limit']:g} | {x['which']} | "
                     f"{x['solve_s']:.3f} | {x['solve_s'] / x['limit']:.2f} | {x['kept_xla']} | "
                     f"{common.mib(x['total'])} | {x['load_start']} -> {x['load_end']} |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump(dict(rows=rows, short=short), f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
