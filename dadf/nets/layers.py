"""Layers every network family shares: spectral normalisation on demand and the one MLP builder."""
from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` with spectral normalisation of its weight when ``enabled``."""
    return spectral_norm(module) if enabled else module


def leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def mlp(widths: list[int], *, act=nn.ReLU, final_act: bool = False, sn: bool = False,
        bias: bool = True) -> nn.Sequential:
    """Linear layers through ``widths`` with ``act()`` between them (and after the last when ``final_act``)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(maybe_sn(nn.Linear(a, b, bias=bias), sn))
        if final_act or i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)
