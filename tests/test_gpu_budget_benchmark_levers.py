"""benchmarks/gpu_budget.py's count of XLA points met per lever and by any lever
(recomputation, XLA's program planned by us, host offloading, program
recomputation), and ``--render``: finished runs' rows rendered as one run."""

import json
import types

import pytest

from benchmarks import gpu_budget

MIB = 2 ** 20


def _comparison(temp_mib: int, ours: bool, lever: bool = False, side: bool = False,
                program: tuple = ()) -> dict:
    return {"xla_remat_temp": temp_mib * MIB, "xla_remat_flops": 1000, "cost": "flops",
            "met": ours, "met_planned": False, "how": "h",
            "ours": [{"temp": temp_mib * MIB, "flops": 400, "seconds": 1.0,
                      "budget_temp": temp_mib * MIB, "note": "n", "cost": "flops"}],
            "offload": {"lever": {"met": lever}, "side": {"met": side} if side else None},
            "program_remat": [{"met": m} for m in program]}


def _args(**kw):
    base = dict(remat_planned=0, offload=1, program_remat=1)
    return types.SimpleNamespace(**{**base, **kw})


def test_points_met_per_lever_by_any_and_the_missed_named():
    rows = [{"example": "a:small", "comparisons": [
                _comparison(50, True), _comparison(40, False, lever=True, program=(False, True))]},
            {"example": "b:small", "comparisons": [
                _comparison(30, False, side=True), _comparison(20, False, program=(False, False))]},
            {"example": "c:small", "error": "RuntimeError: boom"}]
    line, = gpu_budget.levers_met(rows, _args())
    assert ("Per lever, of 4 XLA points: recomputation 1; host offloading (lever or side) 2; "
            "program recomputation 1. Met by any lever at 3 of 4 XLA points; missed by every "
            "lever: b:small at 20.00 MiB (examples with an error, no points counted: c:small)."
            ) == line


def test_a_point_asked_with_two_costs_counts_once():
    rows = [{"example": "a:small", "comparisons": [
        _comparison(50, False), dict(_comparison(50, True), cost="time")]}]
    line, = gpu_budget.levers_met(rows, _args(offload=0, program_remat=0))
    assert line == "Per lever, of 1 XLA points: recomputation 1. Met by any lever at 1 of 1 XLA points."


def _run(tmp_path, name: str, models: str, extra: str = "", asked: str = "") -> str:
    command = (f"python -m benchmarks.gpu_budget --target=h100 --models={asked or models} "
               "--limits=0.8,0.5 "
               f"--time_limit_s=20 --remat_planned=0 {extra}--out=x/{name}")
    rows = [{"example": m, "xla_temp": 80 * MIB, "plan_temp": 78 * MIB, "step_flops": 10_000,
             "xla_points": [], "xla_compiled": 0, "plan_s": 1.0, "xla_s": 2.0,
             "comparisons": [_comparison(50, m.startswith("a"))], "shares": []}
            for m in models.split(",")]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"rows": rows, "command": command}))
    (tmp_path / f"{name}.md").write_text(f"# t\n\n- command: `{command}`\n- date: 2026-12-08 04:00 UTC\n"
                                         "- load average at start / end (1/5/15 min): 1 / 2 / 3 ; 4 / 5 / 6\n")
    return str(path)


def test_render_merges_runs_rows_with_each_runs_command_date_and_load(tmp_path):
    a = _run(tmp_path, "part_a", "a:small")
    b = _run(tmp_path, "part_b", "b:small,c:small", asked="b:small,c:small,d:small")
    text = gpu_budget.render_merged([a, b], str(tmp_path / "merged"))
    assert "- part 1: `python -m benchmarks.gpu_budget --target=h100 --models=a:small" in text
    assert ("--out=x/part_b` (written 2026-12-08 04:00 UTC; load at start / end 1 / 2 / 3 ; "
            "4 / 5 / 6); no rows for d:small (not finished)") in text
    assert "--out=x/part_a` (written 2026-12-08 04:00 UTC; load at start / end 1 / 2 / 3 ; 4 / 5 / 6)\n" in text
    assert "Met by any lever at 1 of 3 XLA points; missed by every lever: b:small at 50.00 MiB" in text
    assert [ln.split(" |")[0] for ln in text.splitlines() if ln.startswith("| ") and "small" in ln] \
        == ["| a:small", "| b:small", "| c:small"]
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert len(merged["rows"]) == 3 and len(merged["parts"]) == 2


def test_render_refuses_runs_with_other_settings_or_the_same_example(tmp_path):
    a = _run(tmp_path, "part_a", "a:small")
    other = _run(tmp_path, "part_b", "b:small", extra="--points=1 ")
    with pytest.raises(SystemExit, match="settings differ .* in points"):
        gpu_budget.render_merged([a, other], str(tmp_path / "merged"))
    again = _run(tmp_path, "part_c", "a:small")
    with pytest.raises(SystemExit, match="a:small already in an earlier run"):
        gpu_budget.render_merged([a, again], str(tmp_path / "merged"))
