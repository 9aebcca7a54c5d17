"""A decoder-only transformer LM with hand-written AdamW in plain jax (no flax, no optax).

At size "small" it is the "4-layer d=256 transformer LM with AdamW" of
shared/notes/xla-feedback.md section 1: its parameter bytes match (vocab 2048, tied embeddings);
batch and sequence length are not recorded there, so temp differs (see examples/README.md)."""

import jax
import jax.numpy as jnp

from . import common
from .step import Step

SIZES = {
    "tiny": dict(batch=2, seq=32, vocab=256, d=64, layers=2, heads=2),
    "small": dict(batch=8, seq=128, vocab=2048, d=256, layers=4, heads=4),
    "full": dict(batch=16, seq=512, vocab=32768, d=512, layers=8, heads=8),
}


def init(key, vocab, seq, d, layers):
    keys = iter(jax.random.split(key, 4 * layers + 2))

    def dense(n, m):
        return jax.random.normal(next(keys), (n, m)) * 0.02

    def norm():
        return {"scale": jnp.ones(d), "bias": jnp.zeros(d)}

    blocks = [{"ln1": norm(), "qkv": dense(d, 3 * d), "out": dense(d, d), "ln2": norm(),
               "up": dense(d, 4 * d), "up_b": jnp.zeros(4 * d), "down": dense(4 * d, d),
               "down_b": jnp.zeros(d)} for _ in range(layers)]
    return {"embed": dense(vocab, d), "pos": dense(seq, d), "blocks": blocks, "ln_f": norm()}


def layer_norm(x, p, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def attention(x, p, heads):
    b, t, d = x.shape
    q, k, v = (x @ p["qkv"]).reshape(b, t, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
    scores = q @ k.swapaxes(-1, -2) / jnp.sqrt(d // heads)
    scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -1e30)
    out = jax.nn.softmax(scores, axis=-1) @ v  # (b, heads, t, d_head)
    return out.transpose(0, 2, 1, 3).reshape(b, t, d) @ p["out"]


def forward(params, tokens, heads):
    x = params["embed"][tokens] + params["pos"][: tokens.shape[1]]
    for p in params["blocks"]:
        x = x + attention(layer_norm(x, p["ln1"]), p, heads)
        h = jax.nn.gelu(layer_norm(x, p["ln2"]) @ p["up"] + p["up_b"])
        x = x + h @ p["down"] + p["down_b"]
    return layer_norm(x, params["ln_f"]) @ params["embed"].T


def train_step(params, opt_state, batch, heads):
    def loss_fn(p):
        return common.next_token_loss(forward(p, batch["x"], heads), batch)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    params, opt_state = common.adamw_update(params, grads, opt_state, lr=3e-4, weight_decay=0.01)
    return params, opt_state, loss


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    params = jax.jit(init, static_argnums=(1, 2, 3, 4))(common.KEY, c["vocab"], c["seq"], c["d"],
                                                         c["layers"])
    batch = {"x": common.tokens((c["batch"], c["seq"]), c["vocab"])}
    desc = (f"plain-jax transformer LM, {c['layers']} layers, d={c['d']}, seq {c['seq']}, "
            f"vocab {c['vocab']}, batch {c['batch']}, hand-written AdamW")
    return Step("lm_adamw", train_step, (params, common.adamw_init(params), batch, c["heads"]),
                static_argnums=(3,), description=desc)
