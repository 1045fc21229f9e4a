"""BatchNorm over the global batch (``trainer.sync_bn``): when N processes each hold a part of one global batch,
every BatchNorm layer normalises with the statistics of the whole batch, as one process would, so a net with
BatchNorm follows the same optimisation path on 1, 2 or 8 processes.

On GPUs that is torch's ``nn.SyncBatchNorm``. torch's class (and DDP, which refuses it in a CPU module) works on
accelerators only, so CPU processes (gloo) get ``CPUSyncBatchNorm``: the same statistics from all-reduced sums.
Parameters, buffers and state-dict keys are those of the BatchNorm replaced, so checkpoints load either way.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _syncing(training: bool) -> bool:
    return training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every process, for CPU processes: two differentiable all-reduces
    (sum, then sum of squared deviations), so the gradient through the global statistics reaches every process.
    In eval mode, or on one process, it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _syncing(self.training):
            return super().forward(input)
        self._check_input_dim(input)
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()  # sums in fp32 at least
        dims = [0, *range(2, x.dim())]
        shape = [1, -1, *[1] * (x.dim() - 2)]
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        total = all_reduce(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n  # biased, as BatchNorm normalises with
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=f)
        return out.to(input.dtype)


def _cpu_sync(net: nn.Module) -> nn.Module:
    if isinstance(net, nn.modules.batchnorm._BatchNorm) and not isinstance(net, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(net.num_features, net.eps, net.momentum, net.affine, net.track_running_stats)
        if net.affine:  # the same parameter and buffer objects: an optimiser built on them stays valid
            out.weight, out.bias = net.weight, net.bias
        out.running_mean, out.running_var = net.running_mean, net.running_var
        out.num_batches_tracked = net.num_batches_tracked
        out.training = net.training
        return out
    for name, child in net.named_children():
        net.add_module(name, _cpu_sync(child))
    return net


def convert_sync_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` with every BatchNorm layer made to normalise over all processes, for a network on ``device``."""
    if torch.device(device).type == "cpu":
        return _cpu_sync(net)
    return nn.SyncBatchNorm.convert_sync_batchnorm(net)
