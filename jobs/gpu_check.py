"""The GPU check: one prepared run of about 5 minutes on one GPU that measures dadf's GPU paths, and a smoke version
of the same rows on CPU that takes under a minute (automatic without a GPU; tests/test_gpu_check.py runs it).

Rows, in this order (a row that fails records its error and the next one starts; ``--budget-s`` stops starting
rows when the time is spent, and those rows are recorded as skipped with the reason):
  env      GPU name, driver, torch / CUDA / cuDNN versions, TF32 switches, the wheels installed;
  step     one training step of AMA and simplex_ae (3x32x32 paper nets, global batch 64 and 256) in fp32 / bf16 /
           fp16 x channels_last off/on, eager first, compiled last (compiling is the slow part), and compiled with
           a gradient penalty (run eagerly inside the compiled step): samples/s, and FLOPs (torch's flop counter,
           on an eager step, also for a run of compiled rows only) for TFLOP/s and MFU against the card's dense
           bf16 peak;
  trainer  ae and aae through dadf's Trainer on digits (resized to 32x32), trainer.data_on_device on/off;
  syncs    host syncs per training step through the Trainer (torch.cuda.set_sync_debug_mode), with the lines that
           cause them: AMA and simplex_ae on digits as 3x32x32 (the paper nets), aae;
  resume   one aae cell: an uninterrupted run, and a run in a child process stopped by a real SIGUSR2 and resumed
           in a fresh child; max |diff| of the final scores and weights, and whether they are bit-identical;
  packed   ten small MLP autoencoder cells (one per digit class) trained as one vmapped model over stacked
           parameters against the same ten one after another: samples/s ratio and the losses' agreement.

Results are written row by row to ``<out>.json`` and ``<out>.md`` (default bench/gpu_check): each finished row
is appended and both files are rewritten atomically, so a run killed at any moment leaves valid files holding
every finished row.

    python jobs/gpu_check.py                                # GPU: the full check; CPU: the smoke version
    python jobs/gpu_check.py --smoke --out /tmp/gc          # the smoke version anywhere
    python jobs/gpu_check.py --download-wheels              # once, where pip reaches the registry: fill .whl/

A GPU machine without a package index may have its own torch but lack hydra-core, omegaconf, webdataset and
submitit: ``--download-wheels`` saves them (pure-Python wheels, pinned to this environment's versions) in ``.whl/``;
copy the checkout with ``.whl/`` there, and this script installs them offline into /tmp/site first when its imports
fail. docs/performance.md has the steps.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
if str(REPO) not in sys.path[:1]:
    # This checkout's dadf, installed or not (the GPU machine has no `pip install -e .`).
    sys.path.insert(0, str(REPO))

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, for the MFU column. Sources: NVIDIA's "H100 Tensor Core
# GPU" datasheet (2023) gives BF16 1,979 TFLOPS (SXM), 1,513 (PCIe) and 1,671 (NVL) "with sparsity": dense is half;
# NVIDIA's "H200 Tensor Core GPU" datasheet (2024) gives 1,979 (SXM, named plainly "NVIDIA H200") and 1,671 (NVL).
# The most specific name that the device name contains wins. A large bf16 matrix product on random data reaches
# about 770-800 TFLOP/s on an H200: that is the practical ceiling.
BF16_DENSE_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.5,
    "H200 NVL": 835.5,
    "H100": 989.4,
    "H200": 989.4,
}

# What dadf imports that a GPU machine with torch alone lacks, as distributions
# to carry as wheels, at this environment's versions (importlib.metadata). deepspeed is left out:
# it is imported only by trainer.strategy=deepspeed, and it is no pure-Python wheel.
WHEELS = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "webdataset", "braceexpand", "submitit", "cloudpickle")
NEEDED_MODULES = ("omegaconf", "hydra", "webdataset", "submitit")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DEFAULT_WHEEL_DIR = REPO / ".whl"
DEFAULT_SITE = Path("/tmp/site")

KINDS = ("env", "step", "trainer", "syncs", "resume", "packed")
PRECISIONS = ("bf16", "fp32", "fp16")  # bf16 first: the precision a GPU run would use
WORKER_RESTART = 75  # a worker's exit code after a row that broke the CUDA context: the parent starts a fresh one
FATAL_CUDA = ("CUDA error", "illegal memory access", "device-side assert", "CUBLAS_STATUS", "cuDNN error")

# Sizes of the full check (GPU) and of the smoke version (CPU, seconds in all). The smoke's step rows use the MLP
# nets (8x8 inputs) with spectral norm, as the 32x32 paper nets have, so the compiled path is the GPU's.
SIZES = {
    False: {"step_shape": (3, 32, 32), "step_batches": (256, 64), "step_overrides": [], "warmup": 3,
            "min_steps": 3, "target_s": 1.0, "max_steps": 200, "compile_backend": "inductor",
            "image_size": 32, "trainer_batch": 256, "trainer_steps": 400, "trainer_warmup": 50,
            "syncs_batch": 64, "syncs_warmup": 10, "syncs_steps": 100,
            "resume_batch": 64, "resume_steps": 800, "resume_log_every": 20,
            "packed_steps": 300, "packed_batch": 64},
    True: {"step_shape": (1, 8, 8), "step_batches": (64, 16), "step_overrides": ["method.lipschitz=sn"],
           "warmup": 1, "min_steps": 2, "target_s": 0.05, "max_steps": 4, "compile_backend": "aot_eager",
           "image_size": None, "trainer_batch": 64, "trainer_steps": 40, "trainer_warmup": 10,
           "syncs_batch": 32, "syncs_warmup": 2, "syncs_steps": 4,
           "resume_batch": 32, "resume_steps": 120, "resume_log_every": 5,
           "packed_steps": 30, "packed_batch": 64},
}


# ---------------------------------------------------------------------------------------------------------------
# Wheels: downloaded where pip reaches the registry, installed offline on the GPU machine
# ---------------------------------------------------------------------------------------------------------------
def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _dist_name(wheel: Path) -> str:
    """The normalised distribution name of a wheel file (hydra_core-1.3.8-py3-none-any.whl -> hydra-core)."""
    return wheel.name.split("-")[0].lower().replace("_", "-")


def pinned(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"error: {name} is not installed in {sys.executable}, so its version cannot be pinned; "
                         f"install the project (pip install -e .) first") from None


def download_wheels(names: list[str], wheel_dir: Path) -> list[Path]:
    """Pure-Python wheels of ``names`` at this environment's versions into ``wheel_dir``, one version each.

    ``pip download`` takes published wheels for CPython 3.12 on x86-64 (the GPU machine). A distribution published
    only as a source archive (antlr4-python3-runtime 4.9.3, which omegaconf 2.3 pins) is built into a wheel here
    with ``pip wheel``, and refused unless the result is pure Python.
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for name in names:
        spec = pinned(name)
        for old in wheel_dir.glob("*.whl"):  # one version of each: two stop the whole offline install
            if _dist_name(old) == name.lower():
                old.unlink()
        before = set(wheel_dir.glob("*.whl"))
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        got = _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                   "cp", *platforms, "-d", str(wheel_dir), spec)
        if got.returncode != 0:
            built = _pip("wheel", "--no-deps", "-w", str(wheel_dir), spec)
            if built.returncode != 0:
                raise SystemExit(f"error: no wheel of {spec}:\n{got.stderr.strip()[-1500:]}\n"
                                 f"{built.stderr.strip()[-1500:]}\n(pip needs the package registry here)")
        new = sorted(set(wheel_dir.glob("*.whl")) - before)
        impure = [w.name for w in new if not w.name.endswith("-none-any.whl")]
        if not new or impure:
            raise SystemExit(f"error: {spec} gave {impure or 'no wheel'}; only pure-Python wheels travel to the GPU "
                             f"machine (another Python and platform)")
        saved += new
    return saved


