"""``olla_jax.plan``: capture -> graph -> solve -> check -> apply, with fallbacks.

Every stage after capture may fail on a program nobody here has seen; each
failure falls back to XLA's best executable with a warning that says why, so a
``Plan`` is always usable and never worse than XLA.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import math
import numbers
import time
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

from olla_jax import calls, checked, jax_compat, plan_memo
from olla_jax.calls import StepCallable  # noqa: F401 - re-exported: Plan.compiled's type
# The result types live in olla_jax.result (the budget package needs them too); re-exported here.
from olla_jax.checked import candidate_plan  # noqa: F401
from olla_jax.result import BudgetNotMet, Plan, PlanWarning, held, quiet, warn  # noqa: F401
from olla_jax.capture import Capture, capture
from olla_jax.capture.base import GPU_ALIGNMENT, Backend, CaptureError  # noqa: F401 - GPU_ALIGNMENT re-exported
from olla_jax.capture.record import capture_lowered, compile_without_dumps
from olla_jax.graph import layout as layout_lib
from olla_jax import dumps
from olla_jax.graph import collectives, model, overlap, resident
from olla_jax.solve import problem as sp
# The solve stage: solve_graph and its types, re-exported (tests, benchmarks, the CLI use them here).
from olla_jax.strategy import Candidate, Deadline, Solution, hide_collectives, solve_graph  # noqa: F401
from olla_jax.sizes import parse_size, size_text

# How _plan shares the time limit (solve_graph's shares: olla_jax.strategy).
RETIME_SHARE = 0.5             # _plan: re-timing collectives ("hidden"), kept back from the searches
# (0.25 left 2.5 s of a 10 s limit: XLA's order of the 16x1024 FSDP step drawn in, re-timed and
# placed takes ~3.5 s of CPU, more wall clock on a shared machine; the plan fell back)
KEEP_OVERLAP_SHARE = 0.35      # _plan, of the time left: the plan keeping all collective overlap first
UNCOMBINED = "uncombined"      # Capture.scheduler of a sharded step compiled with no collective combining
# How plan() shares one time limit over its stages when a budget may need more than one solve.
# The first order and placement takes its graph build, then this share of
# the time the build left; the overlap retries and recomputation the rest.
# Its search is thus never shorter than that of a call with no budget and a
# limit of FIRST_PLAN_SHARE x this one: share x (limit - build) >= share x
# limit - build.  (It was a share of the whole limit, the build paid from it:
# a 6-layer LM at load 7, 5 s and a budget, kept no order search where a 3 s
# call with no budget searched, and recomputation ended above that call.)
FIRST_PLAN_SHARE = 0.6
MIN_STAGE_S = 0.5              # less than this left: a later stage is skipped (said in notes), not overrun
# After the graph build, the least the solve costs (its list schedule, a
# placement and the layout, which run however short the time), as a share of
# the build: 0.21-0.32 on 10k- and 20k-instruction steps at load 14-19
# (3.2 s after a 15.3 s build, 2.4 s after 7.6 s).  With less left, XLA's
# plan is kept at once rather than the limit overrun.
SOLVE_FLOOR_OF_BUILD = 0.35
# On small graphs the build is quick and the solve's fixed part is not a share
# of it: about 0.1-0.35 ms a node and 0.01-0.02 s of Python at load 5 (mlp tiny, 71
# nodes: 0.02 s after a 0.003 s build; unet small, 811 nodes: 0.2 s after
# 0.17 s), three times that at load 7 on 2 cores; the constants below are a quiet
# machine's, about half that.  The floor is the larger of
# the build's share and SOLVE_FLOOR_NODE_S a node plus SOLVE_FLOOR_S, times
# how much slower than BUILD_S_PER_BYTE's guess the build ran (the machine's
# load, seen on this very step; at most SLOWNESS_CAP).
SOLVE_FLOOR_NODE_S = 1.5e-4
SOLVE_FLOOR_S = 0.005
SLOWNESS_CAP = 4.0
# The graph build before it starts, from the size of XLA's dumps (the module
# proto, the values and live-range texts): 0.06-0.25 us a byte on the examples
# at load 5 (0.3 on lstm small); a little below the least, so that only a
# build that could not fit even on a quiet machine is skipped (the build's
# own checks catch the rest).
BUILD_S_PER_BYTE = 5e-8
# Python's full garbage collection, due after XLA's compiles made their
# objects, came inside a process's first graph build (a MoE step's build at a
# 0.02 s limit ran several times the limit).  Under this limit one runs
# before the planner's clock starts (counted with the compiles).
COLLECT_BELOW_S = 1.0
# A temp allocation XLA:CPU marked as a tuple table cannot take a plan (the step
# keeps XLA's).  That warrants a PlanWarning only when a plan could have saved a
# meaningful amount: at least WARN_SAVING_BYTES and WARN_SAVING_SHARE of XLA's
# temp, judged without solving by XLA's temp minus the bytes every order must
# hold at one step (``resident.resident_bound``: an upper limit of the saving).
# Below it (a jax.random, cond, debug.print or fori_loop step of a few KiB) the
# reason goes to the notes and an info log: nothing the user can act on.
# A progress callback that takes more than this share of time_limit_s is said
# to be slow (a warning and a note): its time is the planner's.
SLOW_PROGRESS_SHARE = 0.1

# Plan.settings["xla_plan_kept"] where the search found no plan below XLA's (no
# failure): olla_jax.jit caches such a plan too, so a later process does not
# search as long again to keep XLA's plan.
NOTHING_BETTER = "nothing better found"

WARN_SAVING_BYTES = 2 ** 20
WARN_SAVING_SHARE = 0.05
# A missed budget suggests donating arguments only where the bytes arguments
# could still share with outputs are at least this share of the excess: a step
# whose every large argument is donated is not told to donate (its loss scalar
# is no way to the budget).
DONATION_ADVICE_SHARE = 0.01


def saving_worth_a_warning(xla_temp_bytes: int, floor_bytes: int) -> bool:
    """Whether a plan that could save at most ``xla_temp_bytes - floor_bytes``
    saves enough to warn that it could not be applied (see WARN_SAVING_BYTES)."""
    return xla_temp_bytes - floor_bytes >= max(WARN_SAVING_BYTES,
                                               WARN_SAVING_SHARE * xla_temp_bytes)


@dataclasses.dataclass(frozen=True)
class _Step:
    """What the planner compiles: a Lowered jax made for the call (this
    machine's backends), or the function and positional arguments (compile-only
    targets, TPU), with how the user's calls reach the executable."""
    entry: calls.Entry
    fn: Callable | None = None
    args: tuple[Any, ...] = ()
    static_argnums: tuple[int, ...] = ()
    donate_argnums: tuple[int, ...] = ()
    # XLA's compiles of this step, by backend, options and sharding: a budget
    # search plans one step several times (overlap given up step by step), and
    # pays for its compiles once.
    captures: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # What the compiles of each key in ``captures`` leave for the notes (jax.jit's
    # program planned where the unrolled one's results differ from it).
    capture_notes: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # The graph built of each capture (by id, with the capture kept alive):
    # a plan applied again in the same call (``plan_memo``) pays no second build.
    graphs: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


def _step(fn, args, kwargs, backend: Backend, static_argnums, donate_argnums, spmd,
          static_argnames=(), donate_argnames=(), rng_lowering: str = "jax") -> _Step:
    if calls.is_lowered(fn):
        if args or kwargs or static_argnums or donate_argnums or static_argnames or donate_argnames:
            raise TypeError("a jax.stages.Lowered is planned as it is: pass no arguments, "
                            "static_argnums/static_argnames or donate_argnums/donate_argnames "
                            "with it (jax fixed them when it was lowered)")
        if not backend.local:
            raise ValueError(f"a jax.stages.Lowered is compiled for this machine: backend must "
                             f"be 'cpu' or 'gpu', not {backend.name!r}; for a compile-only target "
                             "pass the function and its arguments")
        return _Step(calls.of_lowered(fn))
    if not (backend.local and not spmd):    # compiled from a positional call
        call = calls.positional_call(fn, args, kwargs, static_argnums, donate_argnums,
                                     static_argnames, donate_argnames)
        if spmd:
            _check_in_shardings(spmd.get("in_shardings"), len(args), call,
                                sorted(k for k in kwargs if k not in static_argnames))
        fn, args, kwargs = call.fn, call.args, {}
        static_argnums, donate_argnums = call.static_argnums, call.donate_argnums
        static_argnames = donate_argnames = ()
    static = calls.positions(static_argnums, len(args), "static_argnums")
    donate = calls.positions(donate_argnums, len(args), "donate_argnums")
    if set(static) & set(donate):
        raise ValueError(f"argument(s) {sorted(set(static) & set(donate))} are both static and "
                         "donated: a static argument is not an array and cannot be donated")
    if backend.local and not spmd:
        jitted = calls.jit_of(fn, static, donate, static_argnames, donate_argnames)
        # jax unrolls threefry2x32 on every platform but CPU (capture.base.Capture.jax_program)
        return _Step(calls.lower_call(jitted, args, kwargs,
                                      rng_lowering if backend.kind == "cpu" else "jax"))
    entry = calls.Entry(None, len(args), tuple((i, args[i]) for i in static), (),
                        tuple(args), static)
    return _Step(entry, fn, tuple(args), static, donate)


def _check_in_shardings(in_shardings: Any, num_positional: int, call: calls.PositionalCall,
                        keywords: Sequence[str]) -> None:
    """A tuple of ``in_shardings`` must give one entry per dynamic argument of
    the positional call a sharded step compiles: the dynamic positional
    arguments, then the non-static keyword ones (``keywords``, sorted by name).
    Refused here, before any compile, with that order spelled out."""
    if not isinstance(in_shardings, (tuple, list)):
        return                            # None or one sharding for every argument
    static = set(call.static_argnums)
    dynamic = len(call.args) - len(static)
    if len(in_shardings) == dynamic:
        return
    num_keywords = len(call.args) - num_positional
    names = list(keywords) if len(keywords) == num_keywords else ["..."] * num_keywords
    order = [f"argument {i}" for i in range(num_positional) if i not in static]
    order += [f"keyword {k!r}" for k in names]
    hint = ("; a compile-only target passes the non-static keyword arguments after the "
            "positional ones, sorted by name (make a keyword static with static_argnames, or "
            "pass it positionally)" if num_keywords else "")
    raise ValueError(f"in_shardings has {len(in_shardings)} entries but the sharded step has "
                     f"{dynamic} dynamic arguments ({', '.join(order) or 'none'}){hint}: give "
                     "one sharding per dynamic argument in that order, or one PartitionSpec "
                     "(or None) for all")


