"""Pictures of a plan: temp memory over time, and where every buffer sits.

    from olla_jax import report
    report.plot_plan(plan, "out/cnn")   # out/cnn-memory.png, out/cnn-layout.png

Time is the step on the flattened schedule (entry instructions with the
instructions of their called computations in place).  Buffers are named by the
user's operations and source lines, which XLA keeps as op metadata in the
module (``op_sources``).  ``memory_timeline`` is plain Python; the plots need matplotlib (``pip install 'olla_jax[plots]'``),
imported on first use and drawn on an Agg canvas, never through pyplot, so a
user's interactive backend is left alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from olla_jax.graph.layout import Layout, recompute_count, xla_layout
from olla_jax.graph.model import HOST_SPACE, ScheduleGraph
from olla_jax.graph.simulate import Box as _Box, boxes as _boxes, memory_timeline

if TYPE_CHECKING:   # result.py imports this module: the type only
    from olla_jax.result import Plan

MIB = 2 ** 20
KEYED_GROUPS = 10    # source lines with a colour of their own in the layout's key


# ---- what the user wrote -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class OpSource:
    """The user's operation behind an HLO instruction (its op metadata)."""
    op_name: str        # as jax names it, e.g. "jit(step)/transpose(jvp(Dense_0))/dot_general"
    file: str           # source file ('' when XLA kept none)
    line: int
    function: str

    @property
    def where(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}" if self.file else ""

    @property
    def short_op(self) -> str:
        """The op without jax's wrappers: "Dense_0/dot_general (bwd)"."""
        backward = "transpose(" in self.op_name
        parts = []
        for part in self.op_name.split("/"):
            if part.startswith(("jit(", "pjit(")) and not parts:
                continue
            inner = re.sub(r"^(?:\w+\()+([^()]*)\)+$", r"\1", part)   # jvp(Dense_0) -> Dense_0
            if inner:
                parts.append(inner)
        name = "/".join(parts[-2:])
        return f"{name} (bwd)" if backward and name else name


def _is_library(path: str) -> bool:
    return any(f"{os.sep}{d}{os.sep}" in path for d in ("site-packages", "dist-packages"))


def op_sources(hlo_proto: bytes) -> dict[str, OpSource]:
    """Per instruction name (every computation), the user's op and source line.

    Newer jax keeps source lines as stack frames in the module's
    ``stack_frame_index``; the innermost frame outside installed packages is
    the user's line (a flax layer's own line is not what the user wrote)."""
    from olla_jax import dumps
    module = dumps.parse_hlo_proto(hlo_proto).hlo_module
    index = module.stack_frame_index

    def entry(table, k):        # the index's ids count from 1
        return table[k - 1] if 0 < k <= len(table) else None

    def frame(frame_id: int) -> tuple[str, int, str]:
        first, seen = None, set()
        while frame_id and frame_id not in seen:
            seen.add(frame_id)
            f = entry(index.stack_frames, frame_id)
            loc = f and entry(index.file_locations, f.file_location_id)
            if loc is None:
                break
            found = (entry(index.file_names, loc.file_name_id) or "", loc.line,
                     entry(index.function_names, loc.function_name_id) or "")
            first = first or found
            if found[0] and not _is_library(found[0]):
                return found
            frame_id = f.parent_frame_id
        return first or ("", 0, "")

    def source(md) -> OpSource:
        file, line, function = md.source_file, md.source_line, ""
        if md.stack_frame_id and (not file or _is_library(file)):
            file, line, function = frame(md.stack_frame_id)
        return OpSource(md.op_name, file, int(line), function)

    roots = {}
    for comp in module.computations:
        for instr in comp.instructions:
            if instr.id == comp.root_id:
                roots[comp.id] = instr
    out = {}
    for comp in module.computations:
        for instr in comp.instructions:
            # A fusion XLA wrapped around one op may carry no metadata: its root's then
            md, inner, seen = instr.metadata, instr, set()
            while not md.op_name and inner.called_computation_ids and inner.id not in seen:
                seen.add(inner.id)
                inner = roots.get(inner.called_computation_ids[0])
                if inner is None:
                    break
                md = inner.metadata
            out[instr.name] = source(md)
    return out


