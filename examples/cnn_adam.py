"""A small CNN with hand-written Adam in plain jax (no flax, no optax).

At size "small" it is the pure-jax "CNN with Adam (batch 32, 32x32x3, widths 32/64/128)" of
shared/notes/xla-feedback.md section 1 (architecture reconstructed: conv3x3-relu-maxpool x3, dense)."""

import jax
import jax.numpy as jnp
from jax import lax

from . import common
from .step import Step

SIZES = {
    "tiny": dict(batch=4, image=16, widths=(8, 16), classes=10),
    "small": dict(batch=32, image=32, widths=(32, 64, 128), classes=10),
    "full": dict(batch=128, image=32, widths=(64, 128, 256), classes=10),
}


def init(key, widths, image, classes, channels=3):
    keys = jax.random.split(key, len(widths) + 1)
    convs, cin = [], channels
    for k, cout in zip(keys, widths):
        w = jax.random.normal(k, (3, 3, cin, cout)) * jnp.sqrt(2.0 / (9 * cin))
        convs.append({"w": w, "b": jnp.zeros(cout)})
        cin = cout
    features = cin * (image // 2 ** len(widths)) ** 2
    dense = {"w": jax.random.normal(keys[-1], (features, classes)) / jnp.sqrt(features),
             "b": jnp.zeros(classes)}
    return {"convs": convs, "dense": dense}


def forward(params, x):
    for p in params["convs"]:
        x = lax.conv_general_dilated(x, p["w"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + p["b"])
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return x.reshape(x.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]


def train_step(params, opt_state, batch):
    def loss_fn(p):
        return common.xent(forward(p, batch["x"]), batch["y"])

    loss, grads = jax.value_and_grad(loss_fn)(params)
    params, opt_state = common.adamw_update(params, grads, opt_state, lr=1e-3)
    return params, opt_state, loss


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    params = jax.jit(init, static_argnums=(1, 2, 3))(common.KEY, c["widths"], c["image"], c["classes"])
    batch = {"x": common.images(c["batch"], c["image"]), "y": common.labels(c["batch"], c["classes"])}
    desc = f"plain-jax CNN widths {c['widths']}, {c['image']}px, batch {c['batch']}, hand-written Adam"
    return Step("cnn_adam", train_step, (params, common.adamw_init(params), batch), description=desc)
