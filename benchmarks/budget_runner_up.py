"""A budget missed by more at a longer limit: a flax MLP under half XLA's temp.

    python -m benchmarks.budget_runner_up --limits=5,15,60 \
        --checkouts=new=.,old=/path/to/old/checkout --out=benchmarks/results/budget_runner_up

Model: flax Embed(300, 96), three residual blocks (LayerNorm, Dense(384),
relu, Dense(96)), LayerNorm, Dense(300); next-token cross-entropy on int
tokens (16, 64); optax.MultiSteps(chain(clip_by_global_norm(1.0),
adam(cosine_decay_schedule(1e-3, 100))), every_k_schedule=4); the step
jitted with params and opt_state donated.  Budget: XLA's total less half
XLA's temp (``plan.xla_total_bytes - 0.5 * plan.xla_temp_bytes`` of an
unbudgeted plan).  Each (limit, checkout) runs in its own process, with the
checkout's ``olla_jax`` first on the path, in turn (limits outer, checkouts
inner: alternating); ``least total`` is the plan's ``runs_total_bytes`` (the
budgeted plan's, met or not), ``how`` the recomputation's search as its note
says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

if __package__ in (None, "") and not any(a.startswith("--one") for a in sys.argv):
    # (not in a row's child: its PYTHONPATH names the checkout it runs)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _step():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(384)(nn.LayerNorm()(x))
            return x + nn.Dense(96)(nn.relu(h))

    class Model(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(300, 96)(tokens)
            for _ in range(3):
                x = Block()(x)
            return nn.Dense(300)(nn.LayerNorm()(x))

    model = Model()
    tokens = (jnp.arange(16 * 64, dtype=jnp.int32).reshape(16, 64) * 7) % 300
    params = model.init(jax.random.PRNGKey(0), tokens)
    opt = optax.MultiSteps(optax.chain(optax.clip_by_global_norm(1.0),
                                       optax.adam(optax.cosine_decay_schedule(1e-3, 100))),
                           every_k_schedule=4)
    state = opt.init(params)

    def step(p, s, t):
        def loss(p):
            logits = model.apply(p, t[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, t[:, 1:]).mean()
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value
    return jax.jit(step, donate_argnums=(0, 1)), (params, state, tokens)


def run_one(limit: float) -> dict:
    """One budgeted plan at ``limit`` seconds with the olla_jax on the path."""
    import warnings
    fn, args = _step()
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = olla_jax.plan(fn, *args, time_limit_s=limit)
        budget = int(free.xla_total_bytes - 0.5 * free.xla_temp_bytes)
        t0 = time.monotonic()
        try:
            got = olla_jax.plan(fn, *args, memory_budget=budget, time_limit_s=limit)
        except olla_jax.BudgetNotMet as err:
            got = err.plan
        wall = time.monotonic() - t0
    how = next((n for n in got.notes if n.startswith("recomputed")), "")
    how = how[how.find("(") + 1:how.find("): ")] if "): " in how else "none"
    return dict(budget=budget, least_total=got.runs_total_bytes, met=got.runs_total_bytes <= budget,
                how=how, solve_s=got.solve_seconds, wall_s=wall,
                olla_jax=os.path.dirname(os.path.dirname(olla_jax.__file__)))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    one = [a for a in argv if a.startswith("--one=")]
    if one:     # a row's child (no benchmarks package on its path)
        print(json.dumps(run_one(float(one[0].split("=", 1)[1]))), flush=True)
        return
    from benchmarks import common
    p = common.parser(__doc__, out="benchmarks/results/budget_runner_up")
    p.add_argument("--limits", default="5,15,60", help="time limits (s), comma-separated")
    p.add_argument("--checkouts", default=f"this={_ROOT}",
                   help="name=path of each olla_jax checkout to run, comma-separated")
    p.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    checkouts = [c.split("=", 1) for c in args.checkouts.split(",")]
    rows = []
    for limit in (float(x) for x in args.limits.split(",")):
        for name, path in checkouts:
            load = common.load()
            env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
            out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--one={limit}"],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"limit {limit:g}, {name}: the row's process failed:\n"
                                 + out.stderr[-3000:])
            row = dict(json.loads(out.stdout.strip().splitlines()[-1]), limit=limit, code=name,
                       load_start=load, load_end=common.load())
            rows.append(row)
            print(row, flush=True)
    lines = common.header("A budget at half XLA's temp, by time limit and checkout", {
        "budget": "XLA's total less half XLA's temp (an unbudgeted plan's figures)",
        "note": "2 cores shared with other jobs; each row its own process, rows in run order"})
    lines += common.table(
        ["limit s", "code", "budget", "least total", "met", "how", "solve s", "wall s",
         "load start", "load end"],
        [[f"{r['limit']:g}", r["code"], f"{r['budget']:,}", f"{r['least_total']:,}", r["met"],
          r["how"], f"{r['solve_s']:.1f}", f"{r['wall_s']:.1f}", r["load_start"], r["load_end"]]
         for r in rows])
    common.write_results(args.out, {"command": common.command_line(), "rows": rows},
                         "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
