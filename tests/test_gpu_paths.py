"""The paths a GPU run takes, checked where they can run without one: several processes (torchrun, gloo), a
compiled critic with a gradient penalty, DeepSpeed in bf16, CUDA RNG states on fewer devices, per-network fp16 loss
scalers, BatchNorm over the global batch, no gradient all-reduce before a step's last micro-batch.

Run as a script under torchrun, this file is the worker of its multi-process tests:
    torchrun --nproc_per_node 2 tests/test_gpu_paths.py run-cell <cell_dir>
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BASE = ["dataset=synthetic", "grid.classes=[3]", "trainer.num_threads=1", "trainer.progress=false"]


# ------------------------------------------------------------------------------------------------- helpers
def make_cell(composer, dirs, method, extra=()):
    from dadf.grid import store
    from dadf.grid.cells import expand

    overrides = [*dirs, *BASE, f"method={method}", f"grid.methods=[{method}]", *extra]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    return cell


def run_cell_in(cell_dir: Path, nproc: int, timeout: int = 300) -> subprocess.CompletedProcess:
    """``run_cell`` of the cell folder on ``nproc`` processes (torchrun, gloo on CPU), as a SLURM job runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "run-cell", str(cell_dir)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *cmd[1:]]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{nproc} process(es) did not finish the cell within {timeout} s (a collective waiting for a "
                    f"process that never joins): {(e.stderr or b'')[-2000:]!r}")


def final_nets(cell_dir: Path) -> dict:
    from dadf.train import checkpoint

    return checkpoint.load(checkpoint.latest(cell_dir / "checkpoints"))["method"]["nets"]


def _worker_run_cell(cell_dir: str) -> None:
    from dadf.grid.runner import run_cell

    world = int(os.environ.get("WORLD_SIZE", "1"))
    result = run_cell(cell_dir)
    assert result["hardware"]["num_processes"] == world, (result["hardware"], world)
    if torch.distributed.is_initialized():  # tear the group down while every rank is alive (see ddp_worker.py)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------- rank-0-only forwards (reconstructions)
@pytest.mark.slow
def test_two_process_ama_on_3x32x32_finishes_with_reconstructions(composer, dirs):
    """resnet32 E/G hold BatchNorm buffers; the main process alone writes reconstructions. A forward through the
    DDP wrapper there would broadcast buffers to a process that never joins: the cell would hang at its end."""
    cell = make_cell(composer, dirs, "ama", [
        "+dataset.params.shape=[3,32,32]", "+dataset.params.n_per_class=8", "+dataset.params.n_test_per_class=2",
        "trainer.batch_size=4", "trainer.steps=1", "method.critic_steps=1"])
    proc = run_cell_in(cell.dir, 2, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((cell.dir / "metrics.json").read_text())
    # resnet32's E/G hold BatchNorm, now synchronised over the two processes
    assert metrics["hardware"]["num_processes"] == 2 and metrics["hardware"]["sync_bn"] is True
    import numpy as np

    recon = np.load(cell.dir / "recon.npz")
    assert recon["x_hat"].shape == recon["x"].shape and recon["x"].shape[1:] == (3, 32, 32)


# ------------------------------------------------------------------------- compiled critic + gradient penalty
# method: (options, input shape); AMA's penalty is a call of its own, PIAD's runs inside the critic's forward
COMPILED = {
    "ama": ({"critic_steps": 2, "lipschitz": "sn+gp"}, (1, 8, 8)),
    "piad": ({"rec_loss": "l2", "n_critic": 1}, (1, 16, 16)),
}


def _train_steps(method: str, dynamo_backend: str, steps: int = 2):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from omegaconf import OmegaConf

    from dadf import config
    from dadf.methods import get_method
    from dadf.methods.base import DataInfo
    from dadf.methods.interface import StepContext

    opts, shape = COMPILED[method]
    AcceleratorState._reset_state()
    acc = Accelerator(cpu=True, dynamo_backend=dynamo_backend)
    torch.manual_seed(0)
    cfg = OmegaConf.merge(config.node("method", method), opts)
    m = get_method(method)(cfg, DataInfo("image", shape, 32, 16, 2, 40), acc, 0)
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses = []
    for step in range(steps):
        m.begin(StepContext(step=step, global_batch=16))
        losses.append(m.train_step({"x": x, "label": torch.zeros(16, dtype=torch.long)}, step))
    torch._dynamo.reset()
    return m, losses


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(COMPILED))
def test_a_compiled_critic_with_a_gradient_penalty_trains(method):
    compiled, losses = _train_steps(method, "aot_eager")
    assert all(hasattr(n, "_orig_mod") for n in compiled.nets.values()), "the networks should be compiled"
    eager, eager_losses = _train_steps(method, "no")
    assert any(k.endswith("gp") for k in losses[0])
    for got, want in zip(losses, eager_losses):  # the same maths: penalties eager, the other passes compiled
        assert set(got) == set(want)
        for k in got:
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)


