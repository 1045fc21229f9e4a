"""The statistics of the results tables: a mean's Student-t confidence interval over seeds, and the comparison of
methods over a grid's units (datasets, or classes for one-class protocols) as Demšar (2006) and ADBench report it:
each method's value on a unit is its mean over seeds, then average ranks, Friedman's test, pairwise Wilcoxon
signed-rank tests with Holm's correction, Nemenyi's critical difference, and Benavoli et al.'s (2017) Bayesian
signed-rank test with a region of practical equivalence. scipy runs the frequentist tests, baycomp's posterior
gives the Bayesian probabilities; the numbers in and out are plain floats so that the tables and the report format
them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

import numpy as np

CONFIDENCE = 0.95
# Units below which the tests are not run: with n = 6 the smallest two-sided exact Wilcoxon p is 2/2^6 = 0.031, so
# fewer units can never reach 0.05; Friedman's chi-square approximation is poor below that as well.
MIN_UNITS = 6
MIN_METHODS_FRIEDMAN = 3
ROPE = 0.01  # the region of practical equivalence: differences of the metric within ±ROPE count as none
# Posterior draws of the Bayesian test: the probabilities' Monte-Carlo standard error is at most 0.5/sqrt(n) = 0.005,
# below the 2 decimals the report prints.
BAYES_SAMPLES = 10_000
BAYES_PRIOR = 0.5  # baycomp's default: the Dirichlet prior's pseudo-observation at difference 0 has this weight
BAYES_SEED = 0  # fixed: a report rebuilt from the same results says the same


@dataclass(frozen=True)
class Interval:
    mean: float
    std: float | None  # sample std (ddof = 1); None for one value
    low: float | None  # the Student-t interval of the mean; None for one value
    high: float | None
    n: int

    def contains(self, x: float) -> bool:
        return self.low is not None and self.low <= x <= self.high


@lru_cache(maxsize=256)
def _t_quantile(q: float, df: int) -> float:
    """Student's t quantile; cached because a large grid asks for the same few (q, df) thousands of times.
    scipy.special.stdtrit is what scipy.stats.t.ppf computes, without importing scipy.stats."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; 0 for one value) in plain Python: numpy's per-call cost dominates at the few
    values (seeds) a table cell has."""
    v = [float(x) for x in values]
    n = len(v)
    mean = math.fsum(v) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1))


def interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean, sample std and the Student-t confidence interval of the mean of `values` (seeds); n = 1 has none."""
    v = list(values)
    if not v:
        raise ValueError("no values: an interval needs at least one finished seed")
    mean, std = mean_std(v)
    if len(v) == 1:
        return Interval(mean, None, None, None, 1)
    half = _t_quantile(0.5 + confidence / 2, len(v) - 1) * std / math.sqrt(len(v))
    return Interval(mean, std, mean - half, mean + half, len(v))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order. scipy's
    false_discovery_control is Benjamini-Hochberg (false discovery rate), a different promise; statsmodels'
    multipletests has Holm but costs seconds of import on every aggregation for these few lines."""
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
    """Nemenyi's critical difference of average ranks for k methods over n units:
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


# ---------------------------------------------------------------------------------------------------- Bayesian

def dirichlet_draws(n: int, nsamples: int = BAYES_SAMPLES, seed: int = BAYES_SEED,
                    prior: float = BAYES_PRIOR) -> np.ndarray:
    """The posterior's Dirichlet weights over the prior's pseudo-observation (row 0) and n units, one column per
    draw, drawn as baycomp.SignedRankTest draws them for random_state=seed. They depend on n only, so every pair of
    a comparison shares them."""
    return np.ascontiguousarray(np.random.RandomState(seed).dirichlet(np.r_[prior, np.ones(n)], nsamples).T)


