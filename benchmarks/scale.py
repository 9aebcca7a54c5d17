"""How the planner scales: synthetic train steps from ~1k to 20k+ instructions.

    python -m benchmarks.scale --time_limit_s=60 --out=benchmarks/results/scale

Two families in plain jax, layers unrolled in Python so that the number of
instructions grows with depth: a deep MLP (dense + gelu + layer norm blocks
with residuals) and a transformer LM (pre-LN blocks), both with a hand-written
Adam update.  Widths are small so compiling stays reasonable.  Each depth is
planned on CPU (feed-back off: planned temp vs XLA's best) in its own process,
with a wall-clock limit per program; a program that does not finish is a row
with the reason.  Writes ``<out>.md``, ``<out>.json`` and ``<out>.png``.

Past ~5k instructions XLA:CPU's own compile runs out of memory on this 24 GiB
machine: its instruction fusion copies the elementwise residual-gradient chain
into every layer's loop fusion, so fused instructions grow as depth squared
(seen by hand, dumping the module before and after fusion).  For 10k-20k
instruction steps use
the compile-only GPU target (``--backend=gpu:h100``, run with the GPU venv),
whose fusion does not blow up, or ``--compiler_options='{"xla_disable_hlo_passes":
"fusion"}'`` on CPU (an unfused step):

    python -m benchmarks.scale --backend=gpu:h100 --mlp_batch=512 \
        --mlp_depths=200,400 --transformer_depths=80,160 --time_limit_s=10 \
        --out=benchmarks/results/scale_large

XLA:GPU's own compile of these steps grows faster than the step (fusion passes:
``benchmarks/scale_compile.py``); ``--fast_capture`` adds
``olla_jax.capture.gpu.FAST_CAPTURE_OPTIONS`` (it changes the program planned:
see there).  ``benchmarks/scale_from_dumps.py`` stores a capture from XLA's
dumps of a compile that is still in its code generation.
"""

from __future__ import annotations

import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

# About 52 entry instructions per MLP block and 133 per transformer block (jax 0.10.2, CPU).
DEFAULT_DEPTHS = {"mlp": (20, 100), "transformer": (8, 40, 80, 152)}


def parse_args(argv=None):
    p = common.parser(__doc__, worker=True, time_limit_s=60.0, out="benchmarks/results/scale")
    p.add_argument("--families", default="mlp,transformer")
    p.add_argument("--mlp_depths", default=",".join(map(str, DEFAULT_DEPTHS["mlp"])))
    p.add_argument("--transformer_depths", default=",".join(map(str, DEFAULT_DEPTHS["transformer"])))
    p.add_argument("--program_timeout_s", type=float, default=900, help="wall-clock limit per program")
    p.add_argument("--budget_s", type=float, default=1500, help="stop starting programs after this")
    p.add_argument("--opt_level", type=int, default=0,
                   help="xla_backend_optimization_level (LLVM only; 0 halves compile time, the HLO "
                        "schedule and buffer assignment come from earlier passes)")
    p.add_argument("--backend", default="cpu",
                   help="plan(backend=...): cpu, or a compile-only GPU target such as gpu:h100 "
                        "(run with a jax that has the CUDA plugin; no GPU needed)")
    p.add_argument("--mlp_batch", type=int, default=64,
                   help="batch of the MLP family (at 64 its CPU temp is ~0: everything fits in "
                        "the output allocations)")
    p.add_argument("--compiler_options", default="",
                   help="JSON object of extra XLA options for plan(compiler_options=...), on top "
                        "of xla_backend_optimization_level, e.g. "
                        "'{\"xla_disable_hlo_passes\": \"fusion\"}'")
    p.add_argument("--fast_capture", action="store_true",
                   help="GPU targets: add olla_jax.capture.gpu.FAST_CAPTURE_OPTIONS (XLA's compile "
                        "of big steps near linear in their size; it changes the program: see there)")
    p.add_argument("--capture_dir", default="",
                   help="keep each program's captures (XLA's dumps, plain data) here and reuse them "
                        "on a rerun: the row then reports the compile seconds of the run that "
                        "captured it, and the planner runs on the same module")
    p.add_argument("--capture_only", action="store_true",
                   help="with --capture_dir: compile and store the captures, do not plan")
    p.add_argument("--note", default="", help="a line for the markdown (what was not run, and why)")
    p.add_argument("--render", default=None, help="rewrite the markdown and plot of <out>.json")
    p.add_argument("--append", action="store_true", help="keep the rows of <out>.json not rerun")
    args = p.parse_args(argv)
    if args.fast_capture:   # expanded here: workers get the options themselves
        if not args.backend.startswith("gpu"):
            p.error("--fast_capture is for GPU targets (--backend=gpu:h100)")
        from olla_jax.capture import gpu
        args.compiler_options = json.dumps(gpu.with_fast_capture(
            json.loads(args.compiler_options) if args.compiler_options else {}), sort_keys=True)
    return args


