"""benchmarks/scale_room.py: XLA's order's floor and the threshold bound on a capture."""

import warnings

from benchmarks import scale_room
from tests.small_steps import mlp_args, mlp_step


def test_room_bounds_xla_from_below_and_runs_every_threshold():
    from olla_jax.capture.record import capture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(mlp_step, *mlp_args(0), scheduler="memory")
    lines = []
    room = scale_room.room(cap, bound_s=30.0, alignment=64, say=lines.append)
    assert 0 < room.bound <= room.xla_temp
    assert 0 < room.xla_floor <= room.xla_temp
    assert room.complete == room.thresholds >= 2
    assert lines[-1].startswith("bound ")
