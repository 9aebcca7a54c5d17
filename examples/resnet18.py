"""ResNet-18 (basic blocks) with batch norm and SGD + momentum."""

from . import resnet


def make_step(size: str = "small"):
    return resnet.make_step("resnet18", (2, 2, 2, 2), resnet.BasicBlock, size)
