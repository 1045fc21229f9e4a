"""WGAN-GP critic losses (Gulrajani et al. 2017), for critics of one input and of a pair, with the drift
penalty of Karras et al. (2018).

Under ``trainer.compile`` a penalty runs eagerly, through the critic without its torch.compile wrapper: its
gradient is taken with ``create_graph=True`` and then differentiated again, and a compiled graph (AOTAutograd) has
no double backward. The critic's other forward passes stay compiled.
"""
from __future__ import annotations

import functools
import sys

import torch
from torch import nn


def _outside_compile(fn):
    """``torch.compiler.disable(fn)`` in a process that compiles, ``fn`` itself elsewhere: importing torch's
    compiler stack costs seconds, which a launcher or a cell that never compiles must not pay."""
    disabled = None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nonlocal disabled
        if "torch._dynamo" not in sys.modules:  # nothing was compiled in this process
            return fn(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return wrapper


def _eager(critic):
    """``critic`` without a torch.compile wrapper (a DDP wrapper under it stays)."""
    return getattr(critic, "_orig_mod", critic)


def _between(a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """eps * a + (1 - eps) * b, one eps per row."""
    eps = eps.reshape(-1, *([1] * (a.dim() - 1)))
    return eps * a + (1 - eps) * b


def _unit_gradient_penalty(out: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Mean over rows of (||grad out||_2 - 1)^2, the gradient taken w.r.t. all of ``inputs`` at once."""
    grads = torch.autograd.grad(out.sum(), inputs, create_graph=True)
    return (torch.cat([g.flatten(1) for g in grads], dim=1).norm(dim=1) - 1).pow(2).mean()


@_outside_compile
def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP of a critic of one input: mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2 at
    x_hat = eps * real + (1 - eps) * fake.

    ``eps`` (one value per row, shape (N,)) is drawn uniformly when not given; pass it to make the penalty
    reproducible across processes (e.g. from ``Method.noise``). The graph is kept, so the penalty trains the critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    if eps is None:
        eps = torch.rand(len(real), device=real.device)
    x_hat = _between(real.detach(), fake.detach(), eps.to(real.dtype)).requires_grad_(True)
    return _unit_gradient_penalty(_eager(critic)(x_hat), [x_hat])


@_outside_compile
def pair_gradient_penalty(critic, x: torch.Tensor, y_real: torch.Tensor, y_fake: torch.Tensor,
                          eps: torch.Tensor) -> torch.Tensor:
    """WGAN-GP of a pair critic D(x, y) (AMA, simplex AE): (||grad_(x, y) D(x, y)||_2 - 1)^2, gradient w.r.t. both
    inputs, at y = eps * y_real + (1 - eps) * y_fake (``eps`` one value per row, shape (N,))."""
    y0 = _between(y_real, y_fake, eps).detach().requires_grad_(True)
    x0 = x.detach().requires_grad_(True)
    # Non-leaf inputs: torch.utils.flop_counter (the benchmark) cannot hook autograd.grad on leaves.
    xx, y = x0 * 1, y0 * 1
    return _unit_gradient_penalty(_eager(critic)(xx, y), [xx, y])


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, penalty: torch.Tensor, gp_weight: float = 10.0,
                drift: float = 1e-3) -> torch.Tensor:
    """WGAN critic objective E[D(fake)] - E[D(real)] + gp_weight * GP + drift * E[D(real)^2]; the drift term
    keeps the critic's outputs near zero."""
    return d_fake.mean() - d_real.mean() + gp_weight * penalty + drift * d_real.pow(2).mean()


class WGANCritic(nn.Module):
    """A critic wrapped so that one forward gives D(real), D(fake) and the gradient penalty.

    Under DDP the penalty's double backward must happen inside a single forward of the wrapped module, with one
    backward after it; calling the DDP wrapper three times (real, fake, interpolates) would not be. Real and fake
    batches go through the critic separately, so batch statistics (minibatch-stddev) never mix them. When this
    module is compiled, the penalty (a function torch.compile leaves alone) runs eagerly inside it.
    """

    def __init__(self, critic: nn.Module):
        super().__init__()
        self.critic = critic

    def forward(self, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None):
        return self.critic(real), self.critic(fake), gradient_penalty(self.critic, real, fake, eps)