# --------------------------------------------------------------------------------------- DeepSpeed in bf16
DEEPSPEED_BF16 = """
import math, torch
from omegaconf import OmegaConf
from dadf import config
from dadf.methods import get_method
from dadf.methods.base import DataInfo
from dadf.methods.interface import StepContext
from dadf.train.loop import Schedule, make_accelerator
from dadf.train.strategy import make_strategy

torch.set_num_threads(1)
tcfg = OmegaConf.merge(config.node("trainer", "default"), {"precision": "bf16", "strategy": "deepspeed",
                                                           "device": "cpu", "batch_size": 16, "steps": 4})
for name, opts in (("aae", {}), ("ama", {"critic_steps": 1, "lipschitz": "gp"})):
    acc = make_accelerator(tcfg)
    cfg = OmegaConf.merge(config.node("method", name), opts)
    m = get_method(name)(cfg, DataInfo("image", (1, 8, 8), 64, 16, 4, 4),
                         make_strategy(tcfg, acc, Schedule(tcfg, 64, 1), name), 0)
    assert {p.dtype for n in m.nets.values() for p in n.parameters()} == {torch.bfloat16}, name
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    for step in range(2):
        m.begin(StepContext(step=step, global_batch=16))
        losses = m.train_step({"x": x, "label": torch.zeros(16, dtype=torch.long)}, step)
    assert all(math.isfinite(float(v)) for v in losses.values()), (name, losses)
    score = m.score(x)
    assert score.shape == (16,) and bool(score.float().isfinite().all()), name
    assert m.reconstruct(x).shape == x.shape
    print("ok", name)
"""


