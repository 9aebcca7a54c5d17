"""Pieces shared by the examples: random data, losses, optimizers and the train-step builder."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from .step import Step

# "rbg" keys lower to XLA's RngBitGenerator: far cheaper to compile than threefry, which
# dominated the time to initialise a model.
KEY = jax.random.key(0, impl="rbg")


class Sized(str):
    """A size name ("tiny", ...) carrying overrides of its configuration, e.g. the batch size.

    It equals and hashes as the plain name, so modules that branch on the size
    (``size == "tiny"``, ``MICRO[size]``) see the name; ``pick`` applies the overrides."""
    overrides: dict[str, Any]

    def __new__(cls, name: str, **overrides: Any) -> "Sized":
        sized = super().__new__(cls, name)
        sized.overrides = dict(overrides)
        return sized


def pick(sizes: Mapping[str, Any], size: str) -> Any:
    if size not in sizes:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(sizes)}")
    overrides = getattr(size, "overrides", {})
    unknown = set(overrides) - set(sizes[size])
    if unknown:
        raise ValueError(f"this example has no setting {sorted(unknown)} to override; "
                         f"it has {sorted(sizes[size])}")
    return {**sizes[size], **overrides} if overrides else sizes[size]


# ---------------------------------------------------------------- random data (fixed keys)

def images(batch: int, hw: int, channels: int = 3, seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(KEY, seed), (batch, hw, hw, channels), jnp.float32)


def labels(batch: int, classes: int, seed: int = 2) -> jax.Array:
    return jax.random.randint(jax.random.fold_in(KEY, seed), (batch,), 0, classes)


def tokens(shape: tuple[int, ...], vocab: int, seed: int = 3) -> jax.Array:
    return jax.random.randint(jax.random.fold_in(KEY, seed), shape, 0, vocab)


# ---------------------------------------------------------------- losses: loss(output, batch)

def xent(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    per_item = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if weights is None:
        return per_item.mean()
    return (per_item * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def classify_loss(logits, batch):
    return xent(logits, batch["y"])


def next_token_loss(logits, batch):
    return xent(logits[..., :-1, :], batch["x"][..., 1:])


def mse_loss(pred, batch):
    return jnp.mean((pred - batch["y"]) ** 2)


# ---------------------------------------------------------------- optimizers

def adam(lr: float = 1e-3) -> optax.GradientTransformation:
    return optax.adam(lr)


def adamw(lr: float = 3e-4, weight_decay: float = 0.01) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=weight_decay))


def sgd(lr: float = 0.1, momentum: float = 0.9) -> optax.GradientTransformation:
    return optax.sgd(lr, momentum=momentum, nesterov=True)


# hand-written AdamW for the plain-jax examples (weight_decay=0 gives Adam)

def adamw_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return {"m": zeros, "v": zeros, "t": jnp.zeros((), jnp.int32)}


def adamw_update(params, grads, state, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    t = state["t"] + 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], grads)
    c1, c2 = 1 - b1 ** t.astype(jnp.float32), 1 - b2 ** t.astype(jnp.float32)

    def new(p, m, v):
        return p - lr * ((m / c1) / (jnp.sqrt(v / c2) + eps) + weight_decay * p)

    return jax.tree.map(new, params, m, v), {"m": m, "v": v, "t": t}


# ---------------------------------------------------------------- train steps for flax.linen models

def model_loss(model, loss: Callable, collections: tuple[str, ...] = ()) -> Callable:
    """loss_fn(params, state, batch) -> (loss, new_state); `state` holds mutable collections."""
    def loss_fn(params, state, batch):
        variables = {"params": params, **state}
        if collections:
            out, state = model.apply(variables, batch["x"], mutable=list(collections))
        else:
            out = model.apply(variables, batch["x"])
        return loss(out, batch), state

    return loss_fn


def train_step(loss_fn: Callable, tx: optax.GradientTransformation, has_state: bool) -> Callable:
    """Forward + backward + optimizer update in one function."""
    def update(params, state, opt_state, batch):
        (value, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, value

    if has_state:
        return update

    def step(params, opt_state, batch):
        params, _, opt_state, value = update(params, {}, opt_state, batch)
        return params, opt_state, value

    return step


_INITS: dict = {}   # {(model, input shape): variables}: recent inits, the most recent last
INIT_CACHE_BYTES = 256 * 2**20   # what the kept variables may hold together (one at least)


def _init(model, x) -> dict:
    """``model.init(KEY, x)``; the same model on the same shape again (a step remade at
    another batch size, as ``olla_jax.largest_batch`` does per probe, or built again
    after other examples, as the test suite does) reuses its variables instead of
    compiling init again (seconds per call on a loaded machine)."""
    key = (type(model).__module__, type(model).__qualname__, repr(model), x.shape, str(x.dtype))
    if key in _INITS:
        _INITS[key] = _INITS.pop(key)
    else:
        _INITS[key] = jax.jit(model.init)(KEY, x)
    while len(_INITS) > 1 and sum(leaf.nbytes for v in _INITS.values()
                                  for leaf in jax.tree_util.tree_leaves(v)) > INIT_CACHE_BYTES:
        del _INITS[next(iter(_INITS))]     # the least recently used
    # copies: a step that donates its parameters must not delete the next step's
    return dict(jax.tree_util.tree_map(jnp.copy, _INITS[key]))


def flax_step(name: str, description: str, model, batch: dict, tx: optax.GradientTransformation,
              loss: Callable, *, collections: tuple[str, ...] = (), donate: bool = False,
              make_fn: Callable = train_step, init_x=None) -> Step:
    """Initialise `model` on one example of `batch["x"]` and package its train step.

    Arguments are `(params, opt_state, batch)`, or `(params, state, opt_state, batch)` when the
    model has mutable `collections` (e.g. batch_stats); the step returns them updated plus the loss.
    """
    x = batch["x"][:1] if init_x is None else init_x  # parameters do not depend on the batch size
    variables = _init(model, x)
    params = variables.pop("params")
    state = {c: variables[c] for c in collections}
    opt_state = tx.init(params)
    fn = make_fn(model_loss(model, loss, collections), tx, bool(collections))
    args = (params, state, opt_state, batch) if collections else (params, opt_state, batch)
    donate_argnums = tuple(range(len(args) - 1)) if donate else ()
    return Step(name, fn, args, donate_argnums=donate_argnums, description=description)
