"""Why parking one value in host memory raised XLA:GPU's device temp (issue 20).

    python -m benchmarks.offload_why --models=mlp:small,vit:small --out=benchmarks/results/offload_why_h100

Compile-only H100, nothing runs.  For each example, XLA's device temp of:
the step as given; the same under ``olla_jax.offload.NO_LATENCY_HIDING``
(XLA's latency-hiding scheduler off); one value parked as the old lever picked
it (``pick="jaxpr"``: the top ``idle_values`` candidate, often a value XLA
fuses away, such as a ReLU's output), its barriers alone without the copies
(``move=False``, the control), the copies with the default options and with
``NO_LATENCY_HIDING``; then the same for the value the new lever picks
(``pick="xla"``: the top ``materialized_idle_values`` candidate, a value XLA
keeps in a buffer, its fused readers computed again on the copy back).
"""

from __future__ import annotations

import sys
import time
import warnings

from benchmarks import common


def measure(item: str) -> dict:
    import examples
    from olla_jax import offload
    from olla_jax.capture import record
    from olla_jax.capture.base import Backend

    name, size = item.split(":")
    step = examples.get(name, size)
    kw = dict(backend=Backend.parse("gpu:h100"), static_argnums=tuple(step.static_argnums),
              donate_argnums=tuple(step.donate_argnums))
    off = dict(kw, compiler_options=offload.NO_LATENCY_HIDING)
    traced = offload.trace(step.fn, step.args, step.static_argnums)

    def temp(fn, options) -> int:
        return record.capture(fn, *step.args, **options).memory.temp

    def parked(values, **how):
        return offload.rewrite(step.fn, step.args, values, static_argnums=step.static_argnums,
                               traced=traced, **how)
    t0 = time.monotonic()
    row = {"example": item, "load_start": common.load(),
           "xla": temp(step.fn, kw), "xla_no_lhs": temp(step.fn, off)}
    old = offload.idle_values(traced.closed)[:1]
    row["old_value"] = old[0].name
    row["old_barriers"] = temp(parked(old, move=False), kw)
    row["old_default"] = temp(parked(old), kw)
    row["old_no_lhs"] = temp(parked(old), off)
    scoped = record.capture(parked((), scoped=True), *step.args, **kw)
    kept = offload.materialized_names(scoped.hlo_text, traced.closed)
    new = offload.materialized_idle_values(traced.closed, kept)[:1]
    row["new_value"] = f"{new[0].name} ({len(new[0].rederive)} readers derived again)"
    row["new_barriers"] = temp(parked(new, materialized=kept, move=False), kw)
    row["new_default"] = temp(parked(new, materialized=kept), kw)
    row["new_no_lhs"] = temp(parked(new, materialized=kept), off)
    row["bytes"] = (old[0].nbytes, new[0].nbytes)
    row["seconds"] = round(time.monotonic() - t0, 1)
    row["load_end"] = common.load()
    return row


def render(rows: list[dict], head: list[str]) -> str:
    mib = common.mib
    table = [[r["example"], mib(r["xla"]), mib(r["xla_no_lhs"]),
              f"{r['old_value']} ({mib(r['bytes'][0])})", mib(r["old_barriers"]),
              mib(r["old_default"]), mib(r["old_no_lhs"]),
              f"{r['new_value']} ({mib(r['bytes'][1])})", mib(r["new_barriers"]),
              mib(r["new_default"]), mib(r["new_no_lhs"])] for r in rows]
    lines = head + [
        "Device temps in MiB (XLA's memory_analysis; built, not run). LHS off: "
        "olla_jax.offload.NO_LATENCY_HIDING. Barriers only: the rewrite without the copies "
        "(move=False), default options.", ""]
    lines += common.table(["example", "XLA", "XLA, LHS off", "old pick (MiB)",
                           "barriers only", "parked", "parked, LHS off", "new pick (MiB)",
                           "barriers only", "parked", "parked, LHS off"], table,
                          right={1, 2, 4, 5, 6, 8, 9, 10})
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = common.parser(__doc__, models="mlp:small,vit:small", out="")
    args = p.parse_args(argv)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item in common.model_names(args.models):
            rows.append(measure(item))
            print(rows[-1], flush=True)
    head = common.header("Why one parked value raised XLA:GPU's device temp (compile-only h100)",
                         {"load at start / end per example": common.row_loads(rows, "example")})
    text = render(rows, head)
    common.print_and_write(text, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
