"""GAN building blocks and the architectures of the AMA / simplex-interpolation papers (reused by OMASGAN).

Three families, chosen by data shape with :func:`build_autoencoder_gan` (or built directly):

- ``resnet32``: 32x32 RGB (AMA supp. Table 1, simplex supp. Table 1). Generator: SN-GAN ResNet (dense 4x4x256,
  three up-blocks, BN-ReLU-conv3x3-tanh). Encoder: DCGAN-style convs 64-128-256 (BN + LeakyReLU 0.2) then a 4x4
  conv to the code. Critic on the 6-channel pair: SN-GAN ResNet (optimised first block, one down block, two plain
  blocks, 128 channels), ReLU, global sum pooling, linear -> 1.
- ``grey28``: 28x28 grey (AMA supp. Table 2). Padding 1 instead of the table's 2: with 2 the generator's
  transposed convs give 12x12 / 20x20, not 28x28, so the table's padding cannot be what was run.
- ``mlp``: tabular rows or any flattened input (simplex supp. Tables 3-5 give the per-dataset widths;
  :data:`TABULAR_PRESETS` holds them by dataset name: a preset is chosen by name, never by feature count).

Every critic here is a :class:`PairCritic`: ``critic(x, y)`` scores the pair (x stacked with y on the channel
/ feature axis) and ``critic.features(x, y)`` returns the penultimate features f(x, y) used by the R-score.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from dadf.nets.layers import leaky_relu, maybe_sn, mlp


# ------------------------------------------------------------------------------------------- ResNet blocks
class ResBlockUp(nn.Module):
    """SN-GAN generator block: BN-ReLU-up2-conv3-BN-ReLU-conv3, shortcut up2-conv1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Upsample(scale_factor=2),
                                  nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        return self.body(x) + self.skip(x)


class ResBlockDown(nn.Module):
    """SN-GAN critic block without normalisation layers: (ReLU)-conv3-ReLU-conv3-(avgpool2), with a shortcut.

    ``first=True`` is the "optimised" first block (no ReLU before the first conv, pool before the 1x1 shortcut);
    ``down=False`` keeps the resolution (a plain block)."""

    def __init__(self, cin: int, cout: int, *, down: bool = True, first: bool = False, sn: bool = True):
        super().__init__()
        layers = [] if first else [nn.ReLU()]
        layers += [maybe_sn(nn.Conv2d(cin, cout, 3, 1, 1), sn), nn.ReLU(), maybe_sn(nn.Conv2d(cout, cout, 3, 1, 1), sn)]
        if down:
            layers.append(nn.AvgPool2d(2))
        self.body = nn.Sequential(*layers)
        self.first, self.down = first, down
        self.skip_conv = maybe_sn(nn.Conv2d(cin, cout, 1), sn) if (cin != cout or down) else None

    def forward(self, x):
        s = x
        if self.skip_conv is not None:
            if self.first:  # pool first, then 1x1: the optimised block of SN-GAN
                s = self.skip_conv(nn.functional.avg_pool2d(s, 2) if self.down else s)
            else:
                s = self.skip_conv(s)
                s = nn.functional.avg_pool2d(s, 2) if self.down else s
        return self.body(x) + s


# --------------------------------------------------------------------------------------------- pair critics
class PairCritic(nn.Module):
    """A critic on the pair (x, y): ``forward(x, y) -> (N,)`` and ``features(x, y) -> (N, F)`` (penultimate)."""

    def trunk(self, xy: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    head: nn.Module

    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([x, y], dim=1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, y)).squeeze(1)


class ResNetPairCritic32(PairCritic):
    """SN-GAN ResNet critic on a 2C-channel pair; ``pooling`` sum (AMA, D_recon) or mean (simplex D_inter)."""

    def __init__(self, in_channels: int = 6, ch: int = 128, *, sn: bool = True, pooling: str = "sum"):
        super().__init__()
        if pooling not in ("sum", "mean"):
            raise ValueError(f"pooling={pooling!r}; choose sum or mean")
        self.blocks = nn.Sequential(ResBlockDown(in_channels, ch, first=True, sn=sn), ResBlockDown(ch, ch, sn=sn),
                                    ResBlockDown(ch, ch, down=False, sn=sn), ResBlockDown(ch, ch, down=False, sn=sn),
                                    nn.ReLU())
        self.pooling = pooling
        self.head = maybe_sn(nn.Linear(ch, 1), sn)
        self.feature_dim = ch

    def trunk(self, xy):
        h = self.blocks(xy)
        return h.sum(dim=(2, 3)) if self.pooling == "sum" else h.mean(dim=(2, 3))


