"""What every method provides to the trainer. The trainer knows nothing about GANs: a method owns its networks,
optimisers and update rule, and turns inputs into anomaly scores (higher = more anomalous)."""
from __future__ import annotations

import contextlib
import dataclasses
import pickle

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from torch import nn


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a method may know about its data and its schedule when it builds itself."""

    kind: str  # "image" | "tabular"
    shape: tuple[int, ...]  # one sample's shape
    n_train: int  # training samples the stream draws from (all ranks see the same set)
    batch_size: int = 64  # global batch per optimiser step (all ranks and micro-batches together)
    steps_per_epoch: int = 1  # ceil(n_train / batch_size)
    total_steps: int = 1  # the trainer's step budget (trainer.steps, or epochs x steps_per_epoch)
    # How the networks are wrapped (set from the trainer config): ddp (Accelerate) or deepspeed (one engine each).
    strategy: str = "ddp"
    zero_stage: int = 0
    micro_batch: int = 64  # rows per process per micro-batch
    accumulate: int = 1
    precision: str = "fp32"
    channels_last: bool = False  # networks (and the trainer's image batches) in channels_last memory format


def method_params(cfg: DictConfig, defaults: type) -> object:
    """The method's config as a typed dataclass; an unknown key is an error that lists the valid ones."""
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}
    fields = {f.name for f in dataclasses.fields(defaults)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"method {cfg.name!r} has no option(s) {unknown}; valid options: {sorted(fields)}")
    return defaults(**values)


