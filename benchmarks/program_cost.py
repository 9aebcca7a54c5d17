"""Where program recomputation's seconds go (issue 20): ``olla_jax.program_remat``
asked for several budgets of one example with one memo (as ``gpu_budget``'s side
sees an example's budgets), its time split by phase.

    python -m benchmarks.program_cost --models=mlp:small --fractions=0.8,0.6

Per example: XLA:GPU's temp for the step as given (one compile, not counted),
then ``program_remat`` asked for each of ``--fractions`` x that temp in turn,
sharing a memo.  Phases, each summed over the calls: GPU compiles of the step
and of each set tried (``record.capture`` for the target), CPU compiles for the
bit check (jax.jit's and XLA's with CSE off), the comparisons run in a child
(``verify.outputs_differ``), the rewrites' construction and the candidates'
search; the rest is everything else (tracing counts with the compile that
traces).  Compile-only: nothing runs on a GPU.
"""

from __future__ import annotations

import collections
import contextlib
import time
import warnings

from benchmarks import common

MIB = 2 ** 20


@contextlib.contextmanager
def timed(seconds: dict, counts: dict):
    """``record.capture``, ``verify.outputs_differ``, ``program_remat.rewrite``
    and ``program_remat.candidates`` timed into ``seconds`` by phase while held."""
    from olla_jax import program_remat
    from olla_jax.apply import verify
    from olla_jax.capture import record

    def wrap(owner, name, phase_of):
        original = getattr(owner, name)

        def timed_call(*args, **kw):
            start = time.monotonic()
            try:
                return original(*args, **kw)
            finally:
                phase = phase_of(kw)
                seconds[phase] += time.monotonic() - start
                counts[phase] += 1
        return original, timed_call

    def capture_phase(kw):
        if kw.get("backend") != "cpu":
            return "gpu compile"
        passes = str((kw.get("compiler_options") or {}).get("xla_disable_hlo_passes", ""))
        return "cpu compile, CSE off" if "cse" in passes.split(",") else "cpu compile (jax.jit's)"

    patches = [(record, "capture", capture_phase),
               (verify, "outputs_differ", lambda kw: "compare in a child"),
               (program_remat, "rewrite", lambda kw: "rewrite"),
               (program_remat, "candidates", lambda kw: "candidates")]
    saved = []
    for owner, name, phase_of in patches:
        original, new = wrap(owner, name, phase_of)
        saved.append((owner, name, original))
        setattr(owner, name, new)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def run_one(item: str, fractions: list[float], target: str, plan_s: float = 0.0) -> dict:
    import examples
    from olla_jax import program_remat
    from olla_jax.capture import record

    name, _, size = item.partition(":")
    step = examples.get(name, size or "small")
    backend = f"gpu:{target}"
    kw = dict(static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
    start = time.monotonic()
    xla_temp = record.capture(step.fn, *step.args, backend=backend, **kw).memory.temp
    first = time.monotonic() - start
    memo: dict = {}
    calls = []
    for fraction in fractions:
        seconds: dict = collections.defaultdict(float)
        counts: dict = collections.Counter()
        budget = int(fraction * xla_temp)
        start = time.monotonic()
        with timed(seconds, counts), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = program_remat.program_remat(step.fn, *step.args, backend=backend,
                                              budget=budget, memo=memo, **kw)
        total = time.monotonic() - start
        seconds["rest"] = total - sum(seconds.values())
        calls.append({"fraction": fraction, "budget": budget, "temp": got.temp,
                      "values": len(got.chosen), "extra_flops": got.extra_flops,
                      "met": got.met, "bits": got.bits, "tried": [list(t) for t in got.tried],
                      "seconds": round(total, 1),
                      "phases": {k: [round(v, 1), counts.get(k, 0)] for k, v in seconds.items()}})
        if plan_s and got.chosen:
            calls[-1]["plan"] = plan_rewrite(step, got, backend, plan_s)
    return {"model": item, "xla_temp": xla_temp, "xla_compile_s": round(first, 1),
            "candidates": got.candidates, "calls": calls}


def plan_rewrite(step, got, backend: str, limit_s: float) -> dict:
    """The kept rewrite planned as ``gpu_budget.program_side`` plans it (no
    budget, ``limit_s``): the plan's own clocks."""
    import olla_jax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(got.fn, *step.args, backend=backend, time_limit_s=limit_s,
                             static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums,
                             compiler_options=got.compiler_options or None)
    return {"limit_s": limit_s, "solve_s": round(plan.solve_seconds, 1),
            "verify_s": round(plan.verify_seconds, 1),
            "capture_s": round(plan.capture_seconds, 1), "temp": plan.runs_temp_bytes,
            "stage_ends_s": plan.settings.get("stage_ends_s")}


def render(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        lines.append(f"{row['model']}: XLA temp {row['xla_temp'] / MIB:,.2f} MiB "
                     f"({row['candidates']} candidates; its compile {row['xla_compile_s']} s, "
                     "not counted)")
        for c in row["calls"]:
            phases = ", ".join(f"{k} {v[0]} s" + (f" ({v[1]})" if k != "rest" else "")
                               for k, v in sorted(c["phases"].items(), key=lambda kv: -kv[1][0]))
            lines.append(f"- {c['fraction']:g} x ({c['budget'] / MIB:,.2f} MiB): "
                         f"{c['seconds']} s: {phases}; kept {c['values']} value(s), temp "
                         f"{c['temp'] / MIB:,.2f} MiB, +{c['extra_flops']:,} FLOPs, "
                         f"met {c['met']}, bits {c['bits']}; sets compiled so far: "
                         + ", ".join(f"{n}: {t / MIB:,.2f}" for n, t, _ in c["tried"]))
            if "plan" in c:
                q = c["plan"]
                lines.append(f"  planned at a {q['limit_s']:g} s limit: solve {q['solve_s']} s, "
                             f"verify {q['verify_s']} s, XLA's compiles {q['capture_s']} s; "
                             f"temp {q['temp'] / MIB:,.2f} MiB")
    return lines


def main() -> None:
    p = common.parser(__doc__, models="mlp:small", out=None)
    p.add_argument("--fractions", default="0.8,0.6",
                   help="budgets asked for, as fractions of XLA's temp, in turn (one memo)")
    p.add_argument("--target", default="h100", choices=("h100", "a100"))
    p.add_argument("--plan_s", type=float, default=0.0,
                   help="also plan each call's kept rewrite with this time limit (0: not)")
    args = p.parse_args()
    common.gpu_environment(f"gpu:{args.target}")
    print(f"$ {common.command_line()}", flush=True)
    load_start = common.load()
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    rows = [run_one(item, fractions, args.target, args.plan_s) for item in common.model_names(args.models)]
    lines = [*common.header("Program recomputation's seconds by phase",
                            {"load at start / end (1/5/15 min)": f"{load_start} ; {common.load()}"}),
             *render(rows)]
    print("\n".join(lines))
    if args.out:
        common.write_results(args.out, {"rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
