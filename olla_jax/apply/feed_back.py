"""Apply a checked Layout to XLA's executable (CPU or GPU): rewrite, verify, load.

The order is strict: the layout has already passed the independent checker;
the rewrite refuses slices it cannot map; the rewritten bytes run first in a
child process against XLA's executable on random inputs (and the user's own,
and those perturbed), bit for bit; only then are they loaded here.  Steps that
call back into Python are not fed back (the child has no such function).  For a compile-only GPU target
(no device here) the rewritten executable is built and decoded again, and
handed back unrun.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from olla_jax.apply import (cpu_rewrite, executable, gpu_executable, gpu_readback, gpu_rewrite,
                            load, verify)
from olla_jax.capture.base import Backend


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str
    achieved_temp_bytes: int | None = None
    compiled: Any = None
    raw: bytes | None = dataclasses.field(default=None, repr=False)
    verification: verify.Verification | None = None
    host_callbacks: bool = False   # refused only because the step calls back into Python


def edit_of(layout) -> cpu_rewrite.ExecutableEdit:
    recomputes = getattr(layout, "recomputes", ())
    clones, launch = [], {}     # (producer, before) -> index in clones of its one launch
    for k, r in enumerate(recomputes):
        done = getattr(r, "done_before", "")
        first = launch.get((r.producer, r.before)) if not done else None
        if first is not None and clones[first].early[:2] != layout.early_place(r.value):
            # another result of a multi-result fusion copied before the same
            # instruction: one launch writes it, at this copy's place
            c = clones[first]
            extent = (*layout.early_place(r.value), r.size)
            clones[first] = dataclasses.replace(
                c, scratch=c.scratch + ((extent, r.place),) + _scratch(layout, r),
                merged=c.merged + ((*r.place, r.size),))
            continue
        if not done:
            launch[(r.producer, r.before)] = len(clones)
        clones.append(cpu_rewrite.Clone(r.producer, r.before,
                                        (*layout.early_place(r.value), r.size), r.place,
                                        _chained(layout, recomputes, k), done_before=done,
                                        scratch=_scratch(layout, r)))
    clones = tuple(clones)
    return cpu_rewrite.ExecutableEdit(order=layout.order_names, relocate=layout.relocate,
                                      relocate_logical=layout.relocate_logical,
                                      allocation_sizes=dict(layout.allocation_sizes),
                                      clones=clones)


def _scratch(layout, r) -> tuple:
    """A library call's copy: (first run's scratch extent, the copy's place) each."""
    return tuple(((*layout.early_place(v), layout.graph.values[v].size), place)
                 for v, place in getattr(r, "scratch", ()))


def _chained(layout, recomputes, k: int) -> tuple:
    """Operands of the ``k``-th copy that are themselves copied before it (a
    chain): (extent the producer's thunk reads, place of the copy read) each;
    the copy reads the operand's latest copy made before it, while the
    producer's own run read its first copy or the copy whose reader it is.
    Copies run in order of their ``before`` instruction, then of the list
    (what the checker assumes)."""
    graph = layout.graph
    if not recomputes or graph is None:
        return ()
    position = {name: i for i, name in enumerate(layout.order_names)}
    r = recomputes[k]
    if r.producer not in graph.node_index:
        return ()       # a copy inside a loop body reads its operands' only runs
    node = graph.node_index[r.producer]
    at = (position[r.before], k)
    latest = {}         # operand value -> (its copy's run, index) of its latest copy before r's
    for j, q in enumerate(recomputes):
        if q.before not in position:
            continue    # (a body copy: no entry copy reads it)
        value = graph.values[q.value]
        if (position[q.before], j) < at and node in value.touches and value.def_node != node:
            latest[q.value] = max(latest.get(q.value, (position[q.before], j)),
                                  (position[q.before], j))
    out = []
    for v, (_, j) in sorted(latest.items()):
        q = recomputes[j]
        read = next((p.place for p in recomputes if p.value == v and r.producer in p.late_users),
                    layout.early_place(v))
        if read != q.place:
            out.append(((*read, q.size), q.place))
    return tuple(out)


def devices_of(hlo_text: str) -> int:
    """How many devices the module runs on (its replicas times its partitions),
    from the header of its text."""
    header = hlo_text.split("\n", 1)[0]
    count = 1
    for name in ("replica_count", "num_partitions"):
        match = re.search(rf"\b{name}=(\d+)", header)
        count *= int(match.group(1)) if match else 1
    return count


