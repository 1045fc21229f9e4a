"""Small encoder/decoder pairs for the baselines: convolutional for images of 16 px and more, MLP otherwise."""
from __future__ import annotations

import math

from torch import nn

from dadf.nets.layers import leaky_relu, mlp


def conv_sizes(size: int) -> list[int]:
    """Spatial sizes through stride-2 convs (k=4, p=1) until the map is at most 4 px: 28 -> [28, 14, 7, 3]."""
    sizes = [size]
    while sizes[-1] > 4:
        sizes.append((sizes[-1] + 2 - 4) // 2 + 1)
    return sizes


def uses_conv(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[1] >= 16 and shape[1] == shape[2]


def _norm(ch: int, bias: bool) -> nn.Module:
    # Deep SVDD needs a bias-free network (a bias lets it collapse onto the centre), so no affine BatchNorm there.
    return nn.BatchNorm2d(ch, affine=bias)


class ConvEncoder(nn.Sequential):
    def __init__(self, shape: tuple[int, ...], width: int, latent_dim: int, bias: bool = True):
        ch, size, _ = shape
        layers, c_in = [], ch
        sizes = conv_sizes(size)
        for i in range(len(sizes) - 1):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias), _norm(c_out, bias), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers += [nn.Flatten(), nn.Linear(c_in * sizes[-1] ** 2, latent_dim, bias=bias)]
        super().__init__(*layers)


class ConvDecoder(nn.Module):
    def __init__(self, shape: tuple[int, ...], width: int, latent_dim: int):
        super().__init__()
        ch, size, _ = shape
        sizes = conv_sizes(size)
        n_up = len(sizes) - 1
        self.c0, self.s0 = width * 2 ** (n_up - 1), sizes[-1]
        self.fc = nn.Linear(latent_dim, self.c0 * self.s0**2)
        layers, c_in = [], self.c0
        for i in range(n_up):
            target, src = sizes[-2 - i], sizes[-1 - i]
            last = i == n_up - 1
            c_out = ch if last else c_in // 2
            # output_padding makes odd sizes come back exactly (3 -> 7 on the way to 28)
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, output_padding=target - 2 * src))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.up = nn.Sequential(*layers)

    def forward(self, z):
        return self.up(self.fc(z).view(len(z), self.c0, self.s0, self.s0))


def encoder(shape: tuple[int, ...], width: int, latent_dim: int, bias: bool = True) -> nn.Module:
    if uses_conv(shape):
        return ConvEncoder(shape, width, latent_dim, bias)
    dim = math.prod(shape)
    return nn.Sequential(nn.Flatten(), mlp([dim, width * 4, width * 2, latent_dim], act=leaky_relu, bias=bias))


def decoder(shape: tuple[int, ...], width: int, latent_dim: int, image: bool) -> nn.Module:
    if uses_conv(shape):
        return ConvDecoder(shape, width, latent_dim)
    dim = math.prod(shape)
    net = mlp([latent_dim, width * 2, width * 4, dim], act=leaky_relu)
    if image:  # images live in [-1, 1]; tabular features are standardised (linear output)
        net.append(nn.Tanh())
    return nn.Sequential(net, nn.Unflatten(1, shape))
