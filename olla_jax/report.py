"""Pictures of a plan: temp memory over time, and where every buffer sits.

    from olla_jax import report
    report.plot_plan(plan, "out/cnn")   # out/cnn-memory.png, out/cnn-layout.png

Time is the step on the flattened schedule (entry instructions with the
instructions of their called computations in place).  ``memory_timeline`` is
plain Python; the plots need matplotlib (``pip install 'olla_jax[plots]'``),
imported on first use and drawn on an Agg canvas, never through pyplot, so a
user's interactive backend is left alone.
"""

from __future__ import annotations

from typing import Any

from olla_jax.graph.layout import Layout, xla_layout
from olla_jax.graph.model import ScheduleGraph
from olla_jax.graph.simulate import Box as _Box, boxes as _boxes, memory_timeline

MIB = 2 ** 20


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
                title: str = "temp memory over time", lower_bound: int | None = None) -> str:
    """Temp arena bytes in use per step, XLA's plan vs ours; dashed lines at
    each plan's temp size and (optionally) a proven lower bound.  PNG."""
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
                   label=f"lower bound {lower_bound / MIB:,.2f} MiB")
    ax.set_xlim(0, max(1, len(graph.flat)))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("step of the flattened schedule")
    ax.set_ylabel("temp arena in use (MiB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize="small",
              frameon=False)
    return _save(fig, path)


def _colours(boxes: list[_Box]):
    """A colour per box, by unit: tab20 with neighbouring units spread apart."""
    import matplotlib
    cmap = matplotlib.colormaps["tab20"]
    return [cmap((b.unit * 7) % 20) for b in boxes]


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


def _label_big(ax, graph: ScheduleGraph, boxes: list[_Box], horizon: int, height: float,
               y_of, limit: int = 25) -> None:
    """Name the values of the boxes big enough to hold a label."""
    big = [b for b in boxes if (b.end + 1 - b.start) > 0.08 * horizon and b.size > 0.04 * height]
    big.sort(key=lambda b: -(b.end + 1 - b.start) * b.size)
    for b in big[:limit]:
        key = graph.values[graph.units[b.unit].values[0]].key
        ax.text((b.start + b.end + 1) / 2, y_of(b), key if len(key) <= 28 else key[:26] + "..",
                ha="center", va="center", fontsize=6, clip_on=True)


def plot_layout(graph: ScheduleGraph, layout: Layout, path: str, *,
                title: str = "buffer layout") -> str:
    """Where every buffer sits over time: the temp arena (x = step, y = offset,
    one rectangle per live span, coloured by unit) and, below, the output
    allocations with the values parked in their idle space.  PNG."""
    horizon = max(1, len(graph.flat))
    boxes = _boxes(graph, layout)
    arena = [b for b in boxes if b.allocation == graph.temp_allocation]
    region_allocs = set(graph.regions)
    parked_units = {b.unit for b in boxes if b.allocation in region_allocs
                    and graph.units[b.unit].movable}
    hosts = sorted({b.allocation for b in boxes if b.unit in parked_units})
    region_boxes = [b for b in boxes if b.allocation in hosts]

    lower = min(5.0, max(1.2, 0.16 * len(hosts))) if hosts else 0.4
    fig = _figure(12, 6.2 + lower)
    ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(5, lower))
    temp = layout.temp_bytes
    top = max([temp] + [b.offset + b.size for b in arena]) or 1
    _draw_boxes(ax, arena, {graph.temp_allocation: 0.0}, {graph.temp_allocation: 1 / MIB},
                _colours(arena))
    _label_big(ax, graph, arena, horizon, top, lambda b: (b.offset + b.size / 2) / MIB)
    ax.axhline(temp / MIB, color="black", linestyle="--", linewidth=1)
    ax.text(horizon, temp / MIB, f" temp {temp / MIB:,.2f} MiB", va="bottom", ha="right",
            fontsize="small")
    ax.set_xlim(0, horizon)
    ax.set_ylim(0, top / MIB * 1.04)
    ax.set_ylabel("offset in the temp arena (MiB)")
    ax.set_title(f"{title}: {len(arena):,} live span{'' if len(arena) == 1 else 's'} in the temp arena")
    ax.grid(alpha=0.2)

    # Output allocations hosting parked values: one band each, offsets scaled to the band.
    if hosts:
        base = {a: float(i) for i, a in enumerate(hosts)}
        scale = {a: 0.9 / max(1, graph.allocations[a].size) for a in hosts}
        colours = [(0.8, 0.8, 0.8, 1.0) if b.unit not in parked_units else c
                   for b, c in zip(region_boxes, _colours(region_boxes))]
        _draw_boxes(ax2, region_boxes, base, scale, colours)
        every = -(-len(hosts) // 24)   # at most 24 labels
        ax2.set_yticks([i + 0.45 for i in range(0, len(hosts), every)],
                       [f"alloc {a} ({_size(graph.allocations[a].size)})" for a in hosts[::every]],
                       fontsize="x-small")
        ax2.set_ylim(-0.05, len(hosts))
        ax2.set_title(f"{len(parked_units)} temp values parked in idle output allocations "
                      "(grey: the outputs themselves)", fontsize="medium")
    else:
        ax2.set_yticks([])
        ax2.text(0.5, 0.5, "no temp values parked in output allocations",
                 transform=ax2.transAxes, ha="center", va="center", fontsize="small")
    ax2.set_xlabel("step of the flattened schedule")
    return _save(fig, path)


def plot_plan(plan: Any, path_prefix: str) -> list[str]:
    """``<prefix>-memory.png`` and ``<prefix>-layout.png`` for an ``olla_jax.Plan``
    (XLA's own layout for both when the plan kept XLA's)."""
    graph: ScheduleGraph | None = plan.graph
    if graph is None:
        raise ValueError("this plan has no scheduling graph (the memory model did not cover the "
                         "program), so there is nothing to plot")
    xla = xla_layout(graph)
    ours = plan.layout if plan.layout is not None else xla
    who = "olla_jax" if plan.layout is not None else "XLA (kept)"
    memory = plot_memory(graph, xla, ours, f"{path_prefix}-memory.png",
                         title=f"temp memory over time ({plan.backend}): " + (
                             "XLA vs olla_jax" if plan.layout is not None else "XLA's plan kept"),
                         lower_bound=plan.lower_bound_bytes or None)
    layout = plot_layout(graph, ours, f"{path_prefix}-layout.png",
                         title=f"{who} buffer layout ({plan.backend})")
    return [memory, layout]


# ---- text ------------------------------------------------------------------

def peak_breakdown_text(plan: Any, top: int = 8) -> str:
    """What holds a plan's memory: arguments, outputs, and the largest temp
    values live at the temp peak (model view; recomputed copies not drawn)."""
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
    peak = max(range(len(timeline)), key=timeline.__getitem__)
    live = [b for b in _boxes(graph, layout)
            if b.allocation == graph.temp_allocation and b.start <= peak <= b.end]
    live.sort(key=lambda b: -b.size)
    lines.append(f"  temp peak at step {peak} of {len(timeline)}: {_size(timeline[peak])} in "
                 f"{len(live)} buffers; the largest:")
    for b in live[:top]:
        unit = graph.units[b.unit]
        key = graph.values[unit.values[0]].key
        lines.append(f"    {_size(b.size):>10}  {key}")
    return "\n".join(lines)


__all__ = ["memory_timeline", "peak_breakdown_text", "plot_layout", "plot_memory", "plot_plan"]
