"""WGAN-GP critic losses (Gulrajani et al. 2017) with the drift penalty of Karras et al. (2018)."""
from __future__ import annotations

import torch
from torch import nn


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2 at x_hat = eps * real + (1 - eps) * fake.

    ``eps`` (one value per row, shape (N,)) is drawn uniformly when not given; pass it to make the penalty
    reproducible across processes (e.g. from ``Method.noise``). The graph is kept, so the penalty trains the critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    if eps is None:
        eps = torch.rand(len(real), device=real.device)
    eps = eps.to(real.dtype).reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, penalty: torch.Tensor, gp_weight: float = 10.0,
                drift: float = 1e-3) -> torch.Tensor:
    """WGAN critic objective E[D(fake)] - E[D(real)] + gp_weight * GP + drift * E[D(real)^2]; the drift term
    keeps the critic's outputs near zero."""
    return d_fake.mean() - d_real.mean() + gp_weight * penalty + drift * d_real.pow(2).mean()


class WGANCritic(nn.Module):
    """A critic wrapped so that one forward gives D(real), D(fake) and the gradient penalty.

    Under DDP the penalty's double backward must happen inside a single forward of the wrapped module, with one
    backward after it; calling the DDP wrapper three times (real, fake, interpolates) would not be. Real and fake
    batches go through the critic separately, so batch statistics (minibatch-stddev) never mix them.
    """

    def __init__(self, critic: nn.Module):
        super().__init__()
        self.critic = critic

    def forward(self, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None):
        return self.critic(real), self.critic(fake), gradient_penalty(self.critic, real, fake, eps)
