"""How much training moves simplex_ae on thyroid at the paper's settings (supp. Table 5: SGD, lr 2e-5, 100 epochs),
and how much of its score the random initial weights already give.

For each seed, the simplex_tabular grid's thyroid cell (method.preset=thyroid, its selection and top-k rule) is
built as the runner builds it, and measured three ways:
- untrained: the test split scored by the freshly initialised networks (AUROC, precision/recall/F1 at top-k);
- trained: the same split after training (the state the cell's selection keeps), as metrics.json would say;
- movement: the relative L2 change ||w_end - w_init|| / ||w_init|| of each network's weights (encoder, generator,
  D_recon, D_inter), and the critic's Wasserstein estimate E[D(x, x)] - E[D(x, x_hat)] over training (its logged
  values, "w_rec" in log.jsonl: how many are negative) and on all training normals at the end.

    python jobs/bench_simplex_thyroid.py --root /data                          # seed 0, trained here
    python jobs/bench_simplex_thyroid.py --root /data --seeds 0,1,2,3,4 trainer.epochs=20
    python jobs/bench_simplex_thyroid.py --cells runs/simplex_tabular           # finished thyroid cells: no training

With ``--cells`` the finished simplex_ae thyroid cells of a grid folder are measured from their files: the initial
weights are rebuilt from the cell's config and seed (the runner builds them the same way), the trained ones are the
cell's scored checkpoint (best, or the last one), the critic's estimates come from its log.jsonl.

Extra arguments are Hydra overrides for the cell. Prints a table and writes JSON (``--out``, default
bench/simplex_thyroid.json). A seed at the paper's 100 epochs takes a few minutes on one core.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

REPO = Path(__file__).resolve().parents[1]


def _cell_config(root: str, shards: str, runs: str, seed: int, extra: list[str]):
    from hydra import compose, initialize_config_dir

    from dadf.config import CONFIG_DIR
    from dadf.grid.cells import expand

    overrides = ["grid=simplex_tabular", "method=simplex_ae", "grid.axes.dataset=[thyroid]", f"seed={seed}",
                 f"dataset.root={root}", f"shards_dir={shards}", f"runs_dir={runs}", *extra]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        def composer(o):
            return compose(config_name="config", overrides=list(o))

        cells = expand(composer(overrides), overrides, composer)
    if len(cells) != 1:
        raise SystemExit(f"error: the overrides select {len(cells)} cells, not one: {[c.id for c in cells]}")
    return cells[0].cfg


def _weights(method) -> dict:
    """A copy of every network's weights, by network (the E/G pair split into encoder and generator)."""
    import torch

    out = {}
    for name, net in method.nets.items():
        module = method._module(net)
        parts = {"encoder": module.encoder, "generator": module.generator} if name == "eg" else {name: module}
        for part, m in parts.items():
            out[part] = torch.cat([p.detach().flatten().double().cpu() for p in m.parameters()])
    return out


def _metrics(method, data, cfg) -> dict:
    from dadf.eval.metrics import detection_metrics
    from dadf.grid.runner import top_k_setting
    from dadf.train.loop import score_batched

    top_k = top_k_setting(cfg, data)
    scores = score_batched(method, data.test_x, int(cfg.trainer.eval_batch_size))["score"]
    m = detection_metrics(data.test_truth.numpy(), scores, top_k["percent"], top_k["rule"])
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def _wasserstein_on_train(method, data) -> float:
    """E[D_recon(x, x)] - E[D_recon(x, G(E(x)))] over all training normals, with the final networks."""
    import torch

    x = data.train_x[data.train_label == 0].to(method.accelerator.device)
    with method.evaluating(), torch.no_grad():
        critic = method._module(method.nets["d_recon"])
        x_hat = method._module(method.nets["eg"])(x)["x_hat"]
        return float((critic(x, x) - critic(x, x_hat)).mean())


def _change(init: dict, end: dict) -> dict:
    import torch

    return {k: round(float(torch.linalg.vector_norm(end[k] - init[k]) / torch.linalg.vector_norm(init[k])), 4)
            for k in init}


