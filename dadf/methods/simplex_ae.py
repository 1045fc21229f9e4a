"""Mirrored autoencoder with simplex interpolation (Wu et al., arXiv:2003.10713v1; docs/ama.md).

Two critics: D_recon, a mirrored Wasserstein critic on (x, x) vs (x, x̂) as in AMA, and D_inter, which regresses
1 − α_i from (x_i, x̂_inter) for each vertex i of an n-point simplex (squared error). E and G minimise
−D_recon(x, x̂) + max(‖E(x)‖ − √d, 0) + λ Σ_i α_i ‖D_inter(x_i, x̂_inter)‖². Score: R(x) from D_recon's features.
Unsupervised model selection: ``trainer.selection=feature_loss`` (mean R-score of validation normals) or, on
protocols without a validation split, ``train_feature_loss`` (the paper's: mean R-score of the training normals);
+inf until the end of epoch ``selection_start_epoch``, so only states from there on can win.

Tabular presets (supp. Tables 3-5) are chosen by dataset name, ``preset: kdd99 | arrhythmia | thyroid`` (the
simplex_tabular grid sets it per dataset), never by feature count; a table without one gets the plain defaults.
``effective_params()`` (metrics.json) says what a cell ran with.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import torch

from dadf.checks import at_least, choices
from dadf.identity import added
from dadf.losses.gan import pair_gradient_penalty
from dadf.losses.simplex import partner_indices, simplex_weights
from dadf.methods.base import TorchMethod, method_params
from dadf.methods.options import Arch, Lipschitz
from dadf.methods.registry import register
from dadf.nets.encoder_generator import EncoderGenerator
from dadf.nets.gan import TABULAR_PRESETS, build_autoencoder_gan, build_pair_critic, mlp_widths

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TabularPreset:
    """One table of the supplementary (3 KDD99, 4 arrhythmia, 5 thyroid); its widths are gan.TABULAR_PRESETS'."""

    lr: float
    lambda_inter: float
    optimizer: str  # adam | sgd (momentum 0.5)
    betas: tuple[float, float] = (0.0, 0.5)  # Adam(β1 = 0, β2 = 0.5) for E, G, D_recon and D_inter alike
    encoder_final_act: str = "leaky_relu"  # every table's encoder ends in leakyrelu(0.2)


# Batch size and epochs are trainer values: the simplex_tabular grid sets them per dataset.
PRESETS = {"kdd99": TabularPreset(1e-4, 0.5, "adam"), "arrhythmia": TabularPreset(2e-4, 0.3, "adam"),
           "thyroid": TabularPreset(2e-5, 1.2, "sgd")}
assert set(PRESETS) == set(TABULAR_PRESETS)
BETAS_GD, BETAS_E = (0.0, 0.999), (0.5, 0.999)  # the CIFAR-10 values (main text): defaults a preset replaces
ENCODER_FINAL_ACTS = ("linear", "leaky_relu")
Optimizer = choices("Optimizer", ("auto", "adam", "sgd"))
Preset = choices("Preset", PRESETS)
EncoderFinalAct = choices("EncoderFinalAct", ENCODER_FINAL_ACTS)


@dataclasses.dataclass
class SimplexParams:
    """D_recon (mirrored Wasserstein) + D_inter regressing 1 - alpha_i; score = R(x). None = the paper's value for
    the data shape (32x32: lr 3e-4; 28x28: lr 1e-4) or for the named ``preset`` (tabular: supp. Tables 3-5)."""

    arch: Arch = Arch.auto  # auto | resnet32 | grey28 | mlp
    z_dim: int | None = None
    # points of each interpolation; 2: Berthelot-style 2-point interpolation (the ablation)
    simplex_n: int = dataclasses.field(default=3, metadata=at_least(2))
    lambda_inter: float | None = None  # None: 0.5 (images), 0.5 KDD99, 0.3 arrhythmia, 1.2 thyroid
    lr: float | None = None  # None: 3e-4 (32x32), 1e-4 (28x28), the tabular preset
    optimizer: Optimizer = Optimizer.auto  # adam | sgd (momentum 0.5, thyroid); auto: the preset
    betas_gd: tuple[float, float] = BETAS_GD  # generator and critics (a preset replaces this default: (0, 0.5))
    betas_e: tuple[float, float] = BETAS_E  # encoder (a preset replaces this default: (0, 0.5))
    critic_steps: int = 5  # "tfd" of the supplementary's algorithm (its value is not given: AMA's code uses 5)
    lipschitz: Lipschitz = Lipschitz.auto  # D_recon: sn | gp | sn+gp; auto: sn for resnet32 (supp.), gp otherwise
    gp_weight: float = 10.0
    selection_start_epoch: int = 60  # (train_)feature_loss is +inf for states before the end of this epoch
    # kdd99 | arrhythmia | thyroid: that table's nets, lr, λ, optimiser, betas and encoder ending, for every value
    # left at its default (None, auto, the default betas); None: the plain defaults, whatever the feature count
    preset: Preset | None = added(None, before=None)
    # the mlp encoder's code layer: linear | leaky_relu (supp. Tables 3-5); None: leaky_relu under a preset, else
    # linear
    encoder_final_act: EncoderFinalAct | None = added(None, before=None)

    def __post_init__(self):
        self.betas_gd, self.betas_e = tuple(self.betas_gd), tuple(self.betas_e)


