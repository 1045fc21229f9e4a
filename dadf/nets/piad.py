"""PIAD's networks (supplementary Tables 1-3): pre-activation residual blocks without normalisation, LeakyReLU(0.2),
nearest-neighbour up-sampling in the generator, average-pool down-sampling in the encoder and image critic, a
minibatch-stddev layer in the image critic, a 3-layer MLP latent critic. Any square power-of-two size >= 8 works:
the number of up/down blocks is log2(size / 4) (3 for 32x32, 4 for 64x64)."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from dadf.nets.layers import leaky_relu, mlp


@dataclasses.dataclass(frozen=True)
class PIADWidths:
    """Channels per resolution, from 4x4 upwards for G and from full size downwards for E and D_X."""

    latent: int
    gen: tuple[int, ...]  # first entry: the 4x4 map after the input conv; then one per BlockUp
    enc: tuple[int, ...]  # first entry: the stem conv; then one per BlockDown
    disc: tuple[int, ...]
    dz_hidden: int


# Table 1 (MNIST, fMNIST, COIL-100) and Table 2 (CIFAR-10); the 64x64 preset follows Table 3's 64-channel nets
# with a 1x1 latent (dadf's simplification of its 32x4x4 latent).
PRESETS = {
    "small": PIADWidths(32, (32, 32, 32, 32), (32, 32, 32, 32), (32, 32, 32, 32), 128),
    "cifar10": PIADWidths(256, (256, 256, 128, 64), (64, 64, 128, 256), (32, 32, 64, 128), 1024),
    "wide64": PIADWidths(256, (64, 64, 64, 64, 64), (64, 64, 64, 64, 64), (64, 64, 64, 64, 64), 2048),
}


def widths_for(preset: str, size: int) -> PIADWidths:
    """A preset resized to ``size``: missing levels repeat the nearest width, extra levels are dropped."""
    if preset not in PRESETS:
        raise ValueError(f"PIAD width preset {preset!r} unknown; valid: {sorted(PRESETS)}")
    if size < 8 or size & (size - 1):
        raise ValueError(f"PIAD nets need square power-of-two images of at least 8 px, got {size}; "
                         f"resize with dataset.size=32")
    n = int(math.log2(size // 4)) + 1
    w = PRESETS[preset]

    def fit(seq, from_end):  # smaller images drop G's last (widest-resolution) levels and E/D_X's first ones
        seq = [seq[0]] * max(0, n - len(seq)) + list(seq)
        return tuple(seq[-n:] if from_end else seq[:n])

    return PIADWidths(w.latent, fit(w.gen, False), fit(w.enc, True), fit(w.disc, True), w.dz_hidden)


class PreActBlock(nn.Module):
    """act-conv3x3-act-conv3x3 plus skip; optional nearest x2 up-sampling before or avg-pool /2 after the convs;
    a 1x1 conv on the skip when the channels change."""

    def __init__(self, cin: int, cout: int, resample: str | None = None):
        super().__init__()
        self.resample = resample
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = leaky_relu()

    def forward(self, x):
        h = x
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            h = x
        h = self.conv2(self.act(self.conv1(self.act(h))))
        out = h + self.skip(x)
        if self.resample == "down":
            out = F.avg_pool2d(out, 2)
        return out


class MinibatchStd(nn.Module):
    """Appends the mean over features of the per-feature std across the batch as one extra channel (Karras 2018)."""

    def forward(self, x):
        std = x.float().var(0, unbiased=False).add(1e-8).sqrt().mean().to(x.dtype)
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], 1)


class Generator(nn.Module):
    def __init__(self, channels: int, size: int, w: PIADWidths):
        super().__init__()
        g = w.gen
        layers = [nn.Conv2d(w.latent, g[0], 4, padding=3)]  # 1x1 -> 4x4
        layers += [PreActBlock(g[i], g[i + 1], "up") for i in range(len(g) - 1)]
        layers += [PreActBlock(g[-1], g[-1]), leaky_relu(), nn.Conv2d(g[-1], channels, 1)]  # linear output
        self.net = nn.Sequential(*layers)
        self.latent = w.latent

    def forward(self, z):
        return self.net(z.view(len(z), self.latent, 1, 1))


def _down_trunk(channels: int, ws: tuple[int, ...], mbstd: bool) -> list[nn.Module]:
    layers = [nn.Conv2d(channels, ws[0], 3, padding=1)]
    layers += [PreActBlock(ws[i], ws[i + 1] if i + 1 < len(ws) else ws[i], "down") for i in range(len(ws) - 1)]
    last = ws[-1] if len(ws) > 1 else ws[0]
    if mbstd:
        layers.append(MinibatchStd())
        last += 1
    return layers + [leaky_relu(), nn.Conv2d(last, ws[-1], 4), leaky_relu()]


class Encoder(nn.Module):
    def __init__(self, channels: int, size: int, w: PIADWidths):
        super().__init__()
        self.net = nn.Sequential(*_down_trunk(channels, w.enc, False), nn.Conv2d(w.enc[-1], w.latent, 1))

    def forward(self, x):
        return self.net(x).flatten(1)


class ImageCritic(nn.Module):
    def __init__(self, channels: int, size: int, w: PIADWidths):
        super().__init__()
        self.net = nn.Sequential(*_down_trunk(channels, w.disc, True), nn.Conv2d(w.disc[-1], 1, 1))

    def forward(self, x):
        return self.net(x).flatten()


class LatentCritic(nn.Module):
    def __init__(self, w: PIADWidths):
        super().__init__()
        h = w.dz_hidden
        self.net = mlp([w.latent, h, h, 1], act=leaky_relu)

    def forward(self, z):
        return self.net(z).flatten()
