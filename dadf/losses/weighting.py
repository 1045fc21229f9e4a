"""Gradient-normalising loss weights (PIAD section 3.3, Algorithms 2-3).

For a network trained on ``reference + gamma * term``, gamma is chosen so that both losses move each layer by a
similar amount: every ``period`` iterations the size of each layer's weight gradient is recorded per loss; each
layer's history (last ``history`` records) is smoothed with an exponential moving average; gamma is the median
(or mean) over layers of smoothed(reference) / smoothed(term). Before the first record gamma is ``initial``.

The policy is plain bookkeeping on floats, independent of any method: a caller measures ``layer_norms`` of each
loss's gradients and calls ``record``; ``gamma`` returns the current weight. Its state round-trips exactly.
"""
from __future__ import annotations

import dataclasses
import statistics

import torch
from torch import nn


@dataclasses.dataclass
class WeightPolicyParams:
    period: int = 100  # iterations between records (and weight updates)
    history: int = 200  # records kept per loss and layer
    smoothing: float = 0.05  # EWMA factor alpha: s_t = alpha * v_t + (1 - alpha) * s_{t-1}
    reduce: str = "median"  # median | mean over layers of the per-layer ratios
    norm: str = "std"  # std (the authors' implementation) | l2 (the paper's Algorithm 2)
    initial: float = 1.0

    def __post_init__(self):
        if self.period < 1 or self.history < 1:
            raise ValueError(f"weight policy: period and history must be >= 1, got {self.period}, {self.history}")
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"weight policy: smoothing must be in (0, 1], got {self.smoothing}")
        if self.reduce not in ("median", "mean"):
            raise ValueError(f"weight policy: reduce must be median or mean, got {self.reduce!r}")
        if self.norm not in ("std", "l2"):
            raise ValueError(f"weight policy: norm must be std or l2, got {self.norm!r}")


def weight_tensors(net: nn.Module) -> dict[str, nn.Parameter]:
    """The layers the policy looks at: conv and linear weight matrices (biases carry too little to compare)."""
    return {n: p for n, p in net.named_parameters() if p.requires_grad and p.dim() > 1}


def gradient_sizes(grads: list[torch.Tensor | None], norm: str) -> torch.Tensor:
    """One size per gradient tensor: its std or L2 norm (0 where the loss does not reach the layer)."""
    out = []
    for g in grads:
        if g is None:
            out.append(torch.zeros(()))
        else:
            g = g.detach().float()
            out.append((g.std() if norm == "std" else g.norm()).cpu())
    return torch.stack(out)


def ewma(values: list[float], alpha: float) -> float:
    s = values[0]
    for v in values[1:]:
        s = alpha * v + (1 - alpha) * s
    return s


class GradNormWeights:
    """One weight per named term, each relative to a reference loss on one network's layers."""

    def __init__(self, params: WeightPolicyParams | None = None):
        self.p = params or WeightPolicyParams()
        self.history: dict[str, dict[str, list[float]]] = {}  # loss name -> layer -> recorded sizes
        self.gammas: dict[str, float] = {}

    def due(self, iteration: int) -> bool:
        return iteration % self.p.period == 0

    def record(self, loss: str, sizes: dict[str, float]) -> None:
        per_layer = self.history.setdefault(loss, {})
        for layer, v in sizes.items():
            h = per_layer.setdefault(layer, [])
            h.append(float(v))
            del h[: -self.p.history]

    def ratio(self, reference: str, term: str) -> float:
        """reduce over common layers of EWMA(reference) / EWMA(term); layers the term does not reach are skipped."""
        ref, t = self.history.get(reference, {}), self.history.get(term, {})
        ratios = []
        for layer in sorted(set(ref) & set(t)):
            a, b = ewma(ref[layer], self.p.smoothing), ewma(t[layer], self.p.smoothing)
            if b > 0 and a > 0:
                ratios.append(a / b)
        if not ratios:
            return self.p.initial
        return statistics.median(ratios) if self.p.reduce == "median" else statistics.fmean(ratios)

    def refresh(self, name: str, reference: str, term: str) -> float:
        self.gammas[name] = self.ratio(reference, term)
        return self.gammas[name]

    def gamma(self, name: str) -> float:
        return self.gammas.get(name, self.p.initial)

    def state_dict(self) -> dict:
        return {"history": {k: {name: list(v) for name, v in d.items()} for k, d in self.history.items()},
                "gammas": dict(self.gammas)}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: {name: list(v) for name, v in d.items()} for k, d in state["history"].items()}
        self.gammas = dict(state["gammas"])
