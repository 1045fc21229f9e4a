"""scikit-learn baselines on flattened inputs: One-Class SVM, Isolation Forest, Gaussian KDE, k nearest neighbours."""
from __future__ import annotations

import dataclasses

import numpy as np

from dadf.checks import choices
from dadf.methods.base import ShallowMethod
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
    def make_model(self):
        from sklearn.neighbors import KernelDensity

        return KernelDensity(kernel="gaussian", bandwidth=self.params.bandwidth)

    def anomaly_score(self, feats):
        return -self.model.score_samples(feats)


# PyOD's KNN ``method``: how a row's distances to its k nearest training rows become its score
KNN_AGGREGATES = {"largest": lambda d: d[:, -1], "mean": lambda d: d.mean(axis=1),
                  "median": lambda d: np.median(d, axis=1)}
KNNAggregate = choices("KNNAggregate", KNN_AGGREGATES)


@dataclasses.dataclass
class KNNParams:
    """k nearest neighbours with PyOD's default scoring (its KNN detector, n_neighbors=5, method='largest'): the
    anomaly score of a sample is its distance to the k-th nearest training row; scikit-learn's NearestNeighbors."""

    n_neighbors: int = 5
    # largest: distance to the k-th neighbour | mean | median of the k distances (PyOD's)
    method: KNNAggregate = KNNAggregate.largest
    pca_components: int | None = None
    max_train: int | None = None


@register("knn", params=KNNParams)
class KNN(ShallowMethod):
    def make_model(self):
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(n_neighbors=self.params.n_neighbors)

    def fit(self, train_x):
        p = self.params
        rows = len(train_x) if p.max_train is None else min(len(train_x), p.max_train)
        if p.n_neighbors > rows:
            raise ValueError(f"method.n_neighbors={p.n_neighbors} (method knn) exceeds the {rows} training rows; "
                             f"lower it")
        super().fit(train_x)

    def anomaly_score(self, feats):
        dist, _ = self.model.kneighbors(feats, n_neighbors=self.params.n_neighbors)  # sorted, nearest first
        return KNN_AGGREGATES[self.params.method](dist)
