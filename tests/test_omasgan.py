"""OMASGAN: the losses on tiny tensors, which networks each task trains, the phases across a real trainer's
checkpoints and resume, restarting from a finished task, and the 2-D boundary case."""
import shutil

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from dadf.grid import store
from dadf.grid.cells import expand
from dadf.grid.launch import launch
from dadf.grid.runner import run_cell
from dadf.methods.base import DataInfo
from dadf.methods.omasgan import (
    NETS_OF,
    OMASGAN,
    boundary_loss,
    detector_loss,
    dispersion,
    divergence,
    generator_loss,
    nearest_distance,
    retrain_critic_loss,
)
from dadf.train import checkpoint


def make(steps=(4, 4, 4, 4), **opts):
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": "omasgan", "hidden": [16, 16], "z_dim": 3, "q": 32,
                            "task_steps": list(steps), **opts})
    info = DataInfo("tabular", (2,), 64, batch_size=16, total_steps=sum(steps))
    m = OMASGAN(cfg, info, Accelerator(cpu=True), 0)
    m.planned_steps(sum(steps))
    return m


def params(m, name):
    return {k: v.detach().clone() for k, v in m._module_of(name).state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("div", ["klwgan", "kl", "pearson", "js"])
def test_divergence_estimate_is_larger_when_the_critic_separates(div):
    v_p, v_q = torch.full((8,), 1.0), torch.full((8,), -1.0)
    same_values = torch.zeros(8)
    assert divergence(div, v_p, v_q) > divergence(div, same_values, same_values)
    # The generator lowers its loss by making its samples look real to the critic.
    assert generator_loss(div, torch.full((8,), 1.0), "minimax") < generator_loss(div, torch.full((8,), -1.0),
                                                                                    "minimax")


def test_js_divergence_is_the_gan_objective():
    v_p, v_q = torch.randn(16), torch.randn(16)
    expected = torch.log(torch.sigmoid(v_p)).mean() + torch.log(1 - torch.sigmoid(v_q)).mean()
    assert torch.allclose(divergence("js", v_p, v_q), expected, atol=1e-5)


def test_dispersion_averages_over_all_pairs():
    torch.manual_seed(0)
    z, b = torch.randn(5, 3), torch.randn(5, 2)
    s = dispersion(b, z)
    for i in range(5):
        expected = sum((z[i] - z[j]).norm() / (b[i] - b[j]).norm() for j in range(5) if j != i) / 4
        assert torch.allclose(s[i], expected, atol=1e-5)
    # Moving two rows apart (neither of them the first) changes their own dispersion: every row counts.
    b2 = b.clone()
    b2[3] += 10
    assert not torch.allclose(dispersion(b2, z)[1:], s[1:])


def test_nearest_distance_and_boundary_loss_signs():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [1.0, 0.5]], requires_grad=True)
    assert torch.allclose(nearest_distance(b, bank), torch.tensor([2.0, 0.5]))
    z = torch.randn(2, 3)
    near = boundary_loss("js", torch.ones(2), torch.ones(2), b, z, bank, mu=0.2, nu=0.25)
    far = boundary_loss("js", torch.ones(2), -torch.ones(2), b, z, bank, mu=0.2, nu=0.25)
    # B is rewarded (lower loss) where the critic finds it unlike G: a larger divergence m(B, G).
    assert far["m"] > near["m"] and far["loss"] < near["loss"]
    near["loss"].backward()
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_retrain_and_detector_losses_reward_the_right_labels():
    pos, neg = torch.full((4,), 3.0), torch.full((4,), -3.0)
    good = retrain_critic_loss(neg, pos, neg, pos, 0.35, 0.7, 0.35)  # G' fake, x real, B fake, G real
    bad = retrain_critic_loss(pos, neg, pos, neg, 0.35, 0.7, 0.35)
    assert good < bad
    assert detector_loss(pos, neg, neg, 0.5) < detector_loss(neg, pos, pos, 0.5)  # J: B anomalous


