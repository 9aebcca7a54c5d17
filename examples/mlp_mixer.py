"""MLP-Mixer classifier (token-mixing and channel-mixing MLPs) with Adam."""

import flax.linen as nn

from . import common

SIZES = {
    "tiny": dict(batch=4, image=16, patch=4, d=64, layers=2, tokens_mlp=32, channels_mlp=128, classes=10),
    "small": dict(batch=16, image=64, patch=8, d=256, layers=8, tokens_mlp=128, channels_mlp=1024,
                  classes=100),
    "full": dict(batch=32, image=224, patch=16, d=768, layers=12, tokens_mlp=384, channels_mlp=3072,
                 classes=1000),  # Mixer-B/16
}


class MlpBlock(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.hidden)(x)))


class MixerBlock(nn.Module):
    tokens_mlp: int
    channels_mlp: int

    @nn.compact
    def __call__(self, x):  # (batch, tokens, channels)
        x = x + MlpBlock(self.tokens_mlp)(nn.LayerNorm()(x).swapaxes(1, 2)).swapaxes(1, 2)
        return x + MlpBlock(self.channels_mlp)(nn.LayerNorm()(x))


class Mixer(nn.Module):
    patch: int
    d: int
    layers: int
    tokens_mlp: int
    channels_mlp: int
    classes: int

    @nn.compact
    def __call__(self, images):
        p = self.patch
        x = nn.Conv(self.d, (p, p), strides=(p, p), padding="VALID")(images)
        x = x.reshape(x.shape[0], -1, self.d)
        for _ in range(self.layers):
            x = MixerBlock(self.tokens_mlp, self.channels_mlp)(x)
        return nn.Dense(self.classes)(nn.LayerNorm()(x).mean(axis=1))


def make_step(size: str = "small"):
    c = common.pick(SIZES, size)
    model = Mixer(c["patch"], c["d"], c["layers"], c["tokens_mlp"], c["channels_mlp"], c["classes"])
    batch = {"x": common.images(c["batch"], c["image"]), "y": common.labels(c["batch"], c["classes"])}
    desc = f"MLP-Mixer {c['image']}px/{c['patch']}, {c['layers']} layers, d={c['d']}, batch {c['batch']}, Adam"
    return common.flax_step("mlp_mixer", desc, model, batch, common.adam(), common.classify_loss)
