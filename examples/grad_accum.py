"""The gpt2 LM trained with gradient accumulation: lax.scan over micro-batches, one update."""

import jax
import jax.numpy as jnp
import optax

from . import common, gpt2

MICRO = {"tiny": 2, "small": 4, "full": 4}


def accumulating_step(loss_fn, tx, has_state):
    assert not has_state

    def step(params, opt_state, batch):
        def micro(acc, mb):
            (value, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, {}, mb)
            return jax.tree.map(jnp.add, acc, (value, grads)), None

        zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
        (total, grads), _ = jax.lax.scan(micro, zero, batch)
        n = jax.tree.leaves(batch)[0].shape[0]
        grads = jax.tree.map(lambda g: g / n, grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, total / n

    return step


def make_step(size: str = "small"):
    c = common.pick(gpt2.SIZES, size)
    m = MICRO[size]
    if c["batch"] % m:
        raise ValueError(f"grad_accum splits its batch into {m} micro-batches at size {size}: "
                         f"give a batch size that is a multiple of {m}, not {c['batch']}")
    batch = gpt2.lm_batch(c, (m, c["batch"] // m, c["seq"]))  # same tokens per step as gpt2
    return common.flax_step("grad_accum", f"gpt2 with {m} micro-batches (lax.scan), {gpt2.describe(c)}",
                            gpt2.lm(c), batch, common.adamw(), common.next_token_loss,
                            make_fn=accumulating_step, init_x=batch["x"][0])
