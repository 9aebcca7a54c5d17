"""The command line: help, usage errors, CSV placement, planning an XLA dump."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

REPO = Path(__file__).resolve().parents[1]


def olla(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "olla_jax", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_help_documents_every_subcommand_and_flag():
    result = olla("--help")
    assert result.returncode == 0, result.stderr
    for word in ("demo", "plan", "hlo", "place", "show", "--example", "--module", "--backend",
                 "--time_limit_s", "--engine", "--save", "--plot", "no_feed_back", "--dump_dir",
                 "--csv", "--out", "--capacity", "--plan"):
        assert word in result.stdout, word


@pytest.mark.parametrize("args", [("frobnicate",), (), ("plan",), ("plan", "--bogus_flag=1")])
def test_usage_errors_exit_2(args):
    result = olla(*args)
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_library_error_is_one_line(tmp_path):
    result = olla("show", f"--plan={tmp_path / 'missing.json'}")
    assert result.returncode == 1
    assert "missing.json" in result.stderr and "Traceback" not in result.stderr


def test_place_csv(tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("id,lower,upper,size\na,0,3,64\nb,1,4,128\nc,3,6,64\n")
    result = olla("place", f"--csv={src}", f"--out={out}", "--time_limit_s=2")
    assert result.returncode == 0, result.stderr
    assert "arena of 192 bytes" in result.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "id,lower,upper,size,offset" and len(lines) == 4
    tight = olla("place", f"--csv={src}", f"--out={tmp_path / 'no.csv'}", "--capacity=100")
    assert tight.returncode == 1 and "capacity" in tight.stderr


def _dump(directory: Path) -> None:
    def step(w, x):
        def loss(w):
            return jnp.sum(jnp.tanh(x @ w) ** 2)
        return w - 0.1 * jax.grad(loss)(w)
    options = {"xla_dump_to": str(directory), "xla_dump_hlo_as_proto": True,
               "xla_dump_hlo_as_text": True}
    jax.jit(step).lower(jnp.ones((64, 32)), jnp.ones((128, 64))).compile(compiler_options=options)


def test_hlo_plans_a_dump(tmp_path):
    _dump(tmp_path / "dump")
    prefix = tmp_path / "plot"
    result = olla("hlo", f"--dump_dir={tmp_path / 'dump'}", "--time_limit_s=2", f"--plot={prefix}")
    assert result.returncode == 0, result.stderr
    assert "XLA temp" in result.stdout and "olla_jax temp, planned" in result.stdout
    for suffix in ("-memory.png", "-layout.png"):
        assert Path(f"{prefix}{suffix}").stat().st_size > 0


def test_hlo_without_dumps_is_a_usage_error(tmp_path):
    result = olla("hlo", f"--dump_dir={tmp_path}")
    assert result.returncode == 2 and "after_optimizations.hlo.pb" in result.stderr
