"""scikit-learn baselines on flattened inputs: One-Class SVM, Isolation Forest, Gaussian KDE."""
from __future__ import annotations

import dataclasses

from dadf.methods.base import ShallowMethod, method_params
from dadf.methods.registry import register


@dataclasses.dataclass
class OCSVMParams:
    """scikit-learn's One-Class SVM on flattened inputs; anomaly score = -decision_function."""

    kernel: str = "rbf"
    nu: float = 0.1
    gamma: str | int | float = "scale"  # scale | auto | a number
    pca_components: int | None = None  # reduce flattened inputs to this many principal components first (null: none)
    max_train: int | None = 10000  # subsample the training set above this size (the fit is quadratic)


@register("ocsvm", params=OCSVMParams)
class OCSVM(ShallowMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.params = method_params(cfg, OCSVMParams)

    def make_model(self):
        from sklearn.svm import OneClassSVM  # scikit-learn is imported by the cells that use it

        return OneClassSVM(kernel=self.params.kernel, nu=self.params.nu, gamma=self.params.gamma)

    def anomaly_score(self, feats):
        return -self.model.decision_function(feats)


@dataclasses.dataclass
class IForestParams:
    """scikit-learn's Isolation Forest on flattened inputs; anomaly score = -score_samples."""

    n_estimators: int = 100
    max_samples: str | int = "auto"  # auto | a number of samples per tree
    pca_components: int | None = None
    max_train: int | None = None


@register("iforest", params=IForestParams)
class IForest(ShallowMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.params = method_params(cfg, IForestParams)

    def make_model(self):
        from sklearn.ensemble import IsolationForest

        return IsolationForest(n_estimators=self.params.n_estimators, max_samples=self.params.max_samples,
                               random_state=self.seed)

    def anomaly_score(self, feats):
        return -self.model.score_samples(feats)


@dataclasses.dataclass
class KDEParams:
    """scikit-learn's Gaussian kernel density on flattened inputs; anomaly score = -log density."""

    bandwidth: str | int | float = "scott"  # a number, or scott | silverman
    pca_components: int | None = 32  # KDE in raw pixel space is meaningless: reduce first (null: none)
    max_train: int | None = 10000


@register("kde", params=KDEParams)
class KDE(ShallowMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.params = method_params(cfg, KDEParams)

    def make_model(self):
        from sklearn.neighbors import KernelDensity

        return KernelDensity(kernel="gaussian", bandwidth=self.params.bandwidth)

    def anomaly_score(self, feats):
        return -self.model.score_samples(feats)
