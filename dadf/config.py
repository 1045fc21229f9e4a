"""The configs: where their YAML lies (``CONFIG_DIR``) and the schema of every group, registered in Hydra's
ConfigStore, so that each default is written once and Hydra checks each value's type when it composes.

- trainer: option ``default``, ``TrainerConfig`` below;
- method: one option per registered method, its params dataclass (``@register(name, params=...)``, dadf/methods/);
- protocol: one option per registered protocol, its params dataclass (dadf/data/protocols.py);
- launcher: ``local``, ``debug``, ``slurm``: ``LocalLauncher``, ``DebugLauncher``, ``SlurmLauncher`` below;
- dataset: the files of ``configs/dataset/`` (which data), each typed by ``DatasetConfig`` below;
- grid: the files of ``configs/grid/``, no schema: a grid file sets values of the groups above.

A method's or protocol's option is ``name: <option>`` plus its params' fields. A field marked
``metadata={"identity": False}`` says where things are or how they are watched, not what is computed: it is kept
out of a cell's identity (``hashed``), so changing it never makes a new cell. A field added after cells were run is
declared with ``added(default, before=...)`` (dadf/identity.py): it joins the identity only when its value differs
from the behaviour the code had before it existed, so finished grids keep their ids (tests/test_cell_ids.py pins
some).

A field with a closed set of values is typed by a ``Choice`` enum, whose members are those strings, and a number's
range is its metadata (``at_least``, ``within``): both are read by the one checker of dadf/checks.py, which
``trainer_problems`` below runs with the trainer's rule across fields, the batch split. A composed config holds the
choices as enum members: ``OmegaConf.to_container(..., enum_to_str=True)`` gives the plain strings that cell.yaml and
the cell ids hold.

Asking for ``CONFIG_DIR`` (whoever composes needs it) registers the schemas first (``register()``, once). Only then
are the methods imported, so that readers of results (status, aggregate) that import a schema from here never pay
for torch.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dadf import checks
from dadf.checks import at_least, choices, within
from dadf.data.protocols import PROTOCOLS
from dadf.identity import UNHASHED, added  # noqa: F401 -- added: the schemas' marker, importable from here too


def _config_dir() -> str:
    """configs/ at the checkout's root (the one copy; an editable install), or dadf/configs/ in a wheel, which ships
    that folder as ``dadf.configs`` (pyproject.toml)."""
    here = Path(__file__).resolve().parent
    return str(here / "configs" if (here / "configs").is_dir() else here.parent / "configs")


_CONFIG_DIR = _config_dir()

_UNHASHED = UNHASHED

# The trainer's and launchers' closed sets of values (dadf/checks.py: Hydra refuses any other when it composes).
Precision = choices("Precision", ("fp32", "bf16", "fp16"))
StrategyName = choices("StrategyName", ("ddp", "deepspeed"))
Device = choices("Device", ("auto", "cpu"))
DataMode = choices("DataMode", ("auto", "memory", "stream"))
Tracker = choices("Tracker", ("auto", "none", "tensorboard", "wandb", "mlflow"))
StartMethod = choices("StartMethod", ("forkserver", "spawn"))
# trainer.selection=train_<criterion>: a method's criterion on the training normals, for protocols without a
# validation split (the simplex paper: the lowest mean R-score of the training samples after epoch 60)
TRAIN_CRITERION = "train_"


@dataclasses.dataclass
class TrainerConfig:
    """The step-based loop (dadf/train/loop.py). One optimisation step = one call of the method's train_step per
    micro-batch. Under data parallelism batch_size is the GLOBAL batch (all processes and micro-batches together):
    each of N processes trains on batch_size / (N x accumulate) rows per micro-batch and the gradients are averaged,
    so the optimisation path and the learning rate do not change with the number of processes (BatchNorm layers
    normalise over the global batch: sync_bn). Accumulation keeps the path of nets without BatchNorm, which
    normalises each micro-batch on its own."""

    # total steps; null = epochs x ceil(n_train / batch_size)
    steps: int | None = dataclasses.field(default=None, metadata=at_least(1, example=1000))
    epochs: int = dataclasses.field(default=20, metadata=at_least(1))
    # global batch per optimiser step; must be a multiple of processes x accumulate (checks.batch_split)
    batch_size: int = dataclasses.field(default=64, metadata=at_least(1))
    # micro-batches per optimiser step (gradient accumulation over every network of the method)
    accumulate: int = dataclasses.field(default=1, metadata=at_least(1))
    eval_batch_size: int = dataclasses.field(default=512, metadata=at_least(1))
    precision: Precision = Precision.fp32  # fp16 uses the loss scaler on GPU; on CPU it runs as fp32, recorded
    # ddp | deepspeed: one DeepSpeed engine per network (docs/training.md)
    strategy: StrategyName = StrategyName.ddp
    zero_stage: int = dataclasses.field(default=0, metadata=within(0, 2))  # DeepSpeed ZeRO stage (strategy=deepspeed)
    device: Device = dataclasses.field(default=Device.auto, metadata=_UNHASHED)  # auto: cuda when present
    # torch intra-op threads per process; null = torch's default
    num_threads: int | None = dataclasses.field(default=None, metadata={**_UNHASHED, **at_least(1, example=4)})
    # torch.compile every network (Accelerate's dynamo plugin, inductor); gradient penalties run eagerly (no double
    # backward through a compiled graph: docs/performance.md)
    compile: bool = False
    # image networks and batches in channels_last memory format: true | false | null = the method's default for the
    # device type (CHANNELS_LAST below). null hashes as false (the value it replaced), which is what it is on CPU.
    channels_last: bool | None = dataclasses.field(default=None, metadata={"hash_as": {None: False}})
    # on GPU, keep the in-memory training set on the device (no copy per step)
    data_on_device: bool = dataclasses.field(default=True, metadata=_UNHASHED)
    # where the training data lives: memory (loaded whole) | stream (read from the shards; dadf/data/stream.py) |
    # auto = stream when the dataset is larger than memory_budget, decided at launch and frozen into cell.yaml
    data: DataMode = added(DataMode.auto, before="memory")
    # auto's budget: a fraction of the free memory (the GPU's with data_on_device on a GPU) or a size ("16GB"); it only
    # decides how (the decision is frozen in trainer.data), so it is outside the identity
    memory_budget: Any = dataclasses.field(default=0.5, metadata=_UNHASHED)
    # DataLoader workers reading shards ahead when streaming; the batches do not depend on it
    data_workers: int = dataclasses.field(default=2, metadata={**_UNHASHED, **at_least(0)})
    # steps between checkpoints (and one at the end of training)
    checkpoint_every: int = dataclasses.field(default=1000, metadata=at_least(1))
    keep_checkpoints: int = dataclasses.field(default=2, metadata=at_least(1))  # newest complete checkpoints on disk
    # steps between the ranks' agreement on NaN losses and preemption signals (a host sync); null = by device type:
    # 1 on CPU, 50 on a GPU (dadf.train.loop.SYNC_EVERY)
    sync_every: int | None = dataclasses.field(default=None, metadata={**_UNHASHED, **at_least(1, example=1)})
    # several processes: BatchNorm layers normalise over the global batch (SyncBatchNorm), so a net with BatchNorm
    # trains as on one process; null = true. metrics.json: hardware.sync_bn (whether a network was synchronised)
    sync_bn: bool | None = added(None, before=None)
    # model selection: last | val_auroc | a criterion the method computes on validation normals (feature_loss) |
    # train_<criterion>: the same on the training normals (protocols without a validation split). An open set (the
    # method's Method.selection_criteria): selection_problem checks it.
    selection: str = "last"
    # steps between validations when selection != last; null = once per epoch
    eval_every: int | None = dataclasses.field(default=None, metadata=at_least(1, example=1000))
    # epochs before which validated states are logged but never selected
    select_after: int | float = dataclasses.field(default=0, metadata=at_least(0))
    # steps between lines in the cell's log.jsonl (losses averaged over steps and ranks)
    log_every: int = dataclasses.field(default=50, metadata={**_UNHASHED, **at_least(1)})
    progress: bool = dataclasses.field(default=True, metadata=_UNHASHED)  # a progress bar in the foreground
    # live curves (losses, validation, learning rates) through Accelerate's trackers, one run per cell folder
    # (dadf/train/tracking.py): auto (tensorboard when installed) | none | tensorboard | wandb (offline) | mlflow
    tracker: Tracker = dataclasses.field(default=Tracker.auto, metadata=_UNHASHED)


@dataclasses.dataclass
class DatasetConfig:
    """The fields of every dataset file (configs/dataset/<name>.yaml: which data, how it is converted)."""

    name: str = MISSING
    source: str = MISSING  # the loader registered in dadf/data/sources/
    # folder holding the data (e.g. /data); null = ./data
    root: str | None = dataclasses.field(default=None, metadata=_UNHASHED)
    # true lets torchvision download into root where the files are missing
    download: bool = dataclasses.field(default=False, metadata=_UNHASHED)
    size: int | None = None  # resize images to size x size
    channels: int | None = None  # 1 or 3: convert grey <-> RGB
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # the source's own options
    top_k_percent: int | float | None = None  # tabular only: the top k% scores are flagged (precision/recall/F1)


@dataclasses.dataclass
class LocalLauncher:
    """Runs the cells on this machine in worker processes (a crashing cell is recorded as failed; the grid goes on)."""

    name: str = "local"
    # cells run at once; null = as many as fit (cores / threads_per_worker)
    workers: int | None = dataclasses.field(default=None, metadata=at_least(1, example=4))
    # torch threads per worker. Small cells run fastest one thread each, many at once; workers x threads is clamped to
    # the cores (a logged note), since OpenMP threads competing for cores make every cell several times slower.
    threads_per_worker: int = dataclasses.field(default=1, metadata=at_least(1))
    # forkserver: workers fork from one process that imported the training stack once; spawn: each imports it anew
    start_method: StartMethod = StartMethod.forkserver
    wait: bool = False  # another launch holds this grid: false = say which and exit, true = wait for it to end
    # GPUs the launcher may give cells of torch methods, one GPU per worker: null = those CUDA_VISIBLE_DEVICES names,
    # else every GPU torch sees; a list of device indices ([0, 2]); [] = none (everything on CPU workers)
    gpus: Any = None
    # workers sharing one GPU (small nets leave a GPU mostly idle with one cell at a time)
    cells_per_gpu: int = dataclasses.field(default=1, metadata=at_least(1))


@dataclasses.dataclass
class DebugLauncher:
    """Runs the cells one after another in this process, so breakpoints and pdb work. Errors still become failed
    cells unless raise_errors is true."""

    name: str = "debug"
    raise_errors: bool = False
    wait: bool = False  # another launch holds this grid: false = say which and exit, true = wait for it to end


@dataclasses.dataclass
class SlurmLauncher:
    """Submits the cells to SLURM as submitit job arrays (one array per resource group; dadf/grid/slurm.py) and
    returns at once; watch with `python jobs/status.py runs/<grid>`. Running the same command again submits only
    cells that are neither finished nor queued/running. See docs/slurm.md."""

    name: str = "slurm"
    # What one cell asks for (dadf.grid.slurm.Resources), each refinable per method / dataset in `resources`.
    partition: str | None = None  # null = the cluster's default partition
    cpu_partition: str | None = None  # partition of the cells that ask for no GPU; null = partition
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None  # sbatch --constraint, e.g. "a100|h100"
    # GPUs per cell; null = by the method's kind: 1 for torch methods, 0 for shallow ones (scikit-learn, PyOD;
    # dadf.methods.registry.accelerated). A cell with gpus > 1 runs one DDP process per GPU.
    gpus: int | None = None
    tasks: int | None = None  # processes per cell; null = max(1, gpus) (tasks: 2 with gpus: 0 is a 2-process CPU cell)
    cpus: int = 4  # CPUs per process
    mem_gb: int | float = 16  # memory per cell, GB
    time_min: int = 120  # wall time per job run; keep it > 10 (submitit counts every signal as a timeout at <= 10)
    # {match: {any key above from partition to time_min but cpu_partition}}; match = a dataset, a method or
    # "method/dataset", applied in that order (so "method/dataset" wins), e.g. {ama: {gpus: 2, mem_gb: 32},
    # ama/cifar10: {gpus: 4}}. Cells with equal resources share job arrays. Typed Any: OmegaConf 2.3 cannot set a
    # typed dict that is null (the entries' keys are checked by dadf.grid.slurm.check_config).
    resources: Any = None
    array_parallelism: int = 64  # cells of one array running at once
    # Tasks per job array; a group of cells with equal resources larger than this goes out as several arrays.
    # null = the cluster's MaxArraySize (scontrol show config), else SLURM's default 1001.
    max_array_size: int | None = None
    # Your jobs (array tasks count one each) queued or running at once; a launch submits up to it and the next launch
    # submits the rest. null = MaxSubmitJobs of your association (sacctmgr, where limits are enforced), else no limit.
    max_submit_jobs: int | None = None
    signal_delay_s: int = 120  # SIGUSR2 this many seconds before the time limit: the cell checkpoints, is requeued
    max_num_timeout: int = 20  # time-limit requeues a cell may use (preemptions by the scheduler are not counted)
    # shell lines run before the job, e.g. ["module load cuda/12.4", "source ~/venvs/dadf/bin/activate"]
    setup: list[str] = dataclasses.field(default_factory=list)
    # any other sbatch option, e.g. {mail_type: FAIL, mail_user: me@lab.org, requeue: true}
    additional_parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    job_name: str = "dadf"
    logs_dir: str | None = None  # submitit's job logs; null = runs/<grid>/.slurm/logs/, else <logs_dir>/<grid>/
    python: str | None = None  # interpreter of the jobs; null = the one running launch_grid.py (your venv's)
    squeue_timeout_s: int | float = 60  # how long squeue/scancel may take before the launcher gives up


LAUNCHERS = {"local": LocalLauncher, "debug": DebugLauncher, "slurm": SlurmLauncher}

# trainer.channels_last=null takes the method's default for the device type, written here, never measured at run time
# (results must not depend on a timing). CPU stays off for every method: channels_last measured 1.11-1.14x faster for
# AMA on CPU (jobs/bench_train.py), but turning it on would change the numbers of every finished CPU cell under its
# id; set trainer.channels_last=true to take it. On GPUs the paper methods' conv nets use it (tensor-core convs under
# bf16/fp16 want NHWC; jobs/gpu_check.py measures it per method on a GPU, docs/performance.md).
CHANNELS_LAST: dict[str, tuple[str, ...]] = {m: ("cuda",) for m in ("ama", "simplex_ae", "omasgan", "piad")}


def channels_last(tcfg, method: str, device_type: str) -> bool:
    """Whether a cell of ``method`` on ``device_type`` (cpu, cuda) runs in channels_last."""
    value = tcfg.get("channels_last") if hasattr(tcfg, "get") else getattr(tcfg, "channels_last", None)
    if value is not None:
        return bool(value)
    return device_type in CHANNELS_LAST.get(method, ())


def trainer_problems(values, processes: int | None = None) -> list[str]:
    """Every value of a trainer config (plain data or a config; only the keys it has) outside its choices or range,
    and, given the number of ``processes``, a global batch that does not split over them (``checks.batch_split``).
    Run at launch for every cell (dadf/grid/validate.py) and by the trainer on the cell it runs."""
    data = checks.plain(values)
    # epochs counts only while steps is null: then setting steps is the other fix
    fixes = {"epochs": " (or set trainer.steps)"} if data.get("steps") is None else {}
    out = checks.problems(TrainerConfig, data, "trainer", fixes=fixes)
    if processes is not None:
        split = checks.batch_split(data.get("batch_size"), data.get("accumulate"), processes)
        out += [split] if split else []
    return out


def selection_problem(selection: str, method: str, criteria: tuple[str, ...]) -> str | None:
    """Why ``trainer.selection`` cannot select a state of ``method``, whose ``selection_criteria`` are
    ``criteria``, or None: it takes last, val_auroc, a criterion or train_<criterion>."""
    valid = ("last", "val_auroc", *criteria, *(TRAIN_CRITERION + c for c in criteria))
    if selection in valid:
        return None
    return (f"trainer.selection={checks.show(selection)} is no criterion of method {method}: choose one of "
            f"{', '.join(valid)}")


def schema(group: str, option: str | None = None) -> type | None:
    """The dataclass that types ``group``'s option ``option`` (None for an option nothing registered)."""
    if group == "trainer":
        return TrainerConfig
    if group == "dataset":
        return DatasetConfig
    if group == "launcher":
        return LAUNCHERS.get(option)
    if group == "method":
        available, get_method = _methods()
        return get_method(option).params_class if option in available() else None
    if group == "protocol":
        return PROTOCOLS[option].schema if option in PROTOCOLS else None
    raise ValueError(f"no schema for config group {group!r}")


