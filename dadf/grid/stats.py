"""The statistics of the results tables: a mean's Student-t confidence interval over seeds, and the comparison of
methods over a grid's paired units (average ranks, Friedman, pairwise Wilcoxon signed-rank with Holm's correction,
Nemenyi's critical difference), as ADBench and Demšar (2006) report them. scipy does the tests; the numbers in and
out are plain floats so the tables and the report format them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

CONFIDENCE = 0.95
# Paired units (dataset or class, and seed) below which the tests are not run: with n = 6 the smallest two-sided
# exact Wilcoxon p is 2/2^6 = 0.031, so fewer units can never reach 0.05; Friedman's chi-square approximation is
# poor below that as well.
MIN_UNITS = 6
MIN_METHODS_FRIEDMAN = 3


@dataclass(frozen=True)
class Interval:
    mean: float
    std: float | None  # sample std (ddof = 1); None for one value
    low: float | None  # the Student-t interval of the mean; None for one value
    high: float | None
    n: int

    def contains(self, x: float) -> bool:
        return self.low is not None and self.low <= x <= self.high


def interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean, sample std and the Student-t confidence interval of the mean of `values` (seeds); n = 1 has none."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ValueError("no values: an interval needs at least one finished seed")
    mean = float(v.mean())
    if v.size == 1:
        return Interval(mean, None, None, None, 1)
    from scipy import stats

    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1)) * std / math.sqrt(v.size)
    return Interval(mean, std, mean - half, mean + half, int(v.size))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order. scipy's
    false_discovery_control is Benjamini-Hochberg (false discovery rate), a different promise."""
    p = np.asarray(list(pvalues), dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[k]))  # monotone: never below an earlier (smaller) p's
        adjusted[k] = running
    return adjusted.tolist()


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of average ranks for k methods over n paired units:
    q_alpha(k, inf) / sqrt(2) * sqrt(k (k + 1) / (6 n))."""
    from scipy.stats import studentized_range

    q = float(studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n))


def wilcoxon_method(d: np.ndarray) -> str:
    """The exact null distribution when it is exact (no zero and no tied |difference|, n <= 50, as scipy's "auto"),
    else the normal approximation with scipy's tie and zero corrections: scipy's "auto" would run a permutation test
    there, ~0.7 s per pair on a laptop core, too slow for a report with a dozen pairs."""
    a = np.abs(d)
    exact = d.size <= 50 and np.all(a > 0) and np.unique(a).size == a.size
    return "exact" if exact else "approx"


@dataclass
class Pair:
    a: str
    b: str
    statistic: float
    p: float
    p_holm: float = float("nan")
    wins: int = 0  # units where a beats b
    losses: int = 0


@dataclass
class Comparison:
    """Methods compared over the units where every one of them has a value; rank 1 = best."""
    metric: str
    methods: list[str]
    n_units: int
    avg_ranks: dict[str, float]
    friedman: tuple[float, float] | None = None  # (chi-square, p)
    pairs: list[Pair] = field(default_factory=list)
    cd: float | None = None
    notes: list[str] = field(default_factory=list)  # why a test was not run


def compare(wide, metric: str, higher_is_better: bool = True) -> Comparison:
    """`wide`: a DataFrame with one row per paired unit and one column per method (NaN where a method lacks the
    unit). Only complete units are used: a test over unpaired values would compare different things."""
    complete = wide.dropna(axis=0, how="any")
    methods = [str(c) for c in complete.columns]
    x = complete.to_numpy(dtype=float)
    n, k = x.shape
    out = Comparison(metric, methods, n, {})
    if k == 0 or n == 0:
        out.notes.append("no unit where every method has a finished value")
        return out
    from scipy import stats

    ranks = stats.rankdata(-x if higher_is_better else x, axis=1)  # ties share the average rank
    out.avg_ranks = dict(zip(methods, ranks.mean(axis=0).tolist()))
    if k < 2:
        out.notes.append("one method: nothing to compare")
        return out
    if n < MIN_UNITS:
        out.notes.append(f"not enough paired units for the tests (n = {n} < {MIN_UNITS}): only ranks are shown")
        return out
    if k >= MIN_METHODS_FRIEDMAN:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all ties: a nan statistic, reported as such
            res = stats.friedmanchisquare(*x.T)
        out.friedman = (float(res.statistic), float(res.pvalue))
        out.cd = critical_difference(k, n)
    else:
        out.notes.append(f"Friedman needs at least {MIN_METHODS_FRIEDMAN} methods (the grid has {k})")
    for i, j in combinations(range(k), 2):
        d = x[:, i] - x[:, j]
        if not np.any(d):
            stat, p = 0.0, 1.0  # identical on every unit: no evidence of a difference
        else:
            res = stats.wilcoxon(x[:, i], x[:, j], method=wilcoxon_method(d))
            stat, p = float(res.statistic), float(res.pvalue)
        sign = 1 if higher_is_better else -1
        out.pairs.append(Pair(methods[i], methods[j], stat, p, wins=int(np.sum(sign * d > 0)),
                              losses=int(np.sum(sign * d < 0))))
    for pair, adj in zip(out.pairs, holm([pr.p for pr in out.pairs])):
        pair.p_holm = adj
    return out
