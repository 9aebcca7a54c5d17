"""The first plan of a process: the solver's libraries are imported before the
planner's clock starts, not from its time limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, warnings
import jax, jax.numpy as jnp
import olla_jax
plan_lib = sys.modules["olla_jax.plan"]   # olla_jax.plan is the function

seen = {}
solve_graph = plan_lib.solve_graph

def spy(*args, **kwargs):
    seen["imported"] = [m for m in ("ortools.sat.python.cp_model", "ortools.graph.python.max_flow")
                        if m in sys.modules]
    return solve_graph(*args, **kwargs)

plan_lib.solve_graph = spy
assert "ortools.sat.python.cp_model" not in sys.modules
warnings.simplefilter("ignore")
f = lambda w, x: jnp.tanh(x @ w) @ w.T
olla_jax.plan(f, jnp.ones((16, 16)), jnp.ones((8, 16)), time_limit_s=1, feed_back=False)
print("imported at the solve's start:", seen["imported"])
"""


def test_solver_libraries_are_imported_before_the_planners_clock():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert ("imported at the solve's start: ['ortools.sat.python.cp_model', "
            "'ortools.graph.python.max_flow']") in result.stdout, result.stdout + result.stderr
