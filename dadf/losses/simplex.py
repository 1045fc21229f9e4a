"""Simplex interpolation (AMA, simplex AE): each row is mixed with k-1 random partners of its batch, with weights
on the k-simplex; the mixed codes are decoded as interpolations."""
from __future__ import annotations

import torch


def simplex_weights(u: torch.Tensor, k: int, *, two_point_paper: bool = False) -> torch.Tensor:
    """Weights (N, k) on the simplex from uniforms ``u`` (N, k) in [0, 1): α_i ~ U(0, 0.5) normalised by their
    sum (AMA). ``two_point_paper``: k = 2 as the simplex paper writes it, (α, 1 − α) with α ~ U(0, 0.5)."""
    if two_point_paper and k == 2:
        a = 0.5 * u[:, :1]
        return torch.cat([a, 1 - a], dim=1)
    a = 0.5 * u[:, :k] + 1e-6  # U(0, 0.5]; the epsilon keeps the sum away from 0
    return a / a.sum(1, keepdim=True)


def partner_indices(noise: torch.Tensor) -> torch.Tensor:
    """(N, k) row indices: column 0 is the row itself, the others random permutations of the rows (one per column
    of ``noise`` (N, k-1)): each row is interpolated with k-1 random other rows of its batch."""
    n = noise.shape[0]
    cols = [torch.arange(n, device=noise.device)] + [noise[:, j].argsort() for j in range(noise.shape[1])]
    return torch.stack(cols, dim=1)
