"""Simplex-interpolation mirrored AE: D_inter's regression targets, the autoencoder's terms, presets, selection,
exact resume, and a short run that separates anomalies."""
import math

import pytest
import torch
from accelerate import Accelerator
from conftest import run_one_cell
from omegaconf import OmegaConf
from torch import nn

from dadf.methods import get_method
from dadf.methods.base import DataInfo
from dadf.methods.interface import StepContext

torch.set_num_threads(1)


def make(shape=(6,), kind="tabular", steps_per_epoch=2, **opts):
    cfg = OmegaConf.create({"name": "simplex_ae", "critic_steps": 1, **opts})
    return get_method("simplex_ae")(cfg, DataInfo(kind, shape, 32, 16, steps_per_epoch, 40), Accelerator(cpu=True), 0)


def step(m, x, s):
    m.begin(StepContext(step=s, global_batch=len(x)))
    return m.train_step({"x": x}, s)


class ConstCritic(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def forward(self, x, y):
        return self.values[: len(x)]


def test_inter_losses_regress_one_minus_alpha_and_weight_by_alpha():
    m = make()
    x = torch.randn(2, 6)
    idx = torch.tensor([[0, 1], [1, 0]])
    w = torch.tensor([[0.3, 0.7], [0.6, 0.4]])
    # D_inter outputs, ordered vertex-major: (vertex 0 of rows 0, 1), (vertex 1 of rows 0, 1).
    perfect = ConstCritic(torch.tensor([0.7, 0.4, 0.3, 0.6]))
    critic, ae = m.inter_losses(perfect, x, torch.zeros(2, 6), idx, w)
    assert critic == pytest.approx(0.0, abs=1e-7)  # outputs equal 1 - α_i: nothing left to regress
    assert ae == pytest.approx(((0.3 * 0.49 + 0.7 * 0.09) + (0.6 * 0.16 + 0.4 * 0.36)) / 2)
    zero = ConstCritic(torch.zeros(4))
    critic, ae = m.inter_losses(zero, x, torch.zeros(2, 6), idx, w)
    assert ae == 0 and critic == pytest.approx(((0.49 + 0.09) + (0.16 + 0.36)) / 2)


def test_regulariser_is_zero_inside_the_sqrt_d_ball_and_gradients_flow_to_the_right_networks():
    m = make(critic_steps=1)
    x = torch.randn(16, 6)
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in m.nets.items()}
    logs = step(m, x, 0)
    assert logs["reg"] >= 0
    for k, n in m.nets.items():  # each of the three networks is updated by its own loss
        assert any(not torch.equal(a, p) for a, p in zip(before[k], n.parameters())), k
    e = torch.tensor([[0.5] * 4, [3.0] * 4])  # norms 1 and 6 with d = 4 (√d = 2)
    assert (e.norm(dim=1) - math.sqrt(4)).clamp_min(0).tolist() == [0.0, 4.0]


def test_presets_follow_the_supplementary_tables():
    thyroid, kdd, arr = make((6,)), make((121,)), make((274,))
    assert (thyroid.lr, thyroid.lam, thyroid.opt_name, thyroid.z_dim) == (2e-5, 1.2, "sgd", 4)
    assert (kdd.lr, kdd.lam, kdd.opt_name, kdd.z_dim) == (1e-4, 0.5, "adam", 32)
    assert (arr.lr, arr.lam, arr.z_dim) == (2e-4, 0.3, 64)
    assert make((6,), lr=1e-3).lr == 1e-3


def test_feature_loss_selection_waits_for_its_epoch():
    m = make(steps_per_epoch=1, selection_start_epoch=3)
    x = torch.randn(16, 6)
    step(m, x, 0)
    assert m.selection_scores(x)["feature_loss"] == math.inf
    step(m, x, 1)
    step(m, x, 2)
    assert math.isfinite(m.selection_scores(x)["feature_loss"])


def test_resume_gives_the_same_next_losses(tmp_path):
    x = torch.randn(64, 6)
    torch.manual_seed(1)
    a = make(critic_steps=2)
    for s in range(3):
        step(a, x[8 * s: 8 * s + 8], s)
    torch.save(a.state_dict(), tmp_path / "state.pt")
    expected = [step(a, x[8 * s: 8 * s + 8], s) for s in range(3, 6)]
    torch.manual_seed(2)
    b = make(critic_steps=2)
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    got = [step(b, x[8 * s: 8 * s + 8], s) for s in range(3, 6)]
    for e, g in zip(expected, got):
        assert all(torch.equal(e[k], g[k]) for k in e)


def test_bad_option_is_refused():
    with pytest.raises(ValueError, match="simplex_n"):
        make(simplex_n=1)


def test_short_run_separates_tabular_anomalies(composer, dirs):
    overrides = [*dirs, "dataset=synthetic", "+dataset.params.kind=tabular", "+dataset.params.dim=6",
                 "protocol=tabular", "launcher=debug", "grid.methods=[simplex_ae]", "grid.classes=null",
                 "grid.axes={}", "trainer.steps=150", "trainer.batch_size=64", "method=simplex_ae",
                 "method.critic_steps=2", "method.lr=1e-3"]
    cell, result = run_one_cell(composer, overrides)
    metrics = result["metrics"]
    assert metrics["auroc"] > 0.9, metrics
