"""benchmarks/gpu_budget.py --program_remat=1's table: program recomputation at
each XLA point with its bits verdict, whether it meets the point, and which
sides (offloading among them) meet each point."""

import types

from benchmarks import gpu_budget

MIB = 2 ** 20


def test_program_rows_say_the_bits_and_which_sides_meet_each_point():
    met = {"budget_temp": 52 * MIB, "temp": 50 * MIB, "flops": 300, "values": 11,
           "bits": "same as the step compiled with CSE off; ...", "met": True,
           "how": "its memory at 0.30 x its extra FLOPs (<= 0.5)", "capture_s": 120.0,
           "planner_s": 9.5, "solve_s": 7.0, "verify_s": 2.5, "seconds": 130.0,
           "note": "program recomputation (11 values)"}
    none = {"budget_temp": 44 * MIB, "met": False, "how": "no side: nothing kept",
            "capture_s": 40.0, "planner_s": 0.0, "seconds": 40.0,
            "note": "program recomputation: nothing kept"}
    rows = [{"example": "m:small", "step_flops": 10_000, "comparisons": [
        {"xla_remat_temp": 52 * MIB, "xla_remat_flops": 1000, "met": False,
         "met_planned": False, "program_remat": [met]},
        {"xla_remat_temp": 44 * MIB, "xla_remat_flops": 2000, "met": True,
         "met_planned": True, "program_remat": [none],
         "offload": {"lever": {"met": False}, "side": {"met": True}}}]}]
    text = "\n".join(gpu_budget.render_program(rows, types.SimpleNamespace()))
    first, second = [line for line in text.splitlines() if line.startswith("| m:small")]
    assert "| 50.00 at 300 (3.00%) (11 values) | same as the step compiled with CSE off" in first
    # the planner's part (what the time limit bounds) apart from the build on top
    assert "| yes |" in first and "| program | 120.0 / 7.0 + 2.5 |" in first
    assert "| none | - | no | no side: nothing kept | ours, XLA's planned, offloading |" in second
    assert "- m:small at 44.00 MiB: program recomputation: nothing kept (40.0 s)" in text