# ---- plots -----------------------------------------------------------------

def _size(n: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", MIB), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as err:
        raise ImportError("olla_jax's plots need matplotlib: pip install 'olla_jax[plots]'") from err
    return matplotlib


def _figure(width: float, height: float, **kwargs):
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=120, format="png")
    return path


def plot_memory(graph: ScheduleGraph, xla: Layout, ours: Layout, path: str, *,
                title: str = "temp memory over time", lower_bound: int | None = None,
                bound_name: str = "lower bound") -> str:
    """Temp arena bytes in use per step, XLA's plan vs ours; dashed lines at
    each plan's temp size and (optionally) a proven lower bound; the bytes in
    host memory (an offloaded step's), outside the arena, as a line of their
    own.  ``bound_name``: what that floor is (a recomputing plan's is the working set).  PNG."""
    return _save(memory_figure(graph, xla, ours, title=title, lower_bound=lower_bound,
                               bound_name=bound_name), path)


def space_name(color: int) -> str:
    """What XLA's memory space ``color`` is, in words."""
    return (f"host memory (memory space {color})" if color == HOST_SPACE
            else f"memory space {color}")


def other_space_text(graph: ScheduleGraph) -> str:
    """'' or what an offloaded step holds outside the device temp arena (the
    plots draw the arena; this says what they leave out of it)."""
    return "; ".join(f"{_size(n)} of temporaries in {space_name(c)}, outside the temp arena"
                     for c, n in sorted(graph.other_space_bytes.items()))


def _space_allocations(graph: ScheduleGraph) -> dict[int, list[int]]:
    """Per memory space other than device memory, its allocations' indices."""
    out: dict[int, list[int]] = defaultdict(list)
    for a in graph.allocations:
        if a.kind == "other_space":
            out[a.color].append(a.index)
    return dict(sorted(out.items()))