# --------------------------------------------------------------------------------- tasks train their nets
@pytest.mark.parametrize("phase, first", [("task1", 0), ("task2", 4), ("task3", 8), ("task3j", 12)])
def test_each_task_changes_only_its_own_networks(phase, first):
    m = make()
    x = torch.randn(16, 2)
    for s in range(first):
        m.train_step({"x": x}, s)
    before = {n: params(m, n) for n in m.nets}
    m.train_step({"x": x}, first)  # the phase's first step also initialises its networks
    m.train_step({"x": x}, first + 1)
    trained = set(NETS_OF[phase]) if not (phase == "task2" and m.params.task2_critic == "frozen") else {"B"}
    for n in m.nets:
        changed = not same(before[n], params(m, n))
        assert changed == (n in trained), f"{phase}: network {n} changed={changed}"


def test_task_initialisation_copies_the_task1_networks():
    m = make()
    x = torch.randn(16, 2)
    for s in range(5):  # task 1 is steps 0-3; step 4 copies G into B, then takes one step of B
        m.train_step({"x": x}, s)
    g, b = params(m, "G"), params(m, "B")
    # One Adam step moves each weight by at most about lr: B is G plus one step, not another initialisation.
    gap = max((g[k] - b[k]).abs().max().item() for k in g)
    assert 0 < gap <= 1.5 * m.params.lr
    for s in range(5, 16):  # later tasks never touch G
        m.train_step({"x": x}, s)
    assert same(g, params(m, "G"))
    gp = params(m, "Gp")
    assert max((g[k] - gp[k]).abs().max().item() for k in g) <= 4.5 * m.params.lr  # G' = G + 4 steps


def test_phase_boundaries_follow_the_budget_and_the_score():
    m = make(steps=(3, 2, 2, 1))
    assert [m.phase_at(s)[0] for s in range(8)] == ["task1"] * 3 + ["task2"] * 2 + ["task3"] * 2 + ["task3j"]
    assert make(steps=(3, 2, 2, 1), score="task1").planned_steps(8) == 3
    assert make(steps=(3, 2, 2, 1), score="task3").planned_steps(8) == 7
    frac = make(steps=(1, 1, 1, 1))
    frac.params.task_steps = None
    assert frac.planned_steps(100) == 100


@pytest.mark.parametrize("bad, match", [({"divergence": "wasserstein"}, "divergence"),
                                        ({"score": "nope"}, "score"), ({"task_steps": [1, 2]}, "task_steps"),
                                        ({"nonsense": 1}, "no option"), ({"from_task": "/nope.pt"}, "from_task")])