def _summary(cfg, method, data, init, untrained, log_path: Path, steps, selection, train_s) -> dict:
    """The measures of a trained method (its scored state loaded) against its initial weights."""
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    w_rec = [x["w_rec"] for x in logged if "w_rec" in x]
    return {
        "seed": int(cfg.seed), "cell": cfg.cell.id, "steps": steps, "selection": selection, "train_s": train_s,
        "effective_params": method.effective_params(), "untrained": untrained,
        "trained": _metrics(method, data, cfg), "relative_weight_change": _change(init, _weights(method)),
        "critic_w_estimate": {"logged": len(w_rec), "negative": sum(v < 0 for v in w_rec),
                              "first": round(w_rec[0], 5) if w_rec else None,
                              "last": round(w_rec[-1], 5) if w_rec else None,
                              "end_on_train_normals": round(_wasserstein_on_train(method, data), 5)},
    }


def bench_seed(seed: int, root: str, shards: str, extra: list[str]) -> dict:
    from dadf.grid.runner import build
    from dadf.grid.store import CellDir
    from dadf.train.loop import Trainer

    with tempfile.TemporaryDirectory(prefix="dadf-bench-simplex-thyroid-") as tmp:
        cfg = _cell_config(root, shards, str(Path(tmp) / "runs"), seed, extra)
        method, data, schedule = build(cfg)
        init, untrained = _weights(method), _metrics(method, data, cfg)
        t0 = time.time()
        work = CellDir(tmp)  # the trainer's checkpoints and log, laid out as in a cell folder
        outcome = Trainer(cfg.trainer, method, data, schedule, work, seed=seed).run(progress=False)
        return _summary(cfg, method, data, init, untrained, work.log, outcome.steps,
                        outcome.selection, round(time.time() - t0, 1))


def bench_cell(cell_dir: Path) -> dict:
    """A finished cell measured from its files (no training)."""
    from dadf.grid import store
    from dadf.grid.runner import build
    from dadf.train import checkpoint

    cell = store.CellDir(cell_dir)
    cfg = cell.read_config()
    method, data, _ = build(cfg)  # seeded as the runner seeds it: the cell's initial weights
    init, untrained = _weights(method), _metrics(method, data, cfg)
    result = cell.read_metrics()
    sel = result["selection"]
    best = sel.get("step") not in (None, result["steps"]) and "fallback" not in sel
    folder = checkpoint.latest(cell.checkpoints / ("best" if best else ""))
    method.load_state_dict(checkpoint.load(folder)["method"])
    out = _summary(cfg, method, data, init, untrained, cell.log, result["steps"], sel,
                   result.get("timing", {}).get("train_s"))
    out["metrics_json"] = {k: round(result["metrics"][k], 4) for k in ("auroc", "f1")}  # must equal "trained"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="data", help="dataset.root, the folder that holds odds/ (default ./data)")
    ap.add_argument("--shards", default=str(REPO / "shards"), help="shards_dir")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2,3,4")
    ap.add_argument("--cells", default=None, help="a grid folder: measure its finished simplex_ae thyroid cells")
    ap.add_argument("--out", default=str(REPO / "bench/simplex_thyroid.json"))
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the cell, e.g. trainer.epochs=20")
    a = ap.parse_args()
    rows = []
    if a.cells:
        from dadf.grid import store

        todo = [d for d in sorted(Path(a.cells).glob("simplex_ae-thyroid-*"))
                if store.read_status(d).get("state") == store.DONE]
        if not todo:
            raise SystemExit(f"error: no finished simplex_ae thyroid cells in {a.cells}")
        runs = (bench_cell(d) for d in todo)
    else:
        runs = (bench_seed(int(seed), a.root, a.shards, a.overrides) for seed in a.seeds.split(","))
    for r in runs:
        rows.append(r)
        seed = r["seed"]
        u, t, c, w = r["untrained"], r["trained"], r["relative_weight_change"], r["critic_w_estimate"]
        print(f"seed {seed}: untrained AUROC {u['auroc']:.3f} F1 {u['f1']:.3f} | trained AUROC {t['auroc']:.3f} "
              f"F1 {t['f1']:.3f} (step {r['selection'].get('step')} of {r['steps']}) | weight change "
              + " ".join(f"{k} {v:.1%}" for k, v in c.items())
              + f" | critic W estimate negative in {w['negative']}/{w['logged']} logs, at the end "
              f"{w['end_on_train_normals']:+.4f} | {r['train_s']}s", flush=True)
    result = {"cores": len(os.sched_getaffinity(0)), "load_avg_1m": round(os.getloadavg()[0], 2),
              "cells": a.cells, "overrides": a.overrides, "seeds": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
