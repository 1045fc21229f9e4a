"""Deep SVDD (one-class, Ruff et al. 2018): map normals close to a fixed centre c; score = ||phi(x) - c||^2."""
from __future__ import annotations

import dataclasses

import torch

from dadf.methods.base import TorchMethod, method_params
from dadf.methods.registry import register
from dadf.nets.baseline import encoder


@dataclasses.dataclass
class SVDDParams:
    """A bias-free encoder maps normals near a fixed centre c (the mean of the initial codes); anomaly score =
    squared distance to c."""

    latent_dim: int = 32
    width: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-6


@register("deep_svdd", params=SVDDParams)
class DeepSVDD(TorchMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        p = self.params = method_params(cfg, SVDDParams)
        net = encoder(info.shape, p.width, p.latent_dim, bias=False)
        self.phi = self.add("phi", net, lambda ps: torch.optim.Adam(ps, lr=p.lr, weight_decay=p.weight_decay))
        self.c = torch.zeros(p.latent_dim, device=self.accelerator.device)

    def on_train_start(self, train_x):
        # The centre is the mean initial code of the normals, pushed away from 0 per coordinate: a coordinate of c
        # near 0 is trivially reached by zero weights.
        with self.evaluating():
            codes = torch.cat([self.bare("phi")(train_x[i : i + 512].to(self.accelerator.device))
                               for i in range(0, len(train_x), 512)])
        c = codes.mean(0)
        eps = 0.1
        c[(c.abs() < eps) & (c < 0)] = -eps
        c[(c.abs() < eps) & (c >= 0)] = eps
        self.c = c

    def train_step(self, batch, step):
        loss = (self.phi(batch["x"]) - self.c).pow(2).sum(1).mean()
        self.update("phi", loss)
        return {"svdd": loss.detach()}

    def score(self, x):
        with self.evaluating():
            return (self.bare("phi")(x) - self.c).pow(2).sum(1).float()

    def extra_state(self):
        return {"c": self.c.cpu()}

    def load_extra_state(self, state):
        self.c = state["c"].to(self.accelerator.device)
