"""``trainer.strategy=deepspeed``: one DeepSpeed engine per network.

Accelerate prepares only one model under DeepSpeed, and a GAN's networks are not one model (the critic reads the
generator's output; they step at different times), so each network gets its own ``deepspeed.initialize`` with
ZeRO stage 0-2 over the same data-parallel group. Engines average gradients across ranks like DDP does, so the
losses match the DDP path on the same data.

Under bf16 / fp16, DeepSpeed casts a network's parameters (and buffers) to that type but not what it is given: the
data, the noise, another network's output. ``cast_inputs_to_parameters`` makes each layer that holds parameters cast
its floating-point inputs to their type, which covers the engine's forward and every direct use of the bare network
(a frozen critic in the generator's loss, a critic's features in a score).
"""
from __future__ import annotations

import os
import socket

import torch

PRECISION_KEYS = {"bf16": "bf16", "fp16": "fp16"}


def ensure_process_group() -> None:
    """DeepSpeed needs torch.distributed even on one process: a one-member gloo group on localhost then."""
    if torch.distributed.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def config(micro_batch: int, accumulate: int, world: int, precision: str, zero_stage: int) -> dict:
    if zero_stage not in (0, 1, 2):
        raise ValueError(f"trainer.zero_stage={zero_stage}; dadf supports ZeRO stages 0, 1 and 2 (one engine per "
                         f"network; stage 3 would shard parameters the other networks read)")
    cfg = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulate,
        "train_batch_size": micro_batch * accumulate * world,
        "zero_optimization": {"stage": zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision in PRECISION_KEYS:
        cfg[PRECISION_KEYS[precision]] = {"enabled": True}
    return cfg


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def _cast_hook(module: torch.nn.Module, args: tuple, kwargs: dict):
    own = next(iter(module.parameters()), None)
    if own is None or not own.is_floating_point():
        return None
    return _cast(args, own.dtype), _cast(kwargs, own.dtype)


def cast_inputs_to_parameters(net: torch.nn.Module) -> None:
    """Every layer of ``net`` that holds parameters of a half type casts its floating-point inputs to that type
    before its forward (a differentiable cast: gradients reach fp32 inputs). Nothing changes for fp32 networks."""
    if not any(p.dtype in (torch.float16, torch.bfloat16) for p in net.parameters()):
        return
    for m in net.modules():
        if next(m.parameters(recurse=False), None) is not None or hasattr(m, "parametrizations"):
            m.register_forward_pre_hook(_cast_hook, with_kwargs=True)


def initialize(net: torch.nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict):
    try:
        import deepspeed
    except ImportError as e:
        raise ImportError("trainer.strategy=deepspeed needs the deepspeed package: pip install deepspeed "
                          "(or use trainer.strategy=ddp)") from e
    ensure_process_group()
    # On CPU, DeepSpeed's comm backend JIT-compiles and starts a shared-memory all-reduce kernel that only its
    # inference all-reduce uses; a fresh venv compiles it on first use and it aborted a 2-process CI run. Training
    # reduces through torch.distributed (gloo) either way, so it stays off.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    os.environ.setdefault("LOCAL_RANK", os.environ.get("LOCAL_RANK", "0"))
    deepspeed.init_distributed(dist_backend=torch.distributed.get_backend(), auto_mpi_discovery=False,
                               verbose=False)
    engine, ds_optimizer, _, _ = deepspeed.initialize(model=net, optimizer=optimizer, config=ds_config)
    return engine, ds_optimizer
