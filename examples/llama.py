"""A Llama-style decoder LM train step, built to be sharded (issue 23's example family).

RMSNorm, rotary position embeddings, grouped-query attention, a SwiGLU MLP,
untied embeddings, the causal next-token loss and optax's AdamW, in plain jax.
Knobs (``Config``): layers, d_model, heads, kv_heads, seq, batch, vocab,
``scan`` (the blocks' parameters stacked and run by ``jax.lax.scan``) or
unrolled (a Python loop over per-block parameters), ``remat`` (each block under
``jax.checkpoint``) and ``constrain`` (``with_sharding_constraint`` on the
hidden state between blocks, batch split over the mesh axis).

    from examples import llama
    step = llama.make_step(llama.Config(layers=8, d_model=512, scan=True, remat=True))
    specs = llama.shardings(step, "fsdp", devices=8)   # in_shardings for olla_jax.plan

Not in ``examples.EXAMPLES`` (its sizes are chosen per benchmark, and the
suite's per-example tests stay as they are); ``benchmarks/sharded_llm.py``
compiles it for several compile-only GPUs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from . import common
from .step import Step

AXIS = "x"   # the mesh axis (olla_jax.plan's default mesh_axes is {"x": num_devices})
SHARDINGS = ("dp", "fsdp")


@dataclasses.dataclass(frozen=True)
class Config:
    layers: int = 2
    d_model: int = 256
    heads: int = 4
    kv_heads: int = 2
    seq: int = 128
    batch: int = 8
    vocab: int = 2048
    ffn: int | None = None      # None: about 8/3 d_model, rounded up to a multiple of 64
    scan: bool = False
    remat: bool = True
    constrain: bool = False     # with_sharding_constraint on the hidden state (batch split)

    def __post_init__(self):
        for name in ("layers", "d_model", "heads", "kv_heads", "seq", "batch", "vocab"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Config.{name} must be a positive int, got {value!r}")
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into {self.heads} heads of an "
                             "even size (rotary embeddings rotate pairs)")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} must be a multiple of kv_heads {self.kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def hidden(self) -> int:
        return self.ffn or -(-8 * self.d_model // 3 // 64) * 64

    def describe(self) -> str:
        return (f"Llama-style LM, {self.layers} layers, d={self.d_model}, {self.heads} heads "
                f"({self.kv_heads} kv), ffn {self.hidden}, seq {self.seq}, batch {self.batch}, "
                f"vocab {self.vocab}, {'scanned' if self.scan else 'unrolled'}"
                f"{', remat per block' if self.remat else ''}"
                f"{', activation sharding constraint' if self.constrain else ''}, AdamW")


def init(key, c: Config) -> dict:
    keys = iter(jax.random.split(key, 7 * c.layers + 2))

    def dense(n, m):
        return jax.random.normal(next(keys), (n, m)) * (n ** -0.5)

    kv = c.kv_heads * c.head_dim
    blocks = [{"attn_norm": jnp.ones(c.d_model), "wq": dense(c.d_model, c.d_model),
               "wk": dense(c.d_model, kv), "wv": dense(c.d_model, kv),
               "wo": dense(c.d_model, c.d_model), "mlp_norm": jnp.ones(c.d_model),
               "w_gate": dense(c.d_model, c.hidden), "w_up": dense(c.d_model, c.hidden),
               "w_down": dense(c.hidden, c.d_model)} for _ in range(c.layers)]
    if c.scan:
        blocks = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return {"embed": dense(c.vocab, c.d_model), "blocks": blocks,
            "final_norm": jnp.ones(c.d_model), "head": dense(c.d_model, c.vocab)}


def rms_norm(x, scale, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def rotary(x, positions):
    """Rotate pairs of features (first half, second half) by position-dependent angles."""
    half = x.shape[-1] // 2
    freq = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[:, None] * freq[None, :]                  # (seq, half)
    cos, sin = jnp.cos(angle)[:, None, :], jnp.sin(angle)[:, None, :]  # (seq, 1, half)
    a, b = x[..., :half], x[..., half:]
    return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def attention(x, p, c: Config):
    b, t, _ = x.shape
    groups = c.heads // c.kv_heads
    positions = jnp.arange(t, dtype=jnp.float32)
    q = rotary((x @ p["wq"]).reshape(b, t, c.heads, c.head_dim), positions)
    k = rotary((x @ p["wk"]).reshape(b, t, c.kv_heads, c.head_dim), positions)
    v = (x @ p["wv"]).reshape(b, t, c.kv_heads, c.head_dim)
    q = q.reshape(b, t, c.kv_heads, groups, c.head_dim)         # grouped-query: heads share k, v
    scores = jnp.einsum("bqkgh,bskh->bkgqs", q, k) / jnp.sqrt(jnp.float32(c.head_dim))
    scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -1e30)
    out = jnp.einsum("bkgqs,bskh->bqkgh", jax.nn.softmax(scores, axis=-1), v)
    return out.reshape(b, t, c.d_model) @ p["wo"]


def block(x, p, c: Config):
    x = x + attention(rms_norm(x, p["attn_norm"]), p, c)
    h = rms_norm(x, p["mlp_norm"])
    x = x + (jax.nn.silu(h @ p["w_gate"]) * (h @ p["w_up"])) @ p["w_down"]
    if c.constrain:
        x = jax.lax.with_sharding_constraint(x, P(AXIS))
    return x


def forward(params, tokens, c: Config):
    x = params["embed"][tokens]
    if c.constrain:
        x = jax.lax.with_sharding_constraint(x, P(AXIS))
    run = jax.checkpoint(lambda x, p: block(x, p, c)) if c.remat else \
        (lambda x, p: block(x, p, c))
    if c.scan:
        x, _ = jax.lax.scan(lambda x, p: (run(x, p), None), x, params["blocks"])
    else:
        for p in params["blocks"]:
            x = run(x, p)
    return rms_norm(x, params["final_norm"]) @ params["head"]


def optimizer() -> optax.GradientTransformation:
    return optax.adamw(3e-4, weight_decay=0.1)


def train_step_fn(c: Config):
    tx = optimizer()

    def train_step(params, opt_state, tokens):
        def loss_fn(p):
            return common.next_token_loss(forward(p, tokens, c), {"x": tokens})

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def make_step(c: Config | None = None) -> Step:
    """The step on abstract arguments (``jax.ShapeDtypeStruct``: nothing is initialised),
    parameters and optimizer state donated."""
    c = c or Config()
    params = jax.eval_shape(lambda: init(common.KEY, c))
    opt_state = jax.eval_shape(optimizer().init, params)
    tokens = jax.ShapeDtypeStruct((c.batch, c.seq), jnp.int32)
    return Step("llama", train_step_fn(c), (params, opt_state, tokens), donate_argnums=(0, 1),
                description=c.describe())


def _split_largest(leaf: Any, devices: int) -> P:
    """FSDP: split a leaf's largest dimension that the devices divide (the first of equals);
    a stacked layer dimension is never the largest for the sizes used here."""
    shape = getattr(leaf, "shape", ())
    dims = [i for i, n in enumerate(shape) if n % devices == 0]
    if not dims:
        return P()
    best = max(dims, key=lambda i: (shape[i], -i))
    return P(*([None] * best + [AXIS]))


def shardings(step: Step, kind: str, devices: int) -> tuple:
    """PartitionSpecs for (params, opt_state, tokens): the batch is split in both;
    "dp" replicates parameters and optimizer state (gradients are all-reduced),
    "fsdp" splits each of them along its largest divisible dimension (parameters
    all-gathered where used, gradients reduce-scattered)."""
    if kind not in SHARDINGS:
        raise ValueError(f"unknown sharding {kind!r}; choose from {', '.join(SHARDINGS)}")
    params, opt_state, tokens = step.args
    if tokens.shape[0] % devices:
        raise ValueError(f"batch {tokens.shape[0]} does not split over {devices} devices")
    if kind == "dp":
        weights = lambda leaf: P()  # noqa: E731
    else:
        weights = lambda leaf: _split_largest(leaf, devices)  # noqa: E731
    return jax.tree.map(weights, params), jax.tree.map(weights, opt_state), P(AXIS)
