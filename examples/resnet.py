"""ResNet with batch norm (running stats live in the `batch_stats` state), SGD + Nesterov momentum.

Used by resnet18 and resnet50: "small" narrows the network and shrinks the images, keeping the
depth; "tiny" also keeps only one block per stage (to compile in a few seconds)."""

from functools import partial

import flax.linen as nn

from . import common

SIZES = {
    "tiny": dict(batch=4, image=16, width=8, classes=10),
    "small": dict(batch=32, image=64, width=32, classes=100),
    "full": dict(batch=32, image=224, width=64, classes=1000),
}


class BasicBlock(nn.Module):
    filters: int
    strides: int = 1
    expansion = 1

    @nn.compact
    def __call__(self, x, norm):
        y = nn.relu(norm()(nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(x)))
        y = norm(scale_init=nn.initializers.zeros)(nn.Conv(self.filters, (3, 3), use_bias=False)(y))
        return nn.relu(y + shortcut(x, y, self.strides, norm))


class Bottleneck(nn.Module):
    filters: int
    strides: int = 1
    expansion = 4

    @nn.compact
    def __call__(self, x, norm):
        y = nn.relu(norm()(nn.Conv(self.filters, (1, 1), use_bias=False)(x)))
        y = nn.relu(norm()(nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(y)))
        y = norm(scale_init=nn.initializers.zeros)(nn.Conv(4 * self.filters, (1, 1), use_bias=False)(y))
        return nn.relu(y + shortcut(x, y, self.strides, norm))


def shortcut(x, y, strides, norm):
    if x.shape == y.shape:
        return x
    return norm()(nn.Conv(y.shape[-1], (1, 1), strides, use_bias=False)(x))


class ResNet(nn.Module):
    stages: tuple[int, ...]
    block: type
    width: int
    classes: int

    @nn.compact
    def __call__(self, x):
        norm = partial(nn.BatchNorm, use_running_average=False, momentum=0.9)
        x = nn.relu(norm()(nn.Conv(self.width, (7, 7), 2, use_bias=False)(x)))
        x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        for i, blocks in enumerate(self.stages):
            for j in range(blocks):
                x = self.block(self.width * 2 ** i, 2 if i > 0 and j == 0 else 1)(x, norm)
        return nn.Dense(self.classes)(x.mean(axis=(1, 2)))


def make_step(name: str, stages: tuple[int, ...], block: type, size: str):
    c = common.pick(SIZES, size)
    stages = (1,) * len(stages) if size == "tiny" else stages
    model = ResNet(stages, block, c["width"], c["classes"])
    batch = {"x": common.images(c["batch"], c["image"]), "y": common.labels(c["batch"], c["classes"])}
    desc = f"ResNet {stages}, width {c['width']}, {c['image']}px, batch {c['batch']}, BN, SGD+momentum"
    return common.flax_step(name, desc, model, batch, common.sgd(), common.classify_loss,
                            collections=("batch_stats",))
