import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from dadf.train import checkpoint
from dadf.train.batches import BatchStream


def _stream(n=37, bs=8, seed=3):
    return BatchStream({"x": torch.arange(n).float(), "i": torch.arange(n)}, bs, seed)


def test_batches_are_full_and_each_epoch_is_a_permutation():
    s = _stream(n=37, bs=8)
    seen = torch.cat([next(s)["i"] for _ in range(37)])  # 37 batches of 8 = exactly 8 epochs
    assert all(len(b) == 8 for b in seen.split(8))
    for epoch in seen.split(37):
        assert sorted(epoch.tolist()) == list(range(37))


def test_batch_position_round_trip():
    a = _stream()
    for _ in range(40):
        next(a)
    state = a.state_dict()
    b = _stream()
    b.load_state_dict(state)
    for _ in range(10):
        assert torch.equal(next(a)["i"], next(b)["i"])


def test_batch_state_from_other_data_is_refused():
    with pytest.raises(ValueError, match="changed since the save"):
        _stream(n=10).load_state_dict(_stream(n=11).state_dict())


def test_checkpoints_are_atomic_pruned_and_newest_wins(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, step, {"step": step}, keep=2)
    assert [s for s, _ in checkpoint.complete_checkpoints(tmp_path)] == [20, 30]
    # a folder without the completion marker (a save that died) is never loaded
    (tmp_path / "step-00000040.tmp").mkdir()
    (tmp_path / "step-00000050").mkdir()
    torch.save({"step": 50}, tmp_path / "step-00000050" / "state.pt")
    assert checkpoint.load(checkpoint.latest(tmp_path))["step"] == 30


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    checkpoint.save(tmp_path, 1, {"step": 1, "w": torch.zeros(3)})
    # A child process starts saving a large checkpoint and is killed with SIGKILL mid-write.
    code = textwrap.dedent(f"""
        import torch, sys
        from dadf.train import checkpoint
        big = {{"step": 2, "w": torch.randn(64, 1024, 1024)}}
        print("saving", flush=True)
        checkpoint.save(r"{tmp_path}", 2, big)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saving"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill as soon as the file is being written
        if (tmp_path / "step-00000002.tmp" / "state.pt").exists():
            break
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    latest = checkpoint.latest(tmp_path)
    state = checkpoint.load(latest)
    assert state["step"] in (1, 2)  # never a half-written one
    if state["step"] == 1:
        assert torch.equal(state["w"], torch.zeros(3))
