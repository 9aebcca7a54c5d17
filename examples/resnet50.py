"""ResNet-50 (bottleneck blocks) with batch norm and SGD + momentum."""

from . import resnet


def make_step(size: str = "small"):
    return resnet.make_step("resnet50", (3, 4, 6, 3), resnet.Bottleneck, size)
