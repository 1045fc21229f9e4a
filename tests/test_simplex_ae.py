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


def test_presets_follow_the_supplementary_tables_by_name():
    thyroid, kdd = make((6,), preset="thyroid"), make((121,), preset="kdd99")
    arr = make((274,), preset="arrhythmia")
    assert (thyroid.lr, thyroid.lam, thyroid.opt_name, thyroid.z_dim) == (2e-5, 1.2, "sgd", 4)
    assert (kdd.lr, kdd.lam, kdd.opt_name, kdd.z_dim) == (1e-4, 0.5, "adam", 32)
    assert (arr.lr, arr.lam, arr.z_dim) == (2e-4, 0.3, 64)
    assert make((6,), preset="thyroid", lr=1e-3).lr == 1e-3  # a value set explicitly wins over the preset


def test_a_table_is_not_given_a_preset_for_its_feature_count():
    """A 6-feature table that is not thyroid gets the plain defaults, not thyroid's SGD with lr 2e-5."""
    m = make((6,))
    assert (m.lr, m.lam, m.opt_name, m.z_dim) == (3e-4, 0.5, "adam", 32)
    assert [type(_inner(o)) for o in m.opts.values()] == [torch.optim.Adam] * 3
    eff = m.effective_params()
    assert eff["preset"] is None and "no preset" in eff["note"] and eff["widths"]["z_dim"] == 32
    assert make((121,)).z_dim == 32 and make((274,)).lr == 3e-4
    with pytest.raises(ValueError, match="preset='cardio'.*arrhythmia"):
        make((6,), preset="cardio")


def _inner(opt):
    return getattr(opt, "optimizer", opt)  # the torch optimiser inside Accelerate's wrapper


def _betas(m):
    return {name: {tuple(g["betas"]) for g in opt.param_groups} for name, opt in m.opts.items()}


def test_tabular_presets_give_every_network_adam_betas_0_and_0_5():
    """Supp. Tables 3-4: Adam(β1 = 0, β2 = 0.5) for E, G, D_recon and D_inter (the CIFAR values stay the default)."""
    for shape, name in (((121,), "kdd99"), ((274,), "arrhythmia")):
        m = make(shape, preset=name)
        assert _betas(m) == {"eg": {(0.0, 0.5)}, "d_recon": {(0.0, 0.5)}, "d_inter": {(0.0, 0.5)}}
        assert m.effective_params()["betas_e"] == [0.0, 0.5]
    plain = make((121,))
    assert _betas(plain) == {"eg": {(0.5, 0.999), (0.0, 0.999)}, "d_recon": {(0.0, 0.999)},
                             "d_inter": {(0.0, 0.999)}}
    own = make((121,), preset="kdd99", betas_e=[0.5, 0.9])  # a value set explicitly wins over the preset
    assert _betas(own)["eg"] == {(0.5, 0.9), (0.0, 0.5)}
    thyroid = make((6,), preset="thyroid")  # supp. Table 5: SGD with momentum 0.5 everywhere
    assert all(type(_inner(o)) is torch.optim.SGD and o.param_groups[0]["momentum"] == 0.5
               for o in thyroid.opts.values())


def test_tabular_preset_encoders_end_in_leaky_relu_and_the_switch_keeps_the_linear_code():
    def last(m):
        return list(m.nets["eg"].encoder.net)[-1]

    for shape, name in (((121,), "kdd99"), ((274,), "arrhythmia"), ((6,), "thyroid")):
        end = last(make(shape, preset=name))
        assert isinstance(end, nn.LeakyReLU) and end.negative_slope == 0.2, name
    assert isinstance(last(make((6,))), nn.Linear)  # no preset: today's linear code
    assert isinstance(last(make((6,), preset="thyroid", encoder_final_act="linear")), nn.Linear)
    assert isinstance(last(make((6,), encoder_final_act="leaky_relu")), nn.LeakyReLU)
    with pytest.raises(ValueError, match="encoder_final_act"):
        make((6,), encoder_final_act="tanh")


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


