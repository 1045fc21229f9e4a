"""OMASGAN's single-input networks: generators z -> x (G, B, G') and critics x -> one logit (D, C, J).

The shared GAN nets in :mod:`dadf.nets.gan` are reused where they fit (the SN-GAN ResNet generator and down
blocks, the 28x28 grey generator, MLPs); what OMASGAN needs beyond them lives here:

- ``dcgan``: grey (or any C) 28x28 / 32x32 images. Generator: linear -> 4x4x256 (7x7x128 for 28) and transposed
  convs with BatchNorm + ReLU, tanh output (the paper: "CNN with batch normalization"). Critic: strided convs with
  LeakyReLU(0.2), no BatchNorm (spectral norm instead), linear -> 1.
- ``resnet32``: 32x32 RGB. Generator: SN-GAN ResNet (``gan.ResNetGenerator32``). Critic: SN-GAN ResNet on one
  image (optimised first block, one down block, two plain blocks), ReLU, global sum pooling, linear -> 1.
- ``mlp``: tabular rows and the 2-D synthetic data; generator output linear (tanh for images).

Critics carry no BatchNorm: they see real, generated and boundary batches before one backward.
"""
from __future__ import annotations

import dataclasses
import math

from torch import nn

from dadf.nets.gan import GreyGenerator28, MLPGenerator, ResBlockDown, ResNetGenerator32
from dadf.nets.layers import leaky_relu, maybe_sn, mlp


class DCGANGenerator32(nn.Module):
    """z -> (C, 32, 32) in [-1, 1]: linear 4x4x256, tconv 128/64 (BN + ReLU), tconv C, tanh."""

    def __init__(self, z_dim: int = 128, out_channels: int = 1, width: int = 64):
        super().__init__()
        self.w = width
        self.fc = nn.Sequential(nn.Linear(z_dim, 4 * 4 * 4 * width), nn.BatchNorm1d(4 * 4 * 4 * width), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.deconv(self.fc(z).view(len(z), 4 * self.w, 4, 4))


class DCGANCritic(nn.Module):
    """(C, S, S) with S in {28, 32} -> logit: conv4s2 64/128 (+256 for 32), LeakyReLU(0.2), linear -> 1."""

    def __init__(self, in_channels: int, size: int, *, sn: bool = True, width: int = 64):
        super().__init__()
        layers, c = [], in_channels
        widths = (width, 2 * width, 4 * width) if size == 32 else (width, 2 * width)
        for w in widths:
            layers += [maybe_sn(nn.Conv2d(c, w, 4, 2, 1), sn), nn.LeakyReLU(0.2)]
            c = w
        side = 4 if size == 32 else 7
        self.net = nn.Sequential(*layers, nn.Flatten(), maybe_sn(nn.Linear(c * side * side, 1), sn))

    def forward(self, x):
        return self.net(x).squeeze(1)


class ResNetCritic32(nn.Module):
    """SN-GAN ResNet critic on one 32x32 image: optimised block, down block, two plain blocks, ReLU, sum, linear."""

    def __init__(self, in_channels: int = 3, ch: int = 128, *, sn: bool = True):
        super().__init__()
        self.blocks = nn.Sequential(ResBlockDown(in_channels, ch, first=True, sn=sn), ResBlockDown(ch, ch, sn=sn),
                                    ResBlockDown(ch, ch, down=False, sn=sn), ResBlockDown(ch, ch, down=False, sn=sn),
                                    nn.ReLU())
        self.head = maybe_sn(nn.Linear(ch, 1), sn)

    def forward(self, x):
        return self.head(self.blocks(x).sum(dim=(2, 3))).squeeze(1)


class MLPCritic(nn.Module):
    """Flattened input -> logit: Linear-LeakyReLU(0.2) per hidden width, linear -> 1."""

    def __init__(self, in_dim: int, hidden: list[int], *, sn: bool = True):
        super().__init__()
        self.net = mlp([in_dim, *hidden, 1], act=leaky_relu, sn=sn)

    def forward(self, x):
        return self.net(x.flatten(1)).squeeze(1)


ARCHS = ("auto", "dcgan", "resnet32", "mlp")


@dataclasses.dataclass(frozen=True)
class NetSpec:
    arch: str
    z_dim: int
    shape: tuple[int, ...]
    sn: bool = True
    hidden: tuple[int, ...] = (128, 128)  # MLP widths (generator and critic)
    kind: str = "image"


def pick_omasgan_arch(shape: tuple[int, ...], kind: str, arch: str) -> str:
    """``arch`` checked against ``shape``; ``auto``: resnet32 for 3x32x32, dcgan for 28/32-pixel grey, else mlp."""
    if arch not in ARCHS:
        raise ValueError(f"omasgan: arch={arch!r}; choose one of {', '.join(ARCHS)}")
    square = kind == "image" and len(shape) == 3 and shape[1] == shape[2]
    if arch == "auto":
        if square and tuple(shape) == (3, 32, 32):
            return "resnet32"
        if square and shape[1] in (28, 32):
            return "dcgan"
        return "mlp"
    if arch == "resnet32" and tuple(shape) != (3, 32, 32):
        raise ValueError(f"omasgan: arch=resnet32 needs 3x32x32 inputs, the data has {tuple(shape)}; use arch=auto "
                         f"or dataset.size=32 dataset.channels=3")
    if arch == "dcgan" and not (square and shape[1] in (28, 32)):
        raise ValueError(f"omasgan: arch=dcgan needs 28x28 or 32x32 images, the data has {tuple(shape)}; use "
                         f"arch=auto (mlp) or dataset.size=32")
    return arch


def build_generator(spec: NetSpec) -> nn.Module:
    if spec.arch == "resnet32":
        return ResNetGenerator32(spec.z_dim, out_channels=spec.shape[0])
    if spec.arch == "dcgan":
        if spec.shape[1] == 28:
            return GreyGenerator28(spec.z_dim, spec.shape[0])
        return DCGANGenerator32(spec.z_dim, spec.shape[0])
    return MLPGenerator(spec.z_dim, list(spec.hidden), spec.shape, tanh=spec.kind == "image")


def build_critic(spec: NetSpec) -> nn.Module:
    if spec.arch == "resnet32":
        return ResNetCritic32(spec.shape[0], sn=spec.sn)
    if spec.arch == "dcgan":
        return DCGANCritic(spec.shape[0], spec.shape[1], sn=spec.sn)
    return MLPCritic(math.prod(spec.shape), list(spec.hidden), sn=spec.sn)
