"""Adversarial autoencoder baseline (Makhzani et al., 2015): an autoencoder whose codes a latent critic pushes
towards the N(0, I) prior; score = per-sample squared reconstruction error.

The smallest GAN-style method in dadf (two networks, two optimisers, a critic that sees real and fake codes), so
it is also what the distributed-training tests exercise. The critic has no BatchNorm and sees prior and encoded
codes in one concatenated forward, as DDP wants.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from dadf.methods.base import TorchMethod, method_params
from dadf.methods.registry import register
from dadf.nets.baseline import decoder, encoder
from dadf.nets.layers import leaky_relu, mlp


@dataclasses.dataclass
class AAEParams:
    """AE + a latent critic matching the codes to N(0, I); anomaly score = L2 reconstruction error. No BatchNorm in
    the critic (a DDP-safe GAN-style baseline)."""

    latent_dim: int = 16
    width: int = 32
    lr: float = 1e-3
    critic_lr: float = 1e-3
    adv_weight: float = 0.1  # weight of the prior-matching term in the autoencoder's loss
    betas: tuple[float, float] = (0.5, 0.999)


class _AE(nn.Module):
    def __init__(self, enc: nn.Module, dec: nn.Module):
        super().__init__()
        self.enc, self.dec = enc, dec

    def forward(self, x):  # one forward through the DDP wrapper, so both halves' gradients are all-reduced
        z = self.enc(x)
        return z, self.dec(z)


@register("aae", params=AAEParams)
class AdversarialAutoencoder(TorchMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        p = self.params = method_params(cfg, AAEParams)
        betas = tuple(p.betas)
        ae = _AE(encoder(info.shape, p.width, p.latent_dim),
                 decoder(info.shape, p.width, p.latent_dim, image=info.kind == "image"))
        self.ae = self.add("ae", ae, lambda ps: torch.optim.Adam(ps, lr=p.lr, betas=betas))
        self.critic = self.add("critic", mlp([p.latent_dim, 4 * p.width, 4 * p.width, 1], act=leaky_relu),
                               lambda ps: torch.optim.Adam(ps, lr=p.critic_lr, betas=betas))

    def train_step(self, batch, step):
        x = batch["x"]
        n, d = len(x), self.params.latent_dim
        # Critic: prior samples are "real", codes of the data are "fake".
        with torch.no_grad():
            z_fake, _ = self.ae(x)
        logits = self.critic(torch.cat([self.noise(n, d), z_fake]))
        target = torch.cat([torch.ones(n, 1, device=logits.device), torch.zeros(n, 1, device=logits.device)])
        critic_loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        self.update("critic", critic_loss)
        # Autoencoder: reconstruct, and make the codes look like prior samples to the critic.
        z, x_hat = self.ae(x)
        rec = (x_hat.float() - x).pow(2).mean()
        with self.frozen("critic") as critic:
            adv = F.binary_cross_entropy_with_logits(critic(z).float(), torch.ones(n, 1, device=z.device))
        self.update("ae", rec + self.params.adv_weight * adv)
        return {"rec": rec.detach(), "adv": adv.detach(), "critic": critic_loss.detach()}

    def reconstruct(self, x):
        with self.evaluating():
            return self.bare("ae")(x)[1]

    def score(self, x):
        return (self.reconstruct(x).float() - x).pow(2).flatten(1).mean(1)