def apply_layout(capture, layout, *, backend: str | Backend = "cpu", args: Sequence[Any] = (),
                 static_argnums: Sequence[int] = (), trials: int = 2,
                 timeout_s: float = 300.0) -> Outcome:
    """Rewrite ``capture``'s executable to ``layout``; verified and loaded, or why not.

    ``backend``: "cpu", "gpu" (the local GPU: verified and loaded like CPU) or
    a compile-only GPU target such as "gpu:h100" (built, decoded, not run), as
    a string or a parsed :class:`Backend`.
    """
    backend = Backend.parse(backend)
    if capture.executable is None:
        return Outcome(False, "XLA's executable could not be serialized on this backend")
    gpu = backend.kind == "gpu"
    rewriter = gpu_rewrite if gpu else cpu_rewrite
    try:
        raw = rewriter.rewrite(capture.executable, edit_of(layout))
        if gpu:  # what we wrote must read back, and hold what the plan asked
            differs = gpu_readback.compare(raw, layout)
            if differs is not None:
                return Outcome(False, f"the rewritten executable, read back, differs from the "
                                      f"plan: {differs}")
    except (cpu_rewrite.RewriteError, executable.LayoutError, gpu_executable.GpuLayoutError,
            ValueError) as err:
        return Outcome(False, f"the executable rewrite refused the plan: {err}")
    except Exception as err:  # noqa: BLE001 - a rewrite bug falls back like a refusal
        return Outcome(False, f"the executable rewrite failed ({type(err).__name__}: {err})")
    if gpu and backend.compile_only:
        return Outcome(False, f"rewritten {backend.name} executable built ({len(raw)} bytes, "
                              "decoded again); not run: a compile-only target has no GPU here",
                       raw=raw)
    platform = "gpu" if gpu else "cpu"
    callbacks = verify.host_callbacks(capture.executable, platform)
    if callbacks:
        return Outcome(False, f"host callbacks: not fed back: the step calls back into Python "
                              f"({', '.join(callbacks[:3])}: jax.debug.callback, pure_callback "
                              "or io_callback), and a rewritten executable is only loaded once "
                              "it ran in a separate verification process, where that Python "
                              "function does not exist", raw=raw, host_callbacks=True)
    devices = devices_of(capture.hlo_text)
    if devices > 1:
        return Outcome(False, f"not fed back: the step runs on {devices} devices (a sharded "
                              "program), and the verification runs a rewritten executable on one "
                              "device; XLA's executable runs it (plan a sharded step for a "
                              "compile-only GPU target: olla_jax.plan(..., backend='gpu:h100', "
                              "num_devices=...))", raw=raw)
    user_args = None
    dynamic = [a for i, a in enumerate(args) if i not in set(static_argnums)]
    if dynamic and _concrete(dynamic):
        try:
            user_args = verify.executable_arguments(capture.compiled, *dynamic)
        except Exception:  # noqa: BLE001 - fall back to random inputs only
            user_args = None
    # The reference is jax.jit's own program where the one planned is another
    # program of the step (capture.base.Capture.jax_program), else XLA's executable.
    reference = capture.reference
    if reference.executable is None:
        return Outcome(False, "the executable of jax.jit's own program could not be "
                              "serialized: nothing to verify against", raw=raw)
    result = verify.verify_executable(raw, reference.executable, trials=trials,
                                      user_args=user_args, timeout_s=timeout_s,
                                      platform=platform, device=verify.device_id(reference.compiled))
    if not result.ok:
        whose = "XLA's" if reference is capture else "jax.jit's program's"
        return Outcome(False, f"the rewritten executable did not match {whose}: {result.reason}",
                       raw=raw, verification=result)
    try:
        compiled = load.load_compiled(capture.compiled, raw, platform=platform)
        achieved = int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception as err:  # noqa: BLE001 - loading is the last step that can fail
        return Outcome(False, f"loading the verified executable failed: {err}", raw=raw,
                       verification=result)
    return Outcome(True, "verified", achieved, compiled, raw, result)


def _concrete(leaves) -> bool:
    import jax
    return all(not isinstance(x, jax.ShapeDtypeStruct)
               for x in jax.tree_util.tree_leaves(leaves))
