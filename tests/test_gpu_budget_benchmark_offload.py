"""benchmarks/gpu_budget.py --offload=1's table: host offloading at each XLA
point beside ours without it, with its host temp and bytes moved each way, the
extra FLOPs of XLA's offloaded program, whether the side kept its limit, and the copies'
time said to be unknown."""

from benchmarks import gpu_budget

MIB = 2 ** 20


def _comparison(met: bool, lever_met: bool, side: dict | None, kept: bool = True,
                lever_flops: int = 0) -> dict:
    lever = {"temp": 50 * MIB, "xla_temp": 80 * MIB, "values": 3, "host_temp": 20 * MIB,
             "to_host": 3, "to_host_bytes": 24 * MIB, "to_device": 3, "to_device_bytes": 24 * MIB,
             "tried": [[1, 90 * MIB], [3, 50 * MIB]], "flops": lever_flops, "seconds": 4.0,
             "parked": ["e1.0: dot_general", "e2.0: dot_general", "e9.0: custom_jvp_call"],
             "met": lever_met}
    return {"xla_remat_temp": 52 * MIB, "xla_remat_flops": 1000, "cost": "flops",
            "ours": [{"temp": 60 * MIB, "flops": 400}], "met": met,
            "offload": {"budget_temp": 52 * MIB, "lever": lever, "side": side,
                        "side_note": "" if side else "host offloading not tried: no time",
                        "planner_s": 25.0 if not kept else 9.0, "limit_kept": kept,
                        "side_seconds": 7.0}}


def test_offload_rows_show_bytes_moved_the_levers_flops_and_unknown_copy_time():
    side = {"temp": 48 * MIB, "flops": 0, "met": True, "note": "host offloading (3 parked)"}
    rows = [{"example": "m:small", "step_flops": 10_000,
             "comparisons": [_comparison(False, True, side, lever_flops=300),
                             _comparison(True, False, None, kept=False)]}]
    text = "\n".join(gpu_budget.render_offload(rows))
    first, second = [line for line in text.splitlines() if line.startswith("| m:small")]
    assert ("| 50.00 at 300 (3.00%) (3 parked) | 20.00 | 24.00 (3) | 24.00 (3) | yes "
            "| 48.00 at 0 (0.00%) | yes |") in first
    assert "| 50.00 at 0 (0.00%) (3 parked) |" in second
    assert "9.0 (kept)" in first and "25.0 (NOT kept)" in second
    assert "| no | none | no |" in second
    assert "copies' time over PCIe is unknown" in text and "NOT recomputation" in text
    assert ("ours without offloading meets 1; the lever alone 1; plan's offloading side 1; "
            "either offloading route but not ours 1") in text
    assert "dot_general x2, custom_jvp_call x1" in text
    assert "host offloading not tried: no time" in text