@pytest.mark.slow  # a training of seconds; the fast tier trains simplex_ae in tests/test_methods.py
def test_short_run_separates_tabular_anomalies(composer, dirs):
    """Also: a 6-feature table with no preset runs the plain defaults, and metrics.json says what ran; its null
    dataset.top_k_percent takes the test split's anomaly ratio for k."""
    overrides = [*dirs, "dataset=synthetic", "+dataset.params.kind=tabular", "+dataset.params.dim=6",
                 "protocol=tabular", "launcher=debug", "grid.methods=[simplex_ae]", "grid.classes=null",
                 "grid.axes={}", "trainer.steps=150", "trainer.batch_size=64", "method=simplex_ae",
                 "method.critic_steps=2", "method.lr=1e-3"]
    cell, result = run_one_cell(composer, overrides)
    metrics = result["metrics"]
    assert metrics["auroc"] > 0.9, metrics
    eff = result["effective_params"]
    assert (eff["preset"], eff["optimizer"], eff["lr"], eff["z_dim"], eff["encoder_final_act"]) == (
        None, "adam", 1e-3, 32, "linear")
    assert "no preset" in eff["note"]
    test = result["split"]["test"]
    assert result["top_k"] == {"percent": pytest.approx(100 * test["anomalous"] / test["total"]),
                               "from": "the test split's anomaly ratio", "rule": "percentile"}
    assert metrics["top_k_flagged"] >= round(test["anomalous"]) and 0 <= metrics["f1"] <= 1


def _selection_run(composer, dirs, *extra):
    """A 6-epoch simplex run on a small table selecting on training R-scores; (metrics.json, log lines)."""
    import json

    overrides = [*dirs, "dataset=synthetic", "+dataset.params.kind=tabular", "+dataset.params.dim=6",
                 "protocol=tabular", "launcher=debug", "grid.methods=[simplex_ae]", "grid.classes=null",
                 "grid.axes={}", "trainer.steps=null", "trainer.epochs=6", "trainer.batch_size=64", "method=simplex_ae",
                 "method.critic_steps=1", "method.lr=1e-3", "trainer.selection=train_feature_loss", *extra]
    cell, result = run_one_cell(composer, overrides)
    lines = [json.loads(x) for x in (cell.dir / "log.jsonl").read_text().splitlines()]
    return result, [x for x in lines if "train_feature_loss" in x]


def test_selection_on_training_r_scores_keeps_the_best_state_from_its_epoch_on(composer, dirs):
    result, validations = _selection_run(composer, dirs, "method.selection_start_epoch=3")
    assert [v["epoch"] for v in validations] == [1, 2, 3, 4, 5, 6]
    assert [math.isinf(v["train_feature_loss"]) for v in validations] == [True, True, False, False, False, False]
    eligible = [v for v in validations if math.isfinite(v["train_feature_loss"])]
    best = min(eligible, key=lambda v: v["train_feature_loss"])
    sel = result["selection"]
    assert (sel["rule"], sel["step"], sel["value"]) == ("train_feature_loss", best["step"],
                                                         best["train_feature_loss"])
    assert "fallback" not in sel


def test_selection_that_never_becomes_eligible_keeps_the_last_state_and_says_so(composer, dirs):
    """50-epoch runs with selection from epoch 60: every criterion is +inf, which must never be kept as best."""
    result, validations = _selection_run(composer, dirs, "method.selection_start_epoch=60")
    assert all(math.isinf(v["train_feature_loss"]) for v in validations)
    sel = result["selection"]
    assert sel["fallback"] == "last" and sel["step"] == result["steps"] and sel["value"] is None
    assert "last state was kept" in sel["note"]


def test_an_infinite_first_criterion_is_never_kept_as_best_with_a_validation_split(composer, dirs):
    """feature_loss on validation normals, never eligible in 3 epochs: the last state, not the first epoch's +inf."""
    overrides = [*dirs, "dataset=synthetic", "protocol=ovr", "protocol.val_fraction=0.2", "launcher=debug",
                 "grid.methods=[simplex_ae]", "grid.classes=[0]", "grid.axes={}", "trainer.steps=null",
                 "trainer.epochs=3", "trainer.batch_size=32", "method=simplex_ae", "method.critic_steps=1",
                 "trainer.selection=feature_loss", "method.selection_start_epoch=60"]
    _, result = run_one_cell(composer, overrides)
    sel = result["selection"]
    assert sel["value"] is None and sel["step"] == result["steps"], sel  # not the first epoch with value inf
    assert sel.get("fallback") == "last"
