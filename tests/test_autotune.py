"""Recorded GPU autotune results (benchmarks/data/autotune/) and the
text helpers of benchmarks/gpu_device.py.

The files were written on an NVIDIA H200 by jax 0.11.2 (``xla_gpu_dump_autotune_results_to``,
see benchmarks/results/gpu_device.md).  A compile-only h100 compile of the matching example
must accept each file: with a jaxlib whose ``xla.AutotuneResults`` schema reads it, the
compile succeeds; with an older one (jax <= 0.10 has the v3 ``results`` schema) XLA must
refuse it with an error, never ignore it silently.  XLA loads an autotune file once per
process, so each compile runs in its own process.  Skipped without jax's CUDA plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import gpu_device as gd
from olla_jax.capture import gpu
from tests.marks import needs_plugin  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AUTOTUNE_DIR = REPO / "benchmarks" / "data" / "autotune"
RESULTS = REPO / "benchmarks" / "results" / "gpu_device.json"
FILES = sorted(AUTOTUNE_DIR.glob(f"*_h200{gd.AUTOTUNE_SUFFIX}"))
FAST = {"cnn_adam_small"}            # the rest are slow (a compile each, 10-60 s)


def example_of(path: Path) -> tuple[str, str]:
    stem = path.name[: -len(f"_h200{gd.AUTOTUNE_SUFFIX}")]
    name, _, size = stem.rpartition("_")
    return name, size


def schema_reads(text: str) -> bool:
    """Whether the installed jaxlib's xla.AutotuneResults parses the text."""
    from google.protobuf import text_format
    from olla_jax import protos

    try:
        text_format.Parse(text, protos.message_class("xla.AutotuneResults")())
    except (text_format.ParseError, protos.SchemaError):
        return False
    return True


_COMPILE = textwrap.dedent("""
    import json, sys
    from olla_jax.capture import gpu
    import examples
    name, size, path = sys.argv[1:4]
    step = examples.get(name, size)
    try:
        compiled = gpu.compile_for_target(
            step.fn, step.args, target="h100", static_argnums=step.static_argnums,
            donate_argnums=step.donate_argnums,
            compiler_options={"xla_gpu_load_autotune_results_from": path})
        print(json.dumps({"temp": int(compiled.memory_analysis().temp_size_in_bytes)}))
    except gpu.CaptureError as err:
        print(json.dumps({"error": str(err)}))
""")


def compile_with(path: Path) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_SKIP_CUDA_CONSTRAINTS_CHECK="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    name, size = example_of(path)
    proc = subprocess.run([sys.executable, "-c", _COMPILE, name, size, str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_recorded_files_are_there():
    assert {f"{n}_{s}" for n, s in map(example_of, FILES)} >= {
        "cnn_adam_small", "lm_adamw_small", "resnet18_small", "vit_small", "gpt2_small"}
    for path in FILES:
        summary = gd.autotune_summary(path.read_text())
        assert summary["entries"] > 0 and len(summary["device_keys"]) == 1, (path.name, summary)


@needs_plugin
@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=() if example_of(p)[0] + "_"
                                               + example_of(p)[1] in FAST else pytest.mark.slow)
                                  for p in FILES])
def test_recorded_file_loads_in_compile_only_h100(path):
    result = compile_with(path)
    if not schema_reads(path.read_text()):
        # An older jaxlib: XLA must refuse the file loudly rather than compile without it.
        assert "error" in result and "autotune" in result["error"].lower(), result
        return
    assert "error" not in result, result
    assert result["temp"] > 0
    recorded = json.loads(RESULTS.read_text())
    import jax
    name, size = example_of(path)
    spec = name if size == "small" else f"{name}:{size}"
    row = recorded["models"].get(spec, {}).get("aot", {}).get("h100+file", {})
    if recorded.get("jax") == jax.__version__ and "temp" in row:
        assert result["temp"] == row["temp"]    # the same figure as on the GPU machine


# --- the text helpers ----------------------------------------------------------

H100_KEY = ("CUDA: 9.0, Cores: 132, GPU clock: 1.98 GHz, Memory bandwidth: 3352 GB/s, "
            "L2 cache: 50 MB, DNN version: 9.8.0")
H200_KEY = ("CUDA: 9.0, Cores: 132, GPU clock: 1.98 GHz, Memory bandwidth: 4800 GB/s, "
            "L2 cache: 60 MB, DNN version: 9.10.2")


def test_target_key_of_the_h100_description():
    assert gd.target_key(gd.h100_text()) == H100_KEY
    assert gd.readable_key(H100_KEY) and not gd.readable_key("ed0e56ab8b2a0ecb")


def test_derived_target_has_the_key_and_parses():
    derived = gd.derive_target(gd.h100_text(), H200_KEY, memory_bytes=150754820096)
    assert gd.target_key(derived) == H200_KEY
    assert 'name: "NVIDIA H200"' in derived and "device_memory_size: 150754820096" in derived
    text, dropped = gpu.normalize_target_config(derived)
    assert "4800000000000" in text and not dropped
    with pytest.raises(ValueError):
        gd.derive_target(gd.h100_text(), "ed0e56ab8b2a0ecb")


def test_rekey_and_summary_of_both_formats():
    v3 = f'version: 3\nresults {{\n  device: "{H200_KEY}"\n  hlo: "x"\n}}\n'
    assert gd.device_keys(gd.rekey(v3, H100_KEY)) == [H100_KEY]
    s = gd.autotune_summary(v3)
    assert s["version"] == 3 and s["entries"] == 1 and s["format"] == "v3 results"
    hashed = 'entries {\n  key {\n    target {\n      device: "ab12"\n    }\n  }\n}\n'
    s = gd.autotune_summary(hashed)
    assert s["entries"] == 1 and s["device_keys"] == ["ab12"] and s["format"].startswith("entries")
