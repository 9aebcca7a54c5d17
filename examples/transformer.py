"""Transformer pieces shared by gpt2, bert, vit, remat, donated and grad_accum.

Attention is written with einsum + softmax (no fused or cuDNN kernels)."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class SelfAttention(nn.Module):
    heads: int
    causal: bool = False

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        q, k, v = (nn.DenseGeneral((self.heads, d // self.heads), name=n)(x) for n in "qkv")
        scores = jnp.einsum("bqhk,bshk->bhqs", q, k) / jnp.sqrt(q.shape[-1]).astype(x.dtype)
        if self.causal:
            t = x.shape[-2]
            scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, jnp.finfo(x.dtype).min)
        out = jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(scores, axis=-1), v)
        return nn.DenseGeneral(d, axis=(-2, -1), name="out")(out)


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""
    heads: int
    causal: bool = False
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        x = x + SelfAttention(self.heads, self.causal)(nn.LayerNorm()(x))
        h = nn.gelu(nn.Dense(self.mlp_ratio * d)(nn.LayerNorm()(x)))
        return x + nn.Dense(d)(h)


class Transformer(nn.Module):
    """A stack of blocks and a final LayerNorm; `remat` wraps each block in jax.checkpoint."""
    layers: int
    heads: int
    causal: bool = False
    remat: bool = False

    @nn.compact
    def __call__(self, x):
        block = nn.remat(Block) if self.remat else Block
        for i in range(self.layers):
            x = block(self.heads, self.causal, name=f"block{i}")(x)
        return nn.LayerNorm()(x)