# ---------------------------------------------------------------------------
# the synthetic steps (plain jax)

def _adam(params, grads, state, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    import jax
    import jax.numpy as jnp
    mu, nu, count = state
    count = count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
    c1, c2 = 1 - b1 ** count, 1 - b2 ** count
    params = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, mu, nu)
    return params, (mu, nu, count)


def _ln(x, g, b):
    import jax.numpy as jnp
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-5) * g + b


def mlp_step(depth: int, width: int = 128, batch: int = 64):
    """Deep residual MLP regression step: x + W2 gelu(W1 ln(x)) per block, Adam."""
    import jax
    import jax.numpy as jnp
    keys = jax.random.split(jax.random.PRNGKey(0), depth + 2)
    params = [{"w1": jax.random.normal(k, (width, 2 * width)) * 0.02,
               "w2": jax.random.normal(jax.random.fold_in(k, 1), (2 * width, width)) * 0.02,
               "g": jnp.ones(width), "b": jnp.zeros(width)} for k in keys[:depth]]

    def loss(p, x, y):
        for layer in p:
            h = _ln(x, layer["g"], layer["b"])
            x = x + jax.nn.gelu(h @ layer["w1"]) @ layer["w2"]
        return jnp.mean((x - y) ** 2)

    def step(p, opt, batch_):
        value, grads = jax.value_and_grad(loss)(p, *batch_)
        p, opt = _adam(p, grads, opt)
        return p, opt, value

    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = (zeros, jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))
    data = (jax.random.normal(keys[-2], (batch, width)), jax.random.normal(keys[-1], (batch, width)))
    return step, (params, opt, data)


