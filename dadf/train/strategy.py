"""How a cell's networks are wrapped and updated across processes (``trainer.strategy``): the strategies behind
dadf.methods.interface.Strategy.

- one process: ``SingleProcess`` (Accelerate: autocast, fp16 loss scaling, torch.compile);
- ``ddp``: Accelerate's DistributedDataParallel, with DDP options per network and no all-reduce before the last
  micro-batch of a step;
- ``deepspeed``: one DeepSpeed engine per network (ZeRO 0-2); see deepspeed_engine.py.

On several processes, BatchNorm layers normalise over the global batch (``trainer.sync_bn``, on by default).
"""
from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from omegaconf import DictConfig

from dadf.checks import refuse
from dadf.config import channels_last as channels_last_for
from dadf.config import trainer_problems
from dadf.methods.interface import SingleProcess, Strategy
from dadf.train import deepspeed_engine
from dadf.train.loop import Schedule


class DDP(SingleProcess):
    """Several processes under Accelerate: each network in its own DistributedDataParallel."""

    def wrap(self, net, opt, *, broadcast_buffers=True, find_unused_parameters=False):
        saved = self.accelerator.ddp_handler
        # Accelerate takes DDP options from one accelerator-wide handler; give each network its own.
        self.accelerator.ddp_handler = DistributedDataParallelKwargs(
            broadcast_buffers=broadcast_buffers, find_unused_parameters=find_unused_parameters)
        try:
            return self.accelerator.prepare(net, opt)
        finally:
            self.accelerator.ddp_handler = saved

    def keep_gradients_local(self, net):
        # Only the last micro-batch all-reduces gradients across ranks; the others accumulate locally. DDP decides
        # at each forward whether the next backward all-reduces, so the forwards must be inside too.
        return self.accelerator.no_sync(net)


class DeepSpeed(Strategy):
    """One DeepSpeed engine per network; the engine scales by 1/accumulate, all-reduces and steps at its own
    accumulation boundary, which falls on the step's last micro-batch when each network updates once per
    micro-batch (TorchMethod.update checks it)."""

    def __init__(self, accelerator: Accelerator, channels_last: bool, micro_batch: int, accumulate: int,
                 precision: str, zero_stage: int, sync_bn: bool = False):
        super().__init__(accelerator, channels_last, sync_bn)
        self.zero_stage = zero_stage
        self.config = deepspeed_engine.config(micro_batch, accumulate, accelerator.num_processes, precision,
                                              zero_stage)

    def wrap(self, net, opt, *, broadcast_buffers=True, find_unused_parameters=False):
        engine, ds_opt = deepspeed_engine.initialize(net, opt, self.config)
        deepspeed_engine.cast_inputs_to_parameters(engine.module)
        return engine, ds_opt

    def module(self, net):
        return net.module

    def for_penalty(self, net):
        # An engine hooks the backward of its outputs and refuses one it does not run itself (autograd.grad): the
        # penalty goes through the bare network, whose parameter gradients the engine reduces like any other.
        return net.module

    def update(self, net, opt, loss, ctx):
        skipped = net.skipped_steps
        net.backward(loss)
        net.step()
        return net.skipped_steps > skipped

    def optimizer_state(self, opt):
        if self.zero_stage == 0:
            return opt.state_dict()
        # ZeRO 1-2 partition optimiser state over ranks: gather every rank's part (a collective on all ranks).
        parts = [None] * self.accelerator.num_processes
        torch.distributed.all_gather_object(parts, opt.state_dict())
        return parts

    def load_optimizer_state(self, name, opt, state):
        world = self.accelerator.num_processes
        if isinstance(state, list) and len(state) != world:
            raise RuntimeError(f"the checkpoint's ZeRO optimiser state of {name!r} is split over {len(state)} "
                               f"ranks, this run has {world}; resume on as many ranks")
        opt.load_state_dict(state)


def sync_bn(tcfg: DictConfig, processes: int) -> bool:
    """Whether BatchNorm layers normalise over the global batch: ``trainer.sync_bn``, null = yes; only several
    processes have anything to synchronise."""
    value = tcfg.get("sync_bn")
    return processes > 1 and (value is None or bool(value))


def make_strategy(tcfg: DictConfig, accelerator: Accelerator, schedule: Schedule | None,
                  method: str = "") -> Strategy:
    """The strategy ``trainer.strategy`` names, for this run's processes and micro-batches. A method that is not
    trained (``schedule`` None: fitted once) has no networks to wrap and gets the single-process one. channels_last:
    the trainer's value, or ``method``'s default for the device type (dadf.config.CHANNELS_LAST)."""
    refuse(trainer_problems(tcfg))  # a cell runs from its cell.yaml, which may have been edited by hand
    channels_last = channels_last_for(tcfg, method, accelerator.device.type)
    sync = sync_bn(tcfg, accelerator.num_processes)
    if schedule is None or (tcfg.strategy == "ddp" and accelerator.num_processes == 1):
        return SingleProcess(accelerator, channels_last)
    if tcfg.strategy == "ddp":
        return DDP(accelerator, channels_last, sync)
    return DeepSpeed(accelerator, channels_last, schedule.micro, schedule.accumulate, str(tcfg.precision),
                     int(tcfg.zero_stage), sync)
