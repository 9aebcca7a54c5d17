"""benchmarks/offload_plan.py's table: each route against its own XLA step and
against the example's step as given (the first row's XLA temp)."""

from benchmarks import offload_plan

MIB = 2 ** 20


def test_table_compares_each_route_with_the_step_as_given():
    rows = [
        {"example": "m:small", "route": "plan", "xla_temp": 100 * MIB, "temp": 90 * MIB,
         "source": "olla_jax", "built": True, "host_temp": 0},
        {"example": "m:small", "route": "offload", "xla_temp": 100 * MIB, "temp": 60 * MIB,
         "host_temp": 50 * MIB},
        {"example": "m:small", "route": "offload, then plan", "xla_temp": 60 * MIB,
         "temp": 45 * MIB, "source": "olla_jax", "built": True, "host_temp": 50 * MIB,
         "notes": ["50.0 MiB of temporaries in memory space 5"]},
        {"example": "m:small", "route": "broken", "error": "ValueError: no"},
    ]
    text = offload_plan.render(rows, ["# t", ""])
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| m:")}
    assert "| 0.750 | 0.450 |" in lines["offload, then plan"]      # 45/60 and 45/100
    assert "| 0.600 | 0.600 |" in lines["offload"]
    assert "built, decoded again, not run" in lines["plan"]
    assert "error `ValueError: no`" in text and "memory space 5" in text


def test_budget_table_shows_met_flops_and_host_bytes():
    rows = [
        {"example": "m:small", "route": "our sides", "xla_temp": 100 * MIB, "budget": 80 * MIB,
         "total": 85 * MIB, "temp": 75 * MIB, "met": False, "extra_flops": 1000,
         "engine": "xla-remat+list"},
        {"example": "m:small", "route": "with offloading", "xla_temp": 100 * MIB,
         "budget": 80 * MIB, "total": 70 * MIB, "temp": 60 * MIB, "met": True,
         "extra_flops": 0, "engine": "offload+list", "host_temp": 30 * MIB,
         "to_host_bytes": 40 * MIB, "to_device_bytes": 40 * MIB, "notes": ["host offloading"]},
    ]
    text = offload_plan.render_budget(rows, ["# t", ""])
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| m:")}
    assert "| no | 75.00 | 0.750 | 1,000 |" in lines["our sides"]
    assert "| yes | 60.00 | 0.600 | 0 | offload+list | 30.00 | 40.00 | 40.00 |" in \
        lines["with offloading"]
    assert "note: host offloading" in text