def node(group: str, option: str) -> DictConfig:
    """What ``group=option`` composes before any override (trainer, method, protocol, launcher): a method's or a
    protocol's config is its name, then its params' fields."""
    typed = OmegaConf.structured(schema(group, option))
    return OmegaConf.merge({"name": option}, typed) if group in ("method", "protocol") else typed


def hashed(group: str, values: dict) -> dict:
    """``values`` (a plain config of ``group``) without the fields its schema keeps out of a cell's identity."""
    return _hashed_fields(schema(group, values.get("name")), values)


def _hashed_fields(klass: type | None, values: dict) -> dict:
    fields = dataclasses.fields(klass) if klass else ()
    unhashed = {f.name for f in fields if f.metadata.get("identity") is False}
    unhashed |= {f.name for f in fields if "before" in f.metadata and values.get(f.name) == f.metadata["before"]}
    out = {k: v for k, v in values.items() if k not in unhashed}
    for f in fields:  # a value that means what an older value meant hashes as that one
        as_ = f.metadata.get("hash_as", {})
        if f.name in out and _hashable(out[f.name]) and out[f.name] in as_:
            out[f.name] = as_[out[f.name]]
    return out


def _hashable(v) -> bool:
    try:
        hash(v)
        return True
    except TypeError:
        return False


