"""benchmarks/scale_capture.py reads XLA's pass log: the step module's passes only."""

from benchmarks import scale_capture

LOG = """\
I1205 23:07:36.859485   10320 hlo_pass_pipeline.cc:303] Running HLO pass pipeline on module jit_stage: pre-spmd
I1205 23:07:36.859555   10320 hlo_pass_pipeline.cc:176] HLO pass: priority-fusion time: 7 s (7 s) (cumulative: 7 s, max: 7 s, #called: 1)
I1205 23:08:00.500000   10400 hlo_pass_pipeline.cc:303] Running HLO pass pipeline on module jit_step: optimization
I1205 23:08:01.000000   10320 hlo_pass_pipeline.cc:176] HLO pass: algsimp time: 5 s (5 s) (cumulative: 5 s, max: 5 s, #called: 1)
I1205 23:08:02.000000   10400 hlo_pass_pipeline.cc:176] HLO pass: priority-fusion time: 1.5 s (1.5 s) (cumulative: 1 s, max: 1 s, #called: 1)
I1205 23:08:03.000000   10400 hlo_pass_pipeline.cc:176] HLO pass: priority-fusion time: 500 ms (1 s) (cumulative: 1 s, max: 1 s, #called: 2)
I1205 23:08:04.000000   10400 hlo_pass_pipeline.cc:176] HLO pass: copy-insertion time: 250 us (1 s) (cumulative: 1 s, max: 1 s, #called: 1)
"""


def test_step_passes_counts_the_step_module_by_thread():
    first, passes = scale_capture.step_passes(LOG)
    assert passes == {"priority-fusion": 2.0, "copy-insertion": 0.00025}
    assert abs(first - scale_capture._log_epoch("1205 23:08:00.500000")) < 1e-6
    assert first - scale_capture._log_epoch("1205 23:07:36.859485") > 23


def test_step_passes_without_the_step_module():
    assert scale_capture.step_passes(LOG, module="jit_other") == (None, {})
