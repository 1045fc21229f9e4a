"""The trainer on several real processes (torchrun, gloo on CPU), mixed precision, and real preemption signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dadf.grid import store
from dadf.grid.cells import expand
from dadf.train import checkpoint, tracking

REPO = Path(__file__).resolve().parents[1]
# A GAN-style method (AE + latent critic, no BatchNorm) on small MLP-sized images.
BASE = ["dataset=synthetic", "grid.classes=[3]", "trainer.batch_size=32", "trainer.num_threads=1",
        "trainer.progress=false"]


def make_cell(composer, dirs, extra=(), method="aae"):
    overrides = [*dirs, *BASE, f"method={method}", f"grid.methods=[{method}]", *extra]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    return cell


def run_worker(cell_dir: Path, out: Path, nproc: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    worker = str(REPO / "tests" / "ddp_worker.py")
    if nproc == 1:
        cmd = [sys.executable, worker, str(cell_dir), str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", worker,
               str(cell_dir), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_combined_batch(composer, dirs, tmp_path):
    one = make_cell(composer, [f"runs_dir={tmp_path / 'one'}", dirs[1]], ["trainer.steps=6"])
    two = make_cell(composer, [f"runs_dir={tmp_path / 'two'}", dirs[1]], ["trainer.steps=6", "trainer.tracker=auto"])
    run_worker(one.dir, tmp_path / "out1", 1)
    run_worker(two.dir, tmp_path / "out2", 2)
    # live curves come from rank 0 only: one event file (none without tensorboard)
    assert len(list(two.dir.glob("events.out.tfevents.*"))) == (tracking.resolve("auto") == "tensorboard")
    r0, r1 = (torch.load(tmp_path / "out2" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "out1" / "rank0.pt")
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo" and single["world"] == 1
    for net in single["nets"]:
        for k, v in single["nets"][net].items():
            assert torch.equal(r0["nets"][net][k], r1["nets"][net][k]), f"ranks differ in {net}.{k}"
            # same maths, different summation order: equal to float32 rounding
            torch.testing.assert_close(r0["nets"][net][k], v, rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")
    # the test set is split over the ranks and gathered: both ranks hold all scores, in order
    assert torch.equal(r0["scores"], r1["scores"]) and len(r0["scores"]) == len(single["scores"])
    torch.testing.assert_close(r0["scores"], single["scores"], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_accumulation_matches_the_full_batch(composer, dirs, tmp_path):
    # An autoencoder: one update per step, so 2 micro-batches of 16 are the same maths as one batch of 32. (In an
    # alternating GAN step the critic's update lands after the last micro-batch, so it is not exact there.)
    full = make_cell(composer, [f"runs_dir={tmp_path / 'a'}", dirs[1]], ["trainer.steps=5"], method="ae")
    acc = make_cell(composer, [f"runs_dir={tmp_path / 'b'}", dirs[1]], ["trainer.steps=5", "trainer.accumulate=2"],
                    method="ae")
    run_worker(full.dir, tmp_path / "o1", 1)
    run_worker(acc.dir, tmp_path / "o2", 1)
    a, b = torch.load(tmp_path / "o1" / "rank0.pt"), torch.load(tmp_path / "o2" / "rank0.pt")
    for net in a["nets"]:
        for k in a["nets"][net]:
            torch.testing.assert_close(a["nets"][net][k], b["nets"][net][k], rtol=1e-4, atol=1e-5)


def test_global_batch_must_split_over_processes_and_micro_batches(composer, dirs):
    from dadf.grid.runner import run_cell

    cell = make_cell(composer, dirs, ["trainer.steps=2", "trainer.batch_size=30", "trainer.accumulate=4"])
    with pytest.raises(ValueError, match="multiple of 4"):
        run_cell(cell.dir)
    assert store.read_status(cell.dir)["state"] == store.FAILED


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_run(composer, dirs, precision):
    from dadf.grid.runner import run_cell

    cell = make_cell(composer, dirs, ["trainer.steps=20", f"trainer.precision={precision}"])
    result = run_cell(cell.dir)
    assert 0.0 <= result["metrics"]["auroc"] <= 1.0
    hw = result["hardware"]
    assert hw["precision"] == precision
    # on CPU Accelerate runs fp16 as fp32 (no CPU loss scaler): the result says so instead of pretending
    expected = precision if (precision == "bf16" or torch.cuda.is_available()) else "fp32"
    assert hw["precision_effective"] == expected
    assert set(result["skipped_steps"]) == {"ae", "critic"}


def test_val_auroc_selection_keeps_the_best_validated_state(composer, dirs):
    from dadf.grid.runner import run_cell

    cell = make_cell(composer, dirs, ["trainer.steps=40", "trainer.selection=val_auroc", "trainer.eval_every=10",
                                      "protocol.val_fraction=0.1", "protocol.val_anomalies=20"])
    result = run_cell(cell.dir)
    sel = result["selection"]
    assert sel["rule"] == "val_auroc" and sel["step"] in (10, 20, 30, 40)
    lines = [json.loads(s) for s in (cell.dir / "log.jsonl").read_text().splitlines() if "val_auroc" in s]
    assert [line["step"] for line in lines] == [10, 20, 30, 40]
    assert sel["value"] == max(line["val_auroc"] for line in lines)
    best = checkpoint.latest(cell.dir / "checkpoints" / "best")
    assert best is not None and checkpoint.load(best)["step"] == sel["step"]


def test_val_auroc_selection_without_validation_anomalies_is_refused(composer, dirs):
    from dadf.grid.runner import run_cell

    cell = make_cell(composer, dirs, ["trainer.steps=4", "trainer.selection=val_auroc"])
    with pytest.raises(ValueError, match="protocol.val_anomalies"):
        run_cell(cell.dir)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_sigusr2_through_submitit_checkpoints_requeues_and_finishes_identically(composer, dirs, tmp_path):
    """A real SIGUSR2 to the running task: the trainer saves at the next step, submitit requeues the job, the new
    task resumes from the checkpoint and ends with the same weights as an uninterrupted run."""
    import submitit

    from dadf.grid.runner import CellJob, run_cell

    extra = ["trainer.steps=600", "trainer.log_every=10", "trainer.checkpoint_every=10000",
             "trainer.keep_checkpoints=5"]
    ref = make_cell(composer, [f"runs_dir={tmp_path / 'ref'}", dirs[1]], extra)
    cell = make_cell(composer, [f"runs_dir={tmp_path / 'pre'}", dirs[1]], extra)
    run_cell(ref.dir)  # also builds the shards both use

    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=30, max_num_timeout=3)
    job = executor.submit(CellJob(cell.dir))
    log = cell.dir / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().count("\n") >= 3):  # training is under way
        assert time.time() < deadline and job.get_info()["jobState"] == "RUNNING", job.stderr()
        time.sleep(0.05)
    tasks = _children(job._process.pid)
    assert tasks, "the submitit controller has no task process"
    for pid in tasks:
        os.kill(pid, signal.SIGUSR2)
    result = job.result()  # the requeued task's result
    assert result is not None and result["steps"] == 600
    saved = [s for s, _ in checkpoint.complete_checkpoints(cell.dir / "checkpoints")]
    assert saved[-1] == 600 and len(saved) == 2 and 0 < saved[0] < 600, saved  # the preemption save, then the end
    assert "Requeued" in (job.stderr() or "") + (job.stdout() or "")
    a = checkpoint.load(checkpoint.latest(ref.dir / "checkpoints"))["method"]["nets"]
    b = checkpoint.load(checkpoint.latest(cell.dir / "checkpoints"))["method"]["nets"]
    for net in a:
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after preemption"
    ma, mb = (store.read_json(c.dir / "metrics.json")["metrics"] for c in (ref, cell))
    assert ma == mb
    assert store.read_status(cell.dir)["state"] == store.DONE


@pytest.mark.slow
def test_sigterm_in_foreground_saves_and_records_requeued(composer, dirs, tmp_path):
    cell = make_cell(composer, dirs, ["trainer.steps=100000", "trainer.log_every=10",
                                      "trainer.checkpoint_every=100000"])
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "train.py"), f"cell={cell.dir}", "--no-progress"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = cell.dir / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    status = store.read_status(cell.dir)
    assert status["state"] == store.REQUEUED and "SIGTERM" in status["reason"], (status, err[-2000:])
    assert checkpoint.latest(cell.dir / "checkpoints") is not None
    assert checkpoint.complete_checkpoints(cell.dir / "checkpoints")[-1][0] == status["step"]
    assert proc.returncode != 0


def test_a_signal_during_start_up_stops_training_at_the_first_step_boundary(composer, dirs):
    """A SIGUSR2 that lands before the step loop (data loading, building) is kept, not lost and not fatal: training
    saves and stops at its first agreement point, with a checkpoint to resume from."""
    from dadf.grid.runner import build
    from dadf.train.loop import Trainer
    from dadf.train.preemption import Preempted, PreemptionGuard

    cell = make_cell(composer, dirs, ["trainer.steps=50", "trainer.sync_every=4"])
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGUSR2)  # "during start-up"
        method, data, schedule = build(cell.cfg)
        trainer = Trainer(cell.cfg.trainer, method, data, schedule, cell.dir, seed=int(cell.cfg.seed))
        with pytest.raises(Preempted) as caught:
            trainer.run(progress=False, guard=guard)
    assert caught.value.signum == signal.SIGUSR2 and caught.value.step == 4
    assert checkpoint.complete_checkpoints(cell.dir / "checkpoints")[-1][0] == 4


def test_a_signal_the_guard_did_not_act_on_is_passed_on_when_it_is_left():
    from dadf.train.preemption import PreemptionGuard

    got = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))
    try:
        with PreemptionGuard():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.01)
            assert got == []  # held while inside
        assert got == [signal.SIGUSR2]  # delivered to the previous handler on leaving normally
        with pytest.raises(RuntimeError), PreemptionGuard():
            os.kill(os.getpid(), signal.SIGUSR2)
            raise RuntimeError("the block failed")
        assert got == [signal.SIGUSR2]  # not after a failure: the failure is what gets reported
    finally:
        signal.signal(signal.SIGUSR2, before)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 2])
def test_deepspeed_engines_per_network_match_ddp(composer, dirs, tmp_path, zero_stage):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")
    ddp = make_cell(composer, [f"runs_dir={tmp_path / 'ddp'}", dirs[1]], ["trainer.steps=4", "trainer.log_every=1"])
    ds = make_cell(composer, [f"runs_dir={tmp_path / 'ds'}", dirs[1]],
                   ["trainer.steps=4", "trainer.log_every=1", "trainer.strategy=deepspeed",
                    f"trainer.zero_stage={zero_stage}"])
    run_worker(ddp.dir, tmp_path / "o_ddp", 2)
    run_worker(ds.dir, tmp_path / "o_ds", 2)
    logs = [[json.loads(s) for s in (c.dir / "log.jsonl").read_text().splitlines()] for c in (ddp, ds)]
    assert [line["step"] for line in logs[1]] == [1, 2, 3, 4]
    for a, b in zip(*logs):  # the same losses, step by step
        for k in ("rec", "adv", "critic"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a, b)
    w_ddp, w_ds = (torch.load(tmp_path / o / "rank0.pt")["nets"] for o in ("o_ddp", "o_ds"))
    for net in w_ddp:
        for k in w_ddp[net]:
            torch.testing.assert_close(w_ddp[net][k], w_ds[net][k], rtol=1e-3, atol=1e-5)
