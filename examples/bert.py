"""BERT-style encoder (bidirectional attention) with a masked-language-model loss and AdamW."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import common
from .transformer import Transformer

SIZES = {
    "tiny": dict(batch=2, seq=32, vocab=256, d=64, layers=2, heads=2),
    "small": dict(batch=4, seq=256, vocab=8192, d=256, layers=6, heads=4),
    "full": dict(batch=8, seq=512, vocab=30522, d=768, layers=12, heads=12),  # BERT-base
}


class BertMLM(nn.Module):
    vocab: int
    seq: int
    d: int
    layers: int
    heads: int

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(self.vocab, self.d)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.seq, self.d))
        x = nn.LayerNorm()(embed(tokens) + pos[: tokens.shape[-1]])
        x = Transformer(self.layers, self.heads)(x)
        x = nn.LayerNorm()(nn.gelu(nn.Dense(self.d)(x)))  # MLM head transform
        return embed.attend(x) + self.param("bias", nn.initializers.zeros, (self.vocab,))


def mlm_batch(c, mask_rate=0.15):
    """Random tokens with `mask_rate` of them replaced by a [MASK] id (the last one)."""
    y = common.tokens((c["batch"], c["seq"]), c["vocab"] - 1)
    w = jax.random.bernoulli(jax.random.fold_in(common.KEY, 4), mask_rate, y.shape)
    return {"x": jnp.where(w, c["vocab"] - 1, y), "y": y, "w": w.astype(jnp.float32)}


def mlm_loss(logits, batch):
    return common.xent(logits, batch["y"], batch["w"])


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    model = BertMLM(c["vocab"], c["seq"], c["d"], c["layers"], c["heads"])
    desc = f"BERT-style MLM, {c['layers']} layers, d={c['d']}, seq {c['seq']}, batch {c['batch']}, AdamW"
    return common.flax_step("bert", desc, model, mlm_batch(c), common.adamw(), mlm_loss)
