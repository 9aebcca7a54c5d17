"""olla_jax: the least memory a JAX step can run in, found and applied.

    import olla_jax
    plan = olla_jax.plan(train_step, params, opt_state, batch)
    print(plan.summary())
    new_params, new_opt_state, loss = plan.compiled(params, opt_state, batch)

    @olla_jax.jit(donate_argnums=(0, 1))     # jax.jit's arguments; planned per signature
    def train_step(params, opt_state, batch): ...
"""

# First: jax is imported there, under its version check and with the CUDA plugin set up.
from olla_jax import jax_compat  # noqa: F401  (isort: skip)
from olla_jax.errors import OllaJaxError
from olla_jax.capture import Capture, CaptureError
from olla_jax.plan import BudgetNotMet, Plan, PlanWarning, plan
from olla_jax.saved import PlanFileError, SavedPlan, load_plan
from olla_jax.decorator import jit, optimize
from olla_jax.placement import place
from olla_jax.donation import DonationAdvice, advise_donation
from olla_jax.batch import BatchReport, largest_batch

__all__ = ["BatchReport", "BudgetNotMet", "Capture", "CaptureError", "DonationAdvice",
           "OllaJaxError", "Plan", "PlanFileError", "PlanWarning", "SavedPlan", "advise_donation",
           "clear_cache", "jit", "largest_batch", "load_plan", "optimize", "place", "plan"]
__version__ = "0.1.0"


def clear_cache() -> None:
    """Forget the plans earlier budgeted ``plan()`` calls of this process found
    (``olla_jax.plan_memo``: a later call with a budget searches on its own)."""
    from olla_jax import plan_memo
    plan_memo.clear()


def __getattr__(name: str):
    """``olla_jax.offload``, ``olla_jax.gpu_budget``, ... (the modules the README
    names) after a bare ``import olla_jax``: a submodule is imported on first use."""
    import importlib
    import importlib.util
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
