"""olla_jax.jit called the ways a jax.jit function is called in the wild: jax's
configuration changed between calls, abstract arguments, a wrong call's error."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import olla_jax


def f(w, x):
    return jnp.tanh(x @ w).sum(), x @ w


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        yield


@pytest.fixture
def x64_restored():
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


def test_x64_switched_on_after_a_call_is_another_program(x64_restored):
    """The same NumPy float64 arrays trace to float32 without x64 and to float64
    with it: jax.jit traces again, so must the plan (it ran the float32 plan)."""
    jitted = olla_jax.jit(f, time_limit_s=1, cache=False)
    w, x = np.ones((8, 8)), np.ones((4, 8))
    assert jitted(w, x)[1].dtype == jnp.float32
    jax.config.update("jax_enable_x64", True)
    got, expected = jitted(w, x), jax.jit(f)(w, x)
    assert got[1].dtype == expected[1].dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(expected[1]))
    jax.config.update("jax_enable_x64", False)
    assert jitted(w, x)[1].dtype == jnp.float32
    assert len(jitted._plans) == 2


def test_numpy_float64_and_float32_arrays_share_a_plan_without_x64():
    """Without x64 jax traces a NumPy float64 array as float32: one program, one plan."""
    jitted = olla_jax.jit(f, time_limit_s=1, cache=False)
    jitted(np.ones((8, 8)), np.ones((4, 8)))
    jitted(jnp.ones((8, 8)), jnp.ones((4, 8)))
    assert len(jitted._plans) == 1


def test_a_call_with_shape_dtype_structs_raises_jaxs_error_and_plans_nothing():
    jitted = olla_jax.jit(f, time_limit_s=1, cache=False)
    spec = jax.ShapeDtypeStruct((8, 8), jnp.float32)
    with pytest.raises(TypeError) as got:
        jitted(spec, jnp.ones((4, 8)))
    with pytest.raises(TypeError) as expected:
        jax.jit(f)(spec, jnp.ones((4, 8)))
    assert str(got.value) == str(expected.value)
    assert jitted._plans == {}
    # planning ahead from shapes alone is what plan_for is for
    assert jitted.plan_for(spec, jax.ShapeDtypeStruct((4, 8), jnp.float32)) is not None


def test_a_wrong_call_raises_jaxs_error_without_olla_jaxs_failure_chained():
    """jax.jit's error alone, as jax.jit raises it: not 'During handling of the
    above exception' after olla_jax's own capture error."""
    jitted = olla_jax.jit(f, time_limit_s=1, cache=False)
    with pytest.raises(TypeError, match="missing 1 required positional argument") as got:
        jitted(jnp.ones((8, 8)))
    chain, err = [], got.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert not [e for e in chain if type(e).__module__.startswith("olla_jax")], chain


def test_plan_compiled_called_with_another_signature_says_what_to_do():
    planned = olla_jax.plan(f, jnp.ones((8, 8)), jnp.ones((4, 8)), time_limit_s=1)
    with pytest.raises(TypeError, match="compiled with float32\\[4,8\\] and called with "
                                        "float32\\[3,8\\](.|\\n)*olla_jax.jit"):
        planned.compiled(jnp.ones((8, 8)), jnp.ones((3, 8)))


def test_nnx_plan_called_with_a_rebuilt_optimizer_says_what_to_do_in_a_few_lines():
    """A rebuilt nnx.Optimizer has a new optax transformation in its static graph:
    jax's AOT error prints the whole graph (6,000 characters for one Linear)."""
    optax = pytest.importorskip("optax")
    nnx = pytest.importorskip("flax.nnx")

    def make():
        model = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    def train_step(model, opt, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)
        return loss

    x = jnp.ones((2, 4))
    planned = olla_jax.plan(nnx.jit(train_step), *make(), x, time_limit_s=1)
    with pytest.raises(TypeError, match="input pytree does not match") as got:
        planned.compiled(*make(), x)
    assert "optimizer built again" in str(got.value) and len(str(got.value)) < 1500


