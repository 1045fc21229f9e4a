"""AMA, the Adversarial Mirrored AutoEncoder (Somepalli et al., UAI 2021, arXiv:2003.10713); details in docs/ama.md.

One optimiser step on a batch x (normals; under ``semisup`` also labelled anomalies):
    E, G forward once (with grad): e = E(x), x̂ = G(e), x̂_inter = G(Σ α_i e_i), x̂_neg = G(z_neg)
    critic_steps x: critic maximises  L_normal − λ_neg L_neg   on the detached fakes (E, G are fixed meanwhile, so
                    the fakes need not be recomputed: the authors' loop recomputes G(E(x)) twice per critic step)
    E, G minimise  L_normal − λ_neg L_neg + λ_reg ‖E(x)‖   through the frozen, updated critic
with L_normal = E[D(x,x) − D(x,x̂)] + λ_inter E[D(x,x) − D(x,x̂_inter)] and L_neg = E_neg[D(x,x) − D(x,x̂_neg)].
Scores: R(x) = ‖f(x,x) − f(x,G(E(x)))‖₁ (f = the critic's penultimate features); A-score = −log N(R; μ, σ²) with
(μ, σ) fitted on the normal training R-scores (−log density ranks exactly like the paper's −density, without
underflow to ties).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from dadf.checks import choices, within
from dadf.losses.gan import pair_gradient_penalty
from dadf.losses.simplex import partner_indices, simplex_weights
from dadf.methods.base import TorchMethod, method_params
from dadf.methods.options import Arch, Lipschitz
from dadf.methods.registry import register
from dadf.nets.encoder_generator import EncoderGenerator
from dadf.nets.gan import build_autoencoder_gan

ATYPICAL_MODES = ("shell", "scale", "sipple", "none")
INTERPOLATIONS = ("simplex", "berthelot", "mixup", "none")
# Rows of AMA Table 1 (bottom) and supplementary Tables 3, 5, 6 and Fig. 1, as switch settings, so a grid axis
# ``method.ablation`` runs them one at a time.
ABLATIONS = {
    "none": {},
    "no_mirrored": {"mirrored": False},
    "no_simplex": {"interpolation": "none"},
    "no_atypical": {"atypical_mode": "none"},
    "r_score": {"score": "r_score"},
    "sipple": {"atypical_mode": "sipple"},
    "sipple_no_interp": {"atypical_mode": "sipple", "interpolation": "none"},
    "wass_l2": {"mirrored": False, "l2_weight": 1.0},
    "berthelot": {"interpolation": "berthelot"},
    "mixup": {"interpolation": "mixup"},
}
AtypicalMode = choices("AtypicalMode", ATYPICAL_MODES)
Interpolation = choices("Interpolation", INTERPOLATIONS)
AtypicalDirection = choices("AtypicalDirection", ("inward", "outward"))
AMAScore = choices("AMAScore", ("a_score", "r_score"))
Ablation = choices("Ablation", ABLATIONS)


@dataclasses.dataclass
class AMAParams:
    """The paper's values are the defaults; every point where the authors' code differs is a switch (noted
    "authors' code")."""

    arch: Arch = Arch.auto  # auto | resnet32 | grey28 | mlp (nets by data shape: dadf/nets/gan.py)
    z_dim: int | None = None  # None: the paper's (128 resnet32, 64 grey28, preset for mlp)
    lipschitz: Lipschitz = Lipschitz.auto  # sn | gp | sn+gp; auto: sn for resnet32 (supp. Table 1), gp otherwise
    gp_weight: float = 10.0
    critic_steps: int = 5  # critic updates per E/G update, on the same batch (authors' code)
    lr: float = 3.0e-4
    betas_gd: tuple[float, float] = (0.0, 0.9)  # Adam betas of the generator and the critic
    betas_e: tuple[float, float] = (0.5, 0.9)  # encoder
    lr_milestones: tuple[int, ...] = (30, 60, 90)  # epochs where the LR is multiplied by lr_gamma
    lr_gamma: float = 0.1
    lambda_reg: float = 1.0  # weight of ||E(x)|| (unsquared L2)
    lambda_inter: float = 0.5
    lambda_neg: float = 5.0
    mirrored: bool = True  # false: plain Wasserstein, the critic sees x̂ alone (Table 1 "w/o mirrored loss")
    l2_weight: float = 0.0  # > 0: add an L2 reconstruction loss (supp. Table 5 "Wass. loss + L2")
    # simplex (k points) | berthelot (2 points) | mixup (image space) | none
    interpolation: Interpolation = Interpolation.simplex
    simplex_k: int = 3
    interp_trains_autoencoder: bool = True  # authors' code: false (x̂_inter detached, only the critic learns)
    # shell (paper) | scale (authors' code) | sipple (cube at the origin) | none
    atypical_mode: AtypicalMode = AtypicalMode.shell
    atypical_direction: AtypicalDirection = AtypicalDirection.outward  # inward (CIFAR-10) | outward (SVHN, MNIST...)
    atypical_delta: float = 0.5
    # share of each batch replaced by synthetic negatives
    atypical_fraction: float = dataclasses.field(default=0.1, metadata=within(0, 1, high_open=True))
    atypical_start_epoch: int = 11  # 1-based: epochs 1-10 see only normals
    sipple_half_width: float = 1.0  # sipple: the cube [-h, h]^d
    real_negatives: bool = True  # semisup: labelled anomalies are the negatives (atypical selection if none)
    score: AMAScore = AMAScore.a_score  # a_score | r_score (Table 1 ablation)
    recompute_fakes: bool = False  # the authors' cost: G(E(x)) recomputed twice per critic step (same maths)
    ablation: Ablation = Ablation.none  # a named row of the papers' ablation tables: sets the switches in ABLATIONS

    def __post_init__(self):
        for key, value in ABLATIONS[self.ablation].items():
            setattr(self, key, value)
        if self.interpolation == "simplex" and self.simplex_k < 2:
            raise ValueError(f"simplex_k={self.simplex_k}: a simplex needs at least 2 points")
        self.betas_gd, self.betas_e = tuple(self.betas_gd), tuple(self.betas_e)
        self.lr_milestones = tuple(self.lr_milestones)


# -------------------------------------------------------------------------------------- AMA's maths (tested)
def atypical_codes(e: torch.Tensor, u: torch.Tensor, mode: str, direction: str, delta: float,
                   half_width: float = 1.0) -> torch.Tensor:
    """Synthetic negative codes from normal codes ``e`` (N, d) and uniforms ``u`` (N, d) in [0, 1).

    shell: radius uniform in [√d − δ, √d] (inward) or [√d, √d + δ] (outward) on the ray through e (paper Fig. 3);
    scale: e·α (inward) or e/α (outward), α ~ U(0, 0.5) (authors' code); sipple: uniform in the cube [-h, h]^d."""
    d = e.shape[1]
    if mode == "sipple":
        return (2 * u - 1) * half_width
    a = u[:, :1]
    if mode == "shell":
        lo = math.sqrt(d) - delta if direction == "inward" else math.sqrt(d)
        radius = lo + delta * a
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12) * radius
    if mode == "scale":
        alpha = 0.5 * a + 1e-6
        return e * alpha if direction == "inward" else e / alpha
    raise ValueError(f"atypical mode {mode!r} makes no codes")


