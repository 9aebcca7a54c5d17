"""The gpt2 train step with params and optimizer state donated (outputs may reuse them)."""

from . import common, gpt2


def make_step(size: str = "small"):
    c = common.pick(gpt2.SIZES, size)
    return common.flax_step("donated", f"gpt2, params+opt state donated, {gpt2.describe(c)}, AdamW",
                            gpt2.lm(c), gpt2.lm_batch(c), common.adamw(),
                            common.next_token_loss, donate=True)
