"""time_ratio() runs both executables interleaved."""

from __future__ import annotations

import math

from olla_jax.apply import controls, cpu_rewrite, executable, load, timing


def test_time_ratio_of_mirrored_mlp(programs):
    p = programs["mlp"]
    new = cpu_rewrite.rewrite(p.raw, controls.mirror_edit(executable.decode(p.raw)))
    # Loading in this process is safe: the same edit is verified in test_verify.
    rewritten = load.load_compiled(p.compiled, new)
    result = timing.time_ratio(p.compiled, rewritten, p.args, repeats=10)
    assert result.repeats == 10
    assert math.isfinite(result.ratio) and result.ratio > 0
    assert result.original_s > 0 and result.rewritten_s > 0
