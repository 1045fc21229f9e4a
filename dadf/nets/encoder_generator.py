"""An encoder E and a generator G as one module (AMA, simplex AE, PIAD): one DDP wrapper, one forward and one
backward cover both networks, so one all-reduce syncs them."""
from __future__ import annotations

import torch
from torch import nn


class GradScale(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``factor`` backward (weights one loss differently per network).
    A tensor factor is read when the backward runs, so its owner may change it in place after the forward."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        f = ctx.factor
        return g * (f.to(g.device, g.dtype) if torch.is_tensor(f) else f), None


class EncoderGenerator(nn.Module):
    def __init__(self, encoder: nn.Module, generator: nn.Module):
        super().__init__()
        self.encoder, self.generator = encoder, generator

    def forward(self, x, z=None, *, e_factor=None, mix_idx=None, mix_w=None, x_mix=None, neg_fn=None):
        """{"e": E(x), "x_hat": G(E(x))} and, when asked:

        - "x_inter": G of the codes mixed by ``mix_idx`` (N, k) / ``mix_w`` (N, k), or G(E(x_mix)) for an
          input-space mix ``x_mix``;
        - "x_neg": G(neg_fn(e.detach())), negatives made from the codes;
        - "x_fake": G(z) for prior samples ``z``, in a pass of its own.

        The reconstruction, interpolations and negatives share one generator pass. ``e_factor`` multiplies the
        reconstruction's gradient into E (PIAD: gamma_E / gamma_G, so a loss adv + gamma_G * rec gives E gamma_E).
        """
        n = len(x)
        e_all = self.encoder(x if x_mix is None else torch.cat([x, x_mix]))
        e = e_all[:n]
        codes, out = [e if e_factor is None else GradScale.apply(e, e_factor)], {"e": e}
        if x_mix is not None:
            codes.append(e_all[n:])
        elif mix_idx is not None:
            codes.append((e[mix_idx] * mix_w.unsqueeze(-1)).sum(1))
        if neg_fn is not None:
            codes.append(neg_fn(e.detach()))
        y = self.generator(torch.cat(codes))
        out["x_hat"] = y[:n]
        i = n
        if x_mix is not None or mix_idx is not None:
            out["x_inter"] = y[i : i + n]
            i += n
        if neg_fn is not None:
            out["x_neg"] = y[i:]
        if z is not None:
            out["x_fake"] = self.generator(z)
        return out