def _masses(w: np.ndarray, order: np.ndarray, sums: np.ndarray, thresholds: tuple[float, ...]) -> list[np.ndarray]:
    """Per draw (column of w, its rows taken in `order`) and threshold t: sum_ij w_i w_j H(sums_ij - t) with
    H(0) = 1/2, for `sums` sorted along both axes. Each row's {j: sums_ij > t} is then a suffix, so the double sum is
    one pass of suffix sums instead of an outer product per draw."""
    n1, nsamples = w.shape
    starts = []
    for t in thresholds:
        above, at = (sums <= t).sum(axis=1), (sums < t).sum(axis=1)  # > t and >= t from there on
        starts.append((above, None if np.array_equal(above, at) else at))  # no sum exactly at t: one pass
    out = [np.empty(nsamples) for _ in thresholds]
    block = max(1024, 131_072 // n1)  # blocks of draws that stay in cache (and few rows to loop at many units)
    for lo in range(0, nsamples, block):
        chunk = w[order, lo:lo + block]
        tail = np.zeros((n1 + 1, chunk.shape[1]))
        for i in range(n1 - 1, -1, -1):  # row by row: 3x faster than np.cumsum along axis 0 here
            np.add(tail[i + 1], chunk[i], out=tail[i])
        for (above, at), res in zip(starts, out):
            mass = np.einsum("is,is->s", chunk, tail[above])
            if at is not None:  # half weight on the sums exactly at t
                mass = 0.5 * (mass + np.einsum("is,is->s", chunk, tail[at]))
            res[lo:lo + block] = mass
    return out


def bayes_signed_rank(x, y, rope: float = ROPE, draws: np.ndarray | None = None) -> tuple[float, float, float]:
    """Benavoli et al.'s Bayesian signed-rank test: (P(x better by more than rope), P(equivalent within ±rope),
    P(y better by more than rope)), higher values being better, from the Dirichlet-process posterior of the paired
    differences y - x. The same posterior and numbers as baycomp.SignedRankTest.probs(x, y, rope) with the same
    draws: baycomp's sampler loops in Python over its draws with an outer product each (~1 s per pair at 8 units),
    this one takes milliseconds, so a report compares dozens of pairs. baycomp's Posterior turns the draws into
    the probabilities."""
    from baycomp.multiple import Posterior

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"paired values of equal length are needed, got {x.shape} and {y.shape}")
    if rope < 0:
        raise ValueError(f"rope {rope} is negative: it is the half-width of the region of practical equivalence")
    draws = dirichlet_draws(x.size) if draws is None else draws
    diff = np.r_[0.0, y - x]  # baycomp's order: the prior's pseudo-observation first
    order = np.argsort(diff, kind="stable")
    z = diff[order]
    # y better: H(s - 2 rope); x better: H(-s - 2 rope) = 1 - H(s + 2 rope)
    above, not_below = _masses(draws, order, z[:, None] + z[None, :], (2 * rope, -2 * rope))
    below = 1.0 - not_below
    sample = np.column_stack([below, 1.0 - below - above, above])
    p_x, p_rope, p_y = Posterior(sample).probs(True)
    return float(p_x), float(p_rope), float(p_y)


# ---------------------------------------------------------------------------------------------------- comparison

@dataclass
class Pair:
    a: str
    b: str
    statistic: float
    p: float
    p_holm: float = float("nan")
    wins: int = 0  # units where a beats b
    losses: int = 0
    p_a_better: float = float("nan")  # Bayesian signed-rank test with the comparison's rope
    p_equivalent: float = float("nan")
    p_b_better: float = float("nan")


@dataclass
class UnitAgreement:
    """How well a unit's seeds agree with the ranking of its seed means."""
    unit: str
    seeds: int  # seeds where every method has a value
    first: str  # the best method by mean over seeds (ties: the first in the grid's order)
    first_held: int  # seeds where it is best (or tied best)
    order_held: int  # seeds that rank every method as the means do


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
    unit: str = "unit"  # what one unit is: "dataset", "class", "dataset × class", ...
    units: list[str] = field(default_factory=list)  # the units compared over, in order
    values: np.ndarray | None = None  # units × methods: each method's mean over seeds
    rope: float = ROPE
    agreement: list[UnitAgreement] = field(default_factory=list)


def rank_rows(x: np.ndarray) -> np.ndarray:
    """Each row's ranks, 1 = smallest, ties sharing their average rank: scipy.stats.rankdata(x, axis=1), without
    importing scipy.stats (~1 s, most of an aggregation that runs no test)."""
    x = np.asarray(x, dtype=float)
    below = (x[:, None, :] < x[:, :, None]).sum(axis=2)
    tied = (x[:, None, :] == x[:, :, None]).sum(axis=2)  # itself included
    return below + (tied + 1) / 2