def negative_rows(lo: int, n: int, fraction: float) -> list[int]:
    """Local rows (of a micro-batch whose first row is global row ``lo``) that become negatives: global row g is
    one when ⌊(g+1)f⌋ > ⌊g f⌋, so a fraction f of every global batch, spread evenly, whatever the process count."""
    return [i for i in range(n) if math.floor((lo + i + 1) * fraction) > math.floor((lo + i) * fraction)]


def wmean(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of ``v`` weighted by the 0/1 mask ``w`` (0 when the mask is empty), without a host sync."""
    return (v * w).sum() / w.sum().clamp_min(1.0)


def fit_gaussian(r: torch.Tensor) -> tuple[float, float]:
    """MLE normal fit (mean, std) of R-scores."""
    r = r.double()
    return float(r.mean()), float(r.std(unbiased=False).clamp_min(1e-12))


def neg_log_density(r: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """−log N(r; mean, std²): higher = less likely under the normals' R-scores (ranks like −density)."""
    return 0.5 * ((r.double() - mean) / std).pow(2) + math.log(std) + 0.5 * math.log(2 * math.pi)


@register("ama", params=AMAParams)
class AMA(TorchMethod):
    uses_labelled_anomalies = True  # semisup: real anomalies are negatives; other protocols give only normals
    selection_criteria = ("feature_loss",)

    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        p = self.params = method_params(cfg, AMAParams)
        nets = build_autoencoder_gan(info.shape, info.kind, arch=p.arch, z_dim=p.z_dim, sn=False)
        self.arch, self.z_dim = nets.arch, nets.z_dim
        lip = p.lipschitz if p.lipschitz != "auto" else ("sn" if nets.arch == "resnet32" else "gp")
        self.use_sn, self.use_gp = "sn" in lip, "gp" in lip
        critic = build_autoencoder_gan(info.shape, info.kind, arch=nets.arch, z_dim=nets.z_dim,
                                       sn=self.use_sn).critic if self.use_sn else nets.critic
        eg = EncoderGenerator(nets.encoder, nets.generator)
        milestones = [m * info.steps_per_epoch for m in p.lr_milestones]

        def sched(opt):
            return torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=p.lr_gamma)

        def eg_opt(_):
            return torch.optim.Adam([{"params": eg.encoder.parameters(), "betas": p.betas_e},
                                     {"params": eg.generator.parameters(), "betas": p.betas_gd}], lr=p.lr)

        self.eg = self.add("eg", eg, eg_opt, sched)
        # The critic sees several pair batches per forward pass; no BatchNorm, own buffers (spectral norm's u).
        self.critic = self.add("critic", critic, lambda ps: torch.optim.Adam(ps, lr=p.lr, betas=p.betas_gd), sched,
                               broadcast_buffers=False)
        self.atypical_start = (p.atypical_start_epoch - 1) * info.steps_per_epoch
        self._has_real_negatives = False
        self._seen_negatives: torch.Tensor | None = None  # labelled anomalies seen, on the device, not yet read
        self._row_index: dict[tuple[int, int], torch.Tensor] = {}
        self.gaussian: tuple[float, float] | None = None

    # ------------------------------------------------------------------------------------------ training
    def _update_detection(self, batch, step):
        """Whether this run has labelled anomalies (semisup): looked for in the batches of the first
        ``atypical_start`` steps, kept on the device and read once, when first needed (``has_real_negatives``)."""
        p = self.params
        if p.real_negatives and "label" in batch and step < max(self.atypical_start, 1):
            seen = (batch["label"] == 1).any()
            self._seen_negatives = seen if self._seen_negatives is None else self._seen_negatives | seen

    @property
    def has_real_negatives(self) -> bool:
        """Whether labelled anomalies were seen: one host sync at the first read after they were looked for, the
        same on every process (a process that saw one tells the others), so all take the same branch."""
        if self._seen_negatives is not None:
            seen = self._seen_negatives.to(torch.int32)
            if self.accelerator.num_processes > 1:
                torch.distributed.all_reduce(seen, op=torch.distributed.ReduceOp.MAX)
            self._has_real_negatives = self._has_real_negatives or bool(seen)
            self._seen_negatives = None
        return self._has_real_negatives

    def _rows_on(self, rows: list[int], lo: int, n: int, device) -> torch.Tensor:
        """``rows = negative_rows(lo, n, ...)`` as an index tensor on the device, built once per (lo, n)."""
        key = (lo, n)
        if key not in self._row_index:
            self._row_index[key] = torch.tensor(rows, dtype=torch.long, device=device)
        return self._row_index[key]

    def _fakes(self, x, step, neg_rows, mode):
        p, n = self.params, len(x)
        kwargs = {}
        if p.interpolation in ("simplex", "berthelot"):
            k = p.simplex_k if p.interpolation == "simplex" else 2
            kwargs["mix_idx"] = partner_indices(self.noise(n, k - 1, kind="uniform"))
            u = self.noise(n, k, kind="uniform")
            if p.interpolation == "simplex":
                kwargs["mix_w"] = simplex_weights(u, k)
            else:  # Berthelot et al.: α ~ U(0, 0.5) towards the partner, the rest on the row itself
                a = 0.5 * u[:, :1]
                kwargs["mix_w"] = torch.cat([1 - a, a], dim=1)
        elif p.interpolation == "mixup":
            idx = partner_indices(self.noise(n, 1, kind="uniform"))
            a = (0.5 * self.noise(n, 1, kind="uniform")).view(-1, *([1] * (x.dim() - 1)))
            kwargs["x_mix"] = (1 - a) * x + a * x[idx[:, 1]]  # MixUp in image space, then reconstructed
            kwargs["mix_idx"] = idx  # (for the validity mask only)
        if mode == "synthetic":
            u = self.noise(n, self.z_dim, kind="uniform")
            rows = neg_rows
            kwargs["neg_fn"] = lambda e: atypical_codes(e[rows], u[rows], p.atypical_mode, p.atypical_direction,
                                                        p.atypical_delta, p.sipple_half_width)
        return kwargs

    def _pairs(self, x, out, normal, valid, rows, real_neg):
        """The critic's inputs in one batch: (x,x) | (x,x̂) | (x_1,x̂_inter) | (x_neg,x̂_neg); returns the pair
        tensors and the slices of each part."""
        p = self.params
        left, right, parts = [x, x], [x, out["x_hat"]], {"real": slice(0, len(x)), "rec": slice(len(x), 2 * len(x))}
        if not p.mirrored:  # plain Wasserstein: the critic judges x̂ alone (a pair of copies keeps one network)
            left = [x, out["x_hat"]]
        i = 2 * len(x)
        if "x_inter" in out:
            left.append(x if p.mirrored else out["x_inter"])
            right.append(out["x_inter"])
            parts["inter"] = slice(i, i + len(x))
            i += len(x)
        if "x_neg" in out:
            xn = x[rows]
            left.append(xn if p.mirrored else out["x_neg"])
            right.append(out["x_neg"])
            parts["neg"] = slice(i, i + len(xn))
        return torch.cat(left), torch.cat(right), parts

    def _objective(self, d, parts, normal, valid, rows, neg_mask):
        """L_normal − λ_neg L_neg from critic outputs ``d`` (the critic maximises it, E and G minimise it)."""
        p = self.params
        real, rec = d[parts["real"]], d[parts["rec"]]
        terms = {"w_rec": wmean(real - rec, normal)}
        obj = terms["w_rec"]
        if "inter" in parts:
            terms["w_inter"] = wmean(real - d[parts["inter"]], valid)
            obj = obj + p.lambda_inter * terms["w_inter"]
        neg = []
        if "neg" in parts:  # synthetic negatives: (x_j, G(z_neg)) with z_neg from x_j's code
            neg.append((real[rows] - d[parts["neg"]]).mean())
        if neg_mask is not None and p.real_negatives:  # labelled anomalies: (x_a, G(E(x_a)))
            neg.append(wmean(real - rec, neg_mask))
        if neg:
            terms["w_neg"] = sum(neg)
            obj = obj - p.lambda_neg * terms["w_neg"]
        return obj, terms

    def prepare(self, batch, step) -> dict:
        """The step's context: rows that are normals / synthetic negatives / labelled anomalies and the random
        draws of the fakes (all from ``noise``: a pure function of seed and step, so a resume repeats them)."""
        p = self.params
        x = batch["x"]
        n = len(x)
        self._update_detection(batch, step)
        # Rows labelled anomalous (semisup) are never normals; they are negatives unless real_negatives=false.
        neg_mask = (batch["label"] == 1).float() if "label" in batch else None
        normal = 1 - neg_mask if neg_mask is not None else torch.ones(n, device=x.device)
        synthetic = p.atypical_mode != "none" and step >= self.atypical_start and not self.has_real_negatives
        lo = self.step_context.batch_lo
        rows = negative_rows(lo, n, p.atypical_fraction) if synthetic else []
        if rows:  # the same rows at every step of this process: indexed by a tensor built once, on the device
            rows = self._rows_on(rows, lo, n, x.device)
            normal = normal.clone()
            normal[rows] = 0
        kwargs = self._fakes(x, step, rows, "synthetic" if len(rows) else "none")
        valid = normal
        if "mix_idx" in kwargs:  # an interpolation counts only if all its vertices are normals
            valid = normal[kwargs["mix_idx"]].prod(1)
        return {"x": x, "normal": normal, "valid": valid, "rows": rows, "neg_mask": neg_mask, "kwargs": kwargs}

    def critic_loss(self, ctx, fakes, critic) -> tuple[torch.Tensor, dict]:
        """−(L_normal − λ_neg L_neg) (+ gradient penalty) on detached fakes: only the critic gets gradient."""
        p, x = self.params, ctx["x"]
        fakes = {k: v.detach() for k, v in fakes.items()}
        left, right, parts = self._pairs(x, fakes, ctx["normal"], ctx["valid"], ctx["rows"], ctx["neg_mask"])
        obj, terms = self._objective(critic(left, right), parts, ctx["normal"], ctx["valid"], ctx["rows"],
                                     ctx["neg_mask"])
        loss = -obj
        if self.use_gp:
            gp = pair_gradient_penalty(self.strategy.for_penalty(critic), x, x, fakes["x_hat"],
                                       self.noise(len(x), kind="uniform"))
            loss = loss + p.gp_weight * gp
            terms["gp"] = gp
        return loss, terms

    def eg_loss(self, ctx, out, critic) -> tuple[torch.Tensor, torch.Tensor]:
        """L_normal − λ_neg L_neg + λ_reg ‖E(x)‖ (+ L2) for E and G through ``critic`` (frozen by the caller);
        x̂_inter is detached when interp_trains_autoencoder is false. Returns (loss, regulariser)."""
        p, x, normal = self.params, ctx["x"], ctx["normal"]
        out = dict(out)
        if not p.interp_trains_autoencoder and "x_inter" in out:
            out["x_inter"] = out["x_inter"].detach()
        left, right, parts = self._pairs(x, out, normal, ctx["valid"], ctx["rows"], ctx["neg_mask"])
        obj, _ = self._objective(critic(left, right), parts, normal, ctx["valid"], ctx["rows"], ctx["neg_mask"])
        reg = wmean(out["e"].norm(dim=1), normal)
        loss = obj + p.lambda_reg * reg
        if p.l2_weight > 0:
            loss = loss + p.l2_weight * wmean((out["x_hat"] - x).pow(2).flatten(1).mean(1), normal)
        return loss, reg

    def train_step(self, batch, step):
        p = self.params
        ctx = self.prepare(batch, step)
        x = ctx["x"]
        out = self.eg(x, **ctx["kwargs"])  # with grad: reused by the E/G update after the critic steps
        logs = {}
        for _ in range(p.critic_steps):
            if p.recompute_fakes:  # the authors' cost, for the FLOP comparison: same values, twice per step
                with torch.no_grad():
                    self.eg(x)
                    self.eg(x)
            loss_d, terms = self.critic_loss(ctx, out, self.critic)
            self.update("critic", loss_d)
            logs = {k: v.detach() for k, v in terms.items()}
        with self.frozen("critic") as critic:
            loss_eg, reg = self.eg_loss(ctx, out, critic)
        self.update("eg", loss_eg)
        if self.step_context.last_micro:
            for s in self.scheds.values():
                s.step()
        return {"eg": loss_eg.detach(), "reg": reg.detach(), **logs}

    # ------------------------------------------------------------------------------------------- scoring
    def reconstruct(self, x):
        with self.evaluating():
            return self.bare("eg")(x)["x_hat"]

    def r_score(self, x: torch.Tensor) -> torch.Tensor:
        """‖f(x, x) − f(x, G(E(x)))‖₁ with f the critic's penultimate features (both pairs of copies when the
        loss is not mirrored)."""
        with self.evaluating():
            critic = self.bare("critic")
            x_hat = self.bare("eg")(x)["x_hat"]
            ref = critic.features(x, x)
            rec = critic.features(x, x_hat) if self.params.mirrored else critic.features(x_hat, x_hat)
            return (ref - rec).abs().flatten(1).sum(1).float()

    def scores(self, x):
        r = self.r_score(x)
        out = {"r_score": r.float()}
        if self.gaussian is not None:
            out["a_score"] = neg_log_density(r, *self.gaussian).float()
        out["score"] = out.get(self.params.score, out["r_score"])
        return out

    def score(self, x):
        return self.scores(x)["score"]

    def on_train_end(self, train_x):
        rs = torch.cat([self.r_score(train_x[i : i + 512].to(self.accelerator.device)).cpu()
                        for i in range(0, len(train_x), 512)])
        self.gaussian = fit_gaussian(rs)

    def selection_scores(self, val_x):
        return {"feature_loss": float(self.r_score(val_x).mean())}

    def extra_state(self):
        # every process calls this (the trainer's saves do): reading the flag may be a collective
        return {"has_real_negatives": self.has_real_negatives, "gaussian": self.gaussian}

    def load_extra_state(self, state):
        self._has_real_negatives = bool(state.get("has_real_negatives", False))
        self._seen_negatives = None
        self.gaussian = state.get("gaussian")
