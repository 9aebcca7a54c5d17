"""pytest plugin: which tests reach a missed budget's scan_remat trace, and its cost.

Each call of ``olla_jax.plan._scan_remat_hint`` (a missed budget without
``scan_remat``: where a default-on ``scan_remat`` would be decided) appends one
JSON line to ``$SCAN_REMAT_PROBE_OUT``: the test, whether candidates were found
(the side would then run), and the trace's wall and CPU seconds.

    SCAN_REMAT_PROBE_OUT=/tmp/probe.jsonl PYTHONPATH=benchmarks python -m pytest \\
        -p scan_remat_hint_probe tests/test_budget.py ...
"""

from __future__ import annotations

import json
import os
import sys
import time


def pytest_configure(config):
    import olla_jax  # noqa: F401 - olla_jax.plan is the module, shadowed by the function
    module = sys.modules["olla_jax.plan"]
    hint = module._scan_remat_hint
    out = os.environ.get("SCAN_REMAT_PROBE_OUT", "scan_remat_probe.jsonl")

    def probed(*args, **kwargs):
        wall, cpu = time.monotonic(), time.process_time()
        said = hint(*args, **kwargs)
        with open(out, "a") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "?"),
                                "candidates": bool(said), "wall_s": time.monotonic() - wall,
                                "cpu_s": time.process_time() - cpu}) + "\n")
        return said
    module._scan_remat_hint = probed