def test_bad_options_are_named(bad, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        make(**bad)


# ------------------------------------------------------------------------- a real cell: resume and restart
def _cell(composer, dirs, *extra):
    overrides = [*dirs, "grid=omasgan_synthetic", "method=omasgan", "launcher=debug", "seed=0", "trainer.steps=24",
                 "trainer.batch_size=32", "trainer.checkpoint_every=5", "trainer.keep_checkpoints=10",
                 "trainer.progress=false", "dataset.params.n_samples=400", "method.task_steps=[7,6,6,5]",
                 "method.q=64", *extra]
    cells = expand(composer(overrides), overrides, composer)
    assert len(cells) == 1
    return cells[0], composer(overrides)


@pytest.mark.slow
def test_resume_across_a_task_boundary_and_restart_after_a_finished_task(composer, dirs):
    cell, cfg = _cell(composer, dirs)
    summary = launch([cell], cfg.launcher)
    assert summary.done == [cell.id], summary.failed
    first = np.load(cell.dir / "scores.npz")["scores"]
    assert (cell.dir / "boundary.png").stat().st_size > 0
    assert sorted(p.name for p in (cell.dir / "tasks").iterdir()) == ["task1.pt", "task2.pt", "task3.pt",
                                                                       "task3j.pt"]
    task2 = torch.load(cell.dir / "tasks" / "task2.pt", weights_only=False)

    # A new cell starts after the finished Task 2 with other alpha, gamma: only Task 3 and J run.
    other, cfg2 = _cell(composer, dirs, f"method.from_task={cell.dir / 'tasks' / 'task2.pt'}", "method.alpha=0.5",
                        "method.gamma=0.2")
    assert other.id != cell.id
    summary = launch([other], cfg2.launcher)
    assert summary.done == [other.id], summary.failed
    assert store.read_json(other.dir / "metrics.json")["steps"] == 6 + 5
    t3 = torch.load(other.dir / "tasks" / "task3.pt", weights_only=False)["nets"]
    for name in ("G", "D", "B"):  # the earlier tasks' networks are carried unchanged
        assert all(torch.equal(v, t3[name][k]) for k, v in task2["nets"][name].items())

    # Back to the first cell: keep only its checkpoint at step 5 (inside Task 1, which ends at step 7) and
    # its Task 1 file, then run it again: it resumes, crosses the task boundaries and ends where it ended.
    for ck in (cell.dir / "checkpoints").glob("step-*"):
        if ck.name != "step-00000005":
            shutil.rmtree(ck)
    for name in ("task2.pt", "task3.pt", "task3j.pt"):
        (cell.dir / "tasks" / name).unlink()
    assert checkpoint.latest(cell.dir / "checkpoints").name == "step-00000005"
    run_cell(cell.dir)
    np.testing.assert_array_equal(first, np.load(cell.dir / "scores.npz")["scores"])
    resumed = torch.load(cell.dir / "tasks" / "task2.pt", weights_only=False)
    for k, v in task2["nets"]["B"].items():
        assert torch.equal(v, resumed["nets"]["B"][k])


# ------------------------------------------------------------------------------------------ the 2-D case
@pytest.mark.slow
def test_boundary_samples_leave_the_support_and_the_detector_flags_off_support_points():
    torch.manual_seed(0)  # network initialisation: the test does not depend on the tests run before it
    cfg = OmegaConf.create(dict(name="omasgan", hidden=[32, 32], z_dim=2, q=128, divergence="js", lr=3e-3,
                                nu=2.0, mu=0.5, task_steps=[200, 120, 0, 100], generator_loss="nonsaturating",
                                score="detector"))
    info = DataInfo("tabular", (2,), 2048, batch_size=64, total_steps=420)
    m = OMASGAN(cfg, info, Accelerator(cpu=True), 0)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2048, 2, generator=g)  # support: radius ~3 holds 99% of the mass
    for s in range(m.planned_steps(420)):
        m.train_step({"x": data[torch.randint(0, len(data), (64,), generator=g)]}, s)
    m.on_train_end(data)
    radius = m.boundary_samples(512).norm(dim=1)
    assert radius.median() > 2.5, f"boundary samples at median radius {radius.median():.2f}, inside the data"
    b = m.boundary_samples(512)
    far = b[radius.argsort()[len(b) // 2]] * 1.5  # an off-support point in the boundary's direction
    inside = m.score(data[:256])
    assert m.score(far[None])[0] > inside.quantile(0.95)


@pytest.mark.parametrize("score, names", [("full", {"task1", "task3", "detector", "full"}),
                                          ("task3", {"task1", "task3"}), ("task1", {"task1"})])
def test_scores_cover_the_phases_that_ran_and_the_main_one_is_the_chosen(score, names):
    m = make(score=score)
    x = torch.randn(16, 2)
    for s in range(m.planned_steps(16)):
        m.train_step({"x": x}, s)
    m.on_train_end(x)
    out = m.scores(x)
    assert set(out) == names | {"score"} and torch.equal(out["score"], out[score])
    if score == "full":  # AS(x) = J(x) + lambda * fD(G', delta_x), eq. (8)
        torch.testing.assert_close(out["full"], out["detector"] + m.params.lam * out["task3"])


def test_a_phase_with_no_steps_still_initialises_its_networks():
    m = make(steps=(2, 2, 0, 2))
    x = torch.randn(16, 2)
    for s in range(5):
        m.train_step({"x": x}, s)
    assert same(params(m, "G"), params(m, "Gp"))  # task 3 had no steps: G' is G, as J's negatives need


@pytest.mark.parametrize("shape, arch", [((1, 28, 28), "dcgan"), ((1, 32, 32), "dcgan"), ((3, 32, 32), "resnet32"),
                                         ((5,), "mlp")])
def test_networks_fit_the_data_shape(shape, arch):
    from dadf.nets.omasgan import NetSpec, build_critic, build_generator, pick_omasgan_arch

    kind = "image" if len(shape) == 3 else "tabular"
    assert pick_omasgan_arch(shape, kind, "auto") == arch
    spec = NetSpec(arch, 8, shape, kind=kind)
    x = build_generator(spec).eval()(torch.randn(2, 8))
    assert x.shape == (2, *shape)
    assert build_critic(spec)(x).shape == (2,)


def test_an_architecture_that_does_not_fit_is_refused():
    from dadf.nets.omasgan import pick_omasgan_arch

    with pytest.raises(ValueError, match="resnet32 needs 3x32x32"):
        pick_omasgan_arch((1, 28, 28), "image", "resnet32")
