"""The callable a submitit job runs: one cell, read from its folder, on every task of the job.

It holds only the cell folder, never a checkpoint path: a requeued or resubmitted job re-reads the folder and the
trainer resumes from the newest complete checkpoint it finds there.
"""
from __future__ import annotations

import os
from pathlib import Path

from dadf.train.preemption import Preempted


class CellJob:
    def __init__(self, cell_dir: str | Path):
        self.cell_dir = str(cell_dir)

    def __call__(self) -> dict | None:
        from dadf.train.loop import run_cell

        if int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1:
            import submitit

            # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for torch.distributed's env:// initialisation.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            return run_cell(self.cell_dir)
        except Preempted as p:
            # The checkpoint is on disk; submitit's own handler now calls checkpoint() and requeues the job.
            p.forward()
            return None

    def checkpoint(self):
        """Called by submitit on preemption or timeout: resubmit the same cell folder, nothing else."""
        import submitit

        return submitit.helpers.DelayedSubmission(CellJob(self.cell_dir))

    def __repr__(self) -> str:
        return f"CellJob({self.cell_dir!r})"
