"""The example training steps: each builds at size "tiny", compiles on CPU and runs one step."""

import math
import subprocess
import sys

import jax
import numpy as np
import pytest

import examples
from examples import Step
from examples.__main__ import entry_instructions

EXPECTED = {"mlp", "resnet18", "resnet50", "gpt2", "bert", "vit", "mlp_mixer", "unet", "densenet",
            "lstm", "remat", "donated", "grad_accum", "cnn_adam", "lm_adamw"}


# LLVM optimisation off: halves compile time; HLO passes, schedule and buffers are unchanged.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def shapes(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def test_registry():
    assert set(examples.names()) == EXPECTED == set(examples.EXAMPLES)
    with pytest.raises(KeyError):
        examples.get("nope")
    with pytest.raises(ValueError):
        examples.get("mlp", size="huge")


# the three longest (12-15 s each) run with make test-slow; their plans are also
# exercised by test_plan_examples' slow half and the benchmarks
LONG_TINY = ("resnet50", "densenet", "resnet18")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in LONG_TINY else n
                                  for n in examples.names()])
def test_tiny_step_compiles_and_runs(name):
    step = examples.get(name, "tiny")
    assert isinstance(step, Step) and step.name == name and step.description
    abstract = step.abstract_args()
    assert jax.tree.structure(abstract) == jax.tree.structure(step.args)
    assert all(isinstance(a, jax.ShapeDtypeStruct)
               for i, arg in enumerate(abstract) if i not in step.static_argnums
               for a in jax.tree.leaves(arg))
    params_before = shapes(step.args[0])

    compiled = step.lower().compile(FAST_COMPILE)
    assert entry_instructions(compiled.as_text()) > 0
    out = compiled(*step.dynamic_args())

    loss = jax.tree.leaves(out)[-1]
    assert loss.shape == () and math.isfinite(float(loss))
    assert shapes(out[0]) == params_before  # updated params come first, same shapes
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(out))


def test_donation_and_static_args_are_declared():
    assert examples.get("donated", "tiny").donate_argnums == (0, 1)
    assert examples.get("lm_adamw", "tiny").static_argnums == (3,)


def test_entry_instructions():
    text = "HloModule m\n\nf {\n  a = f32[] parameter(0)\n}\n\nENTRY main {\n" \
           "  p = f32[] parameter(0)\n  ROOT n = f32[] negate(p)\n}\n"
    assert entry_instructions(text) == 2


def test_cli_list():
    out = subprocess.run([sys.executable, "-m", "examples", "--list"], capture_output=True,
                         text=True, check=True).stdout
    assert [line.split()[0] for line in out.splitlines()] == examples.names()


@pytest.mark.slow
@pytest.mark.parametrize("name", examples.names())
def test_small_step_compiles(name):
    step = examples.get(name, "small")
    memory = step.lower().compile().memory_analysis()
    assert memory.temp_size_in_bytes > 0 or name == "mlp"


def test_an_example_built_again_after_others_reuses_its_init(monkeypatch):
    """examples.common keeps recent model inits (a byte cap, the least recently
    used dropped first): lstm built again after mlp compiles no init, and gets
    its own copies of the same variables."""
    from examples import common
    monkeypatch.setattr(common, "_INITS", {})
    inits = []
    real_jit = common.jax.jit

    def counting_jit(fn, *args, **kwargs):
        inits.append(getattr(fn, "__self__", fn))
        return real_jit(fn, *args, **kwargs)
    monkeypatch.setattr(common.jax, "jit", counting_jit)
    first = examples.get("lstm", "tiny")
    examples.get("mlp", "tiny")
    again = examples.get("lstm", "tiny")
    assert len(inits) == 2 and len(common._INITS) == 2
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), first.args[0],
                                     again.args[0]))
    leaf = jax.tree.leaves(again.args[0])[0]
    assert leaf is not jax.tree.leaves(first.args[0])[0]
    monkeypatch.setattr(common, "INIT_CACHE_BYTES", 0)    # over the cap: only the newest kept
    examples.get("mlp", "tiny")
    assert len(inits) == 2 and len(common._INITS) == 1
