"""PIAD (Tuluptceva et al., "Perceptual Image Anomaly Detection"): an encoder E and generator G trained with two
WGAN-GP critics (D_X on images: real x vs G(z); D_Z on codes: prior z vs E(x)) plus a reconstruction loss
rel-perc-L1(x, G(E(x))) whose weights gamma_G, gamma_E follow the gradient-normalising policy.
Anomaly score: the same reconstruction loss, per sample.

Step schedule: the trainer's steps cycle through ``n_critic`` critic steps and one E/G step, each on a fresh batch
(Algorithm 1), so every network is updated at most once per ``train_step`` and gradient accumulation stays exact.
The paper's N iterations are therefore N x (n_critic + 1) trainer steps (the grids set trainer.steps so).
"""
from __future__ import annotations

import dataclasses

import torch

from dadf.checks import choices
from dadf.losses.gan import WGANCritic, critic_loss
from dadf.losses.perceptual import MODES, PerceptualLoss, VGGFeatures, channel_stats, load_stats
from dadf.losses.weighting import GradNormWeights, WeightPolicyParams, gradient_sizes, weight_tensors
from dadf.methods.base import TorchMethod, method_params
from dadf.methods.registry import register
from dadf.nets.encoder_generator import EncoderGenerator
from dadf.nets.piad import PRESETS, Encoder, Generator, ImageCritic, LatentCritic, widths_for

Widths = choices("Widths", PRESETS)
RecLoss = choices("RecLoss", MODES)
Weighting = choices("Weighting", ("gradnorm", "fixed"))
WeightReduce = choices("WeightReduce", ("median", "mean"))
WeightNorm = choices("WeightNorm", ("std", "l2"))


@dataclasses.dataclass
class PIADParams:
    """E, G, WGAN-GP critics D_X (images, minibatch-stddev) and D_Z (codes); reconstruction loss and anomaly score
    rel-perc-L1 on VGG19 relu4_2; gradient-normalising weights. One trainer step = one critic step or one E/G step:
    the paper's N iterations are N x (n_critic + 1) trainer steps."""

    widths: Widths = Widths.small  # small (Table 1: MNIST/fMNIST/COIL) | cifar10 (Table 2) | wide64 (Table 3-like)
    # l2 | perc | perc_l1 | rel_perc_l1 (Table 3 right ablations); also the score
    rec_loss: RecLoss = RecLoss.rel_perc_l1
    weighting: Weighting = Weighting.gradnorm  # gradnorm | fixed (gamma_g, gamma_e as given)
    gamma_g: float = 1.0  # fixed weights; with gradnorm the weights before the first update (paper: 1)
    gamma_e: float = 1.0
    weight_period: int = 100  # generator iterations between gradient records / weight updates
    weight_history: int = 200  # records kept per loss and layer
    weight_smoothing: float = 0.05  # EWMA alpha
    weight_reduce: WeightReduce = WeightReduce.median  # median | mean over layers of adv/rec ratios
    weight_norm: WeightNorm = WeightNorm.std  # std (authors' implementation) | l2 (paper's Algorithm 2)
    n_critic: int = 2  # critic steps per E/G step (3 for 64x64 in the paper)
    lr_gen: float = 2.0e-4  # E and G (supplementary section 1)
    lr_critic: float = 5.0e-4
    betas: tuple = (0.5, 0.99)
    gp_weight: float = 10.0
    drift: float = 1.0e-3  # weight of E[D(real)^2]
    vgg_weights: str = "imagenet"  # imagenet | /path/to/vgg19.pth | random (tests only; not the paper's loss)
    vgg_download: bool = False  # true: torchvision downloads the ImageNet weights into the torch hub cache
    vgg_stats: str = "none"  # none (mu 0, sigma 1) | /path/to/stats.pt | train (seeded normal training images)
    vgg_stats_images: int = 1000  # images drawn (seeded) from the training set for vgg_stats=train

    def __post_init__(self):
        self.betas = tuple(self.betas)


LOSS_KEYS = ("dx_loss", "dx_gp", "dz_loss", "dz_gp", "rec", "adv_g", "adv_e", "gamma_g", "gamma_e")