class GreyPairCritic28(PairCritic):
    """AMA supp. Table 2 critic: conv4s2(64)-LReLU-conv4s2(128)-LReLU-dense(1024)-LReLU-dense(1)."""

    def __init__(self, in_channels: int = 2, *, sn: bool = False, hidden: int = 1024):
        super().__init__()
        self.net = nn.Sequential(maybe_sn(nn.Conv2d(in_channels, 64, 4, 2, 1), sn), nn.LeakyReLU(0.2),
                                 maybe_sn(nn.Conv2d(64, 128, 4, 2, 1), sn), nn.LeakyReLU(0.2), nn.Flatten(),
                                 maybe_sn(nn.Linear(128 * 7 * 7, hidden), sn), nn.LeakyReLU(0.2))
        self.head = maybe_sn(nn.Linear(hidden, 1), sn)
        self.feature_dim = hidden

    def trunk(self, xy):
        return self.net(xy)


class MLPPairCritic(PairCritic):
    """Critic on a pair of rows (or flattened inputs): Linear-LReLU(0.2) per hidden width, then Linear -> 1."""

    def __init__(self, in_dim: int, hidden: list[int], *, sn: bool = False):
        super().__init__()
        self.net = mlp([2 * in_dim, *hidden], act=leaky_relu, final_act=True, sn=sn)
        self.head = maybe_sn(nn.Linear(hidden[-1], 1), sn)
        self.feature_dim = hidden[-1]

    def features(self, x, y):
        return self.net(torch.cat([x.flatten(1), y.flatten(1)], dim=1))


# --------------------------------------------------------------------------------- encoders and generators
class DCGANEncoder32(nn.Module):
    """32x32 -> code: conv4s2 64/128/256 (BN + LReLU 0.2), conv4s1p0 -> z_dim (linear output)."""

    def __init__(self, in_channels: int = 3, z_dim: int = 128):
        super().__init__()
        layers, c = [], in_channels
        for w in (64, 128, 256):
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
            c = w
        self.net = nn.Sequential(*layers, nn.Conv2d(c, z_dim, 4, 1, 0), nn.Flatten())

    def forward(self, x):
        return self.net(x)


