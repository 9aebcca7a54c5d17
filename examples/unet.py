"""U-Net denoiser (skip connections by concatenation, GroupNorm) with an MSE loss and Adam."""

import flax.linen as nn
import jax.numpy as jnp

from . import common

SIZES = {
    "tiny": dict(batch=2, image=16, widths=(8, 16)),
    "small": dict(batch=8, image=64, widths=(32, 64, 128, 256)),
    "full": dict(batch=4, image=256, widths=(64, 128, 256, 512, 1024)),  # original U-Net widths
}


class ConvBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.silu(nn.GroupNorm(num_groups=8)(nn.Conv(self.features, (3, 3))(x)))
        return x


class UNet(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        channels, skips = x.shape[-1], []
        for w in self.widths[:-1]:
            x = ConvBlock(w)(x)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = ConvBlock(self.widths[-1])(x)
        for w, skip in zip(reversed(self.widths[:-1]), reversed(skips)):
            x = nn.ConvTranspose(w, (2, 2), strides=(2, 2))(x)
            x = ConvBlock(w)(jnp.concatenate([x, skip], axis=-1))
        return nn.Conv(channels, (1, 1))(x)


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    clean = common.images(c["batch"], c["image"])
    noise = common.images(c["batch"], c["image"], seed=5)
    batch = {"x": clean + noise, "y": noise}
    desc = f"U-Net widths {c['widths']}, {c['image']}px, batch {c['batch']}, noise-prediction MSE, Adam"
    return common.flax_step("unet", desc, UNet(c["widths"]), batch, common.adam(), common.mse_loss)
