"""What every method provides to the trainer. The trainer knows nothing about GANs: a method owns its networks,
optimisers and update rule, and turns inputs into anomaly scores (higher = more anomalous)."""
from __future__ import annotations

import contextlib
import dataclasses
import pickle
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import BinaryIO

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dadf.checks import method_problems, refuse
from dadf.methods.interface import SingleProcess, StepContext, Strategy


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a method may know about its data and its schedule when it builds itself."""

    kind: str  # "image" | "tabular"
    shape: tuple[int, ...]  # one sample's shape
    n_train: int  # training samples the stream draws from (all ranks see the same set)
    batch_size: int = 64  # global batch per optimiser step (all ranks and micro-batches together)
    steps_per_epoch: int = 1  # ceil(n_train / batch_size)
    total_steps: int = 1  # the trainer's step budget (trainer.steps, or epochs x steps_per_epoch)


def method_params(cfg: DictConfig, defaults: type) -> object:
    """The method's config as a typed dataclass; an unknown key is an error that lists the valid ones, a value
    outside its field's choices or range one that names them (dadf/checks.py: a cell.yaml may have been edited)."""
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True, enum_to_str=True).items() if k != "name"}
    fields = {f.name for f in dataclasses.fields(defaults)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"method {cfg.name!r} has no option(s) {unknown}; valid options: {sorted(fields)}")
    refuse(method_problems(str(cfg.name), defaults, values))
    return defaults(**values)


