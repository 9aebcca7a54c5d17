"""DenseNet (every layer's output concatenated onto its input) with batch norm and SGD + momentum."""

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from . import common

SIZES = {
    "tiny": dict(batch=4, image=16, growth=8, blocks=(2, 2), classes=10),
    "small": dict(batch=32, image=64, growth=16, blocks=(6, 8, 6), classes=100),
    "full": dict(batch=32, image=224, growth=32, blocks=(6, 12, 24, 16), classes=1000),  # DenseNet-121
}


class DenseNet(nn.Module):
    blocks: tuple[int, ...]
    growth: int
    classes: int

    @nn.compact
    def __call__(self, x):
        norm = partial(nn.BatchNorm, use_running_average=False, momentum=0.9)
        conv = partial(nn.Conv, use_bias=False)
        x = nn.max_pool(conv(2 * self.growth, (7, 7), 2)(x), (3, 3), (2, 2), padding="SAME")
        for i, layers in enumerate(self.blocks):
            if i:  # transition: halve channels and resolution
                x = conv(x.shape[-1] // 2, (1, 1))(nn.relu(norm()(x)))
                x = nn.avg_pool(x, (2, 2), (2, 2))
            for _ in range(layers):  # bottleneck layer, concatenated onto everything before it
                y = conv(4 * self.growth, (1, 1))(nn.relu(norm()(x)))
                y = conv(self.growth, (3, 3))(nn.relu(norm()(y)))
                x = jnp.concatenate([x, y], axis=-1)
        return nn.Dense(self.classes)(nn.relu(norm()(x)).mean(axis=(1, 2)))


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    model = DenseNet(c["blocks"], c["growth"], c["classes"])
    batch = {"x": common.images(c["batch"], c["image"]), "y": common.labels(c["batch"], c["classes"])}
    desc = f"DenseNet blocks {c['blocks']}, growth {c['growth']}, {c['image']}px, batch {c['batch']}, BN, SGD"
    return common.flax_step("densenet", desc, model, batch, common.sgd(), common.classify_loss,
                            collections=("batch_stats",))
