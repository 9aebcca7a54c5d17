"""The gpt2 LM with every transformer block wrapped in jax.checkpoint (flax `nn.remat`)."""

from . import common, gpt2


def make_step(size: str = "small"):
    c = common.pick(gpt2.SIZES, size)
    return common.flax_step("remat", f"gpt2 with remat blocks, {gpt2.describe(c)}, AdamW",
                            gpt2.lm(c, remat=True), gpt2.lm_batch(c), common.adamw(),
                            common.next_token_loss)