def memory_figure(graph: ScheduleGraph, xla: Layout, ours: Layout, *,
                  title: str = "temp memory over time", lower_bound: int | None = None,
                  bound_name: str = "lower bound"):
    """The matplotlib Figure of ``plot_memory`` (not saved)."""
    fig = _figure(10, 5)
    ax = fig.add_subplot()
    lines = [("XLA", xla, "tab:red"), ("olla_jax", ours, "tab:blue")]
    if ours is xla or (ours.order == xla.order and not ours.places):
        lines = lines[:1]
    for name, layout, colour in lines:
        timeline = memory_timeline(graph, layout)
        ax.step(range(len(timeline)), [b / MIB for b in timeline], where="post", color=colour,
                linewidth=1.2, label=f"{name}: bytes in use")
        ax.axhline(layout.temp_bytes / MIB, color=colour, linestyle="--", linewidth=1,
                   label=f"{name} temp size {layout.temp_bytes / MIB:,.2f} MiB")
    if lower_bound:
        ax.axhline(lower_bound / MIB, color="black", linestyle=":", linewidth=1,
                   label=f"{bound_name} {lower_bound / MIB:,.2f} MiB")
    name, layout, _ = lines[-1]
    for color, allocs in _space_allocations(graph).items():
        # kept where XLA put it: only the order (the last line's) moves its spans
        timeline = memory_timeline(graph, layout, allocations=allocs)
        ax.step(range(len(timeline)), [b / MIB for b in timeline], where="post",
                color="tab:green", linewidth=1.2, linestyle="-.",
                label=f"{name}: {space_name(color)} in use, not in the arena "
                      f"({_size(graph.other_space_bytes[color])} allocated)")
    outside = other_space_text(graph)
    ax.set_xlim(0, max(1, len(graph.flat)))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("step of the flattened schedule")
    ax.set_ylabel("temp arena in use (MiB)" if not outside else "bytes in use (MiB)")
    ax.set_title(title + (f"\n+ {outside} (green)" if outside else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3 if not outside else 2,
              fontsize="small", frameon=False)
    return fig


@dataclasses.dataclass(frozen=True)
class _Key:
    """Colour and name of every unit, grouped by the user's source line (or,
    without metadata, the op): the largest groups get a colour of their own."""
    colour_of_unit: dict[int, Any]
    label_of_unit: dict[int, str]
    legend: list[tuple[Any, str]]      # (colour, text)


_OTHER = (0.72, 0.72, 0.72, 1.0)
_OUTPUT = (0.93, 0.93, 0.93, 1.0)


def _key(graph: ScheduleGraph, boxes: list[_Box], sources: dict[str, OpSource] | None) -> _Key:
    import matplotlib
    sources = sources or {}
    group_of, label_of, ops_of = {}, {}, defaultdict(lambda: defaultdict(int))
    area = defaultdict(int)
    for unit in graph.units:
        key = graph.values[unit.values[0]].key
        src = sources.get(key.split("{", 1)[0])
        op = src.short_op if src else ""
        where = src.where if src else ""
        group_of[unit.id] = where or op.split("/")[-1] or key.split("{", 1)[0].rstrip(".0123456789")
        label_of[unit.id] = "\n".join(x for x in (op or key, where) if x)
        ops_of[group_of[unit.id]][op.split(" ")[0].split("/")[-1] or "-"] += unit.size
    for b in boxes:
        area[group_of[b.unit]] += b.size * (b.end + 1 - b.start)
    ranked = sorted(area, key=lambda g: -area[g])[:KEYED_GROUPS]
    cmap = matplotlib.colormaps["tab10"]
    colour_of_group = {g: cmap(k % 10) for k, g in enumerate(ranked)}
    legend = []
    for g in ranked:
        ops = sorted(ops_of[g], key=lambda o: -ops_of[g][o])
        if ops == ["-"]:
            text = f"{g} (XLA's; no source line)"
        else:
            text = g if g in ops else f"{g}  {', '.join(ops[:3])}{' ...' if len(ops) > 3 else ''}"
        legend.append((colour_of_group[g], text))
    if len(area) > len(ranked):
        legend.append((_OTHER, f"{len(area) - len(ranked)} other source lines"))
    colours = {u: colour_of_group.get(g, _OTHER) for u, g in group_of.items()}
    return _Key(colours, label_of, legend)


def _draw_boxes(ax, boxes: list[_Box], base: dict[int, float], scale: dict[int, float], colours):
    """All boxes as one PolyCollection (fast with thousands of them)."""
    from matplotlib.collections import PolyCollection
    verts = []
    for b in boxes:
        y0 = base[b.allocation] + b.offset * scale[b.allocation]
        y1 = y0 + b.size * scale[b.allocation]
        verts.append([(b.start, y0), (b.end + 1, y0), (b.end + 1, y1), (b.start, y1)])
    ax.add_collection(PolyCollection(verts, facecolors=colours, edgecolors=(0, 0, 0, 0.4),
                                     linewidths=0.3 if len(boxes) < 1500 else 0.0))


def _label_big(ax, boxes: list[_Box], labels: dict[int, str], horizon: int, height: float,
               y_of, limit: int = 25) -> None:
    """Name the buffers of the boxes big enough to hold a label (op and source line)."""
    big = [b for b in boxes if (b.end + 1 - b.start) > 0.08 * horizon and b.size > 0.05 * height]
    big.sort(key=lambda b: -(b.end + 1 - b.start) * b.size)
    for b in big[:limit]:
        lines = [x if len(x) <= 30 else x[:28] + ".." for x in labels[b.unit].split("\n")]
        if b.size < 0.1 * height:
            lines = lines[:1]
        ax.text((b.start + b.end + 1) / 2, y_of(b), "\n".join(lines), ha="center", va="center",
                fontsize=7, clip_on=True)


def _arena_panel(ax, graph: ScheduleGraph, layout: Layout, key: _Key, top: int,
                 horizon: int, title: str) -> None:
    arena = [b for b in _boxes(graph, layout) if b.allocation == graph.temp_allocation]
    unit, unit_name = (MIB, "MiB") if top >= MIB else (2 ** 10, "KiB")
    _draw_boxes(ax, arena, {graph.temp_allocation: 0.0}, {graph.temp_allocation: 1 / unit},
                [key.colour_of_unit[b.unit] for b in arena])
    _label_big(ax, arena, key.label_of_unit, horizon, top, lambda b: (b.offset + b.size / 2) / unit)
    temp = layout.temp_bytes
    ax.axhline(temp / unit, color="black", linestyle="--", linewidth=1)
    ax.text(horizon, temp / unit, f"temp {_size(temp)} ", va="bottom", ha="right",
            fontsize="small")
    ax.set_xlim(0, horizon)
    ax.set_ylim(0, top / unit * 1.06)
    ax.set_ylabel(f"offset in the temp arena ({unit_name})")
    ax.set_title(f"{title}: {len(arena):,} live span{'' if len(arena) == 1 else 's'}",
                 fontsize="medium")
    ax.set_xlabel("step of its schedule")
    ax.grid(alpha=0.2)


def plot_layout(graph: ScheduleGraph, layout: Layout, path: str, *,
                title: str = "buffer layout", xla: Layout | None = None,
                sources: dict[str, OpSource] | None = None, name: str = "olla_jax") -> str:
    """Where every buffer sits over time in the temp arena (x = step, y =
    offset, one rectangle per live span), ``xla``'s layout beside it on the
    same scale when given; buffers coloured and named by the user's source
    line and op (``sources``, from ``op_sources``) with a colour key; below,
    the output allocations with the values parked in their idle space, and
    an offloaded step's host-memory allocations (outside the arena).  PNG."""
    return _save(layout_figure(graph, layout, title=title, xla=xla, sources=sources, name=name),
                 path)


def layout_figure(graph: ScheduleGraph, layout: Layout, *, title: str = "buffer layout",
                  xla: Layout | None = None, sources: dict[str, OpSource] | None = None,
                  name: str = "olla_jax"):
    """The matplotlib Figure of ``plot_layout`` (not saved)."""
    _matplotlib()
    horizon = max(1, len(graph.flat))
    boxes = _boxes(graph, layout)
    panels = [(f"{name}'s layout", layout)]
    if xla is not None and xla is not layout:
        panels.insert(0, ("XLA's layout", xla))
    all_arena = [b for _, lay in panels for b in _boxes(graph, lay)
                 if b.allocation == graph.temp_allocation]
    region_allocs = set(graph.regions)
    parked_units = {b.unit for b in boxes if b.allocation in region_allocs
                    and graph.units[b.unit].movable}
    outputs = sorted({b.allocation for b in boxes if b.unit in parked_units})
    # an offloaded step's host-memory allocations: XLA's, outside the arena, drawn below it
    spaces = [a for allocs in _space_allocations(graph).values() for a in allocs]
    bands = outputs + spaces
    band_boxes = [b for b in boxes if b.allocation in bands]
    shown = parked_units | {b.unit for b in band_boxes if b.allocation in spaces}
    key = _key(graph, all_arena + [b for b in band_boxes if b.unit in shown], sources)

    lower = min(5.0, max(1.2, 0.16 * len(bands))) if bands else 0.4
    keyed = len(key.legend)
    fig = _figure(9 + 6 * (len(panels) - 1), 6.2 + lower + 0.2 * keyed)
    grid = fig.add_gridspec(2, len(panels), height_ratios=(5, lower))
    top = max([lay.temp_bytes for _, lay in panels] + [b.offset + b.size for b in all_arena]) or 1
    axes = []
    for k, (panel_title, lay) in enumerate(panels):
        ax = fig.add_subplot(grid[0, k], sharey=axes[0] if axes else None)
        _arena_panel(ax, graph, lay, key, top, horizon, panel_title)
        axes.append(ax)
    for ax in axes[1:]:
        ax.set_ylabel("")
    outside = other_space_text(graph)
    fig.suptitle(title + (f"\n+ {outside} (drawn below)" if outside else ""))
    from matplotlib.patches import Patch
    fig.legend([Patch(facecolor=c, edgecolor=(0, 0, 0, 0.4)) for c, _ in key.legend],
               [t for _, t in key.legend], loc="outside lower center", ncol=2 if keyed > 4 else 1,
               fontsize="small", frameon=False,
               title="colour: the user's source line (op names from XLA's op metadata)",
               title_fontsize="small")

    # One band each, offsets scaled to the band: the output allocations hosting
    # parked values, then the allocations in host memory.
    ax2 = fig.add_subplot(grid[1, :])
    if bands:
        base = {a: float(i) for i, a in enumerate(bands)}
        scale = {a: 0.9 / max(1, graph.allocations[a].size) for a in bands}
        colours = [key.colour_of_unit[b.unit] if b.unit in shown else _OUTPUT
                   for b in band_boxes]
        _draw_boxes(ax2, band_boxes, base, scale, colours)
        every = -(-len(bands) // 24)   # at most 24 labels

        def band_label(a: int) -> str:
            alloc = graph.allocations[a]
            where = "host " if alloc.color == HOST_SPACE else "" if a in outputs else \
                f"space {alloc.color} "
            return f"{where}alloc {a} ({_size(alloc.size)})"
        ax2.set_yticks([i + 0.45 for i in range(0, len(bands), every)],
                       [band_label(a) for a in bands[::every]], fontsize="x-small")
        ax2.set_xlim(0, horizon)
        ax2.set_ylim(-0.05, len(bands))
        parts = []
        if outputs:
            values = f"{len(parked_units)} temp value{'' if len(parked_units) == 1 else 's'}"
            parts.append(f"{name}: {values} parked in idle output allocations (light grey: the "
                         "outputs themselves)")
        if spaces:
            parts.append(f"XLA's: {outside}")
        ax2.set_title("\n".join(parts), fontsize="medium")
        ax2.set_xlabel("step of the schedule")
    else:
        ax2.axis("off")
        ax2.text(0.5, 0.5, f"{name}: no temp values parked in output allocations",
                 transform=ax2.transAxes, ha="center", va="center", fontsize="small")
    return fig


def plot_plan(plan: Plan, path_prefix: str) -> list[str]:
    """``<prefix>-memory.png`` and ``<prefix>-layout.png`` for an ``olla_jax.Plan``
    (XLA's own layout for both when the plan kept XLA's; beside ours otherwise)."""
    from olla_jax.saved import check_folder
    check_folder(f"{path_prefix}-memory.png", "the plot")
    graph: ScheduleGraph | None = plan.graph
    if graph is None:
        raise ValueError("this plan has no scheduling graph (the memory model did not cover the "
                         "program), so there is nothing to plot")
    xla = xla_layout(graph)
    ours = plan.layout if plan.layout is not None else xla
    who = "olla_jax" if plan.layout is not None else "XLA (kept)"
    capture = getattr(plan, "capture", None)
    sources = op_sources(capture.hlo_proto) if capture is not None else None
    memory = plot_memory(graph, xla, ours, f"{path_prefix}-memory.png",
                         title=f"temp memory over time ({plan.backend}): " + (
                             "XLA vs olla_jax" if plan.layout is not None else "XLA's plan kept"),
                         lower_bound=plan.lower_bound_bytes or None,
                         # as the summary says: a recomputing plan's floor is no bound on it
                         bound_name=("working set (floor with recomputation)"
                                     if getattr(plan, "recomputed", ()) else "lower bound"))
    layout = plot_layout(graph, ours, f"{path_prefix}-layout.png", xla=xla, sources=sources,
                         title=f"{who} buffer layout ({plan.backend})",
                         name="olla_jax" if plan.layout is not None else "XLA")
    return [memory, layout]


# ---- text ------------------------------------------------------------------

def peak_breakdown_text(plan: Plan, top: int = 8, at: str | None = None) -> str:
    """What holds a plan's memory: arguments, outputs, and the largest temp
    values live at the temp peak (model view; recomputed copies not drawn),
    named by the entry instruction there.  ``at``: of the steps at that peak,
    the one of this instruction (``budget.held_at_peak``'s, so that a message
    quoting both names one peak); else the first."""
    lines = [f"  arguments {_size(plan.argument_bytes)}, outputs {_size(plan.output_bytes)}, "
             f"donated (shared) {_size(plan.alias_bytes)}, temp "
             f"{_size(plan.achieved_temp_bytes or plan.planned_temp_bytes)}"]
    graph: ScheduleGraph | None = plan.graph
    if graph is None:
        return "\n".join(lines)
    layout = plan.layout if plan.layout is not None else xla_layout(graph)
    timeline = memory_timeline(graph, layout)
    if not timeline:
        return "\n".join(lines)
    node_at = _node_at_step(graph, layout.order, len(timeline))
    peaks = [s for s, n in enumerate(timeline) if n == max(timeline)]
    peak = next((s for s in peaks if node_at[s] is not None and graph.nodes[node_at[s]] == at),
                peaks[0])
    live = [b for b in _boxes(graph, layout)
            if b.allocation == graph.temp_allocation and b.start <= peak <= b.end]
    live.sort(key=lambda b: -b.size)
    where = "" if node_at[peak] is None else f" ({graph.nodes[node_at[peak]]})"
    also = "" if len(peaks) == 1 else f", one of {len(peaks)} steps at that peak"
    # Copies inside loop bodies are not drawn: the body's values are at their
    # full lives here, above the temp the plan reaches with the copies.
    in_bodies = recompute_count(layout).in_bodies if layout.recomputes else 0
    what = ("the plan's temp peak" if not in_bodies else
            f"the plan's temp peak without its {in_bodies} loop-body cop"
            f"{'y' if in_bodies == 1 else 'ies'} (they lower it to the temp above)")
    lines.append(f"  {what} at step {peak} of {len(timeline)}{where}{also}: "
                 f"{_size(timeline[peak])} in {len(live)} buffer{'' if len(live) == 1 else 's'}; "
                 "the largest:")
    sources = _sources_of(plan)
    for b in live[:top]:
        unit = graph.units[b.unit]
        key = graph.values[unit.values[0]].key
        src = sources.get(key.split("{", 1)[0])
        made_by = ", ".join(x for x in (src.short_op, src.where) if x) if src else ""
        lines.append(f"    {_size(b.size):>10}  {key}" + (f"  ({made_by})" if made_by else ""))
    return "\n".join(lines)


def _node_at_step(graph: ScheduleGraph, order, horizon: int) -> list[int | None]:
    """Per step of the flattened schedule under ``order``, the entry node whose
    block holds it."""
    out: list[int | None] = [None] * horizon
    starts = graph.flat_layout(order)
    for node in order:
        for step in range(starts[node], min(starts[node] + graph.block_length(node), horizon)):
            out[step] = node
    return out


def _sources_of(plan: Plan) -> dict[str, OpSource]:
    """The user's op and line per instruction of ``plan``'s module; none when
    the plan kept no module or its metadata cannot be read (a message goes on
    without them)."""
    capture = getattr(plan, "capture", None)
    try:
        return op_sources(capture.hlo_proto) if capture is not None else {}
    except Exception:  # noqa: BLE001 - names are a courtesy; the breakdown stands without
        return {}


__all__ = ["OpSource", "layout_figure", "memory_figure", "memory_timeline", "op_sources",
           "other_space_text", "peak_breakdown_text", "plot_layout", "plot_memory", "plot_plan",
           "space_name"]
