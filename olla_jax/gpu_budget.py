"""Memory budgets on compile-only GPU targets: our recomputation beside XLA's.

Two ways to trade compute for memory are tried on the same plan:

* ours (``budget.recompute_to_budget``): values idle across the peak are
  recomputed by copying their producer's kernel thunk in the GPU executable;
  the plan passes the independent checker, the rewritten executable is built,
  decoded again and compared with the plan (not run: no GPU here);
* XLA's rematerialization under a searched memory limit
  (``budget.xla_remat_to_budget``), the baseline.

The one kept: among those that meet the budget, the fewest extra FLOPs; when
neither does, the least memory.  The other's figures stay in the notes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


@dataclasses.dataclass(frozen=True)
class Side:
    """One way of meeting the budget, as a Plan, with how it is described."""
    name: str
    plan: Any   # olla_jax.result.Plan


def _figures(side: Side) -> str:
    p = side.plan
    return (f"{side.name}: total {p.runs_total_bytes / 2**20:,.2f} MiB (temp "
            f"{p.runs_temp_bytes / 2**20:,.2f} MiB), {p.extra_flops:,} extra FLOPs")


def choose(sides: Sequence[Side], budget: int) -> Side:
    """Fewest extra FLOPs among the sides within ``budget``, else the least memory."""
    fitting = [s for s in sides if s.plan.runs_total_bytes <= budget]
    if fitting:
        return min(fitting, key=lambda s: (s.plan.extra_flops, s.plan.runs_total_bytes))
    return min(sides, key=lambda s: (s.plan.runs_total_bytes, s.plan.extra_flops))


# What checking, rewriting, building and reading back a recomputing GPU
# executable takes, by the size of XLA's serialized executable (compressed):
# about this many bytes a second (pure-Python Riegeli hash and Snappy on a
# loaded 2-core machine), plus a second; set by hand from mlp_mixer:small and
# vit:small (about 1 MB each) on this machine shared by several runs.
BUILD_BYTES_PER_S = 0.1e6


BUILD_FIXED_S = 1.0


def search_limit_s(result, time_limit_s: float) -> float:
    """The share of ``time_limit_s`` the recomputation search of ``result``
    (a Plan on a compile-only GPU target) may take, so that the check, the
    rewrite and the read-back after it end within the limit too: the limit
    less their estimate (``BUILD_BYTES_PER_S``), a fifth of it at least."""
    cap = getattr(result, "capture", None)
    if cap is None or not cap.executable:
        return time_limit_s
    build = BUILD_FIXED_S + len(cap.executable) / BUILD_BYTES_PER_S
    return max(time_limit_s / 5, time_limit_s - build)


def to_budget(result, budget: int, fn, args: Sequence[Any], *, static_argnums: Sequence[int] = (),
              donate_argnums: Sequence[int] = (), compiler_options=None,
              time_limit_s: float = 30.0, recompute_cost: str = "time"):
    """``result`` (a Plan over ``budget`` on a compile-only GPU target) with
    the better of our recomputation (its search costing copies by
    ``recompute_cost``, ``budget.candidates.copy_cost``) and XLA's
    rematerialization."""
    from olla_jax import budget as budget_lib
    ours = budget_lib.recompute_to_budget(result, budget,
                                          time_limit_s=search_limit_s(result, time_limit_s),
                                          measure_time=False, recompute_cost=recompute_cost)
    xla = budget_lib.xla_remat_to_budget(result, budget, fn, args, static_argnums=static_argnums,
                                         donate_argnums=donate_argnums,
                                         compiler_options=compiler_options)
    sides = [Side("our recomputation", ours), Side("XLA's rematerialization", xla)]
    kept = choose(sides, budget)
    other = next(s for s in sides if s is not kept)
    text = (f"budget {budget / 2**20:,.2f} MiB side by side: {_figures(kept)} (kept); "
            f"{_figures(other)}")
    extra = tuple(n for n in other.plan.notes if n not in kept.plan.notes)
    # every second of both sides is reported: XLA's remat compiles with XLA's
    # compiles, our search with the planner's, our build with verification
    return dataclasses.replace(
        kept.plan, notes=kept.plan.notes + extra + (text,),
        solve_seconds=ours.solve_seconds, verify_seconds=ours.verify_seconds,
        capture_seconds=xla.capture_seconds)


# --- the terms: ours against one point of XLA's rematerialization -----

# Ours meets a point of XLA's remat (temp M, extra FLOPs F) when it reaches M
# with at most FLOPS_SHARE x F, or MEMORY_SHARE x M with at most F.
FLOPS_SHARE = 0.5
MEMORY_SHARE = 0.85


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether our (temp, extra FLOPs) meets the target against one XLA point."""
    met: bool
    how: str        # which of the two terms is met, or how far each is


def against_xla(ours_temp: int, ours_flops: int, xla_temp: int, xla_flops: int, *,
                flops_share: float = FLOPS_SHARE, memory_share: float = MEMORY_SHARE) -> Verdict:
    """Ours against XLA's remat at temp ``xla_temp`` with ``xla_flops`` extra
    FLOPs: met when ours reaches that temp at ``flops_share`` x its FLOPs or
    fewer, or ``memory_share`` x that temp at its FLOPs or fewer."""
    if min(ours_temp, ours_flops, xla_temp, xla_flops) < 0:
        raise ValueError("temps and FLOPs must be non-negative")
    if ours_temp <= xla_temp and ours_flops <= flops_share * xla_flops:
        return Verdict(True, f"its memory at {_ratio(ours_flops, xla_flops)} its extra FLOPs "
                             f"(<= {flops_share:g})")
    if ours_temp <= memory_share * xla_temp and ours_flops <= xla_flops:
        return Verdict(True, f"{ours_temp / xla_temp:.3f} x its memory (<= {memory_share:g}) "
                             f"at {_ratio(ours_flops, xla_flops)} its extra FLOPs")
    return Verdict(False, f"{ours_temp / xla_temp:.3f} x its memory at "
                          f"{_ratio(ours_flops, xla_flops)} its extra FLOPs")


def _ratio(a: int, b: int) -> str:
    if b == 0:
        return "0 x" if a == 0 else "more than (it has none)"
    return f"{a / b:.2f} x"


def front(points: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (temp, extra FLOPs) points no other point is at least as good as on
    both, least temp first (XLA's remat is not monotone in its limit)."""
    kept = []
    for temp, flops in sorted(set(points)):
        if not kept or flops < kept[-1][1]:
            kept.append((temp, flops))
    return kept
