"""GPT-2-style decoder LM (causal attention, tied embeddings) with AdamW.

`lm_batch`/`LM`/`SIZES` are reused by remat, donated and grad_accum so that their numbers
compare directly with this one."""

import flax.linen as nn
import jax.numpy as jnp

from . import common
from .transformer import Transformer

SIZES = {
    "tiny": dict(batch=2, seq=32, vocab=256, d=64, layers=2, heads=2),
    "small": dict(batch=4, seq=256, vocab=8192, d=256, layers=6, heads=4),
    "full": dict(batch=8, seq=1024, vocab=50257, d=768, layers=12, heads=12),  # GPT-2 small
}


class LM(nn.Module):
    vocab: int
    seq: int
    d: int
    layers: int
    heads: int
    remat: bool = False

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(self.vocab, self.d)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.seq, self.d))
        x = embed(tokens) + pos[: tokens.shape[-1]]
        x = Transformer(self.layers, self.heads, causal=True, remat=self.remat)(x)
        return embed.attend(x)


def lm(c, remat=False):
    return LM(c["vocab"], c["seq"], c["d"], c["layers"], c["heads"], remat)


def lm_batch(c, shape=None):
    return {"x": common.tokens(shape or (c["batch"], c["seq"]), c["vocab"])}


def describe(c):
    return f"{c['layers']} layers, d={c['d']}, seq {c['seq']}, vocab {c['vocab']}, batch {c['batch']}"


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    return common.flax_step("gpt2", f"GPT-2-style LM, {describe(c)}, AdamW", lm(c), lm_batch(c),
                            common.adamw(), common.next_token_loss)
