"""Fuzzing olla_jax, the long run: random JAX programs through ``olla_jax.plan``,
random graphs through the order solver and the bounds, random placement
problems through ``place``.

    python benchmarks/fuzz.py [--programs 300] [--graphs 2000] [--placements 2000]
                              [--seed 0] [--time-limit 2] [--max-ops 8]

The generators and the checks of what counts as a failure live in
``tests/_fuzz.py`` (shared with the tests, which never import benchmarks); this
file is the command line that runs them at length and prints what they find.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._fuzz import OPS, random_program, run_graph, run_placement, run_program  # noqa: E402


# ---------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=300)
    parser.add_argument("--graphs", type=int, default=2000)
    parser.add_argument("--placements", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=2.0, help="plan(time_limit_s=...)")
    parser.add_argument("--graph-time-limit", type=float, default=0.2)
    parser.add_argument("--max-ops", type=int, default=8)
    parser.add_argument("--verbose", action="store_true")
    opts = parser.parse_args(argv)

    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)   # the solver's own exception log
    failures_found = 0
    t_all = time.monotonic()

    # graphs
    t0 = time.monotonic()
    by_engine = collections.Counter()
    graph_failures = []
    for k in range(opts.graphs):
        engine = ("list", "auto")[k % 2]
        rng = random.Random(f"graph-{opts.seed}-{k}")
        try:
            found = run_graph(rng, time_limit_s=opts.graph_time_limit, engine=engine)
        except Exception as err:  # noqa: BLE001
            found = [f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"]
        by_engine[engine] += 1
        if found:
            graph_failures.append((k, engine, found))
    print(f"## random graphs (solve_order, min_cut_bound, brute force on <= 7 nodes)\n")
    print(f"tried {opts.graphs} ({', '.join(f'{e}: {c}' for e, c in sorted(by_engine.items()))}), "
          f"failed {len(graph_failures)}, {time.monotonic() - t0:.0f} s")
    for k, engine, found in graph_failures[:10]:
        print(f"- graph {k} (random.Random('graph-{opts.seed}-{k}'), engine {engine}):")
        for line in found:
            print(f"    {line}")
    failures_found += len(graph_failures)

    # placements
    t0 = time.monotonic()
    placement_failures = []
    for k in range(opts.placements):
        rng = random.Random(f"placement-{opts.seed}-{k}")
        try:
            found = run_placement(rng, time_limit_s=opts.graph_time_limit)
        except Exception as err:  # noqa: BLE001
            found = [f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"]
        if found:
            placement_failures.append((k, found))
    print(f"\n## random placement problems (place, greedy and auto, independent overlap check)\n")
    print(f"tried {opts.placements}, failed {len(placement_failures)}, {time.monotonic() - t0:.0f} s")
    for k, found in placement_failures[:10]:
        print(f"- placement {k} (random.Random('placement-{opts.seed}-{k}')):")
        for line in found:
            print(f"    {line}")
    failures_found += len(placement_failures)

    # programs
    t0 = time.monotonic()
    status = collections.Counter()
    reasons = collections.Counter()
    suspicious = []
    failed = []
    errors = []
    checker_false = []
    for k in range(opts.programs):
        rng = random.Random(f"program-{opts.seed}-{k}")
        spec = random_program(rng, seed=opts.seed * 100_000 + k, max_ops=opts.max_ops,
                              must_use=(OPS[k % len(OPS)],))
        outcome = run_program(spec, time_limit_s=opts.time_limit)
        status[outcome.status] += 1
        if outcome.status == "fell back":
            reasons[outcome.reason] += 1
            if outcome.suspicious:
                suspicious.append(outcome)
        elif outcome.status == "error":
            errors.append(outcome)
        elif outcome.status == "FAILED":
            failed.append(outcome)
        if outcome.checker_rejects_xla:
            checker_false.append(outcome)
        if opts.verbose:
            print(f"  [{k}] {outcome.status:9s} {outcome.seconds:5.1f}s {outcome.reason} "
                  f"{spec.describe()}", flush=True)
    print(f"\n## random JAX programs (olla_jax.plan, time_limit_s={opts.time_limit})\n")
    print(f"tried {opts.programs}, verified {status['verified']}, fell back {status['fell back']}, "
          f"documented errors {status['error']}, FAILED {status['FAILED']}, "
          f"{time.monotonic() - t0:.0f} s")
    if reasons:
        print("\nfell back, by reason:")
        for reason, count in reasons.most_common():
            flag = "  (suspicious: a bug the safety net caught)" if any(
                o.reason == reason for o in suspicious) else ""
            print(f"- {count:4d}  {reason}{flag}")
    print(f"\nthe independent checker rejects XLA's own plan (false positive): {len(checker_false)}")
    for outcome in checker_false[:5]:
        print(f"- {outcome.spec.describe()}\n    {outcome.checker_rejects_xla[:300]}")
    for outcome in suspicious[:10]:
        print(f"\nsuspicious fallback, {outcome.spec.describe()}\n    "
              + "\n    ".join(n[:400] for n in outcome.notes))
    for outcome in errors[:10]:
        print(f"\ndocumented error, {outcome.spec.describe()}\n    {outcome.reason}")
    for outcome in failed[:10]:
        print(f"\nFAILED, {outcome.spec.describe()}\n    " + "\n    ".join(outcome.failures))
    failures_found += len(failed) + len(checker_false)
    print(f"\nfailures found: {failures_found}; total {time.monotonic() - t_all:.0f} s")
    return 1 if failures_found else 0


if __name__ == "__main__":
    sys.exit(main())
