"""PNG plots of a grid (matplotlib, Agg backend): per cell ROC curve, score histograms, inputs/reconstructions and
training curves; per grid AUROC against p% for the corruption and semi-supervised protocols, and the methods'
critical-difference diagram.

Per-cell plots are drawn once: a PNG newer than the cell's metrics.json (and log.jsonl) is kept as it is.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dadf.atomic import atomic_write
from dadf.grid.store import CellDir


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (works on headless nodes)
    import matplotlib.pyplot as plt

    return plt


def _fresh(png: Path, *sources: Path) -> bool:
    if not png.exists():
        return False
    mtime = png.stat().st_mtime
    return all(not s.exists() or s.stat().st_mtime <= mtime for s in sources)


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda f: fig.savefig(f, dpi=100, bbox_inches="tight", format="png"), binary=True)
    _plt().close(fig)
    return path


def roc_points(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(truth, scores)
    return fpr, tpr


def plot_roc(scores_npz: Path, out: Path, title: str = "") -> Path | None:
    z = np.load(scores_npz)
    truth, scores = z["truth"], z["scores"]
    if len(np.unique(truth)) < 2:
        return None  # ROC needs both normal and anomalous test samples
    from sklearn.metrics import roc_auc_score

    plt = _plt()
    fpr, tpr = roc_points(truth, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=1.5, label=f"AUROC {roc_auc_score(truth, scores):.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(fig, out)


def plot_histogram(scores_npz: Path, out: Path, title: str = "") -> Path:
    z = np.load(scores_npz)
    truth, scores = z["truth"], z["scores"].astype(np.float64)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    finite = scores[np.isfinite(scores)]
    bins = np.histogram_bin_edges(finite, bins=40) if finite.size else 10
    for label, name in ((0, "normal"), (1, "anomalous")):
        s = scores[(truth == label) & np.isfinite(scores)]
        if s.size:
            ax.hist(s, bins=bins, alpha=0.55, density=True, label=f"{name} (n={s.size})")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="density", title=title)
    ax.legend()
    return _save(fig, out)


def _to_image(a: np.ndarray) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W[, 3]) in [0, 1]."""
    a = np.clip((np.asarray(a, dtype=np.float32) + 1) / 2, 0, 1)
    return a[0] if a.shape[0] == 1 else np.transpose(a[:3], (1, 2, 0))


