"""The README's training loop (examples/readme_loop.py) is the code the README
shows, runs (with a shorter limit and fewer steps), gives jax.jit's results bit
for bit, and its plan is not refused."""

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _loop_code() -> str:
    text = (ROOT / "examples" / "readme_loop.py").read_text()
    return text.split('"""', 2)[2].lstrip("\n")


def test_readme_shows_the_loop_verbatim():
    assert "```python\n" + _loop_code() + "```" in (ROOT / "README.md").read_text()


def test_readme_training_loop_matches_jax_jit(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OLLA_JAX_CACHE_DIR", str(tmp_path))
    code = _loop_code()
    assert "@olla_jax.jit(donate_argnums=(0, 1), time_limit_s=10)" in code and "range(20)" in code
    code = code.replace("time_limit_s=10", "time_limit_s=2").replace("range(20)", "range(3)")
    ours: dict = {}
    exec(compile(code, "readme_loop", "exec"), ours)   # noqa: S102 - the README's own code
    assert "olla_jax plan" in capsys.readouterr().out

    # The same loop under jax.jit, from the same start.
    reference = code.replace("@olla_jax.jit(donate_argnums=(0, 1), time_limit_s=2)",
                             "@jax.jit").split("print(train_step.plan_for")[0]
    theirs: dict = {}
    exec(compile(reference, "readme_loop_jax", "exec"), theirs)   # noqa: S102
    for name in ("loss", "params", "opt_state"):
        for a, b in zip(ours["jax"].tree_util.tree_leaves(ours[name]),
                        theirs["jax"].tree_util.tree_leaves(theirs[name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    plan = ours["train_step"].plan_for(ours["params"], ours["opt_state"], ours["x"], y=ours["y"])
    refusals = [n for n in plan.notes if "refused" in n or "rejected" in n or "failed" in n]
    assert not refusals, refusals