@register("piad", params=PIADParams)
class PIAD(TorchMethod):
    _last = None  # the latest value of every loss, for the trainer's log (see train_step)

    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        p = self.params = method_params(cfg, PIADParams)
        if info.kind != "image" or len(info.shape) != 3 or info.shape[1] != info.shape[2]:
            raise ValueError(f"piad needs square images (C, S, S), got {info.kind} data of shape {info.shape}")
        c, size = info.shape[0], info.shape[1]
        self.widths = w = widths_for(p.widths, size)
        torch.manual_seed(seed)
        gen_opt = lambda ps: torch.optim.Adam(ps, lr=p.lr_gen, betas=p.betas)  # noqa: E731
        critic_opt = lambda ps: torch.optim.Adam(ps, lr=p.lr_critic, betas=p.betas)  # noqa: E731
        self.eg = self.add("eg", EncoderGenerator(Encoder(c, size, w), Generator(c, size, w)), gen_opt)
        self.dx = self.add("dx", WGANCritic(ImageCritic(c, size, w)), critic_opt)
        self.dz = self.add("dz", WGANCritic(LatentCritic(w)), critic_opt)
        features = None if p.rec_loss == "l2" else VGGFeatures(p.vgg_weights, p.vgg_download, seed)
        self.rec = PerceptualLoss(p.rec_loss, features).to(self.accelerator.device)
        if self.accelerator.device.type == "cuda":
            # The fixed VGG in the trainer's memory format and mixed precision, as the trained networks are (on CPU
            # it stays in fp32 and contiguous, as finished CPU cells ran it).
            self.rec = self.strategy.place(self.rec)
            self.rec.forward = self.accelerator.autocast()(self.rec.forward)
        if p.vgg_stats not in ("train", "none") and p.rec_loss != "l2":
            self.rec.set_stats(*load_stats(p.vgg_stats))
        self.policy = GradNormWeights(WeightPolicyParams(p.weight_period, p.weight_history, p.weight_smoothing,
                                                         p.weight_reduce, p.weight_norm))
        self.policy.gammas = {"g": p.gamma_g, "e": p.gamma_e}

    # ------------------------------------------------------------------ training
    def on_train_start(self, train_x):
        p = self.params
        if p.vgg_stats == "train" and p.rec_loss in ("perc_l1", "rel_perc_l1"):
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(train_x), generator=g)[: p.vgg_stats_images]
            imgs = train_x[idx.to(train_x.device)].to(self.accelerator.device).float()
            self.rec.set_stats(*channel_stats(self.rec.features, imgs))

    def train_step(self, batch, step):
        cycle = self.params.n_critic + 1
        x = batch["x"]
        if step % cycle < self.params.n_critic:
            new = self._critic_step(x)
        else:
            new = self._generator_step(x, step // cycle)
        # The trainer averages each key over the steps of a log window: report every loss at every step, carrying
        # the latest value of the networks not updated in this one.
        if self._last is None:
            self._last = {k: torch.zeros((), device=x.device) for k in LOSS_KEYS}
        self._last.update(new)
        return dict(self._last)

    def _critic_step(self, x):
        p, n = self.params, len(x)
        z = self.noise(n, self.widths.latent)
        with torch.no_grad(), self.frozen("eg") as eg:
            code, fake = eg.encoder(x), eg.generator(z)
        losses = {}
        for name, net, real, fake_ in (("dx", self.dx, x, fake), ("dz", self.dz, z, code)):
            eps = self.noise(n, kind="uniform").flatten()
            d_real, d_fake, gp = net(real, fake_, eps)
            loss = critic_loss(d_real, d_fake, gp, p.gp_weight, p.drift)
            self.update(name, loss)
            losses[f"{name}_loss"], losses[f"{name}_gp"] = loss.detach(), gp.detach()
        return losses

    def _generator_step(self, x, iteration):
        p = self.params
        gamma_g, gamma_e = self.policy.gamma("g"), self.policy.gamma("e")
        z = self.noise(len(x), self.widths.latent)
        # E's share of the reconstruction gradient is read at backward time, so a weight update below still applies;
        # on the device, where the backward reads it
        e_factor = torch.full((), gamma_e / gamma_g, device=x.device)
        out = self.eg(x, z, e_factor=e_factor)
        code, rec_x, fake = out["e"], out["x_hat"], out["x_fake"]
        with self.frozen("dx") as dx, self.frozen("dz") as dz:
            adv_g = -dx.critic(fake).mean()
            adv_e = -dz.critic(code).mean()
        rec = self.rec(x, rec_x).mean()
        if p.weighting == "gradnorm" and self.policy.due(iteration):
            self._record_gradients(adv_g, adv_e, rec, gamma_e / gamma_g)
            gamma_g, gamma_e = self.policy.refresh("g", "adv_g", "rec_g"), self.policy.refresh("e", "adv_e", "rec_e")
            e_factor.fill_(gamma_e / gamma_g)
        self.update("eg", adv_g + adv_e + gamma_g * rec)
        gammas = {k: torch.full((), v, device=x.device) for k, v in (("gamma_g", gamma_g), ("gamma_e", gamma_e))}
        return {"rec": rec.detach(), "adv_g": adv_g.detach(), "adv_e": adv_e.detach(), **gammas}

    def _record_gradients(self, adv_g, adv_e, rec, e_factor):
        """Per-layer gradient sizes of each loss (Algorithm 2), averaged over processes so all ranks agree."""
        eg = self._module(self.eg)
        enc, gen = weight_tensors(eg.encoder), weight_tensors(eg.generator)
        norm = self.params.weight_norm
        parts = []
        for loss, params in ((adv_g, gen), (rec, gen), (adv_e, enc), (rec, enc)):
            grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
            parts.append(gradient_sizes(grads, norm))
        parts[3] = parts[3] / e_factor  # E's reconstruction gradient passed through the gamma_E / gamma_G scale
        sizes = torch.cat(parts).to(self.accelerator.device)
        if self.accelerator.num_processes > 1:
            sizes = self.accelerator.reduce(sizes, reduction="mean")
        sizes = sizes.tolist()
        i = 0
        for name, params in (("adv_g", gen), ("rec_g", gen), ("adv_e", enc), ("rec_e", enc)):
            self.policy.record(name, dict(zip(params, sizes[i : i + len(params)])))
            i += len(params)

    # ------------------------------------------------------------------ scoring
    def reconstruct(self, x):
        eg = self._module(self.eg)
        return eg.generator(eg.encoder(x))

    def score(self, x):
        with self.evaluating():
            return self.rec(x, self.reconstruct(x)).float()

    def extra_state(self):
        return {"policy": self.policy.state_dict(), "mu": self.rec.mu.cpu(), "sigma": self.rec.sigma.cpu()}

    def load_extra_state(self, state):
        self.policy.load_state_dict(state["policy"])
        self.rec.set_stats(state["mu"].to(self.rec.mu.device), state["sigma"].to(self.rec.mu.device))
