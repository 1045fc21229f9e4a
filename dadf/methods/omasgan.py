"""OMASGAN (arXiv:2110.15273; docs/omasgan.md): boundary samples, negative retraining, anomaly discriminator.

The paper's tasks are phases of one cell, chosen by the global step (``planned_steps`` sums them):

- ``task1``: G against critic D with an f-divergence in its variational form, eq. (2) (pearson, kl, js) or the
  KL-weighted WGAN of Song & Ermon (klwgan: E_P[T] - log E_Q[exp T] over a spectrally normalised critic).
- ``task2``: boundary generator B, initialised from G, minimises -m(B, G) + mu d(B, G) + nu s(B, z), eq. (3)-(5);
  m is estimated by a critic Db (initialised from D) that keeps maximising m(B, G), its variational sup.
- ``task3``: G' (from G) against C (from D), eq. (6): x and G(z) positive (alpha, gamma), B(z) negative (beta).
- ``task3j``: the anomaly discriminator J, eq. (7): B(z) anomalous, x (delta) and G'(z) (1 - delta) normal.

Score, eq. (8): AS(x) = J(x) + lambda fD(G', delta_x), fD(G', delta_x) = E_z log C(G'(z)) + log(1 - C(x)): the
variational divergence with G' as P and the Dirac at x as Q under C's (GAN, Jensen-Shannon type) conjugate; it is
high where C finds x unlike the data. ``score=task1|task3`` are the ablations (the model stopped after that task).
A finished task is handed over as ``tasks/task<k>.pt`` (Method.emit; the runner writes it into the cell folder);
``from_task=<that file>`` starts a new cell after it.
"""
from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dadf.checks import choices, within
from dadf.methods.base import TorchMethod, method_params
from dadf.methods.registry import register
from dadf.nets.omasgan import ARCHS, NetSpec, build_critic, build_generator, pick_omasgan_arch

PHASES = ("task1", "task2", "task3", "task3j")
NETS_OF = {"task1": ("G", "D"), "task2": ("B", "Db"), "task3": ("Gp", "C"), "task3j": ("J",)}
DIVERGENCES = ("klwgan", "kl", "pearson", "js")
SCORES = ("full", "detector", "task1", "task3")
LAST_PHASE = {"full": "task3j", "detector": "task3j", "task3": "task3", "task1": "task1"}
OmasganArch = choices("OmasganArch", ARCHS)
Divergence = choices("Divergence", DIVERGENCES)
GeneratorLoss = choices("GeneratorLoss", ("minimax", "nonsaturating"))
DistanceTo = choices("DistanceTo", ("generated", "real"))
Task2Critic = choices("Task2Critic", ("boundary", "frozen"))
OmasganScore = choices("OmasganScore", SCORES)


def load_task_file(path: Path) -> dict:
    """A ``tasks/task<k>.pt`` file, read as data (``weights_only``): dadf writes only tensors and plain values
    there, so a file holding anything else (an object that could run code when loaded) is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises many types for damaged or refused files
        raise ValueError(f"omasgan: from_task={path} cannot be loaded as data ({type(e).__name__}: "
                         f"{str(e)[:300]}); point it at a finished task's file, <cell>/tasks/task<k>.pt") from e


# ------------------------------------------------------------------------------------------------ losses
def activation(div: str, v: torch.Tensor) -> torch.Tensor:
    """g_f: the critic's output mapped into the domain of f* (Nowozin et al. 2016, Table 2)."""
    if div == "js":  # the original GAN: g_f(v) = -log(1 + exp(-v)) = log D(x)
        return -F.softplus(-v)
    return v  # kl, pearson: g_f(v) = v


def conjugate(div: str, v: torch.Tensor) -> torch.Tensor:
    """f*(g_f(v)): KL exp(t - 1), Pearson t^2/4 + t, GAN -log(1 - exp(t)) = softplus(v)."""
    if div == "kl":
        return torch.exp(v - 1)
    if div == "pearson":
        return 0.25 * v * v + v
    if div == "js":
        return F.softplus(v)
    raise ValueError(f"divergence {div!r} has no conjugate here; choose one of kl, pearson, js")