class Method:
    """Base of all methods. ``trainable`` methods get ``train_step`` calls; the others are fitted once."""

    name = "?"
    trainable = True
    uses_labelled_anomalies = False  # False: rows labelled anomalous (semisup) are dropped from its training set

    def __init__(self, cfg: DictConfig, info: DataInfo, accelerator: Accelerator, seed: int):
        self.cfg, self.info, self.accelerator, self.seed = cfg, info, accelerator, seed

    workdir = None  # the cell's folder (a Path) while the trainer runs it; None in unit tests
    # Where this process's micro-batch lies in the step's global batch (set by the trainer through begin_micro).
    micro, step, batch_lo, global_batch = 0, 0, 0, None
    _noise_calls = 0

    def begin_micro(self, micro: int, step: int, lo: int, global_batch: int) -> None:
        """Called by the trainer before each ``train_step``: micro-batch ``micro`` of step ``step``, whose rows
        are ``[lo, lo + len(batch))`` of a global batch of ``global_batch`` rows."""
        self.micro, self.step, self.batch_lo, self.global_batch = micro, step, lo, global_batch
        self._noise_calls = 0

    def noise(self, n: int, *dims: int, kind: str = "normal") -> torch.Tensor:
        """Random numbers for the ``n`` rows of this process's micro-batch (``kind`` normal or uniform).

        They are drawn for the whole global batch from (seed, step, call) and sliced, so a run on 1, 2 or 8
        processes, with or without accumulation, sees the same noise for the same sample: results do not depend
        on the number of processes. Outside the trainer (global_batch None) it draws ``n`` rows.
        """
        total = self.global_batch or n
        lo = self.batch_lo if self.global_batch else 0
        seed = int(np.random.SeedSequence([self.seed, self.step, self._noise_calls]).generate_state(1)[0])
        self._noise_calls += 1
        g = torch.Generator().manual_seed(seed)
        draw = torch.randn if kind == "normal" else torch.rand
        return draw((total, *dims), generator=g)[lo : lo + n].to(self.accelerator.device)

    def on_train_start(self, train_x: torch.Tensor) -> None:
        """Called once before the first step of a fresh (not resumed) run, on every rank, with all training rows."""

    def planned_steps(self, default: int) -> int:
        """The step budget; ``default`` is trainer.steps or epochs x steps_per_epoch. Multi-phase methods
        (OMASGAN's tasks) return the sum of their phases here."""
        return default

    def on_train_end(self, train_x: torch.Tensor) -> None:
        """Called once after the last step (and after a resume that finds training finished), before scoring,
        with all normal training rows: fit score statistics here (e.g. AMA's Gaussian on R-scores)."""

    def selection_scores(self, val_x: torch.Tensor) -> dict[str, float]:
        """Extra model-selection criteria on the validation normals (lower is better), e.g. a feature loss;
        ``trainer.selection`` may name one of them."""
        return {}

    def fit(self, train_x: torch.Tensor) -> None:
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every anomaly score the method defines, from one pass: ``"score"`` is the one the metrics use; others
        (AMA's R- and A-score) are gathered, saved in scores.npz as ``score_<name>`` and get metrics too."""
        return {"score": self.score(x)}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TorchMethod(Method):
    """A method made of networks and optimisers, each prepared by Accelerate (DDP across processes).

    ``update(name, loss)`` is the only way a method changes a network: it runs the backward pass through
    Accelerate (loss scaling under fp16), counts fp16 steps the scaler skipped, and implements gradient
    accumulation over ``accumulate`` consecutive ``train_step`` calls for every network alike.
    """

    def __init__(self, cfg, info, accelerator, seed):
        super().__init__(cfg, info, accelerator, seed)
        self.nets: dict[str, nn.Module] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.scheds: dict[str, object] = {}
        self.skipped_steps: dict[str, int] = {}
        self.accumulate = 1  # micro-batches per optimiser step (trainer.accumulate), set by the trainer
        self._updated: set[str] = set()

    def add(self, name: str, net: nn.Module, opt_factory, sched_factory=None, *, broadcast_buffers: bool = True,
            find_unused_parameters: bool = False) -> nn.Module:
        """Register a network, its optimiser (built from its parameters) and optionally an LR scheduler (built
        from the optimiser; the method steps it), prepared for the device and wrapped for DDP.

        A critic that sees two batches before one backward (real and fake) must use ``broadcast_buffers=False``
        or have no BatchNorm: DDP rewrites buffers in place at each forward otherwise.
        """
        from accelerate.utils import DistributedDataParallelKwargs

        net = net.to(self.accelerator.device)
        if self.info.channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = opt_factory(net.parameters())
        if self.info.strategy == "deepspeed":
            return self._add_engine(name, net, opt, sched_factory)
        saved = self.accelerator.ddp_handler
        # Accelerate takes DDP options from one accelerator-wide handler; give each network its own.
        self.accelerator.ddp_handler = DistributedDataParallelKwargs(
            broadcast_buffers=broadcast_buffers, find_unused_parameters=find_unused_parameters)
        try:
            net, opt = self.accelerator.prepare(net, opt)
        finally:
            self.accelerator.ddp_handler = saved
        self.nets[name], self.opts[name] = net, opt
        self.skipped_steps[name] = 0
        if sched_factory is not None:
            # Not prepared: Accelerate would step it once per process; a method's schedule counts its own steps.
            self.scheds[name] = sched_factory(opt.optimizer if hasattr(opt, "optimizer") else opt)
        return net

    def _add_engine(self, name, net, opt, sched_factory):
        from dadf.train import deepspeed_engine

        i = self.info
        engine, ds_opt = deepspeed_engine.initialize(
            net, opt, deepspeed_engine.config(i.micro_batch, i.accumulate, self.accelerator.num_processes,
                                              i.precision, i.zero_stage))
        self.nets[name], self.opts[name] = engine, ds_opt
        self.skipped_steps[name] = 0
        if sched_factory is not None:
            self.scheds[name] = sched_factory(opt)
        return engine

    @property
    def uses_engines(self) -> bool:
        return self.info.strategy == "deepspeed"

    def _module(self, net):
        return net.module if self.uses_engines else self.accelerator.unwrap_model(net)

    @contextlib.contextmanager
    def evaluating(self):
        """All networks in eval() mode (BatchNorm uses training statistics), gradients off; restores after."""
        modes = {k: n.training for k, n in self.nets.items()}
        for n in self.nets.values():
            n.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for k, n in self.nets.items():
                n.train(modes[k])

    @contextlib.contextmanager
    def frozen(self, name: str):
        """A network used as a fixed function inside another network's loss (the critic in the generator's
        update): yields the bare module with its parameters' gradients off, so no parameter gradient is computed
        and its DDP / DeepSpeed wrapper expects no backward. Gradients still flow through it to its inputs."""
        module = self._module(self.nets[name])
        flags = [p.requires_grad for p in module.parameters()]
        module.requires_grad_(False)
        try:
            yield module
        finally:
            for p, f in zip(module.parameters(), flags):
                p.requires_grad_(f)

    def begin_micro(self, micro: int, step: int, lo: int, global_batch: int) -> None:
        super().begin_micro(micro, step, lo, global_batch)
        self._updated.clear()

    def update(self, name: str, loss: torch.Tensor) -> None:
        net, opt = self.nets[name], self.opts[name]
        if self.uses_engines:
            if self.accumulate > 1 and name in self._updated:
                raise RuntimeError(f"network {name!r} is updated twice in one train_step, which gradient "
                                   f"accumulation cannot split; use trainer.accumulate=1 for method {self.name!r}")
            self._updated.add(name)
            net.backward(loss)  # the engine scales by 1/accumulate and all-reduces at the boundary
            net.step()  # applies the update only at the accumulation boundary
            self.skipped_steps[name] = int(net.skipped_steps)
            return
        if self.accumulate == 1:
            opt.zero_grad(set_to_none=True)
            self.accelerator.backward(loss)
            opt.step()
            if opt.step_was_skipped:  # fp16 overflow: the scaler lowered its scale and skipped this step
                self.skipped_steps[name] += 1
            return
        if name in self._updated:
            raise RuntimeError(
                f"network {name!r} is updated twice in one train_step, which gradient accumulation cannot "
                f"split; use trainer.accumulate=1 for method {self.name!r} (raise the batch size instead)")
        self._updated.add(name)
        last = self.micro == self.accumulate - 1
        if self.micro == 0:
            opt.zero_grad(set_to_none=True)
        # Only the last micro-batch all-reduces gradients across ranks; the others accumulate locally.
        ctx = contextlib.nullcontext() if last else self.accelerator.no_sync(net)
        with ctx:
            self.accelerator.backward(loss / self.accumulate)
        if last:
            opt.step()
            if opt.step_was_skipped:
                self.skipped_steps[name] += 1

    def extra_state(self) -> dict:
        """Method state beyond networks and optimisers (e.g. a phase, a fitted centre); saved in checkpoints."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def _optimizer_states(self) -> dict:
        if not self.uses_engines or self.info.zero_stage == 0:
            return {k: o.state_dict() for k, o in self.opts.items()}
        # ZeRO 1-2 partition optimiser state over ranks: gather every rank's part (a collective on all ranks).
        out = {}
        for k, o in self.opts.items():
            parts = [None] * self.accelerator.num_processes
            torch.distributed.all_gather_object(parts, o.state_dict())
            out[k] = parts
        return out

    def state_dict(self) -> dict:
        """Everything a resume needs. Under ZeRO 1-2 this is a collective: call it on every rank."""
        scaler = self.accelerator.scaler
        return {
            "nets": {k: self._module(n).state_dict() for k, n in self.nets.items()},
            "opts": self._optimizer_states(),
            "scheds": {k: s.state_dict() for k, s in self.scheds.items()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "skipped_steps": dict(self.skipped_steps),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, n in self.nets.items():
            self._module(n).load_state_dict(state["nets"][k])
        for k, o in self.opts.items():
            saved = state["opts"][k]
            if isinstance(saved, list) and len(saved) != self.accelerator.num_processes:
                raise RuntimeError(f"the checkpoint's ZeRO optimiser state of {k!r} is split over {len(saved)} "
                                   f"ranks, this run has {self.accelerator.num_processes}; resume on as many ranks")
            o.load_state_dict(saved)
        for k, s in self.scheds.items():
            s.load_state_dict(state["scheds"][k])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.skipped_steps.update(state.get("skipped_steps", {}))
        self.load_extra_state(state["extra"])


class ShallowMethod(Method):
    """A scikit-learn estimator on flattened inputs, fitted once on the normal training rows."""

    trainable = False

    def __init__(self, cfg, info, accelerator, seed):
        super().__init__(cfg, info, accelerator, seed)
        self.pca = None
        self.model = None

    def make_model(self):
        raise NotImplementedError

    def anomaly_score(self, feats: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _features(self, x: torch.Tensor) -> np.ndarray:
        feats = x.reshape(len(x), -1).cpu().numpy().astype(np.float64)
        return self.pca.transform(feats) if self.pca is not None else feats

    def fit(self, train_x: torch.Tensor) -> None:
        from sklearn.decomposition import PCA

        p = self.params
        rng = np.random.default_rng(self.seed)
        if p.max_train is not None and len(train_x) > p.max_train:
            train_x = train_x[np.sort(rng.choice(len(train_x), p.max_train, replace=False))]
        feats = train_x.reshape(len(train_x), -1).cpu().numpy().astype(np.float64)
        if p.pca_components is not None and p.pca_components < min(feats.shape):
            self.pca = PCA(n_components=p.pca_components, random_state=self.seed).fit(feats)
            feats = self.pca.transform(feats)
        self.model = self.make_model().fit(feats)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.anomaly_score(self._features(x)), dtype=np.float64))

    def state_dict(self) -> dict:
        return {"pickle": pickle.dumps((self.pca, self.model))}

    def load_state_dict(self, state: dict) -> None:
        self.pca, self.model = pickle.loads(state["pickle"])
