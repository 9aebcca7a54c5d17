"""benchmarks/suite.py's split of the gap to the bound: the plan's placement
loss against the order's live bytes above the bound."""

from benchmarks.suite import gap_split, markdown, summarise

MIB = 2**20


def _row(model, planned, arena, peak, bound, least=None):
    return dict(model=model, backend="cpu", planned=planned, arena=arena, placement_live=peak,
                live=peak, least_live=least, bound=bound, gap=(planned - bound) / planned)


def test_the_gap_is_placed_where_the_bytes_are():
    placed = gap_split(_row("a", 110 * MIB, 110 * MIB, 100 * MIB, 98 * MIB))
    assert placed["is"] == "placement"
    assert abs(placed["placement"] - 10 / 110) < 1e-9 and abs(placed["order"] - 2 / 110) < 1e-9
    ordered = gap_split(_row("b", 100 * MIB, 100 * MIB, 100 * MIB, 70 * MIB, least=90 * MIB))
    assert ordered["is"] == "order or bound" and ordered["placement"] == 0
    assert abs(ordered["least_live_vs_bound"] - 0.2) < 1e-9
    assert gap_split(_row("c", 100 * MIB, 101 * MIB, 100 * MIB, 99 * MIB))["is"] == "none"
    # XLA's plan kept (ours lost): the order part stops at planned.
    kept = gap_split(_row("d", 100 * MIB, 120 * MIB, 105 * MIB, 90 * MIB))
    assert kept["kept_xla"] and abs(kept["order"] - 0.10) < 1e-9
    assert gap_split({"model": "e", "error": "boom"}) is None


def test_the_suite_table_reports_it():
    import argparse
    rows = [dict(_row("a", 110 * MIB, 110 * MIB, 100 * MIB, 98 * MIB), instructions=10, buffers=5,
                 xla_default=200 * MIB, xla_best=150 * MIB, xla_scheduler="x", achieved=110 * MIB,
                 baseline=120 * MIB, verified=True, notes=[], solve_s=1.0, plan_s=1.0)]
    args = argparse.Namespace(backend="cpu", size="tiny", time_limit_s=1.0, timing_repeats=1,
                              timing_budget_s=1.0)
    meta = dict(command="x", date="d", load_start="0", machine=dict(nproc=2, memory="1", cpu="c", python="3", jax="j", jaxlib="j"))
    summary = summarise(rows, "cpu")
    assert summary["gap_is_placement"] == 1
    text = markdown(rows, summary, args, meta)
    assert "## Where the gap is" in text and "| a | 110.00 | 110.00 | 100.00 |" in text