def _saved_recomputation(saved) -> dict[str, Any]:
    """A saved recomputing plan's ``recomputed`` and ``extra_flops`` as it was
    saved (a file from before they were kept: its copies' producers, the FLOPs
    unknown), so that its summary reads as one."""
    figures = saved.figures
    if "recomputed" in figures:
        return dict(recomputed=tuple(figures["recomputed"]),
                    extra_flops=int(figures.get("extra_flops") or 0))
    return dict(recomputed=tuple(dict.fromkeys(r["producer"] for r in saved.recomputes)))


def _capture_key(backend: Backend, compiler_options, spmd) -> tuple:
    return backend.name, repr(sorted((compiler_options or {}).items())), repr(spmd)


def _baselines(step: _Step, backend: Backend, compiler_options, spmd=None,
               check_unrolled: bool = True) -> list[Capture]:
    """XLA's compiles of ``step``, each scheduler's; made once per step and settings.
    ``check_unrolled``: where threefry2x32 is unrolled, check first that XLA's
    executable of that program gives jax.jit's results (a plan not fed back is
    not verified: it skips the check's seconds)."""
    key = _capture_key(backend, compiler_options, spmd)
    if key not in step.captures:
        step.captures[key] = tuple(_compile_baselines(step, backend, compiler_options, spmd, key,
                                                      check_unrolled))
    return list(step.captures[key])


def _unrolled_differs(cap: Capture, entry: calls.Entry) -> str:
    """'' where XLA's executable of ``cap`` (threefry2x32 unrolled) gives jax.jit's
    program's outputs bit for bit (on the call's inputs where they are concrete,
    else on random ones), else how they differ.  Both are XLA's own executables,
    run in the verification's child process."""
    from olla_jax.apply import verify
    reference = cap.reference.executable
    if cap.executable is None or reference is None or verify.host_callbacks(reference):
        return ""       # nothing to compare here; the plan's verification says why
    dynamic = [a for i, a in enumerate(entry.verify_args) if i not in set(entry.verify_static)]
    return verify.outputs_differ(cap.executable, reference, cap.compiled, dynamic)


def _compile_baselines(step: _Step, backend: Backend, compiler_options,
                       spmd=None, key=None, check_unrolled: bool = True) -> list[Capture]:
    schedulers = backend.schedulers
    if step.fn is None:
        caps = [capture_lowered(step.entry.lowered, backend=backend, scheduler=s,
                                compiler_options=compiler_options) for s in schedulers]
        if step.entry.jax_lowered is not None:   # another program than jax.jit's: its too
            # only its figures and executables are needed: compiled without dumps
            caps = [dataclasses.replace(cap, jax_program=compile_without_dumps(
                step.entry.jax_lowered, backend=backend, scheduler=cap.scheduler,
                compiler_options=compiler_options)) for cap in caps]
            differs = check_unrolled and _unrolled_differs(
                min(caps, key=lambda c: c.memory.temp), step.entry)
            if differs:
                # A plan of the unrolled program would fail its verification
                # against jax.jit's and be dropped: plan jax.jit's program.
                step.capture_notes[key] = (
                    "planned jax.jit's program (threefry2x32 rolled): XLA's executable of the "
                    "step with threefry2x32 unrolled does not reproduce jax.jit's results (the "
                    "random bits are the same, XLA compiles the arithmetic after them "
                    f"differently: {differs}), so no plan of it could be verified",)
                caps = [capture_lowered(step.entry.jax_lowered, backend=backend, scheduler=s,
                                        compiler_options=compiler_options)
                        for s in schedulers]
        return caps
    caps = [capture(step.fn, *step.args, backend=backend, scheduler=s,
                    static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                    compiler_options=compiler_options, spmd=spmd)
            for s in schedulers]
    if spmd is not None and backend.kind == "gpu" and not (
            set(compiler_options or {}) & set(collectives.COMBINE_THRESHOLD_OPTIONS)):
        module = dumps.parse_hlo_proto(caps[0].hlo_proto).hlo_module
        if collectives.combined_pairs(module):
            # A combined collective waits for all its arrays (collectives.combined_pairs):
            # the same step with one collective per array is a baseline too, so that
            # a start can follow its own array (XLA plans that module as well).
            options = {**(compiler_options or {}),
                       **{k: 0 for k in collectives.COMBINE_THRESHOLD_OPTIONS}}
            caps.append(dataclasses.replace(
                capture(step.fn, *step.args, backend=backend, static_argnums=step.static_argnums,
                        donate_argnums=step.donate_argnums, compiler_options=options, spmd=spmd),
                scheduler=UNCOMBINED))
    return caps


def _matching_capture(caps: Sequence[Capture], saved) -> Capture:
    from olla_jax import saved as saved_lib
    for cap in caps:
        if saved_lib.fingerprint(cap.hlo_text) == saved.fingerprint:
            return cap
    raise saved_lib.PlanFileError(
        "the saved plan was made for another program (its module fingerprint "
        f"{saved.fingerprint[:12]}... matches none compiled here): a different function, "
        "argument shapes, compile options, rng_lowering or jax version; plan this step again")


