"""What a method receives from the trainer: the context of each micro-batch and the strategy that wraps and
updates its networks. dadf/train/strategy.py implements the strategy for DDP and DeepSpeed; methods see only this
module, so they never import the trainer package."""
from __future__ import annotations

import abc
import contextlib
import dataclasses

import torch
from accelerate import Accelerator
from torch import nn

from dadf.nets.sync_bn import convert_sync_batchnorm, has_batchnorm


@dataclasses.dataclass(frozen=True)
class StepContext:
    """Where one micro-batch lies: micro-batch ``micro`` of ``accumulate`` in optimiser step ``step``, whose rows on
    this process are ``[batch_lo, batch_lo + n)`` of a global batch of ``global_batch`` rows. The default is a
    method driven by hand (unit tests): step 0, no accumulation, and no global batch to slice noise from."""

    step: int = 0
    micro: int = 0
    accumulate: int = 1
    batch_lo: int = 0
    global_batch: int | None = None

    @property
    def last_micro(self) -> bool:
        """The micro-batch whose update steps the optimisers (and the method's schedules)."""
        return self.micro == self.accumulate - 1


class Strategy(abc.ABC):
    """How a method's networks are placed, wrapped across processes and updated (trainer.strategy).

    Each network is registered once (``place``, then ``wrap`` with its optimiser) and changed only through
    ``update``, once per micro-batch; ``module`` is the bare network inside its wrapper. ``sync_bn``: BatchNorm layers
    normalise over the global batch of all processes (dadf/nets/sync_bn.py); ``synced_bn`` says whether a network
    had any (metrics.json).
    """

    def __init__(self, accelerator: Accelerator, channels_last: bool = False, sync_bn: bool = False):
        self.accelerator, self.channels_last, self.sync_bn = accelerator, channels_last, sync_bn
        self.synced_bn = False

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def place(self, net: nn.Module) -> nn.Module:
        """On the device, in the trainer's memory format, BatchNorm synchronised when asked; before its optimiser is
        built from its parameters."""
        if self.sync_bn and has_batchnorm(net):
            net = convert_sync_batchnorm(net, self.device)
            self.synced_bn = True
        net = net.to(self.device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def for_penalty(self, net: nn.Module) -> nn.Module:
        """``net`` as a gradient penalty calls it: its gradient is differentiated again (double backward), which
        torch.compile's graphs and DeepSpeed's engines do not allow; its parameters still get their gradients in the
        loss's one backward. The penalty itself peels torch.compile (dadf.losses.gan)."""
        return net

    def keep_gradients_local(self, net: nn.Module) -> contextlib.AbstractContextManager:
        """Around all of a micro-batch before the step's last, forward passes included: its gradients stay on this
        process (nothing to sync for one process, or where the wrapper accumulates itself)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def wrap(self, net: nn.Module, opt: torch.optim.Optimizer, *, broadcast_buffers: bool,
             find_unused_parameters: bool) -> tuple[nn.Module, object]:
        """(network, optimiser) as the method uses them from now on."""

    @abc.abstractmethod
    def module(self, net: nn.Module) -> nn.Module:
        """The bare network inside ``wrap``'s wrapper (for state dicts, frozen use and scoring)."""

    @abc.abstractmethod
    def update(self, net: nn.Module, opt, loss: torch.Tensor, ctx: StepContext) -> bool | torch.Tensor:
        """Backward of ``loss`` for this micro-batch; the optimiser steps after the last one. True (or a true
        0-dim tensor, read without a host sync) when an fp16 loss scaler skipped the step (overflow)."""

    def optimizer_state(self, opt) -> object:
        return opt.state_dict()

    def load_optimizer_state(self, name: str, opt, state) -> None:
        opt.load_state_dict(state)

    def scaler_state(self, opt) -> dict | None:
        """The state of ``opt``'s loss scaler for checkpoints, or None."""
        return None

    def load_scaler_state(self, opt, state: dict | None) -> None:  # noqa: B027 -- most strategies keep no scaler
        pass


def _scaler_like(scaler) -> torch.amp.GradScaler:
    """A fresh loss scaler with ``scaler``'s settings (device, initial scale, growth and backoff)."""
    return torch.amp.GradScaler(scaler._device, init_scale=scaler._init_scale, growth_factor=scaler._growth_factor,
                                backoff_factor=scaler._backoff_factor, growth_interval=scaler._growth_interval,
                                enabled=scaler.is_enabled())


class SingleProcess(Strategy):
    """One process under Accelerate (device placement, autocast, torch.compile): the trainer's strategy on one
    process, and the one a method built with a bare Accelerator (unit tests) gets.

    fp16 loss scaling: each network has its own scaler, with the settings of Accelerate's. One shared scaler would
    be updated by every optimiser's step, so a network stepping after another would unscale gradients accumulated
    under two scales, and an overflow in one network would shrink the scale of all."""

    def __init__(self, accelerator: Accelerator, channels_last: bool = False, sync_bn: bool = False):
        super().__init__(accelerator, channels_last, sync_bn)
        self.scalers: dict[object, torch.amp.GradScaler] = {}  # by optimiser (as ``wrap`` returned it)

    def wrap(self, net, opt, *, broadcast_buffers=True, find_unused_parameters=False):
        net, opt = self.accelerator.prepare(net, opt)
        if self.accelerator.scaler is not None:
            self.scalers[opt] = _scaler_like(self.accelerator.scaler)
        return net, opt

    def module(self, net):
        # What Accelerate's unwrap_model does here, without importing DeepSpeed (1.5 s per process) as it does
        # whenever DeepSpeed is installed: peel torch.compile's wrapper and any data-parallel one.
        net = getattr(net, "_orig_mod", net)
        while isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            net = net.module
        return net

    def update(self, net, opt, loss, ctx):
        scaler = self.scalers.get(opt)
        if ctx.micro == 0:
            opt.zero_grad(set_to_none=True)
        with contextlib.nullcontext() if ctx.last_micro else self.keep_gradients_local(net):
            if scaler is None:
                self.accelerator.backward(loss / ctx.accumulate)
            else:
                scaler.scale(loss / ctx.accumulate).backward()
        if not ctx.last_micro:
            return False
        if scaler is None:
            opt.step()
            return opt.step_was_skipped
        inner = opt.optimizer  # stepped by its own scaler, not by Accelerate's shared one
        scaler.step(inner)
        found_inf = sum(scaler._found_inf_per_device(inner).values())  # on the device: no host sync
        scaler.update()
        return found_inf > 0

    def scaler_state(self, opt):
        scaler = self.scalers.get(opt)
        return scaler.state_dict() if scaler is not None else None

    def load_scaler_state(self, opt, state):
        if state is not None and opt in self.scalers:
            self.scalers[opt].load_state_dict(state)
