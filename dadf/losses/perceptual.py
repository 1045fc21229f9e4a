"""Perceptual distances on VGG19 relu4_2 features (PIAD's relative-perceptual-L1 and its ablations).

Usable as a training loss or as an anomaly score by any method: ``PerceptualLoss(...)(x, y)`` returns one value
per sample. Inputs are images in [-1, 1] with 1 or 3 channels (grey images are repeated to 3 channels).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dadf.atomic import atomic_write

RELU4_2 = 23  # torchvision vgg19().features[:23] ends with the ReLU after conv4_2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's IMAGENET1K_V1 weights file name
MODES = ("l2", "perc", "perc_l1", "rel_perc_l1")


class WeightsMissing(FileNotFoundError):
    pass


def _imagenet_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE  # where torch.hub downloads weights to


def load_vgg19_features(weights: str, download: bool = False, seed: int = 0) -> nn.Sequential:
    """VGG19 conv layers up to relu4_2, frozen, in eval mode.

    ``weights``: ``imagenet`` (torchvision's ImageNet weights from torch's hub cache, downloaded there only when
    ``download`` is true), a path to a torchvision vgg19 state_dict file, or ``random`` (seeded random weights,
    only for tests and smoke runs: distances are then not those of the paper).
    """
    from torchvision.models import vgg19

    net = vgg19(weights=None)
    if weights == "random":
        g = torch.Generator().manual_seed(seed)
        for m in net.features:
            if isinstance(m, nn.Conv2d):  # He init as torchvision does, from our own generator
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                nn.init.zeros_(m.bias)
    else:
        path = _imagenet_file() if weights == "imagenet" else Path(str(weights)).expanduser()
        if not path.is_file():
            if weights == "imagenet" and download:
                from torchvision.models import VGG19_Weights

                VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)  # downloads into torch's hub cache
            else:
                raise WeightsMissing(
                    f"VGG19 weights not found at {path}. Provide them in one of these ways: put torchvision's "
                    f"{TORCHVISION_FILE} there (or set TORCH_HOME), pass a file with method.vgg_weights=/path/to/"
                    f"vgg19.pth, allow a download with method.vgg_download=true, or ask explicitly for untrained "
                    f"weights with method.vgg_weights=random (numbers then are not comparable to the paper's)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    feats = net.features[:RELU4_2].eval()
    feats.requires_grad_(False)
    return feats


class VGGFeatures(nn.Module):
    """Images in [-1, 1] -> ImageNet-normalised -> VGG19 relu4_2 features (C=512, H/8 x W/8)."""

    def __init__(self, weights: str = "imagenet", download: bool = False, seed: int = 0):
        super().__init__()
        self.body = load_vgg19_features(weights, download, seed)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)  # a fixed feature extractor: always eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"VGG features need 1 or 3 channels, got {x.shape[1]}")
        if min(x.shape[-2:]) < 8:
            raise ValueError(f"VGG relu4_2 needs images of at least 8x8 pixels, got {tuple(x.shape[-2:])}")
        return self.body(((x + 1) / 2 - self.mean) / self.std)


@torch.no_grad()
def channel_stats(features: VGGFeatures, images: torch.Tensor,
                  batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the features over all positions of all ``images`` (the normalising mu, sigma)."""
    s = s2 = None
    n = 0
    for i in range(0, len(images), batch_size):
        f = features(images[i : i + batch_size]).double()
        f = f.transpose(0, 1).flatten(1)
        s = f.sum(1) if s is None else s + f.sum(1)
        s2 = f.pow(2).sum(1) if s2 is None else s2 + f.pow(2).sum(1)
        n += f.shape[1]
    mean = s / n
    std = (s2 / n - mean.pow(2)).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)  # dead channels (std 0) are kept finite


def save_stats(path: Path, mean: torch.Tensor, std: torch.Tensor, image_set: str) -> None:
    atomic_write(path, lambda f: torch.save({"mean": mean, "std": std, "image_set": image_set}, f), binary=True)


def load_stats(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG channel statistics file {path} not found; give a torch file with 'mean' and "
                                f"'std' (512 values each), or method.vgg_stats=train to compute them")
    d = torch.load(path, map_location="cpu", weights_only=True)
    if "mean" not in d or "std" not in d or d["mean"].shape != (512,) or d["std"].shape != (512,):
        raise ValueError(f"{path}: expected a dict with 'mean' and 'std' of 512 values each")
    return d["mean"].float(), d["std"].float()


class PerceptualLoss(nn.Module):
    """Per-sample distance between x (the reference) and y.

    mode ``rel_perc_l1`` (PIAD eq. 4): ||f(x) - f(y)||_1 / ||f(x)||_1 with f standardised per channel; the
    denominator is detached. ``perc_l1``: mean |f(x) - f(y)| of standardised features. ``perc``: mean squared
    difference of raw features (Johnson et al.). ``l2``: mean squared pixel difference (no VGG).
    Gradients flow only into ``y``: the reference is a target, never moved by the loss.
    """

    def __init__(self, mode: str = "rel_perc_l1", features: VGGFeatures | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"perceptual loss mode {mode!r} unknown; valid: {MODES}")
        if mode != "l2" and features is None:
            raise ValueError(f"perceptual loss mode {mode!r} needs VGG features")
        self.mode = mode
        self.features = features if mode != "l2" else None
        self.register_buffer("mu", torch.zeros(512))
        self.register_buffer("sigma", torch.ones(512))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mu.copy_(mean)
        self.sigma.copy_(std)

    def _standardised(self, x):
        return (self.features(x) - self.mu.view(1, -1, 1, 1)) / self.sigma.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        y = y.to(x.dtype)  # a reconstruction from a network kept in half precision (DeepSpeed bf16 / fp16)
        if self.mode == "l2":
            return (x - y).pow(2).flatten(1).mean(1)
        if self.mode == "perc":
            with torch.no_grad():
                fx = self.features(x)
            return (fx - self.features(y)).pow(2).flatten(1).mean(1)
        with torch.no_grad():
            fx = self._standardised(x)
        diff = (fx - self._standardised(y)).abs().flatten(1)
        if self.mode == "perc_l1":
            return diff.mean(1)
        return diff.sum(1) / fx.abs().flatten(1).sum(1).clamp_min(1e-12)
