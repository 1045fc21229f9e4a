"""PIAD: WGAN-GP pieces against hand computations, the gradient-normalising weight policy on a hand-made history,
and a short training that separates an easy synthetic problem (random VGG weights, asked for by name)."""
import copy
import math

import pytest
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from dadf import config
from dadf.losses.gan import critic_loss, gradient_penalty
from dadf.losses.weighting import GradNormWeights, WeightPolicyParams
from dadf.methods import get_method
from dadf.methods.base import DataInfo
from dadf.methods.interface import StepContext

torch.set_num_threads(1)


def test_gradient_penalty_matches_hand_computation():
    w = torch.tensor([0.6, 0.3, -0.2])
    linear = lambda x: x @ w + 1.0  # noqa: E731  grad = w everywhere
    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    assert math.isclose(float(gradient_penalty(linear, real, fake)), (float(w.norm()) - 1) ** 2, rel_tol=1e-5)
    # D(x) = sum x^2: grad at x_hat is 2 x_hat, x_hat = eps real + (1 - eps) fake
    eps = torch.tensor([0.0, 0.25, 0.5, 1.0])
    quad = lambda x: x.pow(2).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    by_hand = 0.0
    for i in range(4):
        x_hat = eps[i] * real[i] + (1 - eps[i]) * fake[i]
        by_hand += (2 * math.sqrt(float(x_hat.pow(2).sum())) - 1) ** 2 / 4
    assert math.isclose(float(gradient_penalty(quad, real, fake, eps).detach()), by_hand, rel_tol=1e-5)


def test_critic_loss_has_the_drift_term():
    d_real, d_fake, gp = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0]), torch.tensor(0.5)
    # E[D(fake)] - E[D(real)] + 10 * gp + 1e-3 * E[D(real)^2] = -0.5 - 2 + 5 + 1e-3 * 5
    assert math.isclose(float(critic_loss(d_real, d_fake, gp, 10.0, 1e-3)), 2.505, rel_tol=1e-6)


def test_weight_policy_ratio_on_a_hand_made_history():
    pol = GradNormWeights(WeightPolicyParams(period=100, history=3, smoothing=0.5, reduce="median"))
    assert pol.gamma("g") == 1.0  # before the first update
    assert pol.due(0) and pol.due(200) and not pol.due(150)
    # Layers a, b, c: constant adv/rec ratios 2, 4 and 10 -> median 4 (mean would be 16/3).
    for _ in range(3):
        pol.record("adv", {"a": 2.0, "b": 8.0, "c": 10.0})
        pol.record("rec", {"a": 1.0, "b": 2.0, "c": 1.0})
    assert math.isclose(pol.refresh("g", "adv", "rec"), 4.0)
    pol.p.reduce = "mean"
    assert math.isclose(pol.ratio("adv", "rec"), 16 / 3)
    # Smoothing over the kept history only: records 1, then (1, 3, 5) kept; EWMA(0.5) = 0.5*5 + 0.5*(0.5*3 + 0.5*1)
    pol2 = GradNormWeights(WeightPolicyParams(history=3, smoothing=0.5))
    for v in (100.0, 1.0, 3.0, 5.0):
        pol2.record("adv", {"a": v})
        pol2.record("rec", {"a": 1.0})
    assert pol2.history["adv"]["a"] == [1.0, 3.0, 5.0]
    assert math.isclose(pol2.refresh("e", "adv", "rec"), 3.5)
    # A layer the term never reaches (size 0) does not take part.
    pol2.record("adv", {"z": 1.0})
    pol2.record("rec", {"z": 0.0})
    assert math.isclose(pol2.ratio("adv", "rec"), pol2.gamma("e"), rel_tol=0.2)
    restored = GradNormWeights(WeightPolicyParams(history=3, smoothing=0.5))
    restored.load_state_dict(pol2.state_dict())
    assert restored.ratio("adv", "rec") == pol2.ratio("adv", "rec") and restored.gamma("e") == pol2.gamma("e")


def test_weight_policy_refuses_bad_settings():
    with pytest.raises(ValueError, match="norm must be std or l2"):
        WeightPolicyParams(norm="l1")
    with pytest.raises(ValueError, match="smoothing must be in"):
        WeightPolicyParams(smoothing=0)


def _piad(size=16, **overrides):
    cfg = OmegaConf.create(OmegaConf.to_container(config.node("method", "piad")))  # plain, as a cell.yaml reads
    cfg.vgg_weights = "random"
    for k, v in overrides.items():
        cfg[k] = v
    return get_method("piad")(cfg, DataInfo("image", (1, size, size), 100, batch_size=16), Accelerator(cpu=True), 0)


def _synthetic(size):
    from dadf.data.sources import load_synthetic

    src = load_synthetic(None, False, shape=(1, size, size))
    f = lambda a: torch.from_numpy(a).float() / 127.5 - 1  # noqa: E731
    (xtr, ytr), (xte, yte) = src.parts["train"], src.parts["test"]
    return f(xtr[ytr == 2]), f(xte), torch.from_numpy(yte != 2)


@pytest.mark.slow
def test_short_training_separates_synthetic_anomalies():
    from sklearn.metrics import roc_auc_score

    train, test, truth = _synthetic(16)
    m = _piad(16, vgg_stats="none", weight_period=5)
    m.on_train_start(train)
    g = torch.Generator().manual_seed(0)
    for step in range(90):  # 30 E/G iterations
        out = m.train_step({"x": train[torch.randint(len(train), (16,), generator=g)]}, step)
    assert all(torch.isfinite(v) for v in out.values())
    assert float(out["gamma_g"]) != 1.0  # the policy has updated the weights
    auroc = roc_auc_score(truth.numpy(), m.score(test).numpy())
    assert auroc > 0.9, f"AUROC {auroc:.3f}"


@pytest.mark.slow
def test_resume_from_state_continues_identically():
    """A fresh instance loaded from state_dict (networks, optimisers, weight-policy history, VGG statistics)
    continues exactly like the original: the trainer's resume relies on it."""
    train, _, _ = _synthetic(8)

    def step_(m, step):
        x = train[step * 8 : step * 8 + 8]
        # as the trainer does: noise depends on (seed, step), not on history
        m.begin(StepContext(step=step, global_batch=len(x)))
        return m.train_step({"x": x}, step)

    a = _piad(8, weight_period=1, n_critic=1)
    a.on_train_start(train)
    for step in range(4):
        step_(a, step)
    b = _piad(8, weight_period=1, n_critic=1)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as a checkpoint on disk: no tensors shared with a
    la, lb = step_(a, 4), step_(b, 4)  # a critic step
    assert torch.equal(la["dx_loss"], lb["dx_loss"]) and torch.equal(la["dz_loss"], lb["dz_loss"])
    la, lb = step_(a, 5), step_(b, 5)  # an E/G step that records gradients and updates the weights
    assert all(torch.equal(la[k], lb[k]) for k in ("rec", "adv_g", "adv_e", "gamma_g", "gamma_e"))
    assert torch.equal(a.score(train[:8]), b.score(train[:8]))


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="no option.*valid options"):
        _piad(16, nope=1)
    with pytest.raises(ValueError, match="dataset.size=32"):
        _piad(28)
    with pytest.raises(ValueError, match="square images"):
        get_method("piad")(OmegaConf.create({"name": "piad", "vgg_weights": "random"}),
                           DataInfo("tabular", (8,), 10), Accelerator(cpu=True), 0)
