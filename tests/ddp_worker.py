"""Run by tests under torchrun (or plain python): train one cell folder on this process's rank and dump what
the rank ended with, so a test can compare ranks and world sizes.

    torchrun --nproc_per_node 2 tests/ddp_worker.py <cell_dir> <out_dir>
"""
import os
import sys
from pathlib import Path

import torch


def main(cell_dir: str, out_dir: str) -> None:
    from dadf.grid import store
    from dadf.grid.runner import build
    from dadf.train.loop import Trainer, score_distributed

    cell = Path(cell_dir)
    cfg = store.read_cell_config(cell)
    method, data, schedule = build(cfg)
    acc = method.accelerator
    world = int(os.environ.get("WORLD_SIZE", "1"))
    assert acc.num_processes == world, (acc.num_processes, world)
    trainer = Trainer(cfg.trainer, method, data, schedule, cell, seed=int(cfg.seed))
    trainer.run(progress=False)
    scores = score_distributed(method, data.test_x, 64)["score"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"nets": method.state_dict()["nets"], "scores": torch.from_numpy(scores),
                "world": acc.num_processes, "backend": str(torch.distributed.get_backend())
                if torch.distributed.is_initialized() else None}, out / f"rank{acc.process_index}.pt")
    if torch.distributed.is_initialized():
        # Tear the group down while both ranks are alive: left to interpreter exit, gloo's threads were seen to
        # abort one rank under load ("terminate called without an active exception") after its results were saved.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
