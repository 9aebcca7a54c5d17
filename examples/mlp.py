"""A plain multi-layer perceptron classifier with Adam."""

import flax.linen as nn

from . import common

SIZES = {
    "tiny": dict(batch=8, features=32, width=64, depth=2, classes=10),
    "small": dict(batch=4096, features=784, width=2048, depth=4, classes=10),
    "full": dict(batch=1024, features=784, width=4096, depth=8, classes=1000),
}


class MLP(nn.Module):
    width: int
    depth: int
    classes: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.classes)(x)


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    batch = {"x": common.images(c["batch"], 1, c["features"]).reshape(c["batch"], -1),
             "y": common.labels(c["batch"], c["classes"])}
    model = MLP(c["width"], c["depth"], c["classes"])
    return common.flax_step("mlp", f"MLP {c['depth']}x{c['width']}, batch {c['batch']}, Adam",
                            model, batch, common.adam(), common.classify_loss)