def log_mean_exp(v: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(v, dim=0) - math.log(len(v))


def divergence(div: str, v_p: torch.Tensor, v_q: torch.Tensor) -> torch.Tensor:
    """The critic's variational estimate of D(P || Q) from its outputs on samples of P and of Q."""
    if div == "klwgan":
        return v_p.mean() - log_mean_exp(v_q)
    return activation(div, v_p).mean() - conjugate(div, v_q).mean()


def generator_loss(div: str, v_fake: torch.Tensor, form: str) -> torch.Tensor:
    """What G minimises: the fake-sample part of the divergence (minimax, eq. 2) or, for f-GANs,
    -E g_f(V(G(z))) (nonsaturating; Nowozin et al. section 3.2). klwgan has one form."""
    if div == "klwgan":
        return log_mean_exp(v_fake).neg()
    if form == "nonsaturating":
        return -activation(div, v_fake).mean()
    return -conjugate(div, v_fake).mean()


def nearest_distance(b: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """d(B(z_i), bank) = min_j ||B(z_i) - bank_j||_2 for each row i, eq. (4)."""
    return torch.cdist(b.flatten(1), bank.flatten(1)).min(dim=1).values


def dispersion(b: torch.Tensor, z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """s(B(z_i), z_i) of eq. (5) for every row i: the mean over all j != i of ||z_i - z_j|| / ||B(z_i) - B(z_j)||.
    Every pair of the batch counts (not only the first row's)."""
    n = len(z)
    if n < 2:
        raise ValueError("dispersion needs a batch of at least 2 rows")
    dz = torch.cdist(z.flatten(1), z.flatten(1))
    db = torch.cdist(b.flatten(1), b.flatten(1))
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    ratio = torch.where(off, dz / (db + eps), torch.zeros_like(dz))
    return ratio.sum(dim=1) / (n - 1)


def boundary_loss(div: str, v_g: torch.Tensor, v_b: torch.Tensor, b: torch.Tensor, z: torch.Tensor,
                  bank: torch.Tensor, mu: float, nu: float) -> dict[str, torch.Tensor]:
    """Eq. (3): -m(B, G) + mu d(B, G) + nu s(B, z), each term averaged over the batch."""
    m = divergence(div, v_g, v_b)
    d = nearest_distance(b, bank).mean()
    s = dispersion(b, z).mean()
    return {"loss": -m + mu * d + nu * s, "m": m, "d": d, "s": s}


def bce_logits(v: torch.Tensor, positive: bool) -> torch.Tensor:
    """-E log sigmoid(v) (positive) or -E log(1 - sigmoid(v)) (negative)."""
    return F.softplus(-v).mean() if positive else F.softplus(v).mean()


def retrain_critic_loss(v_gp, v_x, v_b, v_g, alpha, beta, gamma) -> torch.Tensor:
    """C maximises eq. (6): E log(1 - C(G')) + alpha E log C(x) + beta E log(1 - C(B)) + gamma E log C(G)."""
    return (bce_logits(v_gp, False) + alpha * bce_logits(v_x, True) + beta * bce_logits(v_b, False)
            + gamma * bce_logits(v_g, True))


def retrain_generator_loss(v_gp: torch.Tensor, form: str) -> torch.Tensor:
    """G' minimises E log(1 - C(G'(z))) (minimax, eq. 6) or -E log C(G'(z)) (nonsaturating)."""
    return -bce_logits(v_gp, True) if form == "minimax" else bce_logits(v_gp, True)


def detector_loss(v_b, v_x, v_gp, delta) -> torch.Tensor:
    """J maximises eq. (7): E log J(B) + delta E log(1 - J(x)) + (1 - delta) E log(1 - J(G'))."""
    return bce_logits(v_b, True) + delta * bce_logits(v_x, False) + (1 - delta) * bce_logits(v_gp, False)


# ------------------------------------------------------------------------------------------------ method
@dataclasses.dataclass
class OmasganParams:
    """Task 1 f-divergence GAN, Task 2 boundary generator B, Task 3 negative retraining of G' and the anomaly
    discriminator J. Score AS(x) = J(x) + lam * fD(G', delta_x)."""

    arch: OmasganArch = OmasganArch.auto  # auto | dcgan | resnet32 | mlp (see dadf/nets/omasgan.py)
    z_dim: int = 128  # the paper: z ~ N(0, I_128)
    hidden: tuple[int, ...] = (128, 128)  # mlp widths of generators and critics
    spectral_norm: bool = True  # critics' Lipschitz control (klwgan needs one)
    divergence: Divergence = Divergence.klwgan  # Task 1 / Task 2 metric: klwgan | kl | pearson | js
    generator_loss: GeneratorLoss = GeneratorLoss.minimax  # minimax (eq. 2 and 6) | nonsaturating
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    # Steps per phase (task1, task2, task3, task3j); null: task_fractions of the trainer's budget.
    task_steps: tuple | None = None
    task_fractions: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)
    mu: float = 0.2  # MNIST values of the paper
    nu: float = 0.25
    q: int = 1024  # samples G(z_j) of the distance term, eq. (4)
    distance_to: DistanceTo = DistanceTo.generated  # generated (eq. 4) | real (the batch's data)
    task2_critic: Task2Critic = Task2Critic.boundary  # boundary: Db maximises m(B, G) | frozen: Db stays Task 1's D
    alpha: float = 0.35  # eq. (6); the paper gives alpha + gamma = 0.7 and beta = 0.7 (CIFAR), not the split
    beta: float = 0.7
    gamma: float = 0.35
    delta: float = dataclasses.field(default=0.5, metadata=within(0, 1))  # eq. (7)
    lam: float = 1.0  # lambda of eq. (8): not given by the paper
    score: OmasganScore = OmasganScore.full  # full | detector (J alone) | task3 (fD(G', .)) | task1 (fD(G, .))
    from_task: str | None = None  # a tasks/task<k>.pt of another cell: start after that task
    plot: bool = True  # 2-D data: save boundary.png (data, G and B samples) in the cell folder

    def __post_init__(self):
        self.hidden, self.betas = tuple(self.hidden), tuple(self.betas)
        self.task_fractions = tuple(self.task_fractions)
        if len(self.task_fractions) != 4 or min(self.task_fractions) < 0 or sum(self.task_fractions) <= 0:
            raise ValueError(f"omasgan: task_fractions={self.task_fractions} needs 4 non-negative shares "
                             f"(task1, task2, task3, task3j)")
        if self.task_steps is not None:
            self.task_steps = tuple(int(s) for s in self.task_steps)
            if len(self.task_steps) != 4 or min(self.task_steps) < 0:
                raise ValueError(f"omasgan: task_steps={self.task_steps} needs 4 step counts "
                                 f"(task1, task2, task3, task3j) or null")


@register("omasgan", params=OmasganParams)
class OMASGAN(TorchMethod):
    def __init__(self, cfg, info, strategy, seed):
        super().__init__(cfg, info, strategy, seed)
        p = self.params = method_params(cfg, OmasganParams)
        self.spec = NetSpec(pick_omasgan_arch(info.shape, info.kind, p.arch), p.z_dim, tuple(info.shape),
                            p.spectral_norm, p.hidden, info.kind)
        self.start_task = self._read_start(p.from_task)
        last = PHASES.index(LAST_PHASE[p.score])
        self.phases = [ph for ph in PHASES[: last + 1] if PHASES.index(ph) > self._start_index()]
        if not self.phases:
            raise ValueError(f"omasgan: from_task holds {self.start_task}, nothing is left to train for "
                             f"score={p.score}")

        def adam(ps):
            return torch.optim.Adam(ps, lr=p.lr, betas=p.betas)

        for name in ("G", "B", "Gp"):
            self.add(name, build_generator(self.spec), adam)
        for name in ("D", "Db", "C", "J"):
            # Critics see real, generated and boundary rows in one concatenated forward (no BatchNorm).
            self.add(name, build_critic(self.spec), adam, broadcast_buffers=False)
        self.bounds: list[tuple[str, int, int]] = []  # (phase, first step, end step)
        self.constants: dict[str, float] = {}

    # -- phases -------------------------------------------------------------------------------------------
    def _start_index(self) -> int:
        return PHASES.index(self.start_task) if self.start_task else -1

    def _read_start(self, path):
        if path is None:
            return None
        f = Path(path)
        if not f.is_file():
            raise FileNotFoundError(f"omasgan: from_task={path} does not exist; point it at a finished task's "
                                    f"checkpoint, <cell>/tasks/task<k>.pt")
        saved = load_task_file(f)
        if saved.get("spec") != dataclasses.asdict(self.spec):
            raise ValueError(f"omasgan: {path} was trained with networks {saved.get('spec')}, this cell builds "
                             f"{dataclasses.asdict(self.spec)}; use the same arch, z_dim, hidden and data shape")
        self._start_state = saved
        return saved["task"]

    def planned_steps(self, default: int) -> int:
        p = self.params
        if p.task_steps is not None:
            counts = dict(zip(PHASES, p.task_steps))
        else:
            shares = dict(zip(PHASES, p.task_fractions))
            total_share = sum(shares[ph] for ph in self.phases)
            counts = {ph: max(1, int(round(default * shares[ph] / total_share))) for ph in PHASES}
        self.bounds, start = [], 0
        for ph in self.phases:
            self.bounds.append((ph, start, start + counts[ph]))
            start += counts[ph]
        return start

    def phase_at(self, step: int) -> tuple[str, int]:
        """(phase, first step of that phase) at global step ``step``."""
        if not self.bounds:
            self.planned_steps(self.info.total_steps)
        for ph, lo, hi in self.bounds:
            if step < hi:
                return ph, lo
        return self.bounds[-1][0], self.bounds[-1][1]

    def _module_of(self, name):
        return self._module(self.nets[name])

    def _copy(self, dst: str, src: str) -> None:
        self._module_of(dst).load_state_dict(self._module_of(src).state_dict())

    def _enter(self, phase: str) -> None:
        """At a phase's first step: keep the finished task and initialise this task's networks."""
        i = [b[0] for b in self.bounds].index(phase)
        if i > 0:
            self.emit_task(self.bounds[i - 1][0])
        if phase == "task2":
            self._copy("B", "G")
            self._copy("Db", "D")
        elif phase == "task3":
            self._copy("Gp", "G")
            self._copy("C", "D")

    def emit_task(self, phase: str) -> None:
        """Hands over ``tasks/<phase>.pt``: the networks of every task up to ``phase``, for ``from_task``."""
        upto = PHASES[: PHASES.index(phase) + 1]
        nets = {n: self._module_of(n).state_dict() for ph in upto for n in NETS_OF[ph]}
        blob = io.BytesIO()  # serialised now, as the networks are at this step
        torch.save({"task": phase, "nets": nets, "spec": dataclasses.asdict(self.spec),
                    "params": dataclasses.asdict(self.params)}, blob)
        self.emit(f"tasks/{phase}.pt", lambda f: f.write(blob.getvalue()))

    def on_train_start(self, train_x):
        if self.start_task is None:
            return
        for name, state in self._start_state["nets"].items():
            self._module_of(name).load_state_dict(state)

    # -- sampling -----------------------------------------------------------------------------------------
    def _z(self, n: int) -> torch.Tensor:
        return self.noise(n, self.params.z_dim)

    def _shared_z(self, n: int, tag: int) -> torch.Tensor:
        """n latent rows, the same on every process (the Q-sample bank of eq. 4; the score's constants)."""
        s = int(np.random.SeedSequence([self.seed, self.step_context.step, 7919, tag]).generate_state(1)[0])
        return self.draw(s, (n, self.params.z_dim))

    def _sample(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """Samples of a fixed generator: eval() mode (BatchNorm running statistics), its buffers untouched."""
        module = self._module_of(name)
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                return torch.cat([module(z[i : i + 1024]) for i in range(0, len(z), 1024)])
        finally:
            module.train(was)

    # -- training -----------------------------------------------------------------------------------------
    def train_step(self, batch, step):
        if self.step_context.global_batch is None:  # outside the trainer (unit tests): no begin() set the step
            self.step_context = dataclasses.replace(self.step_context, step=step)
        phase, first = self.phase_at(step)
        if step == first:  # a phase given 0 steps still initialises its networks (and is kept as a task file)
            for ph, lo, _ in self.bounds:
                if lo == step:
                    self._enter(ph)
        return getattr(self, f"_{phase}")(batch["x"])

    def _task1(self, x):
        p, n = self.params, len(x)
        with torch.no_grad():
            fake = self.nets["G"](self._z(n))
        v = self.nets["D"](torch.cat([x, fake]))
        d_loss = -divergence(p.divergence, v[:n], v[n:])
        self.update("D", d_loss)
        fake = self.nets["G"](self._z(n))
        with self.frozen("D") as d:
            g_loss = generator_loss(p.divergence, d(fake), p.generator_loss)
        self.update("G", g_loss)
        return {"t1_critic": d_loss.detach(), "t1_gen": g_loss.detach()}

    def _task2(self, x):
        p, n = self.params, len(x)
        z = self._z(n)
        g = self._sample("G", z)
        out = {}
        if p.task2_critic == "boundary":
            with torch.no_grad():
                b = self.nets["B"](z)
            v = self.nets["Db"](torch.cat([g, b]))
            db_loss = -divergence(p.divergence, v[:n], v[n:])
            self.update("Db", db_loss)
            out["t2_critic"] = db_loss.detach()
        bank = x if p.distance_to == "real" else self._sample("G", self._shared_z(p.q, 0))
        b = self.nets["B"](z)
        with self.frozen("Db") as db:
            v = db(torch.cat([g, b]))
        terms = boundary_loss(p.divergence, v[:n], v[n:], b, z, bank, p.mu, p.nu)
        self.update("B", terms["loss"])
        return {**out, **{f"t2_{k}": t.detach() for k, t in terms.items()}}

    def _task3(self, x):
        p, n = self.params, len(x)
        z, zb = self._z(n), self._z(n)
        g, b = self._sample("G", z), self._sample("B", zb)
        with torch.no_grad():
            gp = self.nets["Gp"](self._z(n))
        v = self.nets["C"](torch.cat([gp, x, b, g]))
        c_loss = retrain_critic_loss(*v.split(n), p.alpha, p.beta, p.gamma)
        self.update("C", c_loss)
        gp = self.nets["Gp"](self._z(n))
        with self.frozen("C") as c:
            gp_loss = retrain_generator_loss(c(gp), p.generator_loss)
        self.update("Gp", gp_loss)
        return {"t3_critic": c_loss.detach(), "t3_gen": gp_loss.detach()}

    def _task3j(self, x):
        p, n = self.params, len(x)
        b, gp = self._sample("B", self._z(n)), self._sample("Gp", self._z(n))
        v = self.nets["J"](torch.cat([b, x, gp]))
        j_loss = detector_loss(*v.split(n), p.delta)
        self.update("J", j_loss)
        return {"t3_detector": j_loss.detach()}

    # -- scoring ------------------------------------------------------------------------------------------
    def on_train_end(self, train_x):
        if self.bounds:
            self.emit_task(self.bounds[-1][0])
        # The score's constants come from a fixed bank of z, the same at every call.
        self.step_context = dataclasses.replace(self.step_context, step=0)
        with self.evaluating():
            z = self._shared_z(1024, 1)
            v = self._module_of("D")(self._sample("G", z))
            if self.params.divergence == "klwgan":
                self.constants["task1"] = float(v.mean())
            else:
                self.constants["task1"] = float(activation(self.params.divergence, v).mean())
            self.constants["task3"] = float(-F.softplus(-self._module_of("C")(self._sample("Gp", z))).mean())
        if self.params.plot and tuple(self.info.shape) == (2,):
            self.emit("boundary.png", self.plot_boundary(train_x))

    def fd_task1(self, x):
        """fD(G, delta_x) with Task 1's critic D: E_z g_f(D(G(z))) - f*(g_f(D(x))) (klwgan: ... - D(x))."""
        v = self.bare("D")(x)
        div = self.params.divergence
        tail = v if div == "klwgan" else conjugate(div, v)
        return self.constants.get("task1", 0.0) - tail

    def fd_task3(self, x):
        """fD(G', delta_x) with Task 3's critic C: E_z log C(G'(z)) + log(1 - C(x))."""
        return self.constants.get("task3", 0.0) - F.softplus(self.bare("C")(x))

    def scores(self, x):
        """Every score the phases run so far define, from one pass: the paper's ablations of Figures 6-8 (Task 1's
        critic, Task 3's, J alone) come with each full run; ``"score"`` is the one ``method.score`` names."""
        p = self.params
        ran = PHASES[: PHASES.index(LAST_PHASE[p.score]) + 1]
        with self.evaluating():
            out = {"task1": self.fd_task1(x).float()}
            if "task3" in ran:
                out["task3"] = self.fd_task3(x).float()
            if "task3j" in ran:
                out["detector"] = torch.sigmoid(self.bare("J")(x)).float()
                out["full"] = out["detector"] + p.lam * out["task3"]
        out["score"] = out[p.score]
        return out

    def score(self, x):
        return self.scores(x)["score"]

    def boundary_samples(self, n: int = 512) -> torch.Tensor:
        return self._sample("B", self._shared_z(n, 2))

    def plot_boundary(self, train_x: torch.Tensor):
        """The paper's Figure 3: the data (blue), G(z) (grey) and the boundary samples B(z) (green). Returns the
        PNG's writer: the samples are taken now, the figure is drawn only where the file is written."""
        x = train_x[:2000].cpu().numpy()
        g = self._sample("G", self._shared_z(512, 3)).cpu().numpy()
        b = self.boundary_samples().cpu().numpy()

        def write(f):
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 5))
            ax.scatter(x[:, 0], x[:, 1], s=3, c="tab:blue", label="data x")
            ax.scatter(g[:, 0], g[:, 1], s=3, c="grey", alpha=0.5, label="G(z)")
            ax.scatter(b[:, 0], b[:, 1], s=4, c="tab:green", label="B(z)")
            ax.legend(loc="upper right")
            ax.set_title("OMASGAN Task 2: boundary samples")
            fig.savefig(f, dpi=100, format="png")
            plt.close(fig)

        return write

    def extra_state(self):
        return {"bounds": list(self.bounds), "start_task": self.start_task}

    def load_extra_state(self, state):
        if state.get("start_task") != self.start_task:
            raise ValueError(f"omasgan: the checkpoint started after {state.get('start_task')}, this config after "
                             f"{self.start_task}; from_task changed, which makes a different cell")