def options(group: str) -> list[str]:
    """The options registered in the ConfigStore for ``group`` (the dataset and grid options are YAML files)."""
    if group == "method":
        return _methods()[0]()
    if group == "protocol":
        return [name for name, p in PROTOCOLS.items() if p.schema is not None]
    return {"trainer": ["default"], "launcher": list(LAUNCHERS)}[group]


def _methods():
    """(available, get_method) of the method registry, every method imported (each registers its params)."""
    import dadf.methods  # noqa: F401 -- imports torch: only where a method's schema is needed
    from dadf.methods.registry import available, get_method

    return available, get_method


_registered = False


def register() -> None:
    """Put every schema in Hydra's ConfigStore: the trainer, method, protocol and launcher options, and
    ``dataset_schema``, which ``config.yaml`` places under whichever dataset file is chosen."""
    global _registered
    if _registered:
        return
    store = ConfigStore.instance()
    for group in ("trainer", "method", "protocol", "launcher"):
        for option in options(group):
            store.store(group=group, name=option, node=node(group, option))
    store.store(name="dataset_schema", node=DatasetConfig)
    _registered = True


def __getattr__(name: str):
    if name == "CONFIG_DIR":  # composing needs the schemas in the ConfigStore: register them on first use
        register()
        return _CONFIG_DIR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