def _as_wide(wide) -> tuple[list[str], list[str], np.ndarray]:
    """(units, methods, values) of a units × methods DataFrame or (units, methods, values) triple."""
    if isinstance(wide, tuple):
        units, methods, values = wide
        return [str(u) for u in units], [str(m) for m in methods], np.asarray(values, dtype=float).reshape(
            len(units), len(methods))
    return ([str(u) for u in wide.index], [str(c) for c in wide.columns],
            wide.to_numpy(dtype=float).reshape(len(wide.index), len(wide.columns)))


def compare(wide, metric: str, higher_is_better: bool = True, rope: float = ROPE, unit: str = "unit") -> Comparison:
    """`wide`: one row per unit, one column per method, each value the method's mean over seeds on that unit (NaN
    where a method has none): a DataFrame, or a (units, methods, values) triple. Only complete units are used: a
    test over unpaired values would compare different things. `unit` names what a unit is, for the report."""
    all_units, methods, x = _as_wide(wide)
    keep = ~np.isnan(x).any(axis=1) if x.size else np.zeros(len(all_units), dtype=bool)
    x = x[keep]
    units = [u for u, k in zip(all_units, keep) if k]
    n, k = x.shape
    out = Comparison(metric, methods, n, {}, unit=unit, units=units, values=x, rope=rope)
    if k == 0 or n == 0:
        out.notes.append("no unit where every method has a finished value")
        return out
    ranks = rank_rows(-x if higher_is_better else x)
    out.avg_ranks = dict(zip(methods, ranks.mean(axis=0).tolist()))
    if k < 2:
        out.notes.append("one method: nothing to compare")
        return out
    if n < MIN_UNITS:
        out.notes.append(f"not enough units for the tests (n = {n} < {MIN_UNITS}): only ranks are shown")
        return out
    from scipy import stats

    if k >= MIN_METHODS_FRIEDMAN:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all ties: a nan statistic, reported as such
            res = stats.friedmanchisquare(*x.T)
        out.friedman = (float(res.statistic), float(res.pvalue))
        out.cd = critical_difference(k, n)
    else:
        out.notes.append(f"Friedman needs at least {MIN_METHODS_FRIEDMAN} methods (the comparison has {k})")
    draws = dirichlet_draws(n)
    sign = 1 if higher_is_better else -1
    # scipy per pair rather than scikit-posthocs' posthoc_wilcoxon: that one returns only (adjusted) p-values, not
    # W nor the raw p the report shows, runs the same scipy test, and its import (statsmodels, seaborn) costs
    # seconds on every aggregation.
    for i, j in combinations(range(k), 2):
        d = x[:, i] - x[:, j]
        if not np.any(d):
            stat, p = 0.0, 1.0  # identical on every unit: no evidence of a difference
        else:
            res = stats.wilcoxon(x[:, i], x[:, j], method=wilcoxon_method(d))
            stat, p = float(res.statistic), float(res.pvalue)
        better, same, worse = bayes_signed_rank(sign * x[:, i], sign * x[:, j], rope, draws)
        out.pairs.append(Pair(methods[i], methods[j], stat, p, wins=int(np.sum(sign * d > 0)),
                              losses=int(np.sum(sign * d < 0)), p_a_better=better, p_equivalent=same,
                              p_b_better=worse))
    for pair, adj in zip(out.pairs, holm([pr.p for pr in out.pairs])):
        pair.p_holm = adj
    return out


def agreement(per_seed: dict[str, dict[str, dict[int, float]]], methods: list[str],
              higher_is_better: bool = True) -> list[UnitAgreement]:
    """Per unit ({unit: {method: {seed: value}}}), how often the seeds rank the methods as their means do: the
    seed-level variation that the comparison over seed means does not show."""
    sign = -1.0 if higher_is_better else 1.0
    out = []
    for unit, by_method in per_seed.items():
        if any(not by_method.get(m) for m in methods):
            continue
        seeds = sorted(set.intersection(*(set(by_method[m]) for m in methods)))
        means = np.array([[np.mean(list(by_method[m].values())) for m in methods]])
        mean_ranks = rank_rows(sign * means)[0]
        first = int(np.argmin(mean_ranks))
        if seeds:  # every seed ranked at once
            r = rank_rows(sign * np.array([[by_method[m][s] for m in methods] for s in seeds]))
            first_held = int(np.sum(r[:, first] == r.min(axis=1)))
            order_held = int(np.sum(np.all(r == mean_ranks, axis=1)))
        else:
            first_held = order_held = 0
        out.append(UnitAgreement(unit, len(seeds), methods[first], first_held, order_held))
    return out
