"""AMA: each loss term's sign and gradient flow, atypical selection, simplex weights, the A-score, exact resume,
and a short training run that separates anomalies."""
import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import run_one_cell
from omegaconf import OmegaConf

from dadf.losses.gan import pair_gradient_penalty
from dadf.losses.simplex import partner_indices, simplex_weights
from dadf.methods import get_method
from dadf.methods.ama import atypical_codes, fit_gaussian, neg_log_density, negative_rows
from dadf.methods.base import DataInfo
from dadf.methods.interface import StepContext
from dadf.nets.gan import build_autoencoder_gan

torch.set_num_threads(1)


def make(shape=(1, 8, 8), kind="image", steps_per_epoch=2, **opts):
    cfg = OmegaConf.create({"name": "ama", "critic_steps": 1, **opts})
    info = DataInfo(kind, shape, 32, 16, steps_per_epoch, 40)
    return get_method("ama")(cfg, info, Accelerator(cpu=True), 0)


def step_batch(m, x, step, label=None):
    m.begin(StepContext(step=step, global_batch=len(x)))
    batch = {"x": x, "label": label if label is not None else torch.zeros(len(x), dtype=torch.long)}
    return m.train_step(batch, step)


def test_objective_signs():
    """The critic's objective rises when (x, x) scores above (x, x̂), and falls (weighted by λ_neg) when it
    scores negatives' pairs below (x, x); interpolations add λ_inter times their gap."""
    m = make(lambda_neg=5.0, lambda_inter=0.5)
    n = 4
    parts = {"real": slice(0, n), "rec": slice(n, 2 * n), "inter": slice(2 * n, 3 * n), "neg": slice(3 * n, 3 * n + 1)}
    normal = torch.tensor([1.0, 1.0, 1.0, 0.0])
    d = torch.cat([torch.ones(n), torch.zeros(n), torch.zeros(n), torch.zeros(1)])
    obj, terms = m._objective(d, parts, normal, normal, [3], None)
    assert terms["w_rec"] == pytest.approx(1.0) and terms["w_inter"] == pytest.approx(1.0)
    assert terms["w_neg"] == pytest.approx(1.0)
    assert obj == pytest.approx(1.0 + 0.5 * 1.0 - 5.0 * 1.0)


def test_gradients_reach_only_the_network_being_trained():
    m = make(lipschitz="gp")
    x = torch.randn(16, 1, 8, 8).clamp(-1, 1)
    m.begin(StepContext(step=0, global_batch=16))
    ctx = m.prepare({"x": x, "label": torch.zeros(16, dtype=torch.long)}, 0)
    out = m.eg(x, **ctx["kwargs"])
    loss_d, _ = m.critic_loss(ctx, out, m.critic)
    loss_d.backward()
    assert all(p.grad is None for p in m.eg.parameters()), "the critic's loss must not reach E or G"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.critic.parameters())
    m.critic.zero_grad(set_to_none=True)
    with m.frozen("critic") as critic:
        loss_eg, _ = m.eg_loss(ctx, out, critic)
    loss_eg.backward()
    assert all(p.grad is None for p in m.critic.parameters()), "the E/G loss must not train the critic"
    assert all(p.grad is not None for p in m._module(m.eg).encoder.parameters())


@pytest.mark.parametrize("trains", [True, False])
def test_interpolation_switch_detaches_x_inter(trains):
    m = make(interp_trains_autoencoder=trains, lambda_reg=0.0)
    x = torch.randn(16, 1, 8, 8).clamp(-1, 1)
    m.begin(StepContext(step=0, global_batch=16))
    ctx = m.prepare({"x": x}, 0)
    out = {k: v.detach() for k, v in m.eg(x, **ctx["kwargs"]).items()}
    out["x_inter"].requires_grad_(True)
    out["e"].requires_grad_(True)
    with m.frozen("critic") as critic:
        loss, _ = m.eg_loss(ctx, out, critic)
    loss.backward()
    got = out["x_inter"].grad
    assert (got is not None and got.abs().sum() > 0) == trains


def test_mirrored_switch_changes_what_the_critic_sees():
    x = torch.randn(8, 1, 8, 8)
    out = {"x_hat": torch.zeros(8, 1, 8, 8), "e": torch.zeros(8, 4)}
    mirrored, plain = make(), make(mirrored=False)
    left_m, right_m, _ = mirrored._pairs(x, out, None, None, [], None)
    left_p, right_p, _ = plain._pairs(x, out, None, None, [], None)
    assert torch.equal(left_m[8:], x)  # mirrored: (x, x̂)
    assert torch.equal(left_p[8:], out["x_hat"]) and torch.equal(right_p[8:], out["x_hat"])  # plain: x̂ alone