def transformer_step(depth: int, d: int = 64, heads: int = 4, seq: int = 64, batch: int = 4,
                     vocab: int = 256):
    """Pre-LN transformer LM step (causal attention, MLP x4), next-token loss, Adam."""
    import jax
    import jax.numpy as jnp
    key = jax.random.PRNGKey(0)

    def dense(k, shape):
        return jax.random.normal(k, shape) * 0.02
    ks = jax.random.split(key, depth + 3)
    params = {"emb": dense(ks[-1], (vocab, d)), "pos": dense(ks[-2], (seq, d)),
              "blocks": [{"qkv": dense(k, (d, 3 * d)), "o": dense(jax.random.fold_in(k, 1), (d, d)),
                          "up": dense(jax.random.fold_in(k, 2), (d, 4 * d)),
                          "down": dense(jax.random.fold_in(k, 3), (4 * d, d)),
                          "g1": jnp.ones(d), "b1": jnp.zeros(d), "g2": jnp.ones(d), "b2": jnp.zeros(d)}
                         for k in ks[:depth]]}
    mask = jnp.tril(jnp.ones((seq, seq), bool))

    def loss(p, tokens):
        x = p["emb"][tokens] + p["pos"]
        for blk in p["blocks"]:
            h = _ln(x, blk["g1"], blk["b1"]) @ blk["qkv"]
            q, k, v = (t.reshape(batch, seq, heads, d // heads) for t in jnp.split(h, 3, -1))
            a = jnp.einsum("bqhk,bshk->bhqs", q, k) / (d // heads) ** 0.5
            a = jax.nn.softmax(jnp.where(mask, a, -1e9), -1)
            x = x + jnp.einsum("bhqs,bshk->bqhk", a, v).reshape(batch, seq, d) @ blk["o"]
            x = x + jax.nn.gelu(_ln(x, blk["g2"], blk["b2"]) @ blk["up"]) @ blk["down"]
        logits = x @ p["emb"].T
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    def step(p, opt, tokens):
        value, grads = jax.value_and_grad(loss)(p, tokens)
        p, opt = _adam(p, grads, opt)
        return p, opt, value

    opt = (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params),
           jnp.zeros((), jnp.int32))
    tokens = jax.random.randint(ks[-3], (batch, seq), 0, vocab)
    return step, (params, opt, tokens)


FAMILIES = {"mlp": mlp_step, "transformer": transformer_step}


def compiler_options(opt_level: int, extra: str = "") -> dict:
    options = {"xla_backend_optimization_level": opt_level}
    options.update(json.loads(extra) if extra else {})
    return options


def _capture_path(capture_dir: str, family: str, depth: int, opt_level: int, backend: str,
                  mlp_batch: int, extra_options: str) -> str:
    import hashlib
    key = hashlib.sha1(f"{backend}|{opt_level}|{mlp_batch}|{extra_options}".encode()).hexdigest()[:10]
    return os.path.join(capture_dir, f"{family}-{depth}-{key}.pkl")


def _cached_captures(timer, path: str, capture_only: bool, backend: str = "cpu") -> None:
    """Wraps plan()'s compile step so that its captures are stored at ``path`` (plain data:
    the live jax objects are dropped) or, when stored there, read back with the compile seconds
    of the run that made them.  With ``capture_only`` it stops after storing them.  Read back
    for a GPU target, jaxlib's schemas are loaded as that target's compile loads them (its
    device description: capture.gpu.normalize_target_config), not in the planner's time (4 s
    of a 10k-instruction step's graph build at load 19)."""
    import dataclasses
    import importlib
    import pickle
    plan_mod = importlib.import_module("olla_jax.plan")
    original = plan_mod._baselines

    def baselines(*a, **k):
        if os.path.exists(path):
            with open(path, "rb") as f:
                stored = pickle.load(f)
            timer.seconds["compile"] = timer.seconds.get("compile", 0.0) + stored["compile_s"]
            if backend.startswith("gpu"):
                from olla_jax import protos
                from olla_jax.capture import gpu
                protos.message_class(gpu.TARGET_PROTO)
            return stored["captures"]
        t0 = time.perf_counter()
        caps = original(*a, **k)
        plain = [dataclasses.replace(c, compiled=None, lowered=None, wrap=None) for c in caps]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            pickle.dump({"compile_s": time.perf_counter() - t0, "captures": plain}, f)
        os.replace(path + ".tmp", path)
        if capture_only:
            raise _CaptureStored(path)
        return caps
    plan_mod._baselines = baselines


class _CaptureStored(Exception):
    pass


def run_one(family: str, depth: int, time_limit_s: float, opt_level: int, backend: str = "cpu",
            mlp_batch: int = 64, extra_options: str = "", capture_dir: str = "",
            capture_only: bool = False) -> dict:
    import warnings
    from olla_jax.plan import plan
    fn, args = FAMILIES[family](depth, batch=mlp_batch) if family == "mlp" else FAMILIES[family](depth)
    timer = common.Timer()   # wraps plan's compile step first: the cache sits inside the timer
    if capture_dir:
        path = _capture_path(capture_dir, family, depth, opt_level, backend, mlp_batch, extra_options)
        _cached_captures(timer, path, capture_only, backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = plan(fn, *args, backend=backend, time_limit_s=time_limit_s, feed_back=False,
                     compiler_options=compiler_options(opt_level, extra_options))
        except _CaptureStored:
            return {"family": family, "depth": depth, "error": "capture only: stored",
                    "compile_s": timer.compile_s, "max_rss_mib": _max_rss_mib()}
    return {"family": family, "depth": depth,
            "instructions": len(p.graph.nodes) if p.graph else None,
            "buffers": len(p.graph.units) if p.graph else None,
            "xla_default": p.xla_default_temp_bytes, "xla_best": p.xla_best_temp_bytes,
            "xla_scheduler": p.xla_scheduler, "planned": p.planned_temp_bytes,
            "bound": p.lower_bound_bytes, "gap": p.gap, "engine": p.engine,
            "notes": list(p.notes), "compile_s": timer.compile_s, "phases": timer.seconds,
            "stage_ends_s": (p.settings or {}).get("stage_ends_s"),
            # plan()'s own clock of its planner part (what time_limit_s bounds) and its CPU seconds
            "plan_solve_s": p.solve_seconds, "solve_cpu_s": (p.settings or {}).get("solve_cpu_s"),
            "solve_s": timer.solve_s(), "load": common.load(), "max_rss_mib": _max_rss_mib()}


def _max_rss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> None:
    family, depth = args.worker.split(":")
    common.write_worker_result(
        args.worker_out,
        lambda: run_one(family, int(depth), args.time_limit_s, args.opt_level, args.backend,
                        args.mlp_batch, args.compiler_options, args.capture_dir, args.capture_only),
        lambda msg: {"family": family, "depth": int(depth), "error": msg})


# ---------------------------------------------------------------------------

def plot(rows: list[dict], path: str, time_limit_s: float = 0) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rss = any("max_rss_mib" in r and "error" not in r for r in rows)
    fig, axes = plt.subplots(1, 3 if rss else 2, figsize=(15 if rss else 10, 4))
    a, b = axes[:2]
    for family, marker in (("mlp", "o"), ("transformer", "s")):
        rs = sorted((r for r in rows if r.get("family") == family and "error" not in r),
                    key=lambda r: r["instructions"])
        if not rs:
            continue
        xs = [r["instructions"] for r in rs]
        a.plot(xs, [common.solve_seconds(r) for r in rs], marker=marker, label=family)
        b.plot(xs, [100 * r["gap"] for r in rs], marker=marker, label=f"{family}: gap to bound")
        b.plot(xs, [100 * (1 - r["planned"] / r["xla_best"]) for r in rs], marker=marker,
               linestyle="--", label=f"{family}: reduction vs XLA best")
        if rss:
            axes[2].plot(xs, [r.get("max_rss_mib", float("nan")) / 1024 for r in rs],
                         marker=marker, label=family)
    if time_limit_s:
        a.axhline(time_limit_s, color="grey", linestyle=":", label=f"time limit ({time_limit_s:g} s)")
    a.set(xlabel="entry instructions", ylabel="planner seconds (graph + search)", title="solve time",
          ylim=(0, None))
    b.set(xlabel="entry instructions", ylabel="%", title="gap to bound / reduction")
    if rss:
        axes[2].set(xlabel="entry instructions", ylabel="GiB", title="worker's max RSS",
                    ylim=(0, None))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict], args, note: str) -> str:
    lines = common.header("olla_jax: scaling with program size", command=getattr(args, "command", None),
                          date=getattr(args, "date", None), extra={"time limit per program": f"{args.time_limit_s:g} s (plan), "
                                                     f"{args.program_timeout_s:g} s wall (whole row)",
                           "load average at start (1/5/15 min)": f"{args.load_start} (2 cores shared "
                           "with other jobs: times are inflated, solve quality under a wall-clock "
                           "limit may suffer)"})
    rss = any("max_rss_mib" in r for r in rows)  # newer rows: the worker's peak memory
    backend = getattr(args, "backend", "cpu")
    if backend == "cpu":
        what = "Synthetic CPU train steps (see `benchmarks/scale.py`), planned without feed-back, "
        compiles = "XLA's two compiles inside plan() (default and memory-optimised schedulers)"
    else:
        what = (f"Synthetic train steps (see `benchmarks/scale.py`) compiled for the compile-only "
                f"target {backend} (XLA's GPU compiler with the shipped device description, no GPU "
                "on the machine), planned without feed-back, ")
        compiles = "XLA's compile inside plan() (capture of the default scheduler's module)"
    extra = []
    if getattr(args, "mlp_batch", 64) != 64:
        extra.append(f"MLP batch {args.mlp_batch}")
    if getattr(args, "compiler_options", ""):
        extra.append(f"extra compiler options {args.compiler_options}")
    lines += [what + f"compiled with xla_backend_optimization_level={args.opt_level}"
              + (f" ({'; '.join(extra)})" if extra else "") + f". compile s = {compiles}; solve s = the "
              "planner's own time (graph build, order search, placement, bound), to compare with "
              "the time limit; temps in MiB; "
              "gap = (planned - bound) / planned"
              + ("; max RSS = the worker process's peak resident memory (compile + plan)" if rss else "")
              + f". Plot: `{os.path.basename(args.out)}.png`.", "",
              "Rows: depth = blocks, unrolled in Python. mlp: residual blocks x + W2 gelu(W1 ln(x)), "
              f"width 128 -> 256 -> 128, batch {getattr(args, 'mlp_batch', 64)}, MSE loss; transformer: "
              "pre-LN blocks (d 64, 4 heads, causal attention, MLP x4), seq 64, batch 4, vocab 256, "
              "next-token loss; both one value_and_grad + hand-written Adam step.", ""]
    if getattr(args, "capture_dir", ""):
        lines += ["Captures reused (`--capture_dir`): each row's XLA compile ran once, in an earlier "
                  "`--capture_only` run with the same options that stored its dumps; compile s is "
                  "that run's, and max RSS is this run's worker (loading the dumps and planning, "
                  "no XLA compile).", ""]
    for e in getattr(args, "earlier", []):
        lines += [f"Rows not rerun here come from an earlier run: `{e['command']}`"
                  + (f" (it skipped {', '.join(e['skipped'])} for its time budget)" if e["skipped"] else ""), ""]
    if note:
        lines += [note, ""]
    if getattr(args, "note", ""):
        lines += [args.note, ""]
    body = []
    for r in sorted(rows, key=lambda r: (r["family"], r["depth"])):
        if "error" in r:
            body.append([r["family"], r["depth"], *["-"] * (10 if rss else 9), "ERROR: " + r["error"][:200]])
            continue
        body.append([r["family"], r["depth"], r["instructions"], r["buffers"],
                     f"{r['compile_s']:.1f}", f"{common.solve_seconds(r):.1f}", common.mib(r["xla_best"]),
                     common.mib(r["planned"]), f"{r['planned'] / r['xla_best']:.3f}" if r["xla_best"] else "-",
                     common.mib(r["bound"]), f"{100 * r['gap']:.2f}"]
                    + ([f"{r['max_rss_mib'] / 1024:.2f}" if "max_rss_mib" in r else "-"] if rss else [])
                    + ["; ".join(r["notes"])[:200] or r["engine"]])
    lines += common.table(["family", "depth", "instr", "buffers", "compile s", "solve s", "XLA best",
                           "planned", "planned/XLA best", "bound", "gap %"]
                          + (["max RSS GiB"] if rss else []) + ["engine / notes"], body,
                          right=set(range(1, 12 if rss else 11)))
    timed = [r for r in sorted(rows, key=lambda r: (r["family"], r["depth"]))
             if r.get("plan_solve_s") is not None]
    if timed:
        lines += ["", "The planner's part by plan()'s own clock (`Plan.solve_seconds`: graph build "
                  "to the final layout, what `time_limit_s` bounds), its CPU seconds "
                  "(`settings[\"solve_cpu_s\"]`), the load when the row ended, and each stage's end "
                  "(`settings[\"stage_ends_s\"]`, seconds from the limit's start; \"start\" = the "
                  "graph build):", ""]
        for r in timed:
            ends = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("stage_ends_s") or {}).items())
            cpu = f", {r['solve_cpu_s']:.1f} CPU s" if r.get("solve_cpu_s") is not None else ""
            lines.append(f"- {r['family']} {r['depth']}: {r['plan_solve_s']:.1f} s of "
                         f"{args.time_limit_s:g} ({r['plan_solve_s'] / args.time_limit_s:.2f} x){cpu}, "
                         f"load {r.get('load', '?')}" + (f"; {ends}" if ends else ""))
    return "\n".join(lines) + "\n"


