"""Vision Transformer classifier (patch embedding, class token) with AdamW."""

import flax.linen as nn
import jax.numpy as jnp

from . import common
from .transformer import Transformer

SIZES = {
    "tiny": dict(batch=4, image=16, patch=4, d=64, layers=2, heads=2, classes=10),
    "small": dict(batch=16, image=64, patch=8, d=256, layers=6, heads=4, classes=100),
    "full": dict(batch=32, image=224, patch=16, d=768, layers=12, heads=12, classes=1000),  # ViT-B/16
}


class ViT(nn.Module):
    patch: int
    d: int
    layers: int
    heads: int
    classes: int

    @nn.compact
    def __call__(self, images):
        p = self.patch
        x = nn.Conv(self.d, (p, p), strides=(p, p), padding="VALID")(images)
        x = x.reshape(x.shape[0], -1, self.d)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.d)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), x.shape[1:])
        x = Transformer(self.layers, self.heads)(x)
        return nn.Dense(self.classes)(x[:, 0])


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    model = ViT(c["patch"], c["d"], c["layers"], c["heads"], c["classes"])
    batch = {"x": common.images(c["batch"], c["image"]), "y": common.labels(c["batch"], c["classes"])}
    desc = (f"ViT {c['image']}px/{c['patch']}, {c['layers']} layers, d={c['d']}, "
            f"batch {c['batch']}, AdamW")
    return common.flax_step("vit", desc, model, batch, common.adamw(), common.classify_loss)