class Method:
    """Base of all methods. ``trainable`` methods get ``train_step`` calls; the others are fitted once."""

    name = "?"
    trainable = True
    # False: never given a GPU (launchers run its cells on CPU workers / CPU jobs: dadf.methods.registry.accelerated)
    accelerated = True
    uses_labelled_anomalies = False  # False: rows labelled anomalous (semisup) are dropped from its training set

    def __init__(self, cfg: DictConfig, info: DataInfo, strategy: Strategy | Accelerator, seed: int):
        """``strategy`` wraps and updates the networks (dadf/train/strategy.py builds it from the trainer config);
        a bare Accelerator (unit tests) means one process."""
        self.cfg, self.info, self.seed = cfg, info, seed
        self.strategy = strategy if isinstance(strategy, Strategy) else SingleProcess(strategy)
        self.accelerator = self.strategy.accelerator
        self._artifacts: list[tuple[str, Callable[[BinaryIO], None]]] = []

    step_context = StepContext()  # the current micro-batch's place in its step, from ``begin``
    _noise_calls = 0

    def begin(self, ctx: StepContext) -> None:
        """Called by the trainer before each ``train_step`` with that micro-batch's context."""
        self.step_context = ctx
        self._noise_calls = 0

    def noise(self, n: int, *dims: int, kind: str = "normal") -> torch.Tensor:
        """Random numbers for the ``n`` rows of this process's micro-batch (``kind`` normal or uniform).

        They are drawn for the whole global batch from (seed, step, call) and sliced, so a run on 1, 2 or 8
        processes, with or without accumulation, sees the same noise for the same sample: results do not depend
        on the number of processes. Outside the trainer (global_batch None) it draws ``n`` rows.
        """
        ctx = self.step_context
        total = ctx.global_batch or n
        lo = ctx.batch_lo if ctx.global_batch else 0
        seed = int(np.random.SeedSequence([self.seed, ctx.step, self._noise_calls]).generate_state(1)[0])
        self._noise_calls += 1
        return self.draw(seed, (total, *dims), kind)[lo : lo + n]

    _generators: dict | None = None

    def draw(self, seed: int, shape: tuple[int, ...], kind: str = "normal") -> torch.Tensor:
        """``shape`` random numbers (normal or uniform) from a generator seeded with ``seed``, on the device.

        On CPU they come from torch's CPU generator. On an accelerator they are drawn there by a generator of that
        device (no host-to-device copy per draw); its stream differs from the CPU's, so the same seed gives other
        numbers on a GPU than on a CPU (but the same on 1, 2 or 8 GPUs)."""
        device = self.accelerator.device
        fn = torch.randn if kind == "normal" else torch.rand
        if device.type == "cpu":
            return fn(shape, generator=torch.Generator().manual_seed(seed))
        if self._generators is None:
            self._generators = {}
        g = self._generators.get(device)
        if g is None:
            g = self._generators[device] = torch.Generator(device=device)
        return fn(shape, generator=g.manual_seed(seed), device=device)

    def local_gradients(self) -> contextlib.AbstractContextManager:
        """Around a whole micro-batch (forwards and updates) before the step's last: gradients stay on this
        process and are all-reduced once, after the last micro-batch."""
        return contextlib.nullcontext()

    def on_train_start(self, train_x: torch.Tensor) -> None:
        """Called once before the first step of a fresh (not resumed) run, on every rank, with all training rows."""

    def planned_steps(self, default: int) -> int:
        """The step budget; ``default`` is trainer.steps or epochs x steps_per_epoch. Multi-phase methods
        (OMASGAN's tasks) return the sum of their phases here."""
        return default

    def on_train_end(self, train_x: torch.Tensor) -> None:
        """Called once after the last step (and after a resume that finds training finished), before scoring,
        with all normal training rows: fit score statistics here (e.g. AMA's Gaussian on R-scores)."""

    def emit(self, relpath: str, write: Callable[[BinaryIO], None]) -> None:
        """Hand over a file for the cell folder (a method writes no files itself): ``write(f)`` fills it at
        ``relpath`` under the cell, on the main process only, after the current step or after ``on_train_end``.
        It runs later: take now whatever it writes that may change meanwhile."""
        path = PurePosixPath(relpath)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"artifact {relpath!r} must lie inside the cell folder: a relative path without '..'")
        self._artifacts.append((relpath, write))

    def take_artifacts(self) -> list[tuple[str, Callable[[BinaryIO], None]]]:
        """The files emitted since the last call, in order (every rank takes them; the main one writes them)."""
        taken, self._artifacts = self._artifacts, []
        return taken

    # the criteria selection_scores computes: what trainer.selection may name besides last and val_auroc
    selection_criteria: tuple[str, ...] = ()

    def selection_scores(self, val_x: torch.Tensor) -> dict[str, float]:
        """Extra model-selection criteria on the validation normals (lower is better), e.g. a feature loss;
        ``trainer.selection`` may name one of them."""
        return {}

    def effective_params(self) -> dict:
        """The hyper-parameters this cell ran with (metrics.json): its params dataclass (``self.params``, checked and
        completed) or its config; a method that resolves presets or ``auto`` values returns the resolved ones."""
        params = getattr(self, "params", None)
        if dataclasses.is_dataclass(params):
            return dataclasses.asdict(params)
        return {k: v for k, v in OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True).items()
                if k != "name"}

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
    """A method made of networks and optimisers, each wrapped by the strategy (DDP or a DeepSpeed engine).

    ``update(name, loss)`` is the only way a method changes a network: the strategy runs the backward pass (loss
    scaling under fp16) and accumulates gradients over the step's micro-batches for every network alike; the
    method counts the fp16 steps a loss scaler skipped.
    """

    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.nets: dict[str, nn.Module] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.scheds: dict[str, object] = {}
        self._skipped: dict[str, int | torch.Tensor] = {}  # counted on the device under fp16: no host sync per step
        self._updated: set[str] = set()

    @property
    def skipped_steps(self) -> dict[str, int]:
        """Optimiser steps an fp16 loss scaler skipped (overflow), per network."""
        return {k: int(v) for k, v in self._skipped.items()}

    def add(self, name: str, net: nn.Module, opt_factory, sched_factory=None, *, broadcast_buffers: bool = True,
            find_unused_parameters: bool = False) -> nn.Module:
        """Register a network, its optimiser (built from its parameters) and optionally an LR scheduler (built
        from the optimiser; the method steps it), placed on the device and wrapped by the strategy.

        A critic that sees two batches before one backward (real and fake) must use ``broadcast_buffers=False``
        or have no BatchNorm: DDP rewrites buffers in place at each forward otherwise.
        """
        net = self.strategy.place(net)
        opt = opt_factory(net.parameters())
        self.nets[name], self.opts[name] = self.strategy.wrap(
            net, opt, broadcast_buffers=broadcast_buffers, find_unused_parameters=find_unused_parameters)
        self._skipped[name] = 0
        if sched_factory is not None:
            # On the bare optimiser: Accelerate would step a prepared one once per process; a method's schedule
            # counts its own steps.
            self.scheds[name] = sched_factory(opt)
        return self.nets[name]

    def _module(self, net):
        return self.strategy.module(net)

    def bare(self, name: str) -> nn.Module:
        """Network ``name`` without its wrappers (DDP, DeepSpeed, torch.compile), for inference. A forward through
        a DDP wrapper may broadcast buffers (BatchNorm statistics) to the other processes, so a forward that not
        every process makes (the main process writing reconstructions) must not go through it."""
        return self._module(self.nets[name])

    def local_gradients(self):
        stack = contextlib.ExitStack()
        for net in self.nets.values():
            stack.enter_context(self.strategy.keep_gradients_local(net))
        return stack

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

    def begin(self, ctx: StepContext) -> None:
        super().begin(ctx)
        self._updated.clear()

    def update(self, name: str, loss: torch.Tensor) -> None:
        """Backward of ``loss`` into network ``name``; its optimiser steps with the step's last micro-batch."""
        if self.step_context.accumulate > 1:
            if name in self._updated:
                raise RuntimeError(
                    f"network {name!r} is updated twice in one train_step, which gradient accumulation cannot "
                    f"split; use trainer.accumulate=1 for method {self.name!r} (raise the batch size instead)")
            self._updated.add(name)
        skipped = self.strategy.update(self.nets[name], self.opts[name], loss, self.step_context)
        if skipped is not False:
            self._skipped[name] = self._skipped[name] + skipped

    def extra_state(self) -> dict:
        """Method state beyond networks and optimisers (e.g. a phase, a fitted centre); saved in checkpoints."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        """Everything a resume needs. Under ZeRO 1-2 this is a collective: call it on every rank."""
        return {
            "nets": {k: self._module(n).state_dict() for k, n in self.nets.items()},
            "opts": {k: self.strategy.optimizer_state(o) for k, o in self.opts.items()},
            "scheds": {k: s.state_dict() for k, s in self.scheds.items()},
            "scalers": {k: self.strategy.scaler_state(o) for k, o in self.opts.items()},
            "skipped_steps": self.skipped_steps,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, n in self.nets.items():
            self._module(n).load_state_dict(state["nets"][k])
        for k, o in self.opts.items():
            self.strategy.load_optimizer_state(k, o, state["opts"][k])
        for k, s in self.scheds.items():
            s.load_state_dict(state["scheds"][k])
        # a checkpoint holding one "scaler" for all networks gives each network that scaler's state
        scalers = state.get("scalers") or dict.fromkeys(self.opts, state.get("scaler"))
        for k, o in self.opts.items():
            self.strategy.load_scaler_state(o, scalers.get(k))
        self._skipped.update({k: int(v) for k, v in state.get("skipped_steps", {}).items()})
        self.load_extra_state(state["extra"])


class ShallowMethod(Method):
    """A scikit-learn estimator on flattened inputs, fitted once on the normal training rows."""

    trainable = False
    accelerated = False

    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        self.params = method_params(cfg, self.params_class)  # params_class: set by @register
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