def render(path: str) -> None:
    """Rewrite <out>.md and <out>.png from <out>.json (same run, same figures)."""
    import shlex
    data = json.load(open(path))
    args = parse_args(shlex.split(data["command"])[3:])
    args.command, args.earlier = data["command"], data.get("earlier", [])
    args.date = data.get("date")
    args.load_start = data.get("load_start") or (data["rows"][0].get("load", "?") + " (first row's)")
    out = path[:-len(".json")]
    note = f"Not run (time budget of {args.budget_s:g} s spent): {', '.join(data['skipped'])}." \
        if data.get("skipped") else ""
    with open(out + ".md", "w") as f:
        f.write(markdown(data["rows"], args, note))
    plot(data["rows"], out + ".png", args.time_limit_s)


def main(argv=None) -> None:
    args = parse_args(argv)
    if common.begin(args, worker):
        return
    if args.render:
        render(args.render)
        return
    args.load_start, args.date = common.load(), common.now()
    jobs = [(f, int(d)) for f in args.families.split(",")
            for d in getattr(args, f"{f}_depths").split(",") if d]
    jobs.sort(key=lambda j: j[1] * (52 if j[0] == "mlp" else 133))  # roughly by size: small first
    rows, skipped, t_start = [], [], time.perf_counter()
    earlier = []
    if args.append and os.path.exists(args.out + ".json"):
        prior = json.load(open(args.out + ".json"))
        earlier = prior.get("earlier", []) + [{"command": prior["command"], "skipped": prior["skipped"]}]
        todo = set(jobs)
        rows = [r for r in prior["rows"] if (r["family"], r["depth"]) not in todo]
    args.earlier = earlier
    log = common.start_log(args.out + ".log", fresh=not args.append)
    for family, depth in jobs:
        if time.perf_counter() - t_start > args.budget_s:
            skipped.append(f"{family}:{depth}")
            continue
        t0 = time.perf_counter()
        row = common.run_worker(
            "benchmarks.scale", f"{family}:{depth}",
            common.forward(args, "time_limit_s", "opt_level", "backend", "mlp_batch",
                           "compiler_options", "capture_dir", "capture_only"),
            lambda msg, family=family, depth=depth: {"family": family, "depth": depth,
                                                     "error": msg},
            timeout_s=args.program_timeout_s, log=log)
        rows.append(row)
        print(f"{family}:{depth} " + (row.get("error") or
              f"instr {row['instructions']} solve {common.solve_seconds(row):.1f}s planned/xla "
              f"{row['planned'] / max(1, row['xla_best']):.3f} gap {100 * row['gap']:.2f}%")
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        note = f"Not run (time budget of {args.budget_s:g} s spent): {', '.join(skipped)}." if skipped else ""
        common.write_results(args.out, {"command": common.command_line(), "rows": rows,
                                        "skipped": skipped, "earlier": earlier, "date": args.date,
                                        "load_start": args.load_start},
                             markdown(rows, args, note))
        plot(rows, args.out + ".png", args.time_limit_s)
    if skipped:
        note = f"Not run (time budget of {args.budget_s:g} s spent): {', '.join(skipped)}."
        with open(args.out + ".md", "w") as f:
            f.write(markdown(rows, args, note))


if __name__ == "__main__":
    main()
