"""The README's training loop (README.md, "A training loop"), kept here verbatim below this
docstring: tests/test_readme.py runs it and checks the README shows the same code."""

import jax, jax.numpy as jnp, optax, flax.linen as nn
import olla_jax

model = nn.Sequential([nn.Dense(512), nn.relu, nn.Dense(10)])
params = model.init(jax.random.key(0), jnp.ones((64, 784)))
opt = optax.adam(1e-3)
opt_state = opt.init(params)

@olla_jax.jit(donate_argnums=(0, 1), time_limit_s=10)      # was: @jax.jit(donate_argnums=(0, 1))
def train_step(params, opt_state, x, y):
    def loss_fn(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

for step in range(20):
    x, y = jax.random.normal(jax.random.key(step), (64, 784)), jnp.arange(64) % 10
    params, opt_state, loss = train_step(params, opt_state, x, y=y)
print(train_step.plan_for(params, opt_state, x, y=y).summary())
