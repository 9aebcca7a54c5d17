"""jax_compat: the supported jax range and the filter for the CUDA stub lines."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jaxlib
import pytest

from olla_jax import jax_compat


def test_installed_jax_is_in_the_declared_range():
    assert jax_compat.version_tuple(jax.__version__) >= jax_compat.MIN_JAX
    jax_compat.check_versions(jax.__version__, jaxlib.__version__)


@pytest.mark.parametrize("text, expected", [
    ("0.10.2", (0, 10, 2)), ("0.11.0.dev20260101", (0, 11, 0)), ("0.11.0rc1", (0, 11, 0)),
    ("1.0", (1, 0)),
])
def test_version_tuple(text, expected):
    assert jax_compat.version_tuple(text) == expected


@pytest.mark.parametrize("jax_version, jaxlib_version", [("0.9.2", "0.9.2"), ("0.10.2", "0.10.0")])
def test_older_jax_is_refused_with_what_to_install(jax_version, jaxlib_version):
    minimum = ".".join(map(str, jax_compat.MIN_JAX))
    with pytest.raises(jax_compat.UnsupportedJaxError, match=f"pip install -U 'jax>={minimum}'"):
        jax_compat.check_versions(jax_version, jaxlib_version)


@pytest.mark.parametrize("version", ["0.11.0", "0.11.3.dev20260301", "0.12.0"])
def test_newer_jax_is_accepted(version):
    jax_compat.check_versions(version, version)   # the GPU machines run 0.11


def test_minimum_matches_pyproject():
    text = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")).read()
    minimum = ".".join(map(str, jax_compat.MIN_JAX))
    assert f'"jax>={minimum}"' in text and f'"jaxlib>={minimum}"' in text


STUB = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796439171.226700    5452 cudart_stub.cc:31] Could not find cuda drivers "
        "on your machine, GPU will not be used.\n")


def test_noise_filter_drops_only_the_stub_lines():
    other = "W1205 02:56:44.098278 9940 sort_rewriter.cc:929] Using fallback sort algorithm\n"
    text = "before\n" + STUB + other + STUB + "Traceback (most recent call last):\n"
    assert jax_compat.drop_native_noise(text) == "before\n" + other + "Traceback (most recent call last):\n"


def test_quiet_native_stderr_keeps_other_output(capfd):
    with jax_compat.quiet_native_stderr():
        os.write(2, STUB.encode())
        os.write(2, b"kept line\n")
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "cudart_stub" not in err
    assert "kept line\n" in err and "from python\n" in err


def test_native_stderr_without_holds_back_only_the_lines_asked(capfd):
    with jax_compat.native_stderr_without(r"Can't reduce") as held:
        os.write(2, b"W1207 hlo_rematerialization.cc:3231] Can't reduce memory use below 1KiB\n")
        os.write(2, b"kept line\n")
        print("from python", file=sys.stderr)
        os.write(2, b"no newline at the end")
    assert held == ["W1207 hlo_rematerialization.cc:3231] Can't reduce memory use below 1KiB"]
    err = capfd.readouterr().err
    assert "Can't reduce" not in err
    assert "kept line\nno newline at the end" in err.replace("from python\n", ""), err
    assert "from python\n" in err


def test_a_second_filter_meanwhile_leaves_the_first_in_place(capfd):
    """fd 2 is the process's: a filter asked for while one is in place (another
    thread's search) filters nothing itself, and the first stays whole."""
    with jax_compat.native_stderr_without("first") as outer:
        with jax_compat.native_stderr_without("second") as inner:
            os.write(2, b"first line\nsecond line\n")
        os.write(2, b"first again\n")
    assert inner == [] and outer == ["first line", "first again"]
    assert capfd.readouterr().err == "second line\n"


def test_native_stderr_without_lets_a_crashs_last_words_through():
    """What native code writes just before the process aborts still reaches
    stderr (the filter is a process of its own), and nothing is left on disk."""
    code = ("import os; from olla_jax import jax_compat\n"
            "with jax_compat.native_stderr_without('dropped'):\n"
            "    os.write(2, b'dropped line\\n'); os.write(2, b'F1207 check failed\\n')\n"
            "    os.abort()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "F1207 check failed" in result.stderr and "dropped line" not in result.stderr


def test_jit_options_read_as_jax_resolved_them():
    def step(w, x, *, scale):
        return w * scale + x

    jitted = jax.jit(step, static_argnames="scale", donate_argnums=0)
    options = jax_compat.jit_options(jitted)
    assert options == jax_compat.JitOptions(static_argnums=(), static_argnames=("scale",),
                                            donate_argnums=(0,), donate_argnames=("w",))
    assert jax_compat.jit_options(step) is None


@pytest.mark.skipif(jax_compat.cuda_plugin() is None or jax_compat.has_visible_nvidia_gpu(),
                    reason="the stub lines come from jax's CUDA plugin on a machine without a GPU")
def test_first_jax_call_after_import_prints_no_stub_lines():
    code = "import olla_jax, jax.numpy as jnp; print(jnp.ones(3).sum())"
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", jax_compat.SKIP_CHECK_VAR)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "3.0" in result.stdout, result.stderr
    assert "cudart_stub" not in result.stderr and "Traceback" not in result.stderr, result.stderr