class ResNetGenerator32(nn.Module):
    """code -> 32x32 image in [-1, 1]: dense 4x4xch, three up-blocks, BN-ReLU-conv3x3-tanh (SN-GAN)."""

    def __init__(self, z_dim: int = 128, ch: int = 256, out_channels: int = 3):
        super().__init__()
        self.ch = ch
        self.dense = nn.Linear(z_dim, 4 * 4 * ch)
        self.blocks = nn.Sequential(ResBlockUp(ch, ch), ResBlockUp(ch, ch), ResBlockUp(ch, ch),
                                    nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, out_channels, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.blocks(self.dense(z).view(len(z), self.ch, 4, 4))


class GreyEncoder28(nn.Module):
    """AMA supp. Table 2 encoder: conv4s2(64)-ReLU-conv4s2(128)-ReLU-dense(1024)-ReLU-dense(z)."""

    def __init__(self, in_channels: int = 1, z_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(128 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, z_dim))

    def forward(self, x):
        return self.net(x)


class GreyGenerator28(nn.Module):
    """AMA supp. Table 2 generator: linear(z,1024)-ReLU-linear(7x7x128)-ReLU-tconv(64)-ReLU-tconv(1)-tanh."""

    def __init__(self, z_dim: int = 64, out_channels: int = 1):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(z_dim, 1024), nn.ReLU(), nn.Linear(1024, 7 * 7 * 128), nn.ReLU())
        self.deconv = nn.Sequential(nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(),
                                    nn.ConvTranspose2d(64, out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.deconv(self.fc(z).view(len(z), 128, 7, 7))


class MLPEncoder(nn.Module):
    """Flattened input -> code: Linear-LReLU(0.2) per hidden width, then the code layer, linear or (``final_act``,
    the simplex supp. Tables 3-5 encoders) followed by LReLU(0.2) too."""

    def __init__(self, in_dim: int, hidden: list[int], z_dim: int, *, final_act: bool = False):
        super().__init__()
        self.net = mlp([in_dim, *hidden, z_dim], act=leaky_relu, final_act=final_act)

    def forward(self, x):
        return self.net(x.flatten(1))


class MLPGenerator(nn.Module):
    """code -> output of ``out_shape``: Linear-ReLU per hidden width, linear output (tanh for images)."""

    def __init__(self, z_dim: int, hidden: list[int], out_shape: tuple[int, ...], *, tanh: bool = False):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = mlp([z_dim, *hidden, math.prod(out_shape)])
        self.tanh = tanh

    def forward(self, z):
        y = self.net(z).view(len(z), *self.out_shape)
        return torch.tanh(y) if self.tanh else y


# ------------------------------------------------------------------------------------------ the factory
@dataclasses.dataclass(frozen=True)
class MLPWidths:
    encoder: tuple[int, ...]
    z_dim: int
    generator: tuple[int, ...]
    critic: tuple[int, ...]
    inter_critic: tuple[int, ...] = ()  # simplex D_inter (defaults to ``critic``)


# Simplex-interpolation supplementary Tables 3-5, by dataset name (KDD99: 121 features, arrhythmia 274, thyroid 6).
# Chosen by name only: another table with the same feature count is another dataset and gets GENERIC_MLP.
TABULAR_PRESETS: dict[str, MLPWidths] = {
    "kdd99": MLPWidths((64,), 32, (64, 128), (128, 25), (128, 64)),
    "arrhythmia": MLPWidths((256, 128), 64, (128, 256), (256, 32), (256, 128, 64)),
    "thyroid": MLPWidths((12,), 4, (13,), (4,), (6,)),
}
GENERIC_MLP = MLPWidths((256, 128), 32, (128, 256), (256, 64), (256, 64))


@dataclasses.dataclass
class GANNets:
    """The networks of an encoder-generator-critic model and the architecture they came from."""

    arch: str
    z_dim: int
    encoder: nn.Module
    generator: nn.Module
    critic: PairCritic


def pick_autoencoder_gan_arch(shape: tuple[int, ...], kind: str, arch: str = "auto") -> str:
    """``arch`` checked against ``shape``; ``auto``: resnet32 for 3x32x32, grey28 for 1x28x28, else mlp."""
    shape = tuple(shape)
    choices = {"resnet32": (3, 32, 32), "grey28": (1, 28, 28)}
    if arch == "auto":
        if kind == "image":
            for name, s in choices.items():
                if shape == s:
                    return name
        return "mlp"
    if arch == "mlp":
        return arch
    if arch not in choices:
        raise ValueError(f"arch={arch!r}; choose auto, resnet32, grey28 or mlp")
    if shape != choices[arch]:
        raise ValueError(f"arch={arch} needs inputs of shape {choices[arch]}, the data has {shape}; use arch=auto "
                         f"or resize the dataset (dataset.size / dataset.channels)")
    return arch


def mlp_widths(preset: str | None = None) -> MLPWidths:
    """The MLP widths of the named preset (a key of TABULAR_PRESETS), or GENERIC_MLP for None."""
    if preset is None:
        return GENERIC_MLP
    if preset not in TABULAR_PRESETS:
        raise ValueError(f"no MLP preset named {preset!r}; the presets are {sorted(TABULAR_PRESETS)} (or none)")
    return TABULAR_PRESETS[preset]


def build_pair_critic(arch: str, shape: tuple[int, ...], *, sn: bool, pooling: str = "sum",
                 hidden: tuple[int, ...] | None = None) -> PairCritic:
    """A pair critic for inputs of ``shape`` (``hidden``: MLP widths; default the generic MLP's critic widths)."""
    if arch == "resnet32":
        return ResNetPairCritic32(2 * shape[0], sn=sn, pooling=pooling)
    if arch == "grey28":
        return GreyPairCritic28(2 * shape[0], sn=sn)
    return MLPPairCritic(math.prod(shape), list(hidden or GENERIC_MLP.critic), sn=sn)


def build_autoencoder_gan(shape: tuple[int, ...], kind: str, *, arch: str = "auto", z_dim: int | None = None,
                          sn: bool = True, pooling: str = "sum", widths: MLPWidths | None = None,
                          encoder_final_act: bool = False) -> GANNets:
    """Encoder, generator and pair critic for data of ``shape`` (one sample) and ``kind`` (image | tabular).

    ``z_dim`` None takes the papers' value (128 for resnet32, 64 for grey28, the widths' for mlp). ``widths`` (mlp
    only): a preset's (``mlp_widths(name)``), default GENERIC_MLP; ``encoder_final_act``: the mlp encoder's code
    layer ends in LReLU(0.2)."""
    arch = pick_autoencoder_gan_arch(shape, kind, arch)
    shape = tuple(shape)
    if arch == "resnet32":
        z = z_dim or 128
        return GANNets(arch, z, DCGANEncoder32(shape[0], z), ResNetGenerator32(z, out_channels=shape[0]),
                       build_pair_critic(arch, shape, sn=sn, pooling=pooling))
    if arch == "grey28":
        z = z_dim or 64
        return GANNets(arch, z, GreyEncoder28(shape[0], z), GreyGenerator28(z, shape[0]),
                       build_pair_critic(arch, shape, sn=sn))
    w = widths or GENERIC_MLP
    z = z_dim or w.z_dim
    return GANNets(arch, z, MLPEncoder(math.prod(shape), list(w.encoder), z, final_act=encoder_final_act),
                   MLPGenerator(z, list(w.generator), shape, tanh=kind == "image"),
                   build_pair_critic(arch, shape, sn=sn, hidden=w.critic))
