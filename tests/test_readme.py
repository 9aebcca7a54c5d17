"""The README's training loop runs as written (with a shorter limit and fewer
steps), gives jax.jit's results bit for bit, and its plan is not refused."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _loop_code() -> str:
    text = README.read_text()
    match = re.search(r"## A training loop.*?```python\n(.*?)```", text, re.S)
    assert match, "README has no 'A training loop' section with a python block"
    return match.group(1)


def test_readme_training_loop_matches_jax_jit(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OLLA_JAX_CACHE_DIR", str(tmp_path))
    code = _loop_code()
    assert "@olla_jax.jit(" in code and "time_limit_s=10" in code and "range(20)" in code
    code = code.replace("time_limit_s=10", "time_limit_s=2").replace("range(20)", "range(3)")
    ours: dict = {}
    exec(compile(code, str(README), "exec"), ours)   # noqa: S102 - the README's own code
    summary = capsys.readouterr().out
    assert "olla_jax plan" in summary

    # The same loop under jax.jit, from the same start.
    reference = code.replace("@olla_jax.jit(donate_argnums=(0, 1), time_limit_s=2)",
                             "@jax.jit")
    reference = reference.split("print(train_step.plan_for")[0]
    theirs: dict = {}
    exec(compile(reference, str(README), "exec"), theirs)   # noqa: S102
    for name in ("loss", "params", "opt_state"):
        for a, b in zip(ours["jax"].tree_util.tree_leaves(ours[name]),
                        theirs["jax"].tree_util.tree_leaves(theirs[name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    plan = ours["train_step"].plan_for(ours["params"], ours["opt_state"], ours["x"], y=ours["y"])
    refusals = [n for n in plan.notes if "refused" in n or "rejected" in n or "failed" in n]
    assert not refusals, refusals
