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
    ``update``, once per micro-batch; ``module`` is the bare network inside its wrapper.
    """

    def __init__(self, accelerator: Accelerator, channels_last: bool = False):
        self.accelerator, self.channels_last = accelerator, channels_last

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def place(self, net: nn.Module) -> nn.Module:
        """On the device, in the trainer's memory format; before its optimiser is built from its parameters."""
        net = net.to(self.device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    @abc.abstractmethod
    def wrap(self, net: nn.Module, opt: torch.optim.Optimizer, *, broadcast_buffers: bool,
             find_unused_parameters: bool) -> tuple[nn.Module, object]:
        """(network, optimiser) as the method uses them from now on."""

    @abc.abstractmethod
    def module(self, net: nn.Module) -> nn.Module:
        """The bare network inside ``wrap``'s wrapper (for state dicts, frozen use and scoring)."""

    @abc.abstractmethod
    def update(self, net: nn.Module, opt, loss: torch.Tensor, ctx: StepContext) -> bool:
        """Backward of ``loss`` for this micro-batch; the optimiser steps after the last one. True when an fp16
        loss scaler skipped the step (overflow)."""

    def optimizer_state(self, opt) -> object:
        return opt.state_dict()

    def load_optimizer_state(self, name: str, opt, state) -> None:
        opt.load_state_dict(state)

    def state_dict(self) -> dict | None:
        """The strategy's own state for checkpoints (a loss scaler), or None."""
        return None

    def load_state_dict(self, state: dict | None) -> None:  # noqa: B027 -- most strategies keep no state
        pass


class SingleProcess(Strategy):
    """One process under Accelerate (device placement, autocast, fp16 loss scaling, torch.compile): the trainer's
    strategy on one process, and the one a method built with a bare Accelerator (unit tests) gets."""

    def wrap(self, net, opt, *, broadcast_buffers=True, find_unused_parameters=False):
        return self.accelerator.prepare(net, opt)

    def module(self, net):
        # What Accelerate's unwrap_model does here, without importing DeepSpeed (1.5 s per process) as it does
        # whenever DeepSpeed is installed: peel torch.compile's wrapper and any data-parallel one.
        net = getattr(net, "_orig_mod", net)
        while isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            net = net.module
        return net

    def keep_gradients_local(self, net) -> contextlib.AbstractContextManager:
        """Around a micro-batch before the last: its gradients stay on this process (nothing to sync here)."""
        return contextlib.nullcontext()

    def update(self, net, opt, loss, ctx):
        if ctx.micro == 0:
            opt.zero_grad(set_to_none=True)
        with contextlib.nullcontext() if ctx.last_micro else self.keep_gradients_local(net):
            self.accelerator.backward(loss / ctx.accumulate)
        if not ctx.last_micro:
            return False
        opt.step()
        return opt.step_was_skipped

    def state_dict(self):
        scaler = self.accelerator.scaler
        return scaler.state_dict() if scaler is not None else None

    def load_state_dict(self, state):
        if state is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state)