def plot_reconstructions(recon_npz: Path, out: Path, title: str = "", max_items: int = 12) -> Path | None:
    """Top row inputs, bottom row reconstructions, half normal and half anomalous samples where labelled
    (images only; tabular recon.npz is skipped)."""
    z = np.load(recon_npz)
    x, x_hat = z["x"], z["x_hat"]
    if x.ndim != 4 or not len(x):
        return None
    if "truth" in z.files:
        t = z["truth"]
        pick = np.r_[np.flatnonzero(t == 0)[:max_items // 2], np.flatnonzero(t == 1)[:max_items // 2]]
        truth = t[pick]
    else:
        pick, truth = np.arange(min(max_items, len(x))), None
    n = len(pick)
    plt = _plt()
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.7), squeeze=False)
    for i, j in enumerate(pick):
        for row, arr in enumerate((x, x_hat)):
            ax = axes[row][i]
            ax.imshow(_to_image(arr[j]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        if truth is not None:
            axes[0][i].set_title("anomaly" if truth[i] else "normal", fontsize=7)
    axes[0][0].set_ylabel("input"), axes[1][0].set_ylabel("recon.")
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)


def read_log(log_jsonl: Path) -> list[dict]:
    """log.jsonl lines; a line cut short by a crash (the last one) is skipped."""
    out = []
    for line in Path(log_jsonl).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_training(log_jsonl: Path, out: Path, title: str = "") -> Path | None:
    """Each loss against the step (one panel per loss; one loss per network); validation AUROC where logged."""
    lines = read_log(log_jsonl)
    losses = sorted({k for d in lines for k, v in d.items()
                     if k not in ("step", "epoch", "val_auroc") and isinstance(v, (int, float))})
    val = [(d["step"], d["val_auroc"]) for d in lines if "val_auroc" in d and "step" in d]
    panels = len(losses) + (1 if val else 0)
    if not panels:
        return None
    plt = _plt()
    cols = min(3, panels)
    fig, axes = plt.subplots(math.ceil(panels / cols), cols, figsize=(3.6 * cols, 2.6 * math.ceil(panels / cols)),
                             squeeze=False)
    flat = [a for row in axes for a in row]
    for ax, name in zip(flat, losses):
        pts = [(d["step"], d[name]) for d in lines if name in d and "step" in d]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
        ax.set(title=name, xlabel="step")
    if val:
        ax = flat[len(losses)]
        ax.plot([p[0] for p in val], [p[1] for p in val], "o-", lw=1, ms=3, color="C2")
        ax.set(title="validation AUROC", xlabel="step", ylim=(0, 1.01))
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def cell_plots(cell_dir: Path, title: str = "") -> dict[str, Path]:
    """Draw the cell's plots into <cell>/plots/ unless up to date; return {kind: path} of those that exist."""
    cell = CellDir(cell_dir)
    pdir, metrics, scores, log, recon = cell.plots, cell.metrics, cell.scores, cell.log, cell.recon
    jobs = []
    if scores.exists():
        jobs += [("roc", plot_roc, scores, (metrics, scores)), ("hist", plot_histogram, scores, (metrics, scores))]
    if recon.exists():
        jobs.append(("recon", plot_reconstructions, recon, (metrics, recon)))
    if log.exists():
        jobs.append(("curves", plot_training, log, (log,)))
    made = {}
    for kind, fn, src, deps in jobs:
        png = pdir / f"{kind}.png"
        if not _fresh(png, *deps):
            fn(src, png, title)
        if png.exists():
            made[kind] = png
    return made


def plot_by_p(series: dict[str, list[tuple[float, float, float | None]]], out: Path, title: str = "",
              ylabel: str = "AUROC (avg over classes)") -> Path:
    """One line per method: (p, value, std or None) points; published series are drawn dashed ('paper' in name)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, pts in series.items():
        pts = sorted(pts)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [p[2] or 0.0 for p in pts]
        style = "--" if "paper" in name else "-"
        ax.errorbar(xs, ys, yerr=err if any(err) else None, fmt="o" + style, ms=3, lw=1.2, capsize=2, label=name)
    ps = sorted({p[0] for pts in series.values() for p in pts})
    if any(p > 0 for p in ps):
        ax.set_xscale("symlog", linthresh=0.1)  # p spans 0, 0.1 ... 20
    ax.set_xticks(ps, [f"{p:g}" for p in ps])
    ax.minorticks_off()
    ax.set(xlabel="p (% of the normal count)", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return _save(fig, out)


def plot_critical_difference(cmp, out: Path, title: str = "") -> Path:
    """Demšar's critical-difference diagram, drawn by scikit-posthocs: methods on the average-rank axis (1 = best),
    Nemenyi's CD as a bar, and a bar under each group of methods that Nemenyi's post-hoc test (scikit-posthocs,
    over the comparison's per-unit means) does not tell apart at α = 0.05."""
    import pandas as pd
    import scikit_posthocs as sp

    plt = _plt()
    k = len(cmp.methods)
    # blocks = units, groups = methods; the test ranks within each unit (its p-values are symmetric in direction)
    nemenyi = sp.posthoc_nemenyi_friedman(pd.DataFrame(cmp.values, columns=cmp.methods))
    fig, ax = plt.subplots(figsize=(6, 1.6 + 0.3 * k))
    sp.critical_difference_diagram(cmp.avg_ranks, nemenyi, cd=cmp.cd, ax=ax, label_fmt_left="{label} ({rank:.2f})",
                                   label_fmt_right="({rank:.2f}) {label}")
    ax.set_title(title or f"average rank over {cmp.n_units} units", fontsize=9, pad=36)  # above the CD bar
    return _save(fig, out)