def test_a_flag_the_step_branches_on_is_refused_with_what_to_do():
    def step(x, *, train=True):
        return x * 2 if train else x
    with pytest.raises(olla_jax.CaptureError, match="argument train(.|\\n)*pass it as static"):
        olla_jax.plan(step, jnp.ones(3), kwargs={"train": True})
    planned = olla_jax.plan(step, jnp.ones(3), kwargs={"train": True}, static_argnames="train",
                            time_limit_s=1)
    np.testing.assert_array_equal(planned.compiled(jnp.ones(3), train=True), 2 * jnp.ones(3))


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="this machine has a GPU")
def test_the_local_gpu_backend_without_a_gpu_is_refused_with_what_to_do():
    """Not a CPU executable planned as if it were a GPU one."""
    with pytest.raises(olla_jax.CaptureError, match="no GPU(.|\\n)*gpu:h100"):
        olla_jax.plan(f, jnp.ones((8, 8)), jnp.ones((4, 8)), backend="gpu", time_limit_s=1)
    with pytest.raises(olla_jax.CaptureError, match="no GPU"):
        olla_jax.jit(f, backend="gpu")


def test_a_verification_failure_warns_in_one_line_and_keeps_the_details_in_the_notes(
        monkeypatch):
    from olla_jax import checked
    from olla_jax.apply.feed_back import Outcome
    from small_steps import mlp_args, mlp_step

    reason = ("the rewritten executable did not match XLA's: RuntimeError: child failed\n"
              "Traceback (most recent call last):\n  File \"child.py\", line 1")
    monkeypatch.setattr(checked, "apply", lambda *a, **k: Outcome(False, reason))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        planned = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=2)
    if planned.source == "xla":   # nothing below XLA's plan found: nothing was applied
        pytest.skip("the planner found nothing to apply at this load")
    messages = [str(w.message) for w in caught if "keeps XLA's executable" in str(w.message)]
    assert messages and "Traceback" not in messages[0] and "Plan.notes" in messages[0]
    assert any("Traceback" in note for note in planned.notes)


def test_negative_argnums_count_the_positional_arguments_when_keywords_follow():
    # jax.jit counts static_argnums=-1 from the end of the positional arguments; the
    # keyword arguments a positional call appends must not shift it
    from olla_jax import calls

    def step(w, x, *, scale):
        return w * x * scale
    call = calls.positional_call(step, (1.0, 2.0), {"scale": 3.0}, static_argnums=(-1,),
                                 donate_argnums=(-2,), static_argnames=(),
                                 donate_argnames=())
    assert call.static_argnums == (1,) and call.donate_argnums == (0,)
    assert len(call.args) == 3


def test_a_jitted_step_deep_copies_after_a_call_as_jax_jits_does():
    """A config or flax module holding the step is deep-copied (``copy.deepcopy``):
    jax.jit's function copies; ours raised "cannot pickle 'LoadedExecutable'"
    once a call had loaded a plan.  The copy runs its plan, and forgets its
    plans without the original forgetting its own."""
    import copy
    def double(x):
        return 2 * x
    jitted = olla_jax.jit(double, time_limit_s=1, cache=False, feed_back=False)
    x = jnp.arange(4.0)
    assert jitted.plan_for(x).compiled is not None
    twin = copy.deepcopy({"step": jitted})["step"]
    assert twin is not jitted and twin.__name__ == "double"
    assert bool(jnp.array_equal(twin(x), 2 * x))
    twin.clear_cache()
    assert jitted._plans and not twin._plans


def test_a_jitted_method_is_a_bound_method_as_jax_jits_is():
    """A method decorated with olla_jax.jit came back from its instance as a
    functools.partial: ``obj.step.__name__`` and ``__wrapped__``, which jax.jit's
    bound method has, raised AttributeError."""
    import functools

    class Model:
        def __init__(self, scale):
            self.scale = scale

        def __hash__(self):
            return hash(self.scale)

        def __eq__(self, other):
            return isinstance(other, Model) and other.scale == self.scale

        @functools.partial(olla_jax.jit, static_argnums=0, cache=False)
        def step(self, x):
            return x * self.scale

    model = Model(3.0)
    assert model.step.__name__ == "step"
    assert model.step.__wrapped__ is Model.__dict__["step"].__wrapped__
    assert model.step.__self__ is model
    from olla_jax.decorator import function_identity
    assert function_identity(model.step) != function_identity(Model(2.0).step), "its object is read"
