"""Autoencoder baseline: trained on normals with an L2 reconstruction loss; score = per-sample squared error."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from dadf.methods.base import TorchMethod, method_params
from dadf.methods.registry import register
from dadf.nets.baseline import decoder, encoder


@dataclasses.dataclass
class AEParams:
    """Conv for images of 16 px and more, MLP otherwise; anomaly score = L2 reconstruction error."""

    latent_dim: int = 32
    width: int = 32  # channels of the first conv layer (doubled per downsampling) / MLP hidden units / 4
    lr: float = 1e-3
    weight_decay: float = 0.0


@register("ae", params=AEParams)
class Autoencoder(TorchMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        p = self.params = method_params(cfg, AEParams)
        net = nn.Sequential(encoder(info.shape, p.width, p.latent_dim),
                            decoder(info.shape, p.width, p.latent_dim, image=info.kind == "image"))
        self.ae = self.add("ae", net, lambda ps: torch.optim.Adam(ps, lr=p.lr, weight_decay=p.weight_decay))

    def train_step(self, batch, step):
        x = batch["x"]
        loss = (self.ae(x) - x).pow(2).mean()
        self.update("ae", loss)
        return {"rec": loss.detach()}

    def score(self, x):
        with self.evaluating():
            return (self.bare("ae")(x) - x).pow(2).flatten(1).mean(1).float()