@pytest.mark.parametrize("direction", ["inward", "outward"])
def test_shell_negatives_lie_on_the_ray_within_the_shell(direction):
    d, delta = 16, 0.5
    e = torch.randn(200, d) * 3
    z = atypical_codes(e, torch.rand(200, d), "shell", direction, delta)
    r = z.norm(dim=1)
    lo, hi = (math.sqrt(d) - delta, math.sqrt(d)) if direction == "inward" else (math.sqrt(d), math.sqrt(d) + delta)
    assert (r >= lo - 1e-5).all() and (r <= hi + 1e-5).all()
    cos = torch.nn.functional.cosine_similarity(z, e)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)  # same direction as the normal code


def test_scale_and_sipple_negatives():
    e = torch.randn(100, 8)
    u = torch.rand(100, 8)
    inward = atypical_codes(e, u, "scale", "inward", 0.5)
    outward = atypical_codes(e, u, "scale", "outward", 0.5)
    assert (inward.norm(dim=1) <= 0.5 * e.norm(dim=1) + 1e-5).all()
    assert (outward.norm(dim=1) >= 2 * e.norm(dim=1) - 1e-5).all()
    cube = atypical_codes(e, u, "sipple", "inward", 0.5, half_width=0.7)
    assert cube.abs().max() <= 0.7 and cube.min() < 0 < cube.max()


def test_negative_rows_are_a_fraction_of_the_global_batch_whatever_the_split():
    whole = negative_rows(0, 100, 0.1)
    assert len(whole) == 10
    halves = negative_rows(0, 50, 0.1) + [50 + i for i in negative_rows(50, 50, 0.1)]
    assert halves == whole


def test_simplex_weights_and_partners():
    u = torch.rand(500, 3)
    w = simplex_weights(u, 3)
    assert torch.allclose(w.sum(1), torch.ones(500)) and (w > 0).all()
    two = simplex_weights(u, 2, two_point_paper=True)
    assert (two[:, 0] <= 0.5).all() and torch.allclose(two.sum(1), torch.ones(500))
    idx = partner_indices(torch.rand(10, 2))
    assert idx.shape == (10, 3) and torch.equal(idx[:, 0], torch.arange(10))
    assert all(sorted(idx[:, j].tolist()) == list(range(10)) for j in (1, 2))  # permutations of the batch


def test_pair_gradient_penalty_takes_the_gradient_of_both_inputs():
    """A linear pair critic w·[x, y] has gradient w everywhere: the penalty is (‖w‖ − 1)², with both halves of w."""
    w = torch.tensor([3.0, 0.0, 0.0, 4.0])

    def critic(x, y):
        return torch.cat([x, y], dim=1) @ w

    x, y_real, y_fake = torch.randn(5, 2), torch.randn(5, 2), torch.randn(5, 2)
    gp = pair_gradient_penalty(critic, x, y_real, y_fake, torch.rand(5))
    assert gp.item() == pytest.approx((5.0 - 1) ** 2)


def test_a_score_fit_and_sign():
    r = torch.tensor([1.0, 2.0, 3.0, 2.0])
    mean, std = fit_gaussian(r)
    assert mean == pytest.approx(2.0) and std == pytest.approx(math.sqrt(0.5))
    a = neg_log_density(torch.tensor([2.0, 0.0, 4.0]), mean, std)
    # An R-score far from the normals' on either side is more anomalous than the typical one.
    assert a[0] < a[1] and a[0] < a[2] and a[1] == pytest.approx(float(a[2]))


def test_score_uses_the_gaussian_fitted_on_training_r_scores(tmp_path):
    m = make(shape=(6,), kind="tabular")
    x = torch.randn(32, 6)
    for s in range(3):
        step_batch(m, x[:16], s)
    m.on_train_end(x)
    mean, std = m.gaussian
    r = m.r_score(x)
    assert mean == pytest.approx(float(r.double().mean()), rel=1e-5)
    assert torch.allclose(m.score(x).double(), neg_log_density(r, mean, std), atol=1e-5)
    both = m.scores(x)  # both scores from one pass; the trainer saves them all in scores.npz
    assert set(both) == {"score", "r_score", "a_score"} and torch.equal(both["score"], both["a_score"])
    assert torch.allclose(both["r_score"], r.float())