def install_wheels(wheel_dir: Path, site: Path) -> list[str]:
    """``pip install --no-index --no-deps --target site wheel_dir/*.whl`` (offline), then ``site`` on sys.path and
    on PYTHONPATH (for this script's child processes)."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: no wheels in {wheel_dir}; where pip reaches the registry, run: "
                         f"python jobs/gpu_check.py --download-wheels")
    got = _pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
               "--target", str(site), *map(str, wheels))
    if got.returncode != 0:
        raise SystemExit(f"error: installing {wheel_dir}/*.whl into {site} failed:\n{got.stderr.strip()[-2000:]}")
    if str(site) not in sys.path:
        sys.path.insert(1, str(site))  # after this checkout (sys.path[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    return [w.name for w in wheels]


def missing_modules() -> list[str]:
    return [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]


def ensure_imports(a: argparse.Namespace) -> list[str]:
    """The wheels installed (empty when everything imports already). ``--install-wheels``: always; default: when a
    module is missing and the wheel folder exists; ``--no-install-wheels``: never."""
    missing = missing_modules()
    if a.install_wheels is False or (a.install_wheels is None and not missing):
        if missing:
            raise SystemExit(f"error: cannot import {', '.join(missing)}; install them, or carry wheels (python "
                             f"jobs/gpu_check.py --download-wheels) and drop --no-install-wheels")
        return []
    if not a.wheel_dir.is_dir():
        raise SystemExit(f"error: {'cannot import ' + ', '.join(missing) + ' and ' if missing else ''}there is no "
                         f"wheel folder {a.wheel_dir}; where pip reaches the registry, run: python jobs/gpu_check.py "
                         f"--download-wheels")
    installed = install_wheels(a.wheel_dir, a.site)
    still = missing_modules()
    if still:
        raise SystemExit(f"error: {', '.join(still)} still missing after installing {a.wheel_dir}/*.whl into "
                         f"{a.site}; run --download-wheels again")
    return installed


# ---------------------------------------------------------------------------------------------------------------
# Results: one JSON and one Markdown table, rewritten atomically after every row
# ---------------------------------------------------------------------------------------------------------------
def out_stem(out: str | Path) -> Path:
    """--out names OUT.json and OUT.md; a given .json or .md suffix is dropped."""
    out = Path(out)
    return out.with_suffix("") if out.suffix in (".json", ".md") else out


class Results:
    def __init__(self, out: Path):
        self.json, self.md = Path(f"{out}.json"), Path(f"{out}.md")

    def read(self) -> dict:
        return json.loads(self.json.read_text())

    def write(self, doc: dict) -> None:
        from dadf.atomic import atomic_write  # stdlib only: importable before the wheels are installed

        atomic_write(self.json, lambda f: json.dump(doc, f, indent=1, default=str))
        atomic_write(self.md, lambda f: f.write(render_markdown(doc)))

    def append(self, row: dict) -> None:
        doc = self.read()
        doc["rows"].append(row)
        self.write(doc)


def _num(v, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def row_title(r: dict) -> str:
    k = r.get("kind")
    if k == "step":
        return (f"step {r['method']} {r['shape']} b{r['batch']} {r['precision']}"
                f"{' compiled' if r['compile'] else ''}{' channels_last' if r['channels_last'] else ''}"
                f"{' gradient penalty' if r.get('penalty') else ''}")
    if k == "syncs":
        return f"syncs {r['method']} {r.get('data', 'digits')} b{r['batch']}, {r['steps']} steps"
    if k == "trainer":
        return f"trainer {r['method']} {r.get('data', 'digits')} b{r['batch']} data_on_device={r['data_on_device']}"
    if k == "resume":
        return f"resume {r['method']} {r.get('data', 'digits')} b{r['batch']}, {r['steps']} steps"
    if k == "packed":
        return f"packed {r['models']}x {r['method']} MLP b{r['batch']}, {r['steps']} steps"
    return "environment" if k == "env" else str(r.get("id"))


def row_result(r: dict) -> str:
    if r.get("status") == "error":
        return "error: " + r.get("error", "?").replace("|", "/").replace("\n", " ")[:200]
    if r.get("status") == "skipped":
        return "skipped: " + r.get("reason", "?")
    k = r.get("kind")
    if k == "env":
        if r.get("gpu"):
            return (f"{r['gpu']}, driver {r.get('driver') or '?'}, torch {r['torch']}, CUDA {r.get('cuda')}, "
                    f"cuDNN {r.get('cudnn')}, {r.get('sm_count')} SMs, {r.get('gpu_memory_gib')} GiB")
        return f"no GPU ({r.get('cpu')}, {r.get('cpu_count')} CPUs), torch {r['torch']}, Python {r['python']}"
    if k == "step":
        parts = [f"{r['s_per_step'] * 1e3:.1f} ms/step"]
        if r.get("precision_effective") != r.get("precision"):
            parts.append(f"ran as {r.get('precision_effective')}")
        if r.get("compile"):
            parts.append(f"{r.get('compile_backend')} warm-up {r['warmup_s']:.1f} s")
        if r.get("gflop_per_sample"):
            parts.append(f"{r['gflop_per_sample']:.3g} GFLOP/sample")
        if not r.get("losses_finite", True):
            parts.append("NON-FINITE LOSS")
        return ", ".join(parts)
    if k == "trainer":
        return f"{r['timed_steps']} timed steps, {r['s_per_step'] * 1e3:.2f} ms/step, device {r['device']}"
    if k == "syncs":
        if r.get("syncs_per_step") is None:
            return f"not counted: {r.get('note', '')}"
        where = "; ".join(f"{loc} x{n}" for loc, n in r.get("sync_sites", [])[:4])
        return f"{r['syncs_per_step']:.2f} host syncs/step over {r['counted_steps']} steps" + (f" ({where})"
                                                                                               if where else "")
    if k == "resume":
        same = "bit-identical" if r["scores_bit_identical"] else f"max abs diff {r['scores_max_abs_diff']:.3g}"
        w = "bit-identical" if r["weights_bit_identical"] else f"max abs diff {r['weights_max_abs_diff']:.3g}"
        return (f"SIGUSR2 at step {r['signalled_after_step']}, checkpoint at step {r['preempted_at_step']} "
                f"(exit {r['preempted_exit']}), resumed: scores {same}, weights {w}; AUROC {r['auroc_resumed']:.4f} "
                f"vs {r['auroc_uninterrupted']:.4f}")
    if k == "packed":
        same = "bit-identical" if r["losses_bit_identical"] else (
            f"max abs diff {r['losses_max_abs_diff']:.3g} ({'allclose' if r['losses_allclose'] else 'NOT close'})")
        return (f"{r['speedup']:.2f}x the {r['sequential_samples_per_s']:,.0f} samples/s of the same ten one after "
                f"another; losses {same}")
    return ""


def render_markdown(doc: dict) -> str:
    lines = [f"# dadf GPU check ({'smoke version, CPU' if doc.get('smoke') else 'full'})", "",
             f"Started {doc.get('started')}, budget {doc.get('budget_s')} s; "
             + (f"finished {doc['finished']}." if doc.get("finished") else "still running, or killed: the rows below "
                                                                            "are those that finished."), "",
             "MFU: FLOPs of one step (torch's flop counter, eager) per second over the card's dense bf16 peak.", "",
             "| # | row | samples/s | TFLOP/s | MFU | result |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(doc.get("rows", []), 1):
        mfu = f"{r['mfu']:.1%}" if isinstance(r.get("mfu"), float) else "–"
        lines.append(f"| {i} | {row_title(r)} | {_num(r.get('samples_per_s'), ',.0f')} | "
                     f"{_num(r.get('tflops'), '.3g')} | {mfu} | {row_result(r)} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# The plan: every row, in the order it runs
# ---------------------------------------------------------------------------------------------------------------
def plan(smoke: bool) -> list[dict]:
    s = SIZES[smoke]
    shape = "x".join(map(str, s["step_shape"]))
    big, small = s["step_batches"]
    cases = [("ama", big), ("simplex_ae", big), ("ama", small), ("simplex_ae", small)]

    def step(method, batch, precision, compiled, cl, penalty=False):
        return {"id": f"step:{method}:{shape}:b{batch}:{precision}:{'compiled' if compiled else 'eager'}:"
                      f"{'cl' if cl else 'contiguous'}{':gp' if penalty else ''}", "kind": "step", "method": method,
                "shape": shape, "batch": batch, "precision": precision, "compile": compiled, "channels_last": cl,
                "penalty": penalty}

    data = f"digits {s['image_size'] or 8}x{s['image_size'] or 8}"
    specs = [{"id": "env", "kind": "env"}]
    specs += [step(m, b, p, False, cl) for m, b in cases for p in PRECISIONS for cl in (False, True)]
    specs += [{"id": f"trainer:{m}:dod{int(d)}", "kind": "trainer", "method": m, "data": data,
               "batch": s["trainer_batch"], "steps": s["trainer_steps"], "data_on_device": d}
              for m in ("ae", "aae") for d in (True, False)]
    specs += [{"id": f"syncs:{m}", "kind": "syncs", "method": m, "data": data if m == "aae" or smoke else
               f"digits {s['image_size']}x{s['image_size']}x3", "batch": s["syncs_batch"],
               "steps": s["syncs_steps"]} for m in ("ama", "simplex_ae", "aae")]
    specs.append({"id": "resume:aae", "kind": "resume", "method": "aae", "data": data, "batch": s["resume_batch"],
                  "steps": s["resume_steps"]})
    specs.append({"id": "packed:ae10", "kind": "packed", "method": "ae", "models": 10, "batch": s["packed_batch"],
                  "steps": s["packed_steps"]})
    # A gradient penalty differentiates the critic's gradient again, which a compiled graph cannot: dadf runs it
    # eagerly inside the compiled step (dadf/losses/gan.py). These rows, first of the compiled ones, show that it
    # runs and what it costs.
    compiled = [step(m, small, "fp32" if smoke else "bf16", True, False, penalty=True) for m in ("ama", "simplex_ae")]
    compiled += [step(m, b, p, True, cl) for p in PRECISIONS for m, b in cases for cl in (False, True)]
    if smoke:  # compiling costs seconds per row even with aot_eager on CPU: one fp32 row and one with a penalty
        keep = {step("ama", small, "fp32", True, False)["id"], step("ama", small, "fp32", True, False, True)["id"]}
        for spec in compiled:
            if spec["id"] not in keep:
                spec["skip"] = ("the smoke version compiles two step rows only (aot_eager on CPU; inductor on the "
                                "GPU)")
    return specs + compiled


def select(specs: list[dict], patterns: list[str]) -> list[dict]:
    """The rows whose id is a pattern, starts with ``pattern:`` (a kind: ``step``) or matches it as a glob
    (``step:*:compiled:*``), in plan order; a pattern that matches nothing is an error that lists the kinds."""
    def hit(spec_id: str, pattern: str) -> bool:
        return spec_id == pattern or spec_id.startswith(pattern + ":") or fnmatch.fnmatchcase(spec_id, pattern)

    unmatched = [p for p in patterns if not any(hit(s["id"], p) for s in specs)]
    if unmatched:
        raise SystemExit(f"error: --rows {unmatched} match no row; give kinds ({', '.join(KINDS)}) or globs over row "
                         f"ids such as step:ama:*:bf16:compiled:*")
    return [s for s in specs if any(hit(s["id"], p) for p in patterns)]


def skipped_row(spec: dict, reason: str) -> dict:
    return {**{k: v for k, v in spec.items() if k != "skip"}, "status": "skipped", "reason": reason}


# ---------------------------------------------------------------------------------------------------------------
# The worker: runs rows in order, appending each to the results
# ---------------------------------------------------------------------------------------------------------------
def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to end this process when its parent dies (however it dies), so no row outlives the run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG


def config_dir() -> Path:
    """Where the Hydra configs are: ``dadf.config.CONFIG_DIR``, whose import also registers the groups' schemas in
    Hydra's ConfigStore; configs/ at the checkout's root in a dadf from before that module."""
    if importlib.util.find_spec("dadf.config") is None:
        return REPO / "configs"
    from dadf import config

    return Path(config.CONFIG_DIR)


class Worker:
    def __init__(self, ctx: dict):
        import torch

        self.ctx, self.smoke = ctx, bool(ctx["smoke"])
        self.sizes = SIZES[self.smoke]
        self.work = Path(ctx["work"])
        self.results = Results(Path(ctx["out"]))
        self.cuda = torch.cuda.is_available() and not self.smoke
        self.device_name = torch.cuda.get_device_name() if self.cuda else "cpu"
        self.peak = next((v for k, v in BF16_DENSE_PEAK_TFLOPS.items() if k in self.device_name), None)
        self._hydra_ready = False
        # FLOPs per (method, shape, batch) from eager rows, also those of an earlier worker of this run.
        self.flops = {_flops_key(r): r["flops_per_step"] for r in self.results.read()["rows"]
                      if r.get("kind") == "step" and r.get("flops_per_step")}

    def compose(self, overrides: list[str]):
        """The config ``python jobs/launch_grid.py <overrides>`` would compose. Hydra starts at the first call, so a
        problem there fails the rows that need it, not the environment row."""
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        if not self._hydra_ready:
            GlobalHydra.instance().clear()
            initialize_config_dir(config_dir=str(config_dir()), version_base=None)  # global until the worker ends
            self._hydra_ready = True
        return compose(config_name="config", overrides=list(overrides))

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def run(self, specs: list[dict], deadline: float) -> int:
        for spec in specs:
            if spec.get("skip"):
                self.results.append(skipped_row(spec, spec["skip"]))
                continue
            if time.time() >= deadline:
                return 0  # the parent records the rest as skipped for the budget
            t0 = time.time()
            try:
                row = {**spec, **getattr(self, f"row_{spec['kind']}")(spec), "status": "ok"}
            except Exception as e:  # noqa: BLE001 -- a row that fails is a result; the next row runs
                row = {**spec, "status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
                       "traceback": traceback.format_exc()[-4000:]}
            row["wall_s"] = round(time.time() - t0, 2)
            row["done_at_s"] = round(time.time() - self.ctx["t_start"], 1)  # since the check started: the budget
            self.results.append(row)
            print(f"| {row_title(row)} | {_num(row.get('samples_per_s'), ',.0f')} | {row_result(row)} |", flush=True)
            self._release(compiled=bool(spec.get("compile")))
            if row["status"] == "error" and any(f in row["error"] for f in FATAL_CUDA):
                return WORKER_RESTART  # the CUDA context may be broken: the parent starts a fresh worker
        return 0

    def _release(self, compiled: bool) -> None:
        """Drop what the last row left: compiled graphs (so each compiled row compiles afresh) and GPU memory."""
        import gc

        import torch

        if compiled:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()

    # -- env ------------------------------------------------------------------------------------------------
    def row_env(self, spec: dict) -> dict:
        import accelerate
        import numpy
        import torch

        row = {"python": platform.python_version(), "platform": platform.platform(), "host": platform.node(),
               "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               "accelerate": accelerate.__version__, "numpy": numpy.__version__,
               "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
               "cudnn_benchmark": torch.backends.cudnn.benchmark, "smoke": self.smoke,
               "wheels_installed": self.ctx.get("wheels_installed", []),
               "bf16_dense_peak_tflops": self.peak}
        if self.cuda:
            p = torch.cuda.get_device_properties(0)
            row.update(gpu=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                       sm_count=p.multi_processor_count, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                       gpu_count=torch.cuda.device_count())
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                    "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
                if q.returncode == 0 and q.stdout.strip():
                    driver, clock, power = (v.strip() for v in q.stdout.splitlines()[0].split(",")[:3])
                    row.update(driver=driver, max_sm_clock=clock, power_limit=power)
        else:
            row["gpu"] = None
            row["reason_no_gpu"] = ("smoke version asked for (--smoke)" if torch.cuda.is_available()
                                    else "torch sees no CUDA device")
        return row

    # -- step -----------------------------------------------------------------------------------------------
    def _step_runner(self, spec: dict):
        """(accelerator, compile backend, step function) for the method of a step row on random inputs; each call
        of the step function trains one step, from epoch 21 on (every phase on: AMA's atypical negatives start at
        epoch 11)."""
        import torch

        from dadf.methods import get_method
        from dadf.methods.base import DataInfo
        from dadf.methods.interface import StepContext
        from dadf.train.loop import Schedule, make_accelerator
        from dadf.train.strategy import make_strategy

        s = self.sizes
        shape, b = s["step_shape"], spec["batch"]
        steps_per_epoch = 100
        overrides = s["step_overrides"]
        if spec.get("penalty"):  # spectral norm as the paper nets have, plus the gradient penalty
            overrides = [o for o in overrides if not o.startswith("method.lipschitz=")] + ["method.lipschitz=sn+gp"]
        cfg = self.compose([f"method={spec['method']}", f"trainer.precision={spec['precision']}",
                            f"trainer.compile={spec['compile']}", f"trainer.channels_last={spec['channels_last']}",
                            f"trainer.batch_size={b}", "trainer.steps=1000000", "trainer.accumulate=1",
                            f"trainer.device={'auto' if self.cuda else 'cpu'}", *overrides])
        acc = make_accelerator(cfg.trainer)
        backend = None
        if spec["compile"]:
            from accelerate.utils import DynamoBackend

            acc.state.dynamo_plugin.backend = DynamoBackend(s["compile_backend"].upper())
            backend = s["compile_backend"]
        schedule = Schedule(cfg.trainer, n_train=steps_per_epoch * b, world=1)
        info = DataInfo(kind="image", shape=shape, n_train=steps_per_epoch * b, batch_size=b,
                        steps_per_epoch=steps_per_epoch, total_steps=schedule.total)
        method = get_method(spec["method"])(cfg.method, info, make_strategy(cfg.trainer, acc, schedule), 0)
        g = torch.Generator().manual_seed(0)
        x = (torch.rand((b, *shape), generator=g) * 2 - 1).to(acc.device)
        if spec["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = {"x": x, "label": torch.zeros(b, dtype=torch.long, device=acc.device)}
        method.on_train_start(x)
        first = 20 * steps_per_epoch
        done = 0

        def step():
            nonlocal done
            i = first + done
            done += 1
            method.begin(StepContext(step=i, global_batch=b))
            return method.train_step(batch, i)

        return acc, backend, step

    def _count_flops(self, step) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:  # it sees eager ops only
            step()
        return counter.get_total_flops()

    def row_step(self, spec: dict) -> dict:
        from dadf.train.loop import effective_precision

        s, b = self.sizes, spec["batch"]
        acc, backend, step = self._step_runner(spec)
        t0 = time.perf_counter()
        for _ in range(s["warmup"]):
            step()
        self.sync()
        warmup_s = time.perf_counter() - t0
        timed, chunk, t1 = 0, s["min_steps"], time.perf_counter()
        while True:
            for _ in range(chunk):
                losses = step()
            timed += chunk
            self.sync()
            elapsed = time.perf_counter() - t1
            if elapsed >= s["target_s"] or timed >= s["max_steps"]:
                break
            chunk = max(1, min(s["max_steps"] - timed, math.ceil(timed * (s["target_s"] / elapsed - 1))))
        precision_effective = effective_precision(acc, spec["precision"])
        losses = {k: float(v) for k, v in losses.items()}
        key = _flops_key(spec)
        if key not in self.flops:
            # A compiled row whose eager row did not run (a run of compiled rows only): one eager step of the same
            # method counts them, since the counter does not see inside compiled graphs.
            eager_step = step if not spec["compile"] else self._step_runner({**spec, "compile": False})[2]
            self.flops[key] = self._count_flops(eager_step)
        flops = self.flops.get(key)
        s_step = elapsed / timed
        row = {"device": self.device_name,
               "precision_effective": precision_effective, "compile_backend": backend,
               "warmup_steps": s["warmup"], "warmup_s": warmup_s, "steps": timed, "s_per_step": s_step,
               "samples_per_s": b / s_step, "flops_per_step": flops,
               "gflop_per_sample": flops / b / 1e9 if flops else None,
               "tflops": flops / s_step / 1e12 if flops else None,
               "mfu": flops / s_step / (self.peak * 1e12) if flops and self.peak and self.cuda else None,
               "losses": losses, "losses_finite": all(math.isfinite(v) for v in losses.values())}
        return row

    # -- cells (trainer, resume) ----------------------------------------------------------------------------
    def cell(self, runs: Path, method: str, batch: int, steps: int, extra: list[str] = ()):
        """One digits cell (loo, class 0 anomalous: ~810 normal training rows) written to its folder."""
        from dadf.grid import store
        from dadf.grid.cells import expand

        s = self.sizes
        overrides = [f"runs_dir={runs}", f"shards_dir={self.work / 'shards'}", "grid=quickstart",
                     "grid.name=gpu_check", "grid.axes={}", "dataset=digits", "protocol=loo",
                     "protocol.target_class=0", "seed=0", f"method={method}", f"trainer.steps={steps}",
                     f"trainer.batch_size={batch}", "trainer.progress=false", "trainer.checkpoint_every=1000000",
                     f"trainer.device={'auto' if self.cuda else 'cpu'}", *extra]
        if s["image_size"]:
            overrides.append(f"dataset.size={s['image_size']}")
        cells = expand(self.compose(overrides), overrides, self.compose)
        assert len(cells) == 1, [c.id for c in cells]
        store.write_cell_config(cells[0].dir, cells[0].cfg)
        return cells[0]

    def row_trainer(self, spec: dict) -> dict:
        from dadf.grid.runner import build
        from dadf.train.loop import Trainer

        b, steps, warm = spec["batch"], spec["steps"], self.sizes["trainer_warmup"]
        cell = self.cell(self.work / spec["id"].replace(":", "_"), spec["method"], b, steps,
                         [f"trainer.data_on_device={spec['data_on_device']}", "trainer.log_every=1000000"])
        method, data, schedule = build(cell.cfg)
        trainer = Trainer(cell.cfg.trainer, method, data, schedule, cell.dir, seed=0, name=cell.id)
        marks: dict[int, float] = {}
        inner, calls = method.train_step, [0]

        def timed(batch, step):  # the clock starts at step `warm` and stops as the last step starts
            if calls[0] in (warm, steps - 1):
                self.sync()
                marks[calls[0]] = time.perf_counter()
            calls[0] += 1
            return inner(batch, step)

        method.train_step = timed
        trainer.run(progress=False)
        n = steps - 1 - warm
        s_step = (marks[steps - 1] - marks[warm]) / n
        return {"timed_steps": n, "s_per_step": s_step,
                "samples_per_s": b / s_step, "device": str(method.accelerator.device),
                "data_tensor_device": str(trainer.tensors["x"].device)}

    def row_syncs(self, spec: dict) -> dict:
        """Host syncs per training step, counted by torch (``torch.cuda.set_sync_debug_mode("warn")`` warns at each
        synchronising call) over the Trainer's steps after a warm-up, the loop included (batches, the ranks'
        agreement every trainer.sync_every steps), with the source lines that cause them."""
        import collections
        import warnings

        import torch

        from dadf.grid.runner import build
        from dadf.train.loop import Trainer

        b, steps, warm = spec["batch"], spec["steps"], self.sizes["syncs_warmup"]
        extra = ["trainer.log_every=1000000"]
        if "x3" in spec["data"]:
            extra.append("dataset.channels=3")
        cell = self.cell(self.work / spec["id"].replace(":", "_"), spec["method"], b, warm + steps + 1, extra)
        method, data, schedule = build(cell.cfg)
        trainer = Trainer(cell.cfg.trainer, method, data, schedule, cell.dir, seed=0, name=cell.id)
        inner, calls = method.train_step, [0]
        counting = self.cuda

        def switched(batch, step):  # counts from step `warm` until the last step starts (it saves and scores)
            if counting and calls[0] in (warm, warm + steps):
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn" if calls[0] == warm else 0)
            calls[0] += 1
            return inner(batch, step)

        method.train_step = switched
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                trainer.run(progress=False)
            finally:
                if counting:
                    torch.cuda.set_sync_debug_mode(0)
        row = {"device": str(method.accelerator.device), "sync_every": trainer.sync_every, "counted_steps": steps}
        if not counting:
            return {**row, "syncs_per_step": None,
                    "note": "torch reports synchronising calls on CUDA only; the steps ran"}
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        sites = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
        return {**row, "syncs": len(syncs), "syncs_per_step": len(syncs) / steps,
                "sync_sites": sites.most_common(12)}

    def row_resume(self, spec: dict) -> dict:
        import numpy as np

        from dadf.grid import store
        from dadf.grid.runner import run_cell
        from dadf.train import checkpoint

        b, steps, every = spec["batch"], spec["steps"], self.sizes["resume_log_every"]
        extra = [f"trainer.log_every={every}"]
        ref = self.cell(self.work / "resume_ref", spec["method"], b, steps, extra)
        run = self.cell(self.work / "resume_signal", spec["method"], b, steps, extra)
        ref_files, run_files = store.CellDir(ref.dir), store.CellDir(run.dir)
        t0 = time.perf_counter()
        run_cell(ref.dir)  # uninterrupted, in this process
        ref_s = time.perf_counter() - t0

        err_path = self.work / "resume_child.stderr"
        with open(err_path, "w") as err:  # a file, not a pipe: a chatty child never blocks on a full pipe
            child = subprocess.Popen([sys.executable, str(SCRIPT), "--run-cell", str(run.dir)], stderr=err)
        signalled = None
        try:
            while child.poll() is None:
                seen = _last_logged_step(run_files.log)
                if seen >= steps // 4:
                    child.send_signal(signal.SIGUSR2)
                    signalled = seen
                    break
                time.sleep(0.005)
            child.wait(timeout=600)
        finally:
            if child.poll() is None:
                child.kill()
        err = err_path.read_text(errors="replace")
        status = run_files.read_status()
        if signalled is None or child.returncode != 128 + signal.SIGUSR2 or status.get("state") != store.REQUEUED:
            raise RuntimeError(f"the child was not preempted as planned: signalled after step {signalled}, exit "
                               f"{child.returncode}, status {status.get('state')} ({status.get('reason')}); stderr: "
                               f"{err.strip()[-600:]}")
        resumed = subprocess.run([sys.executable, str(SCRIPT), "--run-cell", str(run.dir)], capture_output=True,
                                 text=True, timeout=600)
        if resumed.returncode != 0:
            raise RuntimeError(f"the resumed child exited {resumed.returncode}: {resumed.stderr.strip()[-800:]}")
        a, z = np.load(ref_files.scores), np.load(run_files.scores)
        keys = [k for k in a.files if k.startswith("score")]
        score_diff = max(float(np.abs(a[k].astype(np.float64) - z[k].astype(np.float64)).max()) for k in keys)
        wa = _tensors(checkpoint.load(checkpoint.latest(ref_files.checkpoints))["method"])
        wz = _tensors(checkpoint.load(checkpoint.latest(run_files.checkpoints))["method"])
        if wa.keys() != wz.keys():
            raise RuntimeError(f"the checkpoints hold different tensors: {sorted(set(wa) ^ set(wz))[:5]}")
        weight_diff = max((float((wa[k].double() - wz[k].double()).abs().max()) for k in wa if wa[k].numel()),
                          default=0.0)
        m_ref, m_run = ref_files.read_metrics(), run_files.read_metrics()
        return {"signalled_after_step": signalled,
                "preempted_at_step": status.get("step"), "preempted_exit": child.returncode,
                "scores_compared": keys, "scores_max_abs_diff": score_diff,
                "scores_bit_identical": all(np.array_equal(a[k], z[k]) for k in keys),
                "weights_compared": len(wa), "weights_max_abs_diff": weight_diff,
                "weights_bit_identical": all(bool((wa[k] == wz[k]).all()) for k in wa),
                "auroc_uninterrupted": m_ref["metrics"]["auroc"], "auroc_resumed": m_run["metrics"]["auroc"],
                "uninterrupted_s": ref_s, "device": m_ref["hardware"].get("gpu") or m_ref["hardware"]["device"]}

    # -- packed ---------------------------------------------------------------------------------------------
    def row_packed(self, spec: dict) -> dict:
        import copy

        import torch
        from sklearn.datasets import load_digits
        from torch import nn
        from torch.func import functional_call, stack_module_state, vmap

        from dadf.nets.baseline import decoder, encoder

        n_models, b, steps = spec["models"], spec["batch"], spec["steps"]
        device = torch.device("cuda" if self.cuda else "cpu")
        ae = self.compose([f"method={spec['method']}"]).method  # the ae baseline's widths and learning rate
        digits = load_digits()
        x_all = torch.tensor(digits.images, dtype=torch.float32).div(16).mul(2).sub(1).unsqueeze(1)  # [-1, 1]
        shape = tuple(x_all.shape[1:])
        per_class = [x_all[torch.as_tensor(digits.target) == c] for c in range(n_models)]  # one cell per class
        offsets = torch.tensor([0] + [len(p) for p in per_class]).cumsum(0)[:-1]
        data = torch.cat(per_class).to(device)
        g = torch.Generator().manual_seed(0)
        rows = torch.stack([torch.randint(len(p), (steps, b), generator=g) + o for p, o in zip(per_class, offsets)])
        rows = rows.to(device)  # (models, steps, batch): row indices into data, each model its own class

        def model(i: int) -> nn.Module:
            torch.manual_seed(i)
            return nn.Sequential(encoder(shape, int(ae.width), int(ae.latent_dim)),
                                 decoder(shape, int(ae.width), int(ae.latent_dim), image=True)).to(device)

        def sequential(n: int) -> tuple[torch.Tensor, float]:
            out = torch.empty(n_models, n, device=device)
            self.sync()
            t0 = time.perf_counter()
            for i in range(n_models):
                net = model(i)
                opt = torch.optim.Adam(net.parameters(), lr=float(ae.lr))
                for t in range(n):
                    xb = data[rows[i, t]]
                    loss = (net(xb) - xb).pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    out[i, t] = loss.detach()
            self.sync()
            return out, time.perf_counter() - t0

        def packed(n: int) -> tuple[torch.Tensor, float]:
            nets = [model(i) for i in range(n_models)]
            params, buffers = stack_module_state(nets)  # leaves of shape (models, ...)
            base = copy.deepcopy(nets[0]).to("meta")

            def one_loss(p, bufs, xb):
                return (functional_call(base, (p, bufs), (xb,)) - xb).pow(2).mean()

            losses_of = vmap(one_loss)
            opt = torch.optim.Adam(list(params.values()), lr=float(ae.lr))  # elementwise: as ten separate Adams
            out = torch.empty(n_models, n, device=device)
            self.sync()
            t0 = time.perf_counter()
            for t in range(n):
                losses = losses_of(params, buffers, data[rows[:, t]])
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()  # each model's parameters get only its own loss's gradient
                opt.step()
                out[:, t] = losses.detach()
            self.sync()
            return out, time.perf_counter() - t0

        sequential(2), packed(2)  # warm-up: kernels, allocator
        seq_losses, seq_s = sequential(steps)
        pk_losses, pk_s = packed(steps)
        samples = n_models * steps * b
        diff = float((seq_losses.double() - pk_losses.double()).abs().max())
        return {"shape": "x".join(map(str, shape)), "device": str(device),
                "sequential_s": seq_s, "packed_s": pk_s, "sequential_samples_per_s": samples / seq_s,
                "samples_per_s": samples / pk_s, "speedup": seq_s / pk_s, "losses_max_abs_diff": diff,
                "losses_allclose": bool(torch.allclose(seq_losses, pk_losses, rtol=1e-4, atol=1e-6)),
                "losses_bit_identical": bool(torch.equal(seq_losses, pk_losses)),
                "final_loss_mean": float(pk_losses[:, -1].mean())}


def _flops_key(r: dict) -> tuple:
    """Step rows with the same FLOPs per step: the method and its inputs, and whether a gradient penalty runs."""
    return r["method"], r["shape"], r["batch"], bool(r.get("penalty"))


def _last_logged_step(log: Path) -> int:
    """The newest step in a cell's log.jsonl (0 before the first line); a line cut short is ignored."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(line)["step"])
    return 0


