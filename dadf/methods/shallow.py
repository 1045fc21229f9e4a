"""scikit-learn baselines on flattened inputs: One-Class SVM, Isolation Forest, Gaussian KDE."""
from __future__ import annotations

import dataclasses

from sklearn.ensemble import IsolationForest
from sklearn.neighbors import KernelDensity
from sklearn.svm import OneClassSVM

from dadf.methods.base import ShallowMethod, method_params
from dadf.methods.registry import register


@dataclasses.dataclass
class OCSVMParams:
    kernel: str = "rbf"
    nu: float = 0.1
    gamma: str | float = "scale"
    pca_components: int | None = None
    max_train: int | None = 10000


@register("ocsvm")
class OCSVM(ShallowMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.params = method_params(cfg, OCSVMParams)

    def make_model(self):
        return OneClassSVM(kernel=self.params.kernel, nu=self.params.nu, gamma=self.params.gamma)

    def anomaly_score(self, feats):
        return -self.model.decision_function(feats)


@dataclasses.dataclass
class IForestParams:
    n_estimators: int = 100
    max_samples: str | int = "auto"
    pca_components: int | None = None
    max_train: int | None = None


@register("iforest")
class IForest(ShallowMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.params = method_params(cfg, IForestParams)

    def make_model(self):
        return IsolationForest(n_estimators=self.params.n_estimators, max_samples=self.params.max_samples,
                               random_state=self.seed)

    def anomaly_score(self, feats):
        return -self.model.score_samples(feats)


@dataclasses.dataclass
class KDEParams:
    bandwidth: str | float = "scott"
    pca_components: int | None = 32
    max_train: int | None = 10000


@register("kde")
class KDE(ShallowMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.params = method_params(cfg, KDEParams)

    def make_model(self):
        return KernelDensity(kernel="gaussian", bandwidth=self.params.bandwidth)

    def anomaly_score(self, feats):
        return -self.model.score_samples(feats)
