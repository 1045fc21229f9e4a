"""What every method provides to the trainer. The trainer knows nothing about GANs: a method owns its networks,
optimisers and update rule, and turns inputs into anomaly scores (higher = more anomalous)."""
from __future__ import annotations

import contextlib
import dataclasses
import pickle

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from torch import nn


@dataclasses.dataclass(frozen=True)
class DataInfo:
    kind: str  # "image" | "tabular"
    shape: tuple[int, ...]  # one sample's shape
    n_train: int


def method_params(cfg: DictConfig, defaults: type) -> object:
    """The method's config as a typed dataclass; an unknown key is an error that lists the valid ones."""
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}
    fields = {f.name for f in dataclasses.fields(defaults)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"method {cfg.name!r} has no option(s) {unknown}; valid options: {sorted(fields)}")
    return defaults(**values)


class Method:
    """Base of all methods. ``trainable`` methods get ``train_step`` calls; the others are fitted once."""

    name = "?"
    trainable = True
    uses_labelled_anomalies = False  # False: rows labelled anomalous (semisup) are dropped from its training set

    def __init__(self, cfg: DictConfig, info: DataInfo, accelerator: Accelerator, seed: int):
        self.cfg, self.info, self.accelerator, self.seed = cfg, info, accelerator, seed

    def on_train_start(self, train_x: torch.Tensor) -> None:
        """Called once before the first step of a fresh (not resumed) run."""

    def fit(self, train_x: torch.Tensor) -> None:
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TorchMethod(Method):
    """A method made of networks and optimisers, each prepared by Accelerate."""

    def __init__(self, cfg, info, accelerator, seed):
        super().__init__(cfg, info, accelerator, seed)
        self.nets: dict[str, nn.Module] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}

    def add(self, name: str, net: nn.Module, opt_factory) -> nn.Module:
        """Register a network and its optimiser (built from the network's parameters), prepared for the device."""
        net = net.to(self.accelerator.device)
        opt = opt_factory(net.parameters())
        net, opt = self.accelerator.prepare(net, opt)
        self.nets[name], self.opts[name] = net, opt
        return net

    @contextlib.contextmanager
    def evaluating(self):
        """All networks in eval() mode (BatchNorm uses training statistics), gradients off; restores after."""
        modes = {k: n.training for k, n in self.nets.items()}
        for n in self.nets.values():
            n.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for k, n in self.nets.items():
                n.train(modes[k])

    def update(self, name: str, loss: torch.Tensor) -> None:
        opt = self.opts[name]
        opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        opt.step()

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        unwrap = self.accelerator.unwrap_model
        return {
            "nets": {k: unwrap(n).state_dict() for k, n in self.nets.items()},
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, n in self.nets.items():
            self.accelerator.unwrap_model(n).load_state_dict(state["nets"][k])
        for k, o in self.opts.items():
            o.load_state_dict(state["opts"][k])
        self.load_extra_state(state["extra"])


class ShallowMethod(Method):
    """A scikit-learn estimator on flattened inputs, fitted once on the normal training rows."""

    trainable = False

    def __init__(self, cfg, info, accelerator, seed):
        super().__init__(cfg, info, accelerator, seed)
        self.pca = None
        self.model = None

    def make_model(self):
        raise NotImplementedError

    def anomaly_score(self, feats: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _features(self, x: torch.Tensor) -> np.ndarray:
        feats = x.reshape(len(x), -1).cpu().numpy().astype(np.float64)
        return self.pca.transform(feats) if self.pca is not None else feats

    def fit(self, train_x: torch.Tensor) -> None:
        from sklearn.decomposition import PCA

        p = self.params
        rng = np.random.default_rng(self.seed)
        if p.max_train is not None and len(train_x) > p.max_train:
            train_x = train_x[np.sort(rng.choice(len(train_x), p.max_train, replace=False))]
        feats = train_x.reshape(len(train_x), -1).cpu().numpy().astype(np.float64)
        if p.pca_components is not None and p.pca_components < min(feats.shape):
            self.pca = PCA(n_components=p.pca_components, random_state=self.seed).fit(feats)
            feats = self.pca.transform(feats)
        self.model = self.make_model().fit(feats)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.anomaly_score(self._features(x)), dtype=np.float64))

    def state_dict(self) -> dict:
        return {"pickle": pickle.dumps((self.pca, self.model))}

    def load_state_dict(self, state: dict) -> None:
        self.pca, self.model = pickle.loads(state["pickle"])