def _tensors(tree, prefix: str = "") -> dict:
    """Every tensor of a nested state dict, by path."""
    import torch

    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


def run_cell_child(cell_dir: str) -> int:
    """``--run-cell``: one cell in this process, as jobs/train.py runs it: 128 + the signal when preempted."""
    _die_with_parent()
    from dadf.grid.runner import run_cell
    from dadf.train.preemption import Preempted

    try:
        run_cell(cell_dir)
    except Preempted as p:
        print(p, file=sys.stderr)
        return 128 + p.signum
    return 0


def worker_main(spec_file: str) -> int:
    _die_with_parent()
    job = json.loads(Path(spec_file).read_text())
    return Worker(job["ctx"]).run(job["specs"], job["ctx"]["deadline"])


# ---------------------------------------------------------------------------------------------------------------
# The parent: plan, workers (restarted after a crash), budget, final files
# ---------------------------------------------------------------------------------------------------------------
def run_check(a: argparse.Namespace, t_start: float, wheels: list[str]) -> dict:
    import torch  # the machine's own build, present on both machines

    smoke = a.smoke if a.smoke is not None else not torch.cuda.is_available()
    deadline = t_start + a.budget_s
    out = out_stem(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = Results(out)
    specs = plan(smoke)
    if a.rows:
        specs = select(specs, a.rows.split(","))
    results.write({"tool": "jobs/gpu_check.py", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   "smoke": smoke, "budget_s": a.budget_s, "argv": sys.argv[1:],
                   "plan": [s["id"] for s in specs], "rows": [], "finished": None})
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: {'smoke version (CPU)' if smoke else 'full'}, {len(specs)} rows, budget {a.budget_s} s, "
          f"writing {results.json} and {results.md}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    ctx = {"smoke": smoke, "work": str(work), "out": str(out), "t_start": t_start, "deadline": deadline,
           "wheels_installed": wheels}
    pending, attempt, stalled = specs, 0, 0
    try:
        while pending and time.time() < deadline:
            attempt += 1
            spec_file = work / f"worker-{attempt}.json"
            spec_file.write_text(json.dumps({"ctx": ctx, "specs": pending}))
            err_path = work / f"worker-{attempt}.stderr"
            with open(err_path, "w") as err:
                proc = subprocess.Popen([sys.executable, str(SCRIPT), "--worker", str(spec_file)], env=env,
                                        stderr=err)
                try:
                    code = proc.wait(timeout=max(1.0, deadline + a.grace_s - time.time()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code = None
            finished = {r["id"] for r in results.read()["rows"]}
            left = [s for s in pending if s["id"] not in finished]
            if code == 0 or not left:
                pending = left
                break
            tail = err_path.read_text(errors="replace").strip().splitlines()[-6:]
            why = (f"killed: still running {a.grace_s:.0f} s after the budget of {a.budget_s} s ran out" if code is None
                   else f"the worker process died (exit {code}) while running this row: {' / '.join(tail)[-1500:]}")
            stalled = stalled + 1 if len(left) == len(pending) else 0
            if code == WORKER_RESTART:  # the row itself was recorded; a fresh worker takes the rest
                pending = left
                continue
            if stalled >= 2:  # two workers in a row died before finishing any row: a third would too
                for spec in left:
                    results.append({**spec, "status": "error", "error": f"not run: workers keep dying; last: {why}"})
                pending = []
                break
            results.append({**left[0], "status": "error", "error": why})
            pending = left[1:]
        for spec in pending:
            results.append(skipped_row(spec, f"--budget-s {a.budget_s} was spent before this row could start"))
    finally:
        if not a.work and not a.keep_work:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    doc = results.read()
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    doc["wall_s"] = round(time.time() - t_start, 1)
    results.write(doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    t_start = time.time()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/gpu_check", help="writes OUT.json and OUT.md (default bench/gpu_check)")
    p.add_argument("--budget-s", type=float, default=280.0, help="no row starts after this many seconds (default 280)")
    p.add_argument("--grace-s", type=float, default=10.0,
                   help="a row still running this long after the budget is killed and recorded as such")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", dest="smoke", action="store_const", const=True, default=None,
                      help="the ~30 s CPU version of every row (default when torch sees no GPU)")
    mode.add_argument("--full", dest="smoke", action="store_const", const=False, help="the full rows, even on CPU")
    p.add_argument("--rows", default=None, help=f"only these rows, comma-separated: kinds ({', '.join(KINDS)}) or "
                                                "globs over row ids, e.g. 'env,step:*:compiled:*'")
    p.add_argument("--work", default=None, help="folder for cells and shards (default: a temporary one, removed)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    wh = p.add_argument_group("wheels (the GPU machine has no package index)")
    wh.add_argument("--download-wheels", action="store_true",
                    help=f"save pure-Python wheels of {', '.join(WHEELS)} (this environment's versions) in "
                         f"--wheel-dir, and exit")
    wh.add_argument("--only", default=None, help="with --download-wheels: only these distributions (comma-separated)")
    wh.add_argument("--wheel-dir", type=Path, default=DEFAULT_WHEEL_DIR, help="default: .whl/ in the checkout")
    wh.add_argument("--site", type=Path, default=DEFAULT_SITE, help="install target of the wheels (default /tmp/site)")
    inst = wh.add_mutually_exclusive_group()
    inst.add_argument("--install-wheels", dest="install_wheels", action="store_const", const=True, default=None,
                      help="install the wheels first even if everything imports (default: only when an import fails "
                           "and --wheel-dir exists)")
    inst.add_argument("--no-install-wheels", dest="install_wheels", action="store_const", const=False)
    wh.add_argument("--install-only", action="store_true", help="install the wheels into --site, and exit")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--run-cell", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        return worker_main(a.worker)
    if a.run_cell:
        return run_cell_child(a.run_cell)
    if a.download_wheels:
        names = a.only.split(",") if a.only else list(WHEELS)
        saved = download_wheels(names, a.wheel_dir)
        total = sum(w.stat().st_size for w in a.wheel_dir.glob("*.whl"))
        for w in saved:
            print(f"saved {w.name} ({w.stat().st_size / 1024:.0f} KiB)")
        print(f"{a.wheel_dir}: {len(list(a.wheel_dir.glob('*.whl')))} wheels, {total / 2**20:.2f} MiB")
        return 0
    if a.install_only:
        installed = install_wheels(a.wheel_dir, a.site)
        print(f"installed {len(installed)} wheels into {a.site}: {', '.join(installed)}")
        return 0
    wheels = ensure_imports(a)
    if wheels:
        print(f"installed {len(wheels)} wheels from {a.wheel_dir} into {a.site}", flush=True)
    doc = run_check(a, t_start, wheels)
    print(render_markdown(doc))
    states = [r["status"] for r in doc["rows"]]
    print(f"{states.count('ok')} rows ok, {states.count('error')} failed, {states.count('skipped')} skipped; "
          f"{doc['wall_s']} s; wrote {Results(out_stem(a.out)).json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