def _warm_starts(graph: model.ScheduleGraph, others: Sequence[Capture]) -> list[tuple[int, ...]]:
    """XLA's orders as starts: the base order, and other schedulers' orders when
    their modules have the same entry instructions."""
    starts = [graph.xla_order]
    for other in others:
        try:
            names = [n for n in model.entry_sequence(other.live_range_text, set(graph.nodes))]
        except Exception:  # noqa: BLE001 - another module; not a usable start
            continue
        if sorted(names) == sorted(graph.nodes):
            order = tuple(graph.node_index[n] for n in names)
            try:
                sp.check_topological(graph.order_problem(), order)
            except ValueError:
                continue
            starts.append(order)
    return starts


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_options(fn, *, kwargs=None, backend="cpu", time_limit_s=30.0, compiler_options=None,
                  engine="auto", verify_trials=2, feed_back=True, seed=0, saved=None,
                  memory_budget=None, recompute=True, recompute_cost=None,
                  offload=False, rng_lowering="unrolled", scan_remat=False,
                  program_remat=False) -> None:
    """Every planning option checked before anything is compiled, with what to do instead."""
    from olla_jax.budget.candidates import check_cost
    from olla_jax.saved import SavedPlan
    from olla_jax.solve.order import ENGINES
    if calls.is_compiled(fn):
        raise TypeError("olla_jax plans a step before XLA compiles it: pass the jax.stages.Lowered "
                        "(olla_jax.plan(jitted.lower(*args))), the jitted function or the "
                        "function itself, not the .compile() result")
    if not (callable(fn) or calls.is_lowered(fn)):
        raise TypeError(f"olla_jax plans a function, a jax.jit-wrapped function or a "
                        f"jax.stages.Lowered, not a {type(fn).__name__}")
    if kwargs is not None and (not isinstance(kwargs, dict)
                               or not all(isinstance(k, str) for k in kwargs)):
        raise TypeError(f"kwargs must be a dict of keyword arguments for the step, got {kwargs!r}")
    _check_local_gpu(Backend.parse(backend))   # raises CaptureError("unknown backend ...")
    if recompute_cost is not None:
        check_cost(recompute_cost)
    if not _is_number(time_limit_s) or not math.isfinite(time_limit_s) or time_limit_s <= 0:
        raise (TypeError if not _is_number(time_limit_s) else ValueError)(
            f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}")
    if compiler_options is not None and (not isinstance(compiler_options, dict) or not all(
            isinstance(k, str) for k in compiler_options)):
        raise TypeError(f"compiler_options must be a dict of XLA option names to values, "
                        f"got {compiler_options!r}")
    engines = (*ENGINES, "joint")
    if engine not in engines:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(engines)}")
    if isinstance(verify_trials, bool) or not isinstance(verify_trials, numbers.Integral):
        raise TypeError(f"verify_trials must be an int (random input sets the rewritten "
                        f"executable is checked on), got {verify_trials!r}")
    if verify_trials < 2:
        raise ValueError(f"verify_trials must be an int >= 2, got {verify_trials!r}: a plan is "
                         "only loaded once its executable matched XLA's on at least two random "
                         "input sets; to skip verification, pass feed_back=False (the plan is "
                         "then not applied)")
    for name, value in (("feed_back", feed_back), ("recompute", recompute), ("offload", offload),
                        ("scan_remat", scan_remat), ("program_remat", program_remat)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if scan_remat and memory_budget is None:
        raise ValueError("scan_remat=True is a side of a memory budget (tried where the budget is "
                         "missed): pass memory_budget=..., or rewrite the step yourself with "
                         "olla_jax.scan_remat.scan_remat and plan its ScanRematResult.fn")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if saved is not None and not isinstance(saved, SavedPlan):
        raise TypeError(f"saved must be a plan read by olla_jax.load_plan(path), got a "
                        f"{type(saved).__name__}")
    if saved is not None and _target(saved.backend) not in (None, _target(backend)):
        from olla_jax.saved import PlanFileError   # its fingerprint would say only "another program"
        raise PlanFileError(f"the saved plan is for backend={saved.backend!r}, not {backend!r}: "
                            f"pass backend={saved.backend!r}, or plan the step for this backend")
    if memory_budget is not None:
        parse_size(memory_budget, "memory_budget")
    if offload:
        check_offload(Backend.parse(backend), memory_budget, recompute, saved)
    if program_remat:
        check_program_remat(Backend.parse(backend), memory_budget, recompute)
    if rng_lowering not in jax_compat.RNG_LOWERINGS:
        choices = ", ".join(map(repr, jax_compat.RNG_LOWERINGS))
        raise ValueError(f"rng_lowering must be one of {choices}, got {rng_lowering!r}: "
                         "'unrolled' plans a CPU step with jax.random's "
                         "threefry2x32 unrolled (as jax lowers it on GPU and TPU), 'jax' plans "
                         "the program jax.jit compiles")


def _target(backend) -> tuple[str, str | None] | None:
    """(kind, target) of a backend string ("gpu" and "gpu:local" alike); None
    for one that does not parse (a hand-edited plan file: its fingerprint decides)."""
    try:
        parsed = Backend.parse(backend)
    except CaptureError:
        return None
    return parsed.kind, parsed.target


def check_program_remat(backend: Backend, memory_budget, recompute) -> None:
    """``program_remat=True``: a side of a memory budget on a compile-only GPU target."""
    if not (backend.kind == "gpu" and backend.compile_only):
        why = ("XLA:CPU merges the recomputation with the original" if backend.kind != "gpu"
               else "nothing has run the rewritten step on a GPU yet")
        raise ValueError("program_remat=True is a side of memory budgets on compile-only GPU "
                         f"targets such as backend='gpu:h100', not {backend.name!r} ({why}): "
                         "leave it off here, or plan the step for such a target")
    if memory_budget is None:
        raise ValueError("program_remat=True is a side of a memory budget: pass memory_budget=... "
                         "(or rewrite the step yourself with olla_jax.program_remat.program_remat "
                         "and plan its .fn)")
    if not recompute:
        raise ValueError("program_remat=True is tried beside recomputation: it needs "
                         "recompute=True (the default)")


def check_offload(backend: Backend, memory_budget, recompute, saved) -> None:
    """``offload=True``: a side of a memory budget on a compile-only GPU target."""
    if backend.kind != "gpu":
        raise ValueError(f"offload=True parks values in host memory, which backend "
                         f"{backend.name!r} cannot: jax drops memory kinds there (XLA:CPU lowers "
                         "no host transfer, benchmarks/results/offload_reach.md); plan for a "
                         "compile-only GPU target such as backend='gpu:h100', or leave offload off")
    if not backend.compile_only:
        raise ValueError("offload=True is built for compile-only GPU targets such as "
                         "backend='gpu:h100' (nothing measures the copies' time on this machine's "
                         "GPU yet); leave offload off here")
    if memory_budget is None:
        raise ValueError("offload=True is a side of a memory budget: pass memory_budget=... "
                         "(or park values yourself with olla_jax.offload.offload and plan its "
                         "OffloadResult.fn)")
    if not recompute or saved is not None:
        raise ValueError("offload=True is tried beside recomputation: it needs recompute=True "
                         "and no saved plan (a saved plan is applied, not searched)")


def _check_local_gpu(backend: Backend) -> None:
    """``backend="gpu"`` plans what jax runs on this machine's GPU: without one,
    jax lowers for the CPU, and that executable is no GPU plan."""
    if backend.kind != "gpu" or backend.compile_only:
        return
    import jax
    here = jax.default_backend()
    if here != "gpu":
        raise CaptureError(f"backend={backend.name!r} plans for this machine's GPU, but jax runs "
                           f"on {here!r} here (no GPU it can use): plan for {here!r} with "
                           f"backend={here!r}, or for a GPU you do not have with a compile-only "
                           "target, backend='gpu:h100' or 'gpu:a100' (olla_jax.plan)")


def plan(fn: Callable, *args, kwargs: dict[str, Any] | None = None, backend: str = "cpu",
         time_limit_s: float = 30.0,
         static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = (),
         static_argnames: str | Sequence[str] = (), donate_argnames: str | Sequence[str] = (),
         compiler_options: dict[str, Any] | None = None, engine: str = "auto",
         verify_trials: int = 2, feed_back: bool = True, seed: int = 0,
         saved=None, memory_budget: int | str | None = None, recompute: bool = True,
         recompute_cost: str | None = None, num_devices: int = 1, in_shardings: Any = None,
         out_shardings: Any = None,
         mesh_axes: dict[str, int] | None = None,
         collective_overlap: str | float = "keep", offload: bool = False,
         rng_lowering: str = "unrolled", progress=None, scan_remat: bool = False,
         program_remat: bool = False, **unknown) -> Plan:
    """Plan ``fn(*args, **kwargs)``: the least temp memory order and placement we can find,
    applied to a real executable when the backend allows it, checked bit-for-bit
    against XLA's, else XLA's best plan with the reason in ``notes``.

    ``fn``: a function (with ``static_argnums``/``static_argnames`` and
    ``donate_argnums``/``donate_argnames`` as jax.jit takes them), a
    ``jax.jit``/``flax.nnx.jit`` object (with its own options),
    or a ``jax.stages.Lowered`` (no arguments: ``Plan.compiled`` is then called
    as its ``.compile()`` result is, with the dynamic arguments).  Otherwise
    ``Plan.compiled`` takes the same arguments as ``fn``.

    ``saved``: a plan read by ``olla_jax.load_plan``; it is applied (checked,
    rewritten, verified) instead of solving, and refused unless it was made for
    this very module.

    ``memory_budget``: bytes the whole step may use on the device (arguments +
    outputs - donated + temp, as ``Plan.total_bytes``): a whole number or a
    string such as ``"160MiB"`` or ``"1.5GB"`` (as the CLI's ``--memory_budget``).  Order and placement
    come first; when they are not enough and ``recompute`` is on, values are
    recomputed (extra compute) until the budget is met: on CPU by copying
    kernel thunks in the executable (``olla_jax.budget``), on a compile-only
    GPU target by the same copies in the GPU executable (built, not run) or
    XLA's own rematerialization under a searched memory limit
    (``olla_jax.xla_remat``), whichever meets it with fewer extra FLOPs
    (``olla_jax.gpu_budget``).  ``offload=True`` (compile-only GPU targets,
    with a budget) adds host offloading as one more side, tried last in the
    time the others leave (never where one meets the budget with no extra
    FLOPs): the longest-idle
    values parked in host memory (``olla_jax.offload``), then our order and
    placement (and recomputation on top); kept only where it meets the budget
    with fewer extra FLOPs than the others, or where none does (built, not
    run: the copies' time is unknown).  ``program_remat=True`` (compile-only
    GPU targets, with a budget) adds program recomputation before offloading
    (``olla_jax.program_remat``: long-idle values computed again in the step's
    jaxpr, bits compared on CPU; the rewritten step ordered and placed by us),
    in the time the others leave; opt-in: its compiles take minutes.  A budget that cannot be met raises
    ``BudgetNotMet`` with the least memory reached.  Plans that earlier
    budgeted calls of this process applied to the same program with the same
    options compete with the call's own (``olla_jax.plan_memo``: the least
    extra cost that meets the budget, else the least memory; applied again,
    checked and verified; said in the notes), so separate calls are monotone
    in the budget; ``olla_jax.clear_cache()`` forgets them.  ``time_limit_s`` bounds
    the planner's part of the whole call (``Plan.solve_seconds``, summed over
    the stages): with a budget, the first order and placement gets its graph
    build and ``FIRST_PLAN_SHARE`` of the time left after it, the overlap
    retries and recomputation the rest.
    ``recompute_cost``: what the recomputation search minimises per copy,
    ``"time"`` (a roofline estimate of its time from its FLOPs and bytes; the
    default on CPU) or ``"flops"`` (its FLOPs, bytes moved breaking ties; the
    default on GPU targets, where a roofline makes a GEMM or convolution copy
    look about as cheap per byte as an elementwise one; ``"flops"`` prefers
    the kernels of few FLOPs that XLA's rematerialization picks).

    Sharded steps (compile-only GPU targets): ``num_devices``, ``in_shardings``,
    ``out_shardings`` (PartitionSpecs over ``mesh_axes``, default ``{"x":
    num_devices}``) make XLA compile the per-device program, with its
    collectives split into asynchronous start/done pairs that overlap compute.
    When XLA combined several arrays into one collective (a combined start
    waits for all of them: every layer's gradient for one reduce-scatter), the
    step is also compiled with XLA's combiners off (``UNCOMBINED``), and the
    lower of the two compiles is planned (``Plan.xla_scheduler``).
    ``collective_overlap="keep"`` keeps what XLA runs between each start and
    done between them (XLA's overlap, the least memory with it);
    ``"free"`` lets the order collapse that overlap for less memory; a fraction
    keeps the most-overlapped pairs up to that share of XLA's overlapped FLOPs
    (``Plan.settings`` reports the overlapped FLOPs, XLA's and ours).
    ``"hidden"`` plans the least memory whose order exposes no more
    communication than XLA's under ``olla_jax.graph.overlap``'s cost model
    (starts and dones re-timed, not XLA's instructions kept);
    ``collectives.ExposedAtMost(seconds)`` allows that many seconds instead
    (``Plan.settings``: ``exposed_s``, ``exposed_s_xla``, ``comm_s``).  With a
    ``memory_budget`` the overlap is given up step by step (3/4, 1/2, 1/4,
    none of what was asked; for ``"hidden"``/``ExposedAtMost``, allowances
    growing to all of the step's communication, the least exposed that meets
    the budget first) before anything is recomputed (on a sharded step: our
    kernel copies in the per-device executable, not XLA's rematerialization).

    ``rng_lowering``: on CPU jax lowers jax.random's threefry2x32 (the default
    PRNG: dropout, ``jax.random.bernoulli``) to a rolled while loop, whose
    random bits XLA cannot fuse and our recomputation cannot copy.
    ``"unrolled"`` (the default) plans a CPU step that uses it with the
    unrolled lowering jax uses on GPU and TPU (the same uint32 arithmetic; the
    user's own jax.jit calls are unaffected); ``Plan.jax_program_temp_bytes``
    is XLA's temp of the program jax.jit compiles, which the headline figures
    (``Plan.xla_temp_bytes``) compare with, and the plan is verified against
    that program's outputs.  ``"jax"`` plans jax.jit's program as it is.
    Other backends and steps without threefry2x32 are untouched.

    ``scan_remat=True`` (with a budget; a single-device function, no saved
    plan) adds one more side where the budget is missed: the
    step with its scans' residual stacks (forward ``lax.scan``/``nn.scan``
    outputs kept for the backward scan) recomputed inside the backward scan
    (``olla_jax.scan_remat``), kept only where its outputs equal jax.jit's bit
    for bit on CPU, then planned with the same budget; the notes say what was
    dropped and the extra FLOPs (``Plan.extra_flops`` counts them).  Without it, a
    missed budget's ``BudgetNotMet.reasons`` name ``scan_remat=True`` where the
    step's trace (no compile) finds candidate stacks.

    ``progress``: called with an ``olla_jax.progress.Progress`` (stage, elapsed
    seconds, the least temp placed so far, XLA's, the bound) at each stage and
    improvement; by default nothing is reported."""
    from olla_jax.progress import Reporter
    if unknown:
        import inspect
        names = [n for n in inspect.signature(plan).parameters if n not in ("fn", "args", "unknown")]
        hints = "".join(calls.did_you_mean(name, names) for name in sorted(unknown))
        raise TypeError(f"plan() takes no keyword argument {', '.join(sorted(unknown))}{hints}: "
                        "the step's own keyword arguments go in kwargs={...} (olla_jax.jit "
                        "takes them directly, as jax.jit does)")
    static_argnums = calls.argnums(static_argnums, "static_argnums")
    donate_argnums = calls.argnums(donate_argnums, "donate_argnums")
    static_argnames = calls.argnames(static_argnames, "static_argnames")
    donate_argnames = calls.argnames(donate_argnames, "donate_argnames")
    check_options(fn, kwargs=kwargs, backend=backend, time_limit_s=time_limit_s,
                  compiler_options=compiler_options, engine=engine, verify_trials=verify_trials,
                  feed_back=feed_back, seed=seed, saved=saved, memory_budget=memory_budget,
                  recompute=recompute, recompute_cost=recompute_cost, offload=offload,
                  rng_lowering=rng_lowering, scan_remat=scan_remat, program_remat=program_remat)
    if memory_budget is not None:
        memory_budget = parse_size(memory_budget, "memory_budget")   # 2e9, "160MiB" as well
    report = Reporter(progress, time_limit_s)
    collectives.keep_fraction(collective_overlap)  # raises on a bad value
    spmd = None
    if num_devices != 1 or in_shardings is not None or out_shardings is not None or mesh_axes:
        if not isinstance(num_devices, int) or num_devices < 1:
            raise ValueError(f"num_devices must be a positive int, got {num_devices!r}")
        spmd = dict(num_devices=num_devices, in_shardings=in_shardings,
                    out_shardings=out_shardings, mesh_axes=mesh_axes)
        if program_remat:
            raise ValueError("program_remat=True is for single-device steps: a sharded step "
                             "(num_devices, in_shardings, out_shardings, mesh_axes) is not "
                             "rewritten")
        if offload:
            raise ValueError("offload=True is for single-device steps: a sharded step "
                             "(num_devices, in_shardings, out_shardings, mesh_axes) is not "
                             "offloaded")
    target = Backend.parse(backend)
    from olla_jax.budget.candidates import default_cost
    recompute_cost = default_cost(recompute_cost, target)     # "flops" on GPU targets
    step = _step(fn, args, dict(kwargs or {}), target, static_argnums, donate_argnums, spmd,
                 static_argnames, donate_argnames, rng_lowering)
    options = dict(backend=target, time_limit_s=time_limit_s, compiler_options=compiler_options,
                   engine=engine, verify_trials=verify_trials, feed_back=feed_back, seed=seed,
                   saved=saved, spmd=spmd, progress=report)
    # One deadline for the planner's part of the whole call (every _plan's
    # solve and the recomputation search; not XLA's compiles or verification):
    # with a budget that may need later stages, the first plan gets a share.
    later = memory_budget is not None and ((recompute and saved is None) or spmd is not None)
    first = _plan(step, collective_overlap=collective_overlap,
                  solve_share=FIRST_PLAN_SHARE if later else 1.0, **options)
    spent = [first.solve_seconds]    # planner seconds over the stages so far
    clocks = {"capture": first.capture_seconds, "verify": first.verify_seconds}

    def tried(trial: Plan) -> Plan:
        """``trial``, a later stage's plan, its seconds added to the call's."""
        spent[0] += trial.solve_seconds
        clocks["capture"] += trial.capture_seconds
        clocks["verify"] += trial.verify_seconds
        return trial

    def total(plan: Plan, *notes: str) -> Plan:
        """``plan`` reporting every stage's seconds (the planner's against the
        whole call's limit, XLA's compiles, the checks and rewrites)."""
        settings = dict(plan.settings, time_limit_s=time_limit_s)
        return dataclasses.replace(plan, solve_seconds=spent[0], notes=plan.notes + notes,
                                   settings=settings, capture_seconds=clocks["capture"],
                                   verify_seconds=clocks["verify"])

    skipped: list[str] = []          # later stages with no time left, for the notes

    def time_for(stages_left: int, what: str) -> float | None:
        """Seconds for the next of ``stages_left`` stages; None (noted) if too few are left."""
        left = time_limit_s - spent[0]
        if left < MIN_STAGE_S:
            skipped.append(f"{what} not tried: {max(left, 0):.2g} s of the {time_limit_s:g} s "
                           f"limit left after the stages before it (it needs {MIN_STAGE_S:g} s)")
            return None
        return max(MIN_STAGE_S, left / stages_left)

    if memory_budget is None:
        return first
    said: list[tuple[str, type[Warning]]] = []   # recomputation's warnings: given, or in the error

    def searched() -> Plan:
        """This call's own plan for the budget: order and placement, then
        less collective overlap, then recomputation, until it is met."""
        result = first
        if result.runs_total_bytes <= memory_budget:
            return total(result)
        asked = collectives.keep_fraction(collective_overlap)
        if result.settings.get("async_pairs") and collectives.exposure_mode(collective_overlap) \
                and "comm_s" in result.settings:
            # The least exposed communication that meets the budget: allowances
            # from what was asked up to all of the step's communication.
            low = result.settings.get("exposed_allowance_s", result.settings["exposed_s_xla"])
            high = max(low, result.settings["comm_s"])
            shares = (0.25, 0.5, 0.75, 1.0)
            for i, share in enumerate(shares):
                limit = time_for(len(shares) - i + int(recompute), "reducing collective overlap")
                if limit is None:
                    break
                trial = tried(_plan(step, collective_overlap=collectives.ExposedAtMost(
                    low + share * (high - low)), **dict(options, time_limit_s=limit)))
                if trial.runs_total_bytes < result.runs_total_bytes:
                    result = dataclasses.replace(trial, notes=trial.notes + (
                        f"exposed communication allowed to grow to "
                        f"{trial.settings.get('exposed_allowance_s', 0) * 1e6:,.1f} us "
                        f"(XLA's order: {trial.settings.get('exposed_s_xla', 0) * 1e6:,.1f} us) "
                        "to meet the memory budget",))
                if result.runs_total_bytes <= memory_budget:
                    return total(result)
        elif result.settings.get("async_pairs") and asked > 0:
            shares = (0.75, 0.5, 0.25, 0.0)
            for i, share in enumerate(shares):
                limit = time_for(len(shares) - i + int(recompute), "reducing collective overlap")
                if limit is None:
                    break
                trial = tried(_plan(step, collective_overlap=share * asked,
                                    **dict(options, time_limit_s=limit)))
                if trial.runs_total_bytes < result.runs_total_bytes:
                    result = dataclasses.replace(trial, notes=trial.notes + (
                        f"collective overlap reduced to {share:.0%} of what was asked to meet "
                        f"the memory budget (overlapped FLOPs "
                        f"{trial.settings.get('overlapped_flops', 0):,} "
                        f"of XLA's {trial.settings.get('overlapped_flops_xla', 0):,})",))
                if result.runs_total_bytes <= memory_budget:
                    return total(result)
        limit = time_for(1, "recomputation") if recompute and saved is None else None
        result = total(result, *skipped)
        if limit is not None:
            with held(said):
                result = _recompute_stage(result, step, target, options, spmd, int(memory_budget),
                                          limit, collective_overlap, compiler_options,
                                          recompute_cost, offload, verify_trials, report,
                                          program_remat=program_remat)
        return result

    result = searched()
    key = _memo_key(first, target, spmd, saved, compiler_options=compiler_options,
                    recompute=recompute, recompute_cost=recompute_cost,
                    offload=offload, rng_lowering=rng_lowering,
                    **({"program_remat": True} if program_remat else {}), collective_overlap=collective_overlap,
                    feed_back=feed_back)
    if key is not None:
        best = _with_memo(result, first, key, int(memory_budget), step, options,
                          time_limit_s, recompute_cost)
        if best is not result and best.runs_total_bytes <= memory_budget:
            # this call's own search's complaints are of a plan not kept
            said[:] = [(m, c) for m, c in said if not issubclass(c, PlanWarning)]
        result = best
    reasons = [m for m, category in said if issubclass(category, PlanWarning)]
    # A limit too short for a search or a stage: said in the error too (a longer one may meet it).
    reasons += [n for n in result.notes if n.startswith("no time to plan") or n in skipped]
    if result.runs_total_bytes > memory_budget and scan_remat and spmd is None and saved is None:
        limit = time_for(1, "scan rematerialization")
        if limit is not None:
            lever_s = [0.0, 0.0]      # the lever's own: its compiles, its bit comparison
            side, side_notes = _scan_remat_side(
                fn, args, kwargs, result, int(memory_budget), static_argnums, donate_argnums,
                static_argnames, donate_argnames,
                dict(backend=backend, time_limit_s=limit, compiler_options=compiler_options,
                     engine=engine, verify_trials=verify_trials, feed_back=feed_back, seed=seed,
                     recompute=recompute, recompute_cost=recompute_cost,
                     rng_lowering=rng_lowering), lever_s)
            clocks["capture"] += lever_s[0]
            clocks["verify"] += lever_s[1]
            if side is not None:    # met, or missed too below the plan without it
                result = total(tried(side), *side_notes)
                if result.runs_total_bytes <= memory_budget:
                    return _budgeted(result, int(memory_budget))
            reasons += side_notes
        else:
            reasons.append(skipped[-1])
    elif result.runs_total_bytes > memory_budget and spmd is None and saved is None:
        reasons += _scan_remat_hint(fn, args, kwargs, static_argnums, static_argnames)
    for message, category in said:
        if result.runs_total_bytes <= memory_budget or not issubclass(category, PlanWarning):
            warn(message, category)
    result = _budgeted(result, int(memory_budget))
    if result.runs_total_bytes <= memory_budget:
        return result
    raise _budget_error(result, int(memory_budget), recompute, offload=offload, reasons=reasons,
                        saved=saved is not None)


def _budgeted(result: Plan, memory_budget: int) -> Plan:
    """``result`` recording the budget it was searched for, so that its summary
    says whether it was met (a missed one's plan is ``BudgetNotMet.plan``, and
    what ``olla_jax.jit`` runs and ``plan_for`` returns)."""
    return dataclasses.replace(result, settings=dict(result.settings, memory_budget=memory_budget))


def _scan_remat_side(fn, args, kwargs, result: Plan, memory_budget: int, static_argnums,
                     donate_argnums, static_argnames, donate_argnames,
                     options: dict, seconds: list[float]) -> tuple[Plan | None, tuple[str, ...]]:
    """``scan_remat=True``'s side: the step with its scans' residual stacks recomputed
    in the backward scans (``olla_jax.scan_remat``: the set chosen by the target's
    XLA temp, outputs compared with jax.jit's bit for bit on CPU), planned with the
    same budget; where that misses the budget too, its least-memory plan if it is
    below ``result``'s total (else None), with why.
    The lever takes the call as positional (``calls.positional_call``); the step
    planned takes it as it was made (keyword, static and donated arguments).
    ``seconds`` gets the lever's own: its trace and compiles, its bit comparison."""
    from olla_jax import scan_remat as lever
    if not callable(fn):
        return None, ("scan rematerialization not tried: it takes a function and its "
                      "arguments",)
    kwargs = dict(kwargs or {})
    n = len(args)
    try:
        call = calls.positional_call(
            fn, args, kwargs, calls.positions(static_argnums, n, "static_argnums"),
            calls.positions(donate_argnums, n, "donate_argnums"), static_argnames,
            donate_argnames)
    except (TypeError, ValueError) as err:
        return None, (f"scan rematerialization not tried: {err}",)
    # the whole step's budget less what is not temp: XLA's temp to reach
    temp_budget = max(memory_budget - (result.runs_total_bytes - result.runs_temp_bytes), 0)
    try:
        found = lever.scan_remat(call.fn, *call.args, budget=temp_budget,
                                 static_argnums=call.static_argnums,
                                 donate_argnums=call.donate_argnums,
                                 compiler_options=options["compiler_options"],
                                 backend=options["backend"])
    except lever.ScanRematError as err:
        return None, (f"scan rematerialization not used: {err}",)
    seconds[:] = [found.seconds, found.compare_seconds]
    if not found.dropped:
        return None, found.notes()
    rewritten, keywords = found.fn, call.keywords

    def step(*positional, **named):       # called as the step was: keywords in their places
        return rewritten(*positional, *(named[k] for k in keywords))
    step.__name__ = getattr(rewritten, "__name__", "step")
    try:
        side = plan(step, *args, kwargs=kwargs, memory_budget=memory_budget,
                    static_argnums=[i for i in call.static_argnums if i < n],
                    donate_argnums=[i for i in call.donate_argnums if i < n],
                    static_argnames=[k for k in kwargs if k not in keywords],
                    donate_argnames=[keywords[i - n] for i in call.donate_argnums if i >= n],
                    scan_remat=False, **options)
    except BudgetNotMet as err:
        notes = (*found.notes(), f"the step with them recomputed misses it too "
                 f"({str(err).splitlines()[0]})")
        if err.plan is None or err.plan.runs_total_bytes >= result.runs_total_bytes:
            return None, notes
        side = err.plan
    else:
        notes = found.notes()
    side = _with_scan_remat(side, found, result.xla_temp_bytes)
    return _timed_scan_remat(side, result, call, options), notes


def _timed_scan_remat(side: Plan, result: Plan, call: calls.PositionalCall,
                      options: dict) -> Plan:
    """``side`` with its step time over that of XLA's executable of the user's
    own step (``result``'s), on ``call``'s arguments (positional, the dynamic
    keyword ones after them as jax.jit's executable flattens them): its program
    is not jax.jit's (more FLOPs), and the plan of it times a recomputation, if
    any, against the rewritten program's (its summary's row read "-" where
    nothing else was recomputed)."""
    if not options["feed_back"] or not side.verified or \
            Backend.parse(options["backend"]).compile_only:
        return side
    from olla_jax.budget.feed_back import time_ratio_against_xla
    t0 = time.monotonic()
    ratio = time_ratio_against_xla(result, side.compiled, call.args, call.static_argnums)
    return dataclasses.replace(side, step_time_ratio=ratio,
                               verify_seconds=side.verify_seconds + time.monotonic() - t0)


def _scan_remat_hint(fn, args, kwargs, static_argnums, static_argnames) -> list[str]:
    """A missed budget's way out where ``scan_remat`` was not asked for: the
    residual stacks the step's scans keep (a trace, no compile), or nothing."""
    from olla_jax import scan_remat as lever
    if not callable(fn):
        return []
    t0 = time.monotonic()
    try:
        call = calls.positional_call(fn, args, dict(kwargs or {}),
                                     calls.positions(static_argnums, len(args), "static_argnums"),
                                     (), static_argnames, ())
        closed = lever.trace(call.fn, call.args, call.static_argnums).closed
        stacks = lever.residual_stacks(closed)
        flops = lever.extra_flops(closed, stacks)
    except Exception as err:  # noqa: BLE001 - a hint only: the budget's error stands
        logging.info("scan_remat hint: the step was not traced (%r)", err)
        return []
    logging.info("scan_remat hint: %d candidate stack(s), traced in %.2f s", len(stacks),
                 time.monotonic() - t0)
    if not stacks:
        return []
    return [f"scan_remat=True (CLI --scan_remat) may reach it: the step's scans keep "
            f"{len(stacks)} residual stack(s) of {size_text(sum(s.nbytes for s in stacks))} "
            "from the forward loop to the backward one that it can recompute there "
            f"(+{flops:,} FLOPs with all of them recomputed)"]


def _with_scan_remat(side: Plan, found, jax_temp: int) -> Plan:
    """``side`` (the plan of the step with scan residual stacks recomputed) with
    the lever's extra FLOPs in ``extra_flops`` beside the planner's own, the split
    in the notes and the stacks' count in ``settings["scan_remat_stacks"]``;
    ``jax_temp`` (XLA's temp for jax.jit's program of the user's step) is what its
    headline compares with, not XLA's temp for the rewritten program."""
    own, lever = side.extra_flops, found.extra_flops
    return dataclasses.replace(
        side, extra_flops=own + lever, jax_program_temp_bytes=jax_temp,
        settings=dict(side.settings, scan_remat_stacks=len(found.dropped),
                      scan_remat_flops=lever),
        notes=side.notes + (f"extra FLOPs {own + lever:,}: {lever:,} of scan rematerialization "
                            f"({len(found.dropped)} residual stack(s) recomputed in the "
                            f"backward scan), {own:,} of the planner's recomputation",))


def _memo_key(first: Plan, target: Backend, spmd, saved, **options) -> tuple | None:
    """``plan_memo``'s key for a budgeted call of the program ``first`` planned
    and the options its plans depend on (not the search's own: time limit,
    engine, seed); None where the memo is off or does not serve: a saved plan
    applied, a sharded step (its plans depend on the collective overlap given
    up), no capture."""
    capture = getattr(first, "capture", None)
    if saved is not None or spmd is not None or capture is None or not plan_memo.enabled():
        return None
    from olla_jax import saved as saved_lib
    options["compiler_options"] = sorted((options["compiler_options"] or {}).items())
    return plan_memo.program_key(saved_lib.fingerprint(capture.hlo_text), backend=target.name,
                                 **options)


def _extra_cost(plan: Plan, recompute_cost: str) -> float:
    """What ``plan`` adds to the step, as the recomputation search weighs it
    (``RecomputePlan.extra_cost_s``); 0 for none; its extra FLOPs when the
    search weighs FLOPs and the plan is another side's (XLA's
    rematerialization); else unknown (infinite: any known plan ranks first)."""
    if not plan.recomputed and not plan.extra_flops:
        return 0.0
    cost = plan.settings.get("recompute_extra_cost")
    if cost is not None:
        return float(cost)
    return float(plan.extra_flops) if recompute_cost == "flops" else math.inf


def _applied(plan: Plan) -> bool:
    """``plan`` is ours and was applied: verified, or on a compile-only target built."""
    return plan.source == "olla_jax" and plan.layout is not None and (
        plan.verified or (Backend.parse(plan.backend).compile_only
                          and plan.executable_bytes is not None))


def _with_memo(result: Plan, first: Plan, key: tuple, budget: int, step: _Step, options: dict,
               time_limit_s: float, recompute_cost: str) -> Plan:
    """``result`` (this call's own plan for ``budget``) or a plan an earlier
    call found (``plan_memo``) that ranks before it, applied again; ``result``
    joins the memo when it was applied and is of the same program."""
    from olla_jax import saved as saved_lib
    cost = _extra_cost(result, recompute_cost)
    chosen = result
    for known in plan_memo.better(key, budget, result.runs_total_bytes, cost):
        again = _applied_again(step, known, options, time_limit_s - result.solve_seconds)
        if again is None:
            plan_memo.forget(key, known)
            continue
        chosen = _from_memo(again, known, result, cost, budget, time_limit_s)
        break
    if _applied(result) and result.capture is not None and (
            result.capture is first.capture
            or saved_lib.fingerprint(result.capture.hlo_text) == key[0]):
        plan_memo.record(key, plan_memo.Known(result.to_saved(), result.runs_total_bytes, cost,
                                              result.extra_flops, budget))
    return chosen


def _applied_again(step: _Step, known, options: dict, limit: float) -> Plan | None:
    """``known`` applied to ``step`` through the saved-plan path (checked,
    rewritten, verified as a plan file is); None unless applied at no more
    memory than it was."""
    try:
        with quiet():
            again = _plan(step, **dict(options, saved=known.saved, progress=None,
                                       time_limit_s=max(MIN_STAGE_S, limit)))
    except Exception:  # noqa: BLE001 - this call's own plan is there
        logging.exception("a plan of an earlier call could not be applied again")
        return None
    if not _applied(again) or again.runs_total_bytes > known.total_bytes:
        logging.info("a plan of an earlier call was not applied again: %s", again.notes[-1:])
        return None
    return again


def _from_memo(again: Plan, known, own: Plan, own_cost: float, budget: int,
               time_limit_s: float) -> Plan:
    """``again`` (``known`` applied again) with the whole call's seconds, its
    extra cost and a note that says where it came from and why it was kept."""
    own_text = (f"the plan this call's own search found ({size_text(own.runs_total_bytes)}, "
                f"{own.extra_flops:,} extra FLOPs)")
    why = (f"it needs less memory than {own_text}" if known.total_bytes > budget else
           f"it meets the budget, which {own_text} does not" if own.runs_total_bytes > budget else
           f"it meets the budget with less extra cost than {own_text}" if known.cost < own_cost
           else f"it meets the budget with the same extra cost as {own_text}, in less memory")
    earlier = tuple(f"(earlier call) {n}" for n in known.saved.notes if n.startswith("recomputed"))
    checked = "checked and verified" if again.verified else "checked and built"
    note = (f"plan found by an earlier plan() call in this process (memory_budget "
            f"{size_text(known.budget)}), applied again here ({checked}): {why}; "
            "olla_jax.clear_cache() forgets such plans, OLLA_JAX_PLAN_MEMO=0 turns this off")
    return dataclasses.replace(
        again, solve_seconds=own.solve_seconds + again.solve_seconds,
        capture_seconds=own.capture_seconds + again.capture_seconds,
        verify_seconds=own.verify_seconds + again.verify_seconds,
        # its seconds are this call's search's too: not a saved plan's application alone
        settings={**{k: v for k, v in again.settings.items() if k != "saved_plan"},
                  "time_limit_s": time_limit_s, "recompute_extra_cost": known.cost,
                  "from_earlier_call": True},
        notes=tuple(n for n in again.notes if not n.startswith(SAVED_NOTE)) + earlier + (note,))


def _recompute_stage(result: Plan, step, target: Backend, options: dict, spmd, memory_budget: int,
                     limit: float, collective_overlap, compiler_options, recompute_cost: str,
                     offload: bool, verify_trials: int, report, *,
                     program_remat: bool = False) -> Plan:
    """``result`` recomputing values to meet ``memory_budget`` within ``limit``
    seconds: our copies (CPU; per device on a sharded step) or the GPU sides."""
    from olla_jax import budget
    report("recomputing", "to meet the memory budget")
    if spmd:
        # Our kernel copies in the per-device executable (built, not run: the
        # target is compile-only); XLA's rematerialization is driven for
        # single-device steps only.  The build comes on top of the limit.
        result = budget.recompute_to_budget(
            result, int(memory_budget), measure_time=False, recompute_cost=recompute_cost,
            time_limit_s=limit)
    elif target.compile_only:   # ours and XLA's rematerialization, side by side
        from olla_jax import gpu_budget

        def plan_on(path: str, limit_s: float) -> Plan:
            """The same step planned for the device description at ``path``."""
            return _plan(step, collective_overlap=collective_overlap, **dict(
                options, backend=Backend.parse(f"gpu:{path}"), time_limit_s=limit_s))

        def plan_offloaded(fn_off: Callable, limit_s: float,
                           compiler_options: dict[str, Any] | None = None) -> Plan:
            """``fn_off`` (the step with values parked in host memory, or rewritten
            by program recomputation) planned,
            compiled with the lever's ``compiler_options`` where it has some."""
            off = _step(fn_off, step.args, {}, target, step.static_argnums,
                        step.donate_argnums, spmd)
            more = {} if compiler_options is None else {"compiler_options": compiler_options}
            return _plan(off, collective_overlap=collective_overlap,
                         **dict(options, time_limit_s=limit_s, **more))
        result = gpu_budget.to_budget(
            result, int(memory_budget), step.fn, step.args,
            static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
            compiler_options=compiler_options, time_limit_s=limit,
            recompute_cost=recompute_cost, plan_on=plan_on,
            plan_offloaded=plan_offloaded if offload else None,
            plan_program=plan_offloaded if program_remat else None,
            program_memo=_program_memo(result, target, step, compiler_options)
            if program_remat else None)
    else:
        result = budget.recompute_to_budget(result, int(memory_budget),
                                            args=step.entry.verify_args,
                                            static_argnums=step.entry.verify_static,
                                            time_limit_s=limit,
                                            verify_trials=verify_trials,
                                            # timing runs the step 20 times: not where
                                            # the user asked for figures only
                                            measure_time=options["feed_back"],
                                            recompute_cost=recompute_cost)
    return result


def _program_memo(result: Plan, target: Backend, step, compiler_options) -> dict | None:
    """program recomputation's compiles of this program, kept across budgeted
    calls (``plan_memo.lever_memo``; None where the memo is off or there is no
    capture): the step's module fingerprint, target and arguments' roles."""
    capture = getattr(result, "capture", None)
    if capture is None:
        return None
    from olla_jax import saved as saved_lib
    return plan_memo.lever_memo((
        "program_remat", saved_lib.fingerprint(capture.hlo_text), target.name,
        tuple(step.static_argnums), tuple(step.donate_argnums),
        repr(sorted((compiler_options or {}).items()))))


def _claimable(bound: int, plan_bytes: int) -> int:
    """``bound`` when no plan of the model is below it, else 0: a bound above a
    plan is wrong, and clipped to the plan it would claim a 0% gap unproven
    (strategy has warned of it already)."""
    return bound if bound <= plan_bytes else 0


def budget_advice(result: "Plan", budget: int, recompute: bool = True) -> str:
    """What the caller can do about a missed ``budget``, judged from ``result``'s
    own figures: donation is suggested (with the bytes it could share at most)
    only where un-aliased arguments could still share bytes with outputs;
    recomputation where it was switched off."""
    excess = max(result.runs_total_bytes - budget, 1)
    shareable = min(result.argument_bytes, result.output_bytes) - result.alias_bytes
    ways = [] if recompute else ["let it recompute values (recompute=True, the default)"]
    ways.append("lower the batch size")
    if shareable >= DONATION_ADVICE_SHARE * excess:
        ways.append(f"donate arguments (donate_argnums or donate_argnames; at most "
                    f"{size_text(shareable)} more could share outputs' bytes: "
                    "olla_jax.advise_donation says which)")
    ways.append("raise the budget or use a larger device")
    return ", ".join(ways)


def _budget_error(result: "Plan", budget: int, recompute: bool, offload: bool = False,
                  reasons: Sequence[str] = (), saved: bool = False) -> BudgetNotMet:
    from olla_jax import budget as budget_lib, report
    held = None
    if result.graph is not None and recompute and result.capture is not None:
        try:     # why recomputation left the peak as it is
            held = budget_lib.held_at_peak(result.graph, result.capture, result.layout)
        except Exception:  # noqa: BLE001 - the answer matters more than its detail
            pass
    try:   # at held's peak step: both name one instruction
        breakdown = report.peak_breakdown_text(result, at=held.node if held else None)
    except Exception:  # noqa: BLE001 - the answer matters more than its detail
        breakdown = ""
    least = result.runs_total_bytes
    how = ("order, placement, recomputation and host offloading" if recompute and offload else
           "order, placement and recomputation" if recompute else "order and placement")
    # ``least`` is what the search reached, not a floor (the floor follows)
    size = size_text
    # ``how``: what was tried, not what the plan uses (offloading may have found nothing)
    # a saved plan is applied as it is: nothing was searched for this budget
    found = ("the saved plan, applied as it is (saved=: no order, placement or recomputation "
             "searched for this budget; plan without saved= to search),"
             if saved else f"the best plan found (trying {how})")
    message = (f"{found} needs {size(least)} "
               f"(XLA's plan: {size(result.xla_total_bytes)}), over the budget of "
               f"{size(budget)}; {budget_advice(result, budget, recompute)}")
    floor, where = (budget_lib.working_set_bound(result.graph, result.capture)
                    if result.graph is not None and recompute else (0, ""))
    for reason in dict.fromkeys(reasons):   # what recomputation said of its stop, once each
        # the working set, which recomputation's note may give too, is said once, below
        message += f"; {budget_lib.WORKING_SET_CLAUSE.sub('', reason) if floor else reason}"
    if floor:
        # the working set's instruction need not be where the plan peaks (which follows)
        message += (f"; no plan that runs the same kernels goes below "
                    f"{size(floor + least - result.runs_temp_bytes)}, in any order: that is "
                    f"their working set ({budget_lib.working_set_text(floor, where)}), not "
                    "where this plan peaks (below)")
    if breakdown and held is not None:
        breakdown += "\n  why it stays: " + held.describe(top=6)
    if breakdown:
        message += "\n" + breakdown
    return BudgetNotMet(message, result, least, breakdown, tuple(dict.fromkeys(reasons)))


def _overlap_model(backend: Backend, module, graph, pairs, spmd, settings: dict,
                   default_module=None):
    """The overlap cost model of a sharded step (``graph.overlap``), its figures
    for XLA's order put in ``settings`` (and for XLA's order of ``default_module``,
    the default compile, when the graph is of another); None (and why) without
    a description."""
    from olla_jax.capture import gpu
    if backend.kind != "gpu" or not backend.compile_only:
        settings["overlap_model"] = "no device description for this backend"
        return None
    try:
        cost = overlap.device_cost(gpu._target_path(backend.target).read_text())
    except (OSError, ValueError) as err:
        settings["overlap_model"] = f"the device description does not serve: {err}"
        return None
    devices = int((spmd or {}).get("num_devices") or 1)
    step_cost = overlap.step_model(module, graph, pairs, cost, devices)
    settings.update(overlap_model=f"roofline + ring collectives on {cost.name}, link "
                                  f"{cost.link_bandwidth / 1e9:g} GB/s one way",
                    exposed_s_xla=step_cost.xla.exposed_s, comm_s=step_cost.xla.comm_s,
                    compute_s=step_cost.xla.compute_s, exposed_s=step_cost.xla.exposed_s)
    if default_module is not None:
        # The graph is of another compile (one collective per array): "hidden"
        # allows what XLA's order of the default compile exposes.
        reference = overlap.module_exposure(default_module, cost, devices)
        step_cost = dataclasses.replace(step_cost, reference=reference)
        settings.update(exposed_s_xla_default=reference.exposed_s,
                        comm_s_xla_default=reference.comm_s)
    return step_cost


def _hidden(graph, step_cost, mode, settings: dict, notes: list, orders: dict, deadline: float,
            exclude: Sequence[str] = (), accept: Callable[[Any], bool] | None = None):
    """The least-memory of ``orders`` (by the engine that found them: with XLA's
    overlap kept, free, XLA's) re-timed to the exposure ``mode`` allows; the
    layout and the engine that found its order (``+retimed`` when moved).
    Within the allowance and the deadline, all-gathers are then re-gathered
    (``graph.regather``; ``exclude``: synchronous ones) when that places lower
    (``+regathered``; ``settings["regathers"]``) and ``accept`` (the checker) takes it."""
    allowance = step_cost.allowance(mode)
    hidden = hide_collectives(graph, step_cost, orders, allowance, deadline=deadline)
    settings.update(exposed_allowance_s=allowance, retimed_from=hidden.source)
    if not hidden.met:
        notes.append(f"exposed communication {hidden.exposure.exposed_s * 1e6:,.1f} us, over the "
                     f"{allowance * 1e6:,.1f} us allowed: no re-timing found hides more")
    elif time.monotonic() < deadline:
        from olla_jax.graph import regather
        from olla_jax.solve import place as place_lib
        rp = regather.plan(graph, hidden.layout.order, step_cost, allowance, exclude=exclude)
        if rp.regathers:
            problem, owners = rp.placement_problem(graph)
            placed = layout_lib.realize(graph, rp.order, place_lib.best_fit(problem), owners)
            copied = regather.with_copies(graph, rp, placed, step_cost)
            if placed.temp_bytes < hidden.layout.temp_bytes and (accept is None or accept(copied)):
                settings.update(regathers=len(rp.regathers), regather_link_s=rp.link_s,
                                regather_exposed_s=rp.exposure.exposed_s)
                return copied, hidden.source + "+regathered"
    return hidden.layout, hidden.source


def _import_solver_libraries() -> None:
    """OR-Tools' CP-SAT and max-flow modules, imported before the planner's clock
    starts (counted with XLA's compiles): the first plan of a process paid
    their first import (pandas comes with CP-SAT) from its limit, inside the
    first CP-SAT search, which then ran past its share and the plan past its
    limit on a short one.  Once per process; the solver still imports them
    where it uses them."""
    try:
        from ortools.graph.python import max_flow  # noqa: F401
        from ortools.sat.python import cp_model  # noqa: F401
    except ImportError:   # the solver says what is missing where it needs it
        pass
    # The solver's modules that solve_graph and the bounds import where they
    # use them (0.05 s idle, more loaded: a sixth of a 0.3 s limit).
    for name in ("solve.order", "solve.list_schedule", "solve.sink", "solve.search",
                 "solve.ilp_order", "solve.bounds", "solve.bound_block", "solve.bound_chain",
                 "solve.bound_cpsat", "solve.bound_park", "solve.bound_reduced",
                 "solve.cpsat_lits", "solve.place_sweep", "solve.joint", "graph.park"):
        importlib.import_module(f"olla_jax.{name}")


def build_seconds_guess(cap: Capture) -> float:
    """The graph build's seconds on a quiet machine, guessed from the size of
    XLA's dumps it reads (``BUILD_S_PER_BYTE``), before it starts."""
    return BUILD_S_PER_BYTE * (len(cap.hlo_proto) + len(cap.values_text)
                               + len(cap.live_range_text))


def solve_floor_seconds(build_s: float, graph=None, guess_s: float = 0.0) -> float:
    """The least the solve costs after a ``build_s`` graph build (its list
    schedule, a placement, the layout, which run however short the limit):
    ``SOLVE_FLOOR_OF_BUILD`` of the build on big graphs; on small ones
    ``SOLVE_FLOOR_NODE_S`` a node of ``graph`` (when built) and
    ``SOLVE_FLOOR_S``, scaled by how much slower than ``guess_s`` (the quiet
    machine's guess, ``build_seconds_guess``) the build ran."""
    nodes = len(graph.nodes) if graph is not None else 0
    slowness = min(SLOWNESS_CAP, max(1.0, build_s / guess_s)) if guess_s > 0 else 1.0
    return max(SOLVE_FLOOR_OF_BUILD * build_s,
               (SOLVE_FLOOR_NODE_S * nodes + SOLVE_FLOOR_S) * slowness)


def too_short(limit_s: float, build_s: float, floor_s: float, built: bool = True) -> str:
    """Why XLA's plan is kept when the limit leaves no room for a solve, with
    the limit that would (the build and the solve's floor, rounded up: more
    searches orders)."""
    need = build_s + floor_s
    scale = 10 ** (1 - math.floor(math.log10(need)))   # to two significant digits, up
    at_least = math.ceil(need * scale) / scale
    build = (f"the graph build took {build_s:.2g} s" if built else
             f"the graph build alone takes about {build_s:.2g} s (guessed from XLA's dumps)")
    return (f"no time to plan: the time limit of {limit_s:g} s is too short for a search "
            f"({build} and a solve at least {floor_s:.2g} s more); XLA's plan is kept. "
            f"A time_limit_s of at least about {at_least:g} s plans this step (more searches "
            "orders)")


SAVED_NOTE = "order and placement applied from a saved plan"


def saved_origin(saved) -> dict[str, Any]:
    """``Plan.saved_from`` of a plan applied from ``saved``: its file and the
    search that made it (None where the file does not keep them)."""
    searched = saved.figures.get("solve_seconds")
    limit = saved.figures.get("time_limit_s")
    return {"path": saved.path,
            "searched_s": float(searched) if isinstance(searched, (int, float)) else None,
            "time_limit_s": float(limit) if isinstance(limit, (int, float)) else None}


def saved_note(saved) -> str:
    """Where a plan applied from a file came from, and what its seconds are."""
    origin = saved_origin(saved)
    made = (f"found by the {saved.engine!r} engine"
            + ("" if origin["searched_s"] is None else f" in {origin['searched_s']:.1f} s")
            + ("" if origin["time_limit_s"] is None else
               f", time_limit_s {origin['time_limit_s']:g},") + " when saved")
    return (f"{SAVED_NOTE} ({origin['path'] or 'a SavedPlan not read from a file'}; {made}), "
            "not searched here: the solve time is the graph build alone; the memory figures "
            "are this compile's, the lower bound the file's")


def _fixed_solve_seconds(graph) -> float:
    """What one ``solve_graph`` costs however short its limit: a list schedule
    and a best-fit, each about ``strategy.BEST_FIT_US`` per movable unit and
    region (the strategy's own estimate before it measures one)."""
    from olla_jax import strategy
    units = sum(1 for u in graph.units if u.movable)
    return 2 * strategy.BEST_FIT_US * 1e-6 * units * (len(graph.regions) + 1)


def _plan(step: _Step, *, backend: Backend, time_limit_s: float,
          compiler_options: dict[str, Any] | None, engine: str,
          verify_trials: int, feed_back: bool, seed: int, saved, spmd=None,
          collective_overlap: str | float = "keep", progress=None,
          solve_share: float = 1.0) -> Plan:
    """One order-and-placement plan of ``step``.  ``solve_share``: of the time
    the graph build leaves of ``time_limit_s``, what the solve may take
    (plan() keeps the rest for the stages after it: recomputation)."""
    from olla_jax.progress import reporter
    report = reporter(progress, time_limit_s)
    report("compiling")   # XLA, with each of its schedulers
    t_start = time.monotonic()
    notes: list[str] = []
    caps = _baselines(step, backend, compiler_options, spmd, check_unrolled=feed_back)
    notes.extend(step.capture_notes.get(_capture_key(backend, compiler_options, spmd), ()))
    if feed_back and backend.kind == "cpu":
        from olla_jax.apply import verify
        verify.prepare_child()   # its interpreter starts while the solver works
    _import_solver_libraries()
    if time_limit_s < COLLECT_BELOW_S:
        gc.collect()
    # Three clocks, reported apart: XLA's compiles and dumps (capture), the
    # planner's part (graph build, order search, bound, placement: what
    # time_limit_s bounds), the check, rewrite and verification after it.
    capture_seconds = time.monotonic() - t_start
    t_solve = time.monotonic()
    cpu_solve = time.process_time()   # the planner's CPU seconds: on a shared machine, beside its wall time
    # The limit covers the planner's own time: the graph is built on it.
    deadline = Deadline(time_limit_s)
    solved_at: list[float] = []   # when the planner's part ended

    def solve_seconds() -> float:
        return (solved_at[0] if solved_at else time.monotonic()) - t_solve

    def verify_seconds() -> float:
        return time.monotonic() - solved_at[0] if solved_at else 0.0

    def callable_of(executable) -> StepCallable:
        return step.entry.callable_of(executable, caps[0].wrap,
                                      backend.name if backend.compile_only else None)

    default = caps[0]
    best = min(caps, key=lambda c: c.memory.temp)
    report.start_planning()
    report("graph", xla=best.memory.temp)
    settings = {"time_limit_s": time_limit_s, "engine": engine, "seed": seed,
                "schedulers": [c.scheduler for c in caps]}
    # XLA's compile of jax.jit's own program (its best scheduler): what runs where
    # nothing of ours does, and what the step is timed against.  ``best`` itself
    # unless the program planned is another (threefry2x32 unrolled).
    def jax_jit_compile(best: Capture) -> Capture:
        return best if best.jax_program is None else min(
            (c.reference for c in caps), key=lambda c: c.memory.temp)
    kept = jax_jit_compile(best)
    jax_temp = kept.memory.temp if kept is not best else None
    if jax_temp is not None:
        settings["rng_lowering"] = "unrolled"
        notes.append(f"planned on the step with jax.random's threefry2x32 lowered unrolled (as "
                     f"jax lowers it on GPU and TPU; on CPU jax.jit makes it a while loop): XLA "
                     f"plans that program in {size_text(best.memory.temp)}, jax.jit's own in "
                     f"{size_text(jax_temp)}; a plan is verified against jax.jit's program's "
                     "outputs (rng_lowering='jax' plans jax.jit's program)")
    common = dict(backend=backend.name, xla_default_temp_bytes=default.memory.temp,
                  jax_program_temp_bytes=jax_temp,
                  xla_best_temp_bytes=best.memory.temp, xla_scheduler=best.scheduler,
                  argument_bytes=best.memory.argument, output_bytes=best.memory.output,
                  alias_bytes=best.memory.alias, settings=settings, capture=best,
                  xla_compiled=callable_of(kept.compiled), capture_seconds=capture_seconds)

    def fallback(reason: str, graph=None, bound: int = 0, *, failure: bool = True) -> Plan:
        """XLA's plan, with the reason in the notes; a PlanWarning where
        something failed, only an info log where XLA's plan was simply not beaten
        (a small step, an optimal XLA order: nothing for the user to do)."""
        notes.append(reason)
        if failure:
            warn(f"olla_jax keeps XLA's plan: {reason}")
        else:
            logging.info("olla_jax keeps XLA's plan: %s", reason)
        if kept is not best:   # jax.jit's own program, not another one unverified
            notes.append("XLA's executable of jax.jit's own program is kept (threefry2x32 rolled)")
        return Plan(planned_temp_bytes=kept.memory.temp, lower_bound_bytes=bound,
                    solve_seconds=solve_seconds(), verify_seconds=verify_seconds(),
                    engine="xla", source="xla",
                    achieved_temp_bytes=kept.memory.temp, verified=False, notes=tuple(notes),
                    compiled=callable_of(kept.compiled), graph=graph, **common)

    if saved is not None:
        settings["saved_plan"] = saved_origin(saved)
        notes.append(saved_note(saved))
        best = _matching_capture(caps, saved)
        common.update(xla_best_temp_bytes=best.memory.temp, xla_scheduler=best.scheduler,
                      capture=best)
        kept = jax_jit_compile(best)
        common.update(xla_compiled=callable_of(kept.compiled))
    build_guess = build_seconds_guess(best)
    if saved is None and time_limit_s < build_guess + solve_floor_seconds(build_guess):
        return fallback(too_short(time_limit_s, build_guess, solve_floor_seconds(build_guess),
                                  built=False))
    build_share = 1 / (1 + SOLVE_FLOOR_OF_BUILD)
    try:
        # Stopped where it would leave the solve less than its floor (XLA's
        # plan is kept then anyway), not at the limit, which it then overran.
        built = step.graphs.get(id(best))
        if saved is not None and built is not None and built[0] is best:
            graph = built[1]
        else:
            graph = model.build(best.hlo_proto, best.values_text, best.live_range_text,
                                alignment=backend.alignment,
                                deadline=deadline.mark(build_share))
            step.graphs[id(best)] = (best, graph)
    except model.OutOfTime:
        # its share ends before the limit: the note must not say it passed the limit
        return fallback(f"no time to plan: the graph build ran past its share of the "
                        f"{time_limit_s:g} s limit ({build_share * time_limit_s:.2g} s, the rest "
                        f"being the solve's; stopped after {deadline.elapsed():.2g} s, "
                        "unfinished); XLA's plan is kept. A longer time_limit_s plans this step")
    except (model.UnsupportedProgram, ValueError) as err:
        return fallback(f"the memory model does not cover this program: {err}")
    for color, nbytes in sorted(graph.other_space_bytes.items()):
        notes.append(f"{size_text(nbytes)} of temporaries in memory space {color}"
                     + (" (host memory: XLA's host offloading)" if color == model.HOST_SPACE else "")
                     + " kept where XLA put them, outside the planned device temp; "
                       "the order keeps XLA's reuse of those bytes")
    module = dumps.parse_hlo_proto(best.hlo_proto).hlo_module
    pairs = collectives.async_pairs(module)
    if pairs:
        weights = dict(zip(graph.nodes, collectives.node_flops(module, graph.nodes)))
        kept_pairs = collectives.pairs_to_keep(graph.nodes, pairs, weights,
                                               collectives.keep_fraction(collective_overlap))
        settings.update(collective_overlap=collective_overlap, async_pairs=len(pairs),
                        pairs_kept=len(kept_pairs))
        graph = dataclasses.replace(graph, edges=tuple(sorted(
            set(graph.edges) | set(collectives.overlap_edges(graph.nodes, kept_pairs)))))
    default_module = (dumps.parse_hlo_proto(default.hlo_proto).hlo_module
                       if pairs and best is not default
                       and collectives.exposure_mode(collective_overlap) else None)
    if best.scheduler == UNCOMBINED:
        notes.append("planned on the step compiled with one collective per array (XLA's "
                     "collective combining off: a combined collective waits for all its arrays); "
                     f"XLA plans that module in {best.memory.temp / 2**20:,.2f} MiB, its default "
                     f"compile in {default.memory.temp / 2**20:,.2f} MiB")
    step_cost = _overlap_model(backend, module, graph, pairs, spmd, settings,
                               default_module) if pairs else None
    if step_cost is None and pairs and collectives.exposure_mode(collective_overlap):
        return fallback(f"collective_overlap={collective_overlap!r} needs the overlap cost "
                        f"model: {settings.get('overlap_model')}", graph)
    temp = graph.temp_allocation
    if feed_back and backend.kind == "cpu" and temp >= 0 and graph.allocations[temp].is_tuple:
        floor = resident.resident_bound(graph, deadline=deadline.at).value
        worth = saving_worth_a_warning(best.memory.temp, floor)
        return fallback("XLA marked its temp allocation as a tuple table (the index table of a "
                        "tuple-shaped value lives there: a while loop's state, a variadic reduce "
                        "or sort result); XLA:CPU's executable cannot take a new size for it, so "
                        "the plan could not be applied (a plan could save at most "
                        f"{size_text(best.memory.temp - floor)} of XLA's "
                        f"{size_text(best.memory.temp)} temp"
                        + ("" if worth else ": too little to warn about") + ")",
                        graph, floor, failure=worth)
    runner_ups: tuple = ()     # (the order search's other placed orders, none when saved)
    build_s = deadline.elapsed()
    floor_s = solve_floor_seconds(build_s, graph, build_guess)
    if saved is not None:
        from olla_jax.saved import PlanFileError, recompute_of
        unknown = [n for n in saved.order if n not in graph.node_index]
        if unknown:
            raise PlanFileError(f"the saved plan's order does not match this module (unknown "
                                f"instructions: {unknown[:3]}); plan this step again")
        order = tuple(graph.node_index[n] for n in saved.order)
        recomputes = tuple(recompute_of(r) for r in saved.recomputes)
        layout = layout_lib.Layout(graph=graph, order=order, places=dict(saved.places),
                                   allocation_sizes=dict(saved.allocation_sizes),
                                   recomputes=recomputes)
        bound, engine_used = int(saved.figures.get("lower_bound_bytes") or 0), saved.engine
    elif deadline.left() < floor_s:
        return fallback(too_short(time_limit_s, build_s, floor_s), graph)
    else:
        if engine == "joint":
            from olla_jax.solve.joint import unsupported
            if unsupported(graph):   # asked for, so said (the log alone said it at info)
                notes.append(f"engine='joint' was not run: {unsupported(graph)}, which its "
                             "model does not cover; the separate order and placement search "
                             "planned it")
        starts = _warm_starts(graph, [c for c in caps if c is not best])
        if deadline.left() < floor_s:   # the warm starts took what the solve needed
            return fallback(too_short(time_limit_s, deadline.elapsed(), floor_s), graph)
        # The solve's clock: all that is left, or its share (at least its fixed part's floor).
        clock = deadline if solve_share >= 1 else Deadline(min(deadline.left(), max(
            solve_share * deadline.left(), floor_s)))
        # With an exposure mode the searches leave RETIME_SHARE of the limit to re-timing.
        search = (Deadline((1 - RETIME_SHARE) * clock.left())
                  if step_cost is not None and collectives.exposure_mode(collective_overlap)
                  else clock)
        first = None
        try:
            keep_share = KEEP_OVERLAP_SHARE * search.left()
            if pairs and len(kept_pairs) < len(pairs) \
                    and keep_share >= _fixed_solve_seconds(graph):
                # Freer than XLA's overlap: the plan that keeps it all is feasible
                # here too; found first, it warm-starts the freer search (when its
                # share of the limit covers a solve's fixed part).
                kept_all = dataclasses.replace(graph, edges=tuple(sorted(
                    set(graph.edges) | set(collectives.overlap_edges(graph.nodes, pairs)))))
                first = solve_graph(kept_all, warm_starts=starts, engine=engine, seed=seed,
                                    progress=report, xla_temp_bytes=best.memory.temp,
                                    deadline=Deadline(keep_share))
                starts = [*starts, first.layout.order]
            solution = solve_graph(graph, warm_starts=starts, engine=engine, seed=seed,
                                   progress=report, xla_temp_bytes=best.memory.temp,
                                   deadline=search)
            if first is not None and first.layout.temp_bytes < solution.layout.temp_bytes:
                solution = dataclasses.replace(
                    solution, layout=dataclasses.replace(first.layout, graph=graph))
            layout, bound, engine_used = solution.layout, solution.lower_bound_bytes, solution.engine
            runner_ups = solution.runner_up_orders
            settings.update(live_bytes=solution.live_bytes,
                            least_live_bytes=solution.least_live_bytes,
                            best_fit_bytes=solution.best_fit_bytes,
                            exact_placement_tried=solution.exact_tried,
                            stage_ends_s=dict(solution.stage_ends))
            if engine != "joint" and not any(stage.startswith("order search")
                                             for stage, _ in solution.stage_ends):
                # otherwise said only by the info log: a user sees why a longer limit helps
                notes.append("no order search ran: the time limit left too little after the "
                             "graph build and the first list schedule (a longer time_limit_s "
                             "searches orders)")
            if step_cost is not None and collectives.exposure_mode(collective_overlap):
                # XLA's order with XLA's placement first: it costs no placement
                # and meets "hidden" whenever the planned compile exposes no more
                # than the default one, so a plan within the allowance is at hand.
                tried = {"xla": layout_lib.xla_layout(graph)}
                if first is not None:
                    tried[f"keep/{first.engine}"] = dataclasses.replace(first.layout, graph=graph)
                tried[f"free/{solution.engine}"] = solution.layout
                # Re-timing gets what the searches left of the limit (RETIME_SHARE at least).
                layout, engine_used = _hidden(
                    graph, step_cost, collective_overlap, settings, notes, tried,
                    deadline=clock.at, exclude=collectives.sync_starts(module),
                    accept=lambda lay: checked.rejection(best, lay,
                                                         alignment=graph.alignment) is None)
        except Exception as err:  # noqa: BLE001 - a solver bug must not cost the user their step
            logging.exception("solver failed")
            return fallback(f"the solver failed ({type(err).__name__}: {err})", graph)
    solved_at.append(time.monotonic())  # graph, order, placement, bound (not XLA's compiles)
    settings["solve_cpu_s"] = time.process_time() - cpu_solve
    report.stop_planning()
    if report.callback_s > SLOW_PROGRESS_SHARE * time_limit_s and not report.said_slow:
        report.said_slow = True
        slow = (f"the progress callback took {report.callback_s:.2g} s of the planner's "
                f"{time_limit_s:g} s time limit: it runs in the planner's thread, and its time "
                "counts against the limit (keep it quick; hand slow work to another thread)")
        notes.append(slow)
        warn(slow)
    tried = (" (exact placement was tried on the orders whose live bytes are below it)"
             if settings.get("exact_placement_tried") else "")
    if layout.temp_bytes >= best.memory.temp and best.memory.temp < kept.memory.temp:
        # XLA's own plan of the program planned is below jax.jit's: it runs only
        # once verified against jax.jit's program, as ours would.
        layout, engine_used = layout_lib.xla_layout(graph), "xla"
        notes.append(f"no order and placement below XLA's best of the program planned was "
                     f"found{tried}: XLA's own plan of it is fed back")
    if layout.temp_bytes >= kept.memory.temp:
        settings["xla_plan_kept"] = NOTHING_BETTER   # no failure: olla_jax.jit caches it
        return fallback(f"no order and placement below XLA's best was found{tried}", graph,
                        _claimable(bound, kept.memory.temp), failure=False)
    report("checking")
    rejected = checked.rejection(best, layout, alignment=graph.alignment)
    if rejected is not None:
        return fallback(f"the independent checker rejected the plan: {rejected}", graph, bound)

    if pairs:
        settings["overlapped_flops_xla"] = collectives.overlapped_flops(graph.nodes, pairs, weights)
        settings["overlapped_flops"] = collectives.overlapped_flops(layout.order_names, pairs,
                                                                   weights)
        if step_cost is not None:
            settings["exposed_s"] = settings.get("regather_exposed_s") if any(
                r.done_before for r in layout.recomputes) else \
                step_cost.exposure(layout.order).exposed_s
    planned = layout.temp_bytes
    result = dict(planned_temp_bytes=planned, lower_bound_bytes=_claimable(bound, planned),
                  solve_seconds=solve_seconds(), engine=engine_used, graph=graph, layout=layout,
                  runner_up_orders=runner_ups)
    if saved is not None and layout.recomputes:
        result.update(_saved_recomputation(saved))
        if "recomputed" not in saved.figures:
            notes.append("this plan file does not keep its recomputation's extra FLOPs (saved "
                         "by an older olla_jax): extra_flops is 0 here, not measured")
    if not feed_back or best.executable is None or not backend.can_rewrite:
        notes.append("not fed back: " + ("asked not to" if not feed_back else
                                          f"the {backend.name} executable cannot be rewritten here"))
        return Plan(source="olla_jax", achieved_temp_bytes=None, verified=False,
                    notes=tuple(notes), compiled=callable_of(kept.compiled),
                    verify_seconds=verify_seconds(), **result, **common)
    report("verifying", "rewriting the executable and checking it bit for bit")
    outcome = checked.apply(best, layout, backend=backend, args=step.entry.verify_args,
                            static_argnums=step.entry.verify_static, trials=verify_trials)
    if not outcome.ok and outcome.raw is not None and backend.compile_only \
            and outcome.verification is None:
        notes.append(f"not fed back: {outcome.reason}")  # compile-only: built, nothing to run on
        return Plan(source="olla_jax", achieved_temp_bytes=None, verified=False,
                    notes=tuple(notes), compiled=callable_of(kept.compiled),
                    executable_bytes=outcome.raw, verify_seconds=verify_seconds(),
                    **result, **common)
    if not outcome.ok:
        notes.append(f"plan not applied, XLA's executable kept: {outcome.reason}")
        first, _, rest = outcome.reason.partition("\n")   # a child's traceback: notes only
        if outcome.host_callbacks and not saving_worth_a_warning(kept.memory.temp, planned):
            # a jax.debug.print in a small step: nothing lost worth a warning
            logging.info("olla_jax keeps XLA's executable: %s", first)
        else:
            warn(f"olla_jax keeps XLA's executable: {first}"
                 + (" (Plan.notes has the details)" if rest.strip() else ""))
        return Plan(source="olla_jax", achieved_temp_bytes=kept.memory.temp,
                    verified=False, notes=tuple(notes), compiled=callable_of(kept.compiled),
                    verify_seconds=verify_seconds(), **result, **common)
    return Plan(source="olla_jax", achieved_temp_bytes=outcome.achieved_temp_bytes, verified=True,
                notes=tuple(notes), compiled=callable_of(outcome.compiled),
                executable_bytes=outcome.raw, verify_seconds=verify_seconds(), **result, **common)
