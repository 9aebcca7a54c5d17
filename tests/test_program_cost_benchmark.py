"""benchmarks/program_cost.py: program_remat's seconds split by phase, and the
patches that time them undone afterwards."""

import collections

import pytest

pytest.importorskip("jax")

from benchmarks import program_cost  # noqa: E402

MIB = 2 ** 20


def test_phases_are_timed_while_held_and_the_originals_come_back():
    from olla_jax import program_remat
    from olla_jax.apply import verify
    from olla_jax.capture import record
    before = (record.capture, verify.outputs_differ, program_remat.rewrite)
    seconds, counts = collections.defaultdict(float), collections.Counter()
    with program_cost.timed(seconds, counts):
        assert record.capture is not before[0]
    assert (record.capture, verify.outputs_differ, program_remat.rewrite) == before
    assert not seconds and not counts


def test_render_names_each_phase_and_the_plans_clock():
    row = {"model": "m:small", "xla_temp": 100 * MIB, "xla_compile_s": 2.0, "candidates": 8,
           "calls": [{"fraction": 0.8, "budget": 80 * MIB, "temp": 64 * MIB, "values": 1,
                      "extra_flops": 1000, "met": True, "bits": "same", "seconds": 10.0,
                      "tried": [[1, 64 * MIB, 1000]],
                      "phases": {"gpu compile": [6.0, 3], "compare in a child": [3.0, 1],
                                 "rest": [1.0, 0]},
                      "plan": {"limit_s": 20.0, "solve_s": 19.4, "verify_s": 3.9,
                               "capture_s": 10.9, "temp": 63 * MIB}}]}
    text = "\n".join(program_cost.render([row]))
    assert "- 0.8 x (80.00 MiB): 10.0 s: gpu compile 6.0 s (3), compare in a child 3.0 s (1), " \
           "rest 1.0 s;" in text
    assert "planned at a 20 s limit: solve 19.4 s, verify 3.9 s" in text
