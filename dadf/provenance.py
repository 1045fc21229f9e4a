"""Where a result came from: code version, config hash, hardware. Recorded in every cell's metrics.json."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import dadf


def config_hash(cfg: DictConfig | dict, length: int = 8) -> str:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(dadf.__file__).parent, capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(dadf.__file__).parent, capture_output=True, text=True, timeout=5).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware(device: torch.device, num_processes: int, precision: str) -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "device": str(device),
            "num_processes": num_processes, "precision": precision, "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # which GPU of the machine "cuda:0" was (the local launcher's choice)
        info["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return info


def code_version() -> dict:
    return {"dadf": dadf.__version__, "git_commit": git_commit()}
