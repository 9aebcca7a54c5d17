"""Stacked LSTM language model; the recurrence is a lax.scan (flax `nn.RNN`). Adam."""

import flax.linen as nn

from . import common

SIZES = {
    "tiny": dict(batch=2, seq=16, vocab=64, hidden=32, layers=1),
    "small": dict(batch=32, seq=64, vocab=4096, hidden=512, layers=2),
    "full": dict(batch=20, seq=35, vocab=10000, hidden=1500, layers=2),  # Zaremba et al. large (PTB)
}


class LSTMLM(nn.Module):
    vocab: int
    hidden: int
    layers: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.hidden)(tokens)
        for _ in range(self.layers):
            x = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)
        return nn.Dense(self.vocab)(x)


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    batch = {"x": common.tokens((c["batch"], c["seq"]), c["vocab"])}
    desc = (f"{c['layers']}-layer LSTM LM, hidden {c['hidden']}, seq {c['seq']}, vocab {c['vocab']}, "
            f"batch {c['batch']}, Adam")
    return common.flax_step("lstm", desc, LSTMLM(c["vocab"], c["hidden"], c["layers"]), batch,
                            common.adam(), common.next_token_loss)