@register("simplex_ae", params=SimplexParams)
class SimplexAE(TorchMethod):
    selection_criteria = ("feature_loss",)

    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        p = self.params = method_params(cfg, SimplexParams)
        preset = PRESETS[p.preset] if p.preset is not None else None
        widths = mlp_widths(p.preset)
        self.encoder_final_act = p.encoder_final_act or (preset.encoder_final_act if preset else "linear")
        nets = build_autoencoder_gan(info.shape, info.kind, arch=p.arch, z_dim=p.z_dim, sn=False, widths=widths,
                                     encoder_final_act=self.encoder_final_act == "leaky_relu")
        self.arch, self.z_dim = nets.arch, nets.z_dim
        lip = p.lipschitz if p.lipschitz != "auto" else ("sn" if nets.arch == "resnet32" else "gp")
        self.use_gp = "gp" in lip
        d_recon = build_pair_critic(nets.arch, info.shape, sn="sn" in lip, pooling="sum", hidden=widths.critic)
        # D_inter: no normalisation, global average pooling (supp. Table 1 / Fig. 1).
        d_inter = build_pair_critic(nets.arch, info.shape, sn=False, pooling="mean",
                                    hidden=widths.inter_critic or widths.critic)
        if preset is None and info.kind == "tabular":
            log.warning("simplex_ae: no preset for this table (method.preset is null): the plain defaults (generic "
                        "MLP, lr 3e-4, lambda 0.5, Adam); set method.preset to one of %s for a paper table",
                        sorted(PRESETS))
        default_lr = {"grey28": 1e-4}.get(nets.arch, preset.lr if preset else 3e-4)
        self.lr = p.lr if p.lr is not None else default_lr
        self.lam = p.lambda_inter if p.lambda_inter is not None else (preset.lambda_inter if preset else 0.5)
        self.opt_name = p.optimizer if p.optimizer != "auto" else (preset.optimizer if preset else "adam")
        self.betas_gd = preset.betas if preset and p.betas_gd == BETAS_GD else p.betas_gd
        self.betas_e = preset.betas if preset and p.betas_e == BETAS_E else p.betas_e
        self.widths = widths if nets.arch == "mlp" else None
        self.lipschitz = lip
        eg = EncoderGenerator(nets.encoder, nets.generator)

        def opt(params, betas):
            if self.opt_name == "sgd":
                return torch.optim.SGD(params, lr=self.lr, momentum=0.5)
            return torch.optim.Adam(params, lr=self.lr, betas=betas)

        self.eg = self.add("eg", eg, lambda _: opt([{"params": eg.encoder.parameters(), "betas": self.betas_e},
                                                     {"params": eg.generator.parameters(), "betas": self.betas_gd}],
                                                    self.betas_gd))
        self.d_recon = self.add("d_recon", d_recon, lambda ps: opt(ps, self.betas_gd), broadcast_buffers=False)
        self.d_inter = self.add("d_inter", d_inter, lambda ps: opt(ps, self.betas_gd), broadcast_buffers=False)
        # Selection scores states from the end of epoch selection_start_epoch on ("after epoch 60").
        self.selection_start = p.selection_start_epoch * info.steps_per_epoch
        self.trained_steps = 0

    def _interp(self, x):
        n, k = len(x), self.params.simplex_n
        idx = partner_indices(self.noise(n, k - 1, kind="uniform"))
        w = simplex_weights(self.noise(n, k, kind="uniform"), k, two_point_paper=True)
        return idx, w

    def inter_losses(self, d_inter, x, x_inter, idx, w):
        """(D_inter's regression loss Σ_i (D(x_i, x̂) − (1 − α_i))², E/G's loss Σ_i α_i D(x_i, x̂)²), batch means."""
        k = idx.shape[1]
        out = d_inter(x[idx.T.reshape(-1)], x_inter.repeat(k, *([1] * (x.dim() - 1)))).view(k, len(x)).T
        critic = (out - (1 - w)).pow(2).sum(1).mean()
        autoencoder = (w * out.pow(2)).sum(1).mean()
        return critic, autoencoder

    def train_step(self, batch, step):
        p = self.params
        x = batch["x"]
        idx, w = self._interp(x)
        out = self.eg(x, mix_idx=idx, mix_w=w)  # once per step: E and G are fixed during the critic steps
        x_hat, x_inter = out["x_hat"].detach(), out["x_inter"].detach()
        logs = {}
        for _ in range(p.critic_steps):
            d = self.d_recon(torch.cat([x, x]), torch.cat([x, x_hat]))
            w_dist = (d[: len(x)] - d[len(x):]).mean()
            loss_recon = -w_dist
            if self.use_gp:
                gp = pair_gradient_penalty(self.strategy.for_penalty(self.d_recon), x, x, x_hat,
                                           self.noise(len(x), kind="uniform"))
                loss_recon = loss_recon + p.gp_weight * gp
                logs["gp"] = gp.detach()
            loss_inter, _ = self.inter_losses(self.d_inter, x, x_inter, idx, w)
            self.update("d_recon", loss_recon)
            self.update("d_inter", loss_inter)
            logs.update(w_rec=w_dist.detach(), d_inter=loss_inter.detach())
        reg = (out["e"].norm(dim=1) - math.sqrt(self.z_dim)).clamp_min(0).mean()
        with self.frozen("d_recon") as d_recon, self.frozen("d_inter") as d_inter:
            adv = -d_recon(x, out["x_hat"]).mean()
            _, inter = self.inter_losses(d_inter, x, out["x_inter"], idx, w)
        loss = reg + adv + self.lam * inter
        self.update("eg", loss)
        self.trained_steps = step + 1
        return {"eg": loss.detach(), "reg": reg.detach(), "inter": inter.detach(), **logs}

    def reconstruct(self, x):
        with self.evaluating():
            return self.bare("eg")(x)["x_hat"]

    def score(self, x):
        """R(x) = ‖f(x, x) − f(x, G(E(x)))‖₁ with f D_recon's penultimate features."""
        with self.evaluating():
            critic = self.bare("d_recon")
            x_hat = self.bare("eg")(x)["x_hat"]
            return (critic.features(x, x) - critic.features(x, x_hat)).abs().flatten(1).sum(1).float()

    def selection_scores(self, val_x):
        """Mean R-score of ``val_x`` (the validation normals, or the training normals for train_feature_loss)."""
        if self.trained_steps < self.selection_start or not len(val_x):
            return {"feature_loss": math.inf}
        return {"feature_loss": float(self.score(val_x).mean())}

    def effective_params(self) -> dict:
        """The values this cell ran with: defaults, ``auto`` and the preset resolved (metrics.json)."""
        p = self.params
        out = {**dataclasses.asdict(p), "arch": self.arch, "z_dim": self.z_dim, "lr": self.lr,
               "lambda_inter": self.lam, "optimizer": self.opt_name, "lipschitz": self.lipschitz,
               "encoder_final_act": self.encoder_final_act if self.arch == "mlp" else None}
        if self.opt_name == "sgd":
            out.update(betas_gd=None, betas_e=None, momentum=0.5)
        else:
            out.update(betas_gd=list(self.betas_gd), betas_e=list(self.betas_e))
        if self.widths is not None:
            out["widths"] = dataclasses.asdict(self.widths)
        if p.preset is None and self.info.kind == "tabular":
            out["note"] = (f"no preset for this table: the plain defaults; method.preset names a paper table "
                           f"({', '.join(sorted(PRESETS))})")
        return out

    def extra_state(self):
        return {"trained_steps": self.trained_steps}

    def load_extra_state(self, state):
        self.trained_steps = int(state.get("trained_steps", 0))
