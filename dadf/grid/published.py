"""The papers' published numbers (published.yaml) and their lookup by the aggregator's row and column keys."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

DEFAULT_FILE = Path(__file__).with_name("published.yaml")
_KEYS = {"source", "method", "dataset", "protocol", "metric", "p", "variant", "axes", "classes", "values", "runs"}
UNKNOWN = "unknown"  # `runs: unknown`: the paper does not say how many runs its number is; read as a single run


@dataclass(frozen=True)
class Published:
    source: str
    method: str
    protocol: str
    metric: str
    values: dict = field(hash=False)
    dataset: str | None = None
    p: float | None = None
    variant: str | None = None
    axes: dict | None = field(default=None, hash=False)
    runs: int | None = None  # the runs the paper's value is a mean over (1: a single run); None: not said

    @property
    def is_mean(self) -> bool:
        """A mean over several runs (compared with dadf's confidence interval), else a single run (compared with
        the spread of dadf's seeds)."""
        return self.runs is not None and self.runs > 1

    @property
    def label(self) -> str:
        return f"{self.method} {self.variant}" if self.variant else self.method


def _entry(raw: dict, where: str) -> Published:
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {sorted(_KEYS)}")
    missing = {"source", "method", "protocol", "metric"} - set(raw)
    if missing:
        raise ValueError(f"{where}: missing {sorted(missing)} (every entry names its source table, method, "
                         f"protocol and metric)")
    values = {str(k): float(v) for k, v in (raw.get("values") or {}).items()}
    for k, v in enumerate(raw.get("classes") or []):
        values[f"c{k}"] = float(v)
    if not values:
        raise ValueError(f"{where}: no numbers: give `values: {{column: number}}` or `classes: [...]`")
    runs = raw.get("runs", UNKNOWN)
    if runs != UNKNOWN and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise ValueError(f"{where}: runs: {runs!r} is not a run count: give the number of runs the paper's value "
                         f"is a mean over (1 for a single run), or `runs: {UNKNOWN}` when the paper does not say")
    return Published(raw["source"], raw["method"], raw["protocol"], raw["metric"], values, raw.get("dataset"),
                     None if raw.get("p") is None else float(raw["p"]), raw.get("variant"), raw.get("axes"),
                     None if runs == UNKNOWN else runs)


@lru_cache(maxsize=8)
def _load(path: str) -> tuple[Published, ...]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level `entries:` list of published numbers")
    return tuple(_entry(raw, f"{path} entry {i} ({raw.get('source', '?')})") for i, raw in enumerate(entries))


def load(path: Path | str | None = None) -> tuple[Published, ...]:
    return _load(str(Path(path or DEFAULT_FILE).resolve()))


def matching(entries, *, method: str, protocol: str, metric: str, dataset: str | None = None,
             p: float | None = None, axes: dict | None = None, variants: bool = False) -> list[Published]:
    """Entries for this (method, protocol, metric[, dataset][, p]).

    Main entries (no variant) match every row that is not an ablation; an ablation entry matches only the row whose
    axes include its `axes`. With variants=True, every ablation entry is returned as well.
    """
    out = []
    axes = axes or {}
    candidates = [e for e in entries if (e.method, e.protocol, e.metric) == (method, protocol, metric)]
    # a row that reproduces an ablation (its axes match the entry's) is not the paper's main row
    is_ablation = any(e.variant and e.axes and all(str(axes.get(k)) == str(v) for k, v in e.axes.items())
                      for e in candidates)
    for e in candidates:
        if e.dataset is not None and dataset is not None and e.dataset != dataset:
            continue
        if (e.p is None) != (p is None) or (p is not None and abs(e.p - float(p)) > 1e-9):
            continue
        if e.variant is None:
            ok = not is_ablation
        elif e.axes:
            ok = variants or all(str(axes.get(k)) == str(v) for k, v in e.axes.items())
        else:
            ok = variants
        if ok:
            out.append(e)
    return out