def test_atypical_selection_starts_at_epoch_11():
    m = make(shape=(6,), kind="tabular", steps_per_epoch=2, atypical_fraction=0.25)
    x = torch.randn(16, 6)
    assert m.atypical_start == 20
    m.begin(StepContext(step=19, global_batch=16))
    assert m.prepare({"x": x}, 19)["rows"] == []
    m.begin(StepContext(step=20, global_batch=16))
    ctx = m.prepare({"x": x}, 20)
    assert len(ctx["rows"]) == 4 and float(ctx["normal"].sum()) == 12
    assert "neg_fn" in ctx["kwargs"]


def test_labelled_anomalies_replace_atypical_selection():
    m = make(shape=(6,), kind="tabular", steps_per_epoch=2)
    x = torch.randn(16, 6)
    label = torch.zeros(16, dtype=torch.long)
    label[:3] = 1
    step_batch(m, x, 0, label)
    assert m.has_real_negatives
    m.begin(StepContext(step=30, global_batch=16))
    ctx = m.prepare({"x": x, "label": label}, 30)
    assert ctx["rows"] == [] and float(ctx["normal"].sum()) == 13  # no synthetic rows; anomalies not normals


def test_resume_from_a_saved_state_gives_the_same_next_losses(tmp_path):
    """Across the start of atypical selection (step 4 with 2 steps an epoch and start epoch 3)."""
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    batches = [x[(8 * s) % 64:(8 * s) % 64 + 8] for s in range(8)]
    opts = dict(shape=(6,), kind="tabular", steps_per_epoch=2, atypical_start_epoch=3, atypical_fraction=0.25,
                critic_steps=2)
    torch.manual_seed(1)
    a = make(**opts)
    for s in range(5):
        step_batch(a, batches[s], s)
    torch.save(a.state_dict(), tmp_path / "state.pt")
    expected = [step_batch(a, batches[s], s) for s in range(5, 8)]
    torch.manual_seed(2)  # a different initialisation: everything must come from the saved state
    b = make(**opts)
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    got = [step_batch(b, batches[s], s) for s in range(5, 8)]
    for e, g in zip(expected, got):
        assert e.keys() == g.keys()
        for k in e:
            assert torch.equal(e[k], g[k]), k
    assert "w_neg" in expected[0]


def test_bad_options_name_the_valid_choices():
    with pytest.raises(ValueError, match="atypical_mode.*shell"):
        make(atypical_mode="ring")
    with pytest.raises(ValueError, match="valid options"):
        make(nope=1)


@pytest.mark.parametrize("shape,kind,arch", [((3, 32, 32), "image", "resnet32"), ((1, 28, 28), "image", "grey28"),
                                             ((121,), "tabular", "mlp")])
def test_paper_architectures_shapes(shape, kind, arch):
    nets = build_autoencoder_gan(shape, kind)
    assert nets.arch == arch
    x = torch.rand(2, *shape) * 2 - 1
    with torch.no_grad():
        e = nets.encoder(x)
        y = nets.generator(e)
        f = nets.critic.features(x, y)
        d = nets.critic(x, y)
    assert e.shape == (2, nets.z_dim) and y.shape == x.shape and d.shape == (2,) and f.shape[0] == 2


@pytest.mark.slow  # a training of seconds; the fast tier trains ama in tests/test_methods.py
def test_short_run_separates_tabular_anomalies(composer, dirs):
    overrides = [*dirs, "dataset=synthetic", "+dataset.params.kind=tabular", "+dataset.params.dim=6",
                 "protocol=tabular", "launcher=debug", "grid.methods=[ama]", "grid.classes=null",
                 "grid.axes={}", "trainer.steps=150", "trainer.batch_size=64", "method=ama",
                 "method.critic_steps=2", "method.atypical_start_epoch=3"]
    cell, result = run_one_cell(composer, overrides)
    metrics = result["metrics"]
    assert metrics["auroc"] > 0.9, metrics
    saved = np.load(cell.dir / "scores.npz")
    assert {"scores", "score_r_score", "score_a_score"} <= set(saved.files)
    assert np.array_equal(saved["scores"], saved["score_a_score"])
    by_score = result["metrics_by_score"]
    assert set(by_score) == {"r_score", "a_score"} and by_score["a_score"]["auroc"] == metrics["auroc"]