@pytest.mark.slow
def test_deepspeed_bf16_trains_and_scores_with_fp32_inputs():
    """DeepSpeed's bf16 mode casts the networks, not the data or noise; the engines' forwards, the frozen critic
    in the generator's loss and the bare networks that score all take fp32 inputs."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", DEEPSPEED_BF16], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("ok ")] == ["ok aae", "ok ama"], proc.stdout


# ----------------------------------------------------------------------------- CUDA RNG on fewer devices
def test_cuda_rng_states_of_more_devices_than_visible_restore_those_visible(tmp_path, monkeypatch):
    """A checkpoint written on 2 GPUs resumed where 1 is visible: the visible device gets its state back."""
    from dadf.train import checkpoint, loop

    saved = [torch.full((16,), i, dtype=torch.uint8) for i in (7, 9)]
    checkpoint.save(tmp_path, 1, {"rng": {**loop.rng_state(), "cuda": saved}})
    state = checkpoint.load(checkpoint.latest(tmp_path))["rng"]

    restored = {}

    def set_rng_state(new_state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= 1:  # what torch does for a device that is not there
            raise IndexError("list index out of range")
        restored[index] = new_state.clone()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    with pytest.warns(UserWarning, match="2 CUDA device"):
        loop.set_rng_state(state)
    assert list(restored) == [0] and torch.equal(restored[0], saved[0])


# -------------------------------------------------------------------------------- fp16 loss scalers per network
def _aae_with_accumulation(scaler: bool, steps: int = 2):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from omegaconf import OmegaConf

    from dadf import config
    from dadf.methods import get_method
    from dadf.methods.base import DataInfo
    from dadf.methods.interface import StepContext

    AcceleratorState._reset_state()
    acc = Accelerator(cpu=True)
    if scaler:  # what fp16 on a GPU gets from Accelerate, here on CPU (the maths stays fp32: only the scaling shows)
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    torch.manual_seed(0)
    cfg = OmegaConf.merge(config.node("method", "aae"), {"adv_weight": 1.0})
    m = get_method("aae")(cfg, DataInfo("image", (1, 8, 8), 64, 16, 4, 4), acc, 0)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for step in range(steps):
        for micro in range(2):
            m.begin(StepContext(step=step, micro=micro, accumulate=2, batch_lo=8 * micro, global_batch=16))
            m.train_step({"x": x[8 * micro : 8 * micro + 8]}, step)
    return m


def test_fp16_loss_scaling_with_accumulation_keeps_each_networks_gradients():
    """Two networks, two micro-batches per step, a scale that grows at every optimiser step: each network's
    accumulated gradients are unscaled by the scale they were made with, so the weights are those of the unscaled
    run (scaling by powers of two is exact)."""
    plain, scaled = _aae_with_accumulation(False), _aae_with_accumulation(True)
    for net in ("critic", "ae"):
        weights = scaled._module(scaled.nets[net]).state_dict()
        for k, v in plain._module(plain.nets[net]).state_dict().items():
            torch.testing.assert_close(weights[k], v, rtol=1e-6, atol=1e-7, msg=f"{net}.{k}")
    assert scaled.skipped_steps == {"ae": 0, "critic": 0}
    state = scaled.state_dict()
    assert {k: s["scale"] for k, s in state["scalers"].items()} == {"ae": 2.0**12, "critic": 2.0**12}


def test_an_overflow_skips_only_its_own_networks_step():
    m = _aae_with_accumulation(True, steps=1)
    before = {k: v.clone() for k, v in m.bare("ae").state_dict().items()}
    critic_before = {k: v.clone() for k, v in m.bare("critic").state_dict().items()}
    from dadf.methods.interface import StepContext

    m.begin(StepContext(step=1, micro=0, accumulate=1, global_batch=8))
    m.update("ae", m.bare("ae")(torch.full((8, 1, 8, 8), float("inf")))[1].mean())
    z = m.bare("ae")(torch.zeros(8, 1, 8, 8))[0].detach()
    m.update("critic", m.critic(z).mean())
    assert m.skipped_steps == {"ae": 1, "critic": 0}
    assert all(torch.equal(v, before[k]) for k, v in m.bare("ae").state_dict().items())
    assert any(not torch.equal(v, critic_before[k]) for k, v in m.bare("critic").state_dict().items())
    scales = {k: s["scale"] for k, s in m.state_dict()["scalers"].items()}
    assert scales == {"ae": 2.0**10, "critic": 2.0**12}  # backed off only where it overflowed


# ------------------------------------------------------------------------------ BatchNorm over the global batch
@pytest.mark.slow
def test_sync_bn_makes_a_batchnorm_net_train_alike_on_1_and_2_processes(composer, dirs, tmp_path):
    """The ae baseline's conv nets (16x16 images) hold BatchNorm: with trainer.sync_bn (the default) 2 processes
    end with the weights and BatchNorm statistics of 1; without, each normalises its half batch, and they differ."""
    extra = ["+dataset.params.shape=[1,16,16]", "trainer.batch_size=32", "trainer.steps=3"]

    def cell(name, more=()):
        return make_cell(composer, [f"runs_dir={tmp_path / name}", dirs[1]], "ae", [*extra, *more])

    one, two, local = cell("one"), cell("two"), cell("local", ["trainer.sync_bn=false"])
    for c, n in ((one, 1), (two, 2), (local, 2)):
        proc = run_cell_in(c.dir, n)
        assert proc.returncode == 0, proc.stderr[-4000:]
    hw = {c: json.loads((c.dir / "metrics.json").read_text())["hardware"] for c in (one, two, local)}
    assert (hw[one]["sync_bn"], hw[two]["sync_bn"], hw[local]["sync_bn"]) == (False, True, False)
    assert one.id == two.id != local.id  # sync_bn=null keeps the cell's id; an explicit value is another cell
    ref, synced, unsynced = (final_nets(c.dir)["ae"] for c in (one, two, local))
    bn = [k for k in ref if k.endswith(".running_var")]
    assert bn, "the test needs a net with BatchNorm"
    # A conv bias right before a BatchNorm has no gradient in exact maths; Adam turns its rounding noise into steps
    # of the learning rate, and the running mean carries that bias: both are left out.
    noise = {k.replace("running_var", "running_mean") for k in bn}
    noise |= {f"{k.rsplit('.', 2)[0]}.{int(k.rsplit('.', 2)[1]) - 1}.bias" for k in bn}
    compared = [k for k in ref if k not in noise and ref[k].is_floating_point()]

    def gap(other):
        return max(float((other[k] - ref[k]).abs().max()) for k in compared)

    assert gap(synced) < 1e-4 < 1e-3 < gap(unsynced), (gap(synced), gap(unsynced))


# ------------------------------------------------------------- gradient accumulation: forwards under no_sync
def test_micro_batches_before_the_last_run_entirely_without_gradient_sync(composer, dirs):
    """DDP decides at each forward whether the next backward all-reduces: every forward and update of a micro-batch
    before the step's last runs inside each network's no_sync, and none of the last one does."""
    from dadf.grid.runner import build
    from dadf.train.loop import Trainer

    cell = make_cell(composer, dirs, "aae", ["trainer.batch_size=32", "trainer.accumulate=2", "trainer.steps=1"])
    method, data, schedule = build(cell.cfg)
    trainer = Trainer(cell.cfg.trainer, method, data, schedule, cell.dir, seed=0)
    local = dict.fromkeys(method.nets, 0)  # no_sync contexts each network is inside (they may nest)
    seen: list[tuple[int, str, bool]] = []

    @contextlib.contextmanager
    def keep_local(net):
        name = next(k for k, v in method.nets.items() if v is net)
        local[name] += 1
        try:
            yield
        finally:
            local[name] -= 1

    method.strategy.keep_gradients_local = keep_local
    for name, net in method.nets.items():
        net.register_forward_pre_hook(lambda mod, args, name=name: seen.append(
            (method.step_context.micro, name, local[name] > 0)))
    trainer._one_step()
    assert {(m, n) for m, n, _ in seen} == {(0, "ae"), (0, "critic"), (1, "ae"), (1, "critic")}
    assert all(inside == (m == 0) for m, _, inside in seen), seen


# ---------------------------------------------------------------------------------------- device-side noise
def test_noise_on_cpu_is_the_cpu_generators_stream():
    """On CPU the draws are those of torch's CPU generator seeded from (seed, step, call), whatever the process
    count: finished CPU cells keep their numbers."""
    import numpy as np
    from accelerate import Accelerator

    from dadf.methods.base import DataInfo, Method
    from dadf.methods.interface import StepContext

    m = Method(None, DataInfo("tabular", (2,), 10), Accelerator(cpu=True), 5)
    m.begin(StepContext(step=3, batch_lo=4, global_batch=8))
    got = [m.noise(4, 2), m.noise(4, kind="uniform")]
    seeds = [int(np.random.SeedSequence([5, 3, c]).generate_state(1)[0]) for c in (0, 1)]
    assert torch.equal(got[0], torch.randn((8, 2), generator=torch.Generator().manual_seed(seeds[0]))[4:8])
    assert torch.equal(got[1], torch.rand((8,), generator=torch.Generator().manual_seed(seeds[1]))[4:8])


if __name__ == "__main__":
    if sys.argv[1] == "run-cell":
        _worker_run_cell(sys.argv[2])
    else:
        raise SystemExit(f"unknown worker command {sys.argv[1]!r}; use run-cell <cell_dir>")
