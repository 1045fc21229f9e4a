"""The SLURM launcher: submit a grid's cells as submitit job arrays and return.

Cells asking for the same resources form a group (``plan``); a group larger than the cluster allows in one array
goes out as several arrays (``array_plan``, within ``cluster_limits``). Every submitted job runs
``dadf.grid.runner.CellJob(cell_dir)``, which reads its cell folder; so a requeued or resubmitted job resumes from
what is on disk. Each cell records the jobs submitted for it in ``<cell>/slurm.json``; before submitting, the
launcher asks ``squeue`` whether a recorded job is still queued or running, so running the same command twice never
runs a cell twice. ``sacct`` is not used (many clusters, and the dev cluster in slurm/, have no accounting database).
"""
from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dadf.config import SlurmLauncher
from dadf.grid import locks, store

RECORD = store.CellDir.SLURM  # per cell: {"jobs": [{"job_id", "submitted", "stdout", "stderr", "resources"}]}

# squeue states of a job that has not ended (it may still start, run or come back after a requeue).
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "SUSPENDED", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


_DEFAULTS = SlurmLauncher()


@dataclass(frozen=True)
class Resources:
    """What one cell asks for: launcher=slurm's keys of the same names (their defaults and meaning:
    dadf.config.SlurmLauncher), refined per method / dataset in its ``resources``."""

    gpus: int | None = _DEFAULTS.gpus  # None: resources_for decides by the method's kind
    tasks: int | None = _DEFAULTS.tasks  # None = max(1, gpus), one DDP rank per GPU
    cpus: int = _DEFAULTS.cpus  # per task
    mem_gb: float = _DEFAULTS.mem_gb  # per cell (node)
    time_min: int = _DEFAULTS.time_min  # per job run; a requeued run gets a fresh limit
    partition: str | None = _DEFAULTS.partition
    account: str | None = _DEFAULTS.account
    qos: str | None = _DEFAULTS.qos
    constraint: str | None = _DEFAULTS.constraint

    @property
    def ntasks(self) -> int:
        return int(self.tasks) if self.tasks else max(1, int(self.gpus or 0))

    def describe(self) -> str:
        parts = [f"gpus={self.gpus}", f"tasks={self.ntasks}", f"cpus={self.cpus}", f"mem={self.mem_gb}G",
                 f"time={self.time_min}min"]
        parts += [f"{k}={getattr(self, k)}" for k in ("partition", "account", "qos", "constraint") if getattr(self, k)]
        return " ".join(parts)


RESOURCE_KEYS = [f.name for f in fields(Resources)]
LAUNCHER_KEYS = [f.name for f in fields(SlurmLauncher)]


class SlurmError(RuntimeError):
    """squeue/sbatch missing or failing, or a bad launcher config."""


def check_config(lcfg: DictConfig) -> None:
    """Refuse unknown keys (with the valid list) in the launcher config and in each resources entry, and limits
    below 1. Hydra already refuses an unknown top-level key when it composes (the schema), not one inside
    ``resources`` (untyped there)."""
    unknown = sorted(set(lcfg.keys()) - set(LAUNCHER_KEYS))
    if unknown:
        raise ValueError(f"launcher=slurm: unknown key(s) {unknown}; valid keys: {', '.join(LAUNCHER_KEYS)}")
    for match, entry in (lcfg.get("resources") or {}).items():
        if not OmegaConf.is_dict(entry) and not isinstance(entry, dict):
            raise ValueError(f"launcher.resources.{match} must be a mapping of {RESOURCE_KEYS}, got {entry!r}")
        bad = sorted(set(entry.keys()) - set(RESOURCE_KEYS))
        if bad:
            raise ValueError(f"launcher.resources.{match}: unknown key(s) {bad}; valid keys: "
                             f"{', '.join(RESOURCE_KEYS)} (match entries by method, dataset or method/dataset)")
    for key in ("max_array_size", "max_submit_jobs"):
        if lcfg.get(key) is not None and int(lcfg.get(key)) < 1:
            raise ValueError(f"launcher.{key}={lcfg.get(key)}: give at least 1, or null to read it from the cluster")
    if lcfg.get("gpus") is not None and int(lcfg.gpus) < 0:
        raise ValueError(f"launcher.gpus={lcfg.gpus}: give 0 or more GPUs per cell, or null for 1 per cell of a "
                         f"torch method and 0 for the shallow ones")
    if int(lcfg.signal_delay_s) < 10:
        raise ValueError(f"launcher.signal_delay_s={lcfg.signal_delay_s}: give the cell at least 10 s between the "
                         f"warning signal and the time limit to save its checkpoint")


def resources_for(cell_cfg: DictConfig | dict, lcfg: DictConfig) -> Resources:
    """The launcher's values, then resources[<dataset>], then resources[<method>], then
    resources[<method>/<dataset>]. GPUs left null: 1 for a torch method, 0 for a shallow one. A cell without a GPU
    goes to ``cpu_partition`` when it is set, unless a resources entry names the cell's partition."""
    values = {k: lcfg.get(k, getattr(Resources, k)) for k in RESOURCE_KEYS}
    method, dataset = cell_cfg["method"]["name"], cell_cfg["dataset"]["name"]  # a config or its plain data
    table = lcfg.get("resources") or {}
    partition_named = False
    for match in (dataset, method, f"{method}/{dataset}"):
        if match in table:
            entry = OmegaConf.to_container(table[match]) if OmegaConf.is_config(table[match]) else dict(table[match])
            values.update(entry)
            partition_named = partition_named or "partition" in entry
    if values["gpus"] is None:
        values["gpus"] = 1 if _accelerated(method) else 0
    if int(values["gpus"]) == 0 and lcfg.get("cpu_partition") and not partition_named:
        values["partition"] = lcfg.cpu_partition
    return Resources(**values)


def _accelerated(method: str) -> bool:
    import dadf.methods  # noqa: F401 -- every method registered (already imported wherever cells were composed)
    from dadf.methods.registry import accelerated

    return accelerated(method)


# ---------------------------------------------------------------------------------------------------- limits

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001  # slurm.conf's MaxArraySize when a cluster does not set it


@dataclass
class Limits:
    """What the cluster accepts from one user: ``max_array_size`` tasks per job array (SLURM's MaxArraySize: task
    indices 0 to MaxArraySize - 1) and ``max_submit_jobs`` jobs queued or running at once (an array task counts as
    one; None = no limit). ``source`` says where each came from: "launcher setting", "scontrol", "sacctmgr" or
    "SLURM default"."""

    max_array_size: int = SLURM_DEFAULT_MAX_ARRAY_SIZE
    max_submit_jobs: int | None = None
    # MaxJobCount: job records slurmctld holds at once, every user's and those ended in the last MinJobAge
    # seconds, array tasks one by one (None: not read)
    max_job_count: int | None = None
    source: dict[str, str] = field(default_factory=lambda: {"max_array_size": "SLURM default",
                                                            "max_submit_jobs": "SLURM default"})

    @property
    def array_size(self) -> int:
        """Cells per array: an array larger than the submit limit would be refused whole."""
        return min(self.max_array_size, self.max_submit_jobs or self.max_array_size)

    def describe(self) -> str:
        jobs = "none" if self.max_submit_jobs is None else self.max_submit_jobs
        total = "" if self.max_job_count is None else f", MaxJobCount={self.max_job_count} (scontrol)"
        return (f"max_array_size={self.max_array_size} ({self.source['max_array_size']}), "
                f"max_submit_jobs={jobs} ({self.source['max_submit_jobs']}){total}")


def cluster_limits(lcfg: DictConfig) -> Limits:
    """The launcher settings ``max_array_size`` / ``max_submit_jobs`` where set, else what the cluster says
    (``scontrol show config``; the user's association in ``sacctmgr`` where the cluster enforces its limits), else
    SLURM's defaults. Never fails: a cluster that does not answer gives the defaults."""
    size, jobs = lcfg.get("max_array_size"), lcfg.get("max_submit_jobs")
    limits = Limits()
    conf = _scontrol_config(_timeout(lcfg))
    if conf.get("MaxJobCount", "").isdigit():
        limits.max_job_count = int(conf["MaxJobCount"])
    if size is not None:
        limits.max_array_size, limits.source["max_array_size"] = int(size), "launcher setting"
    elif conf.get("MaxArraySize", "").isdigit():
        limits.max_array_size, limits.source["max_array_size"] = int(conf["MaxArraySize"]), "scontrol"
    if jobs is not None:
        limits.max_submit_jobs, limits.source["max_submit_jobs"] = int(jobs), "launcher setting"
    else:
        found = _association_max_submit(conf, _timeout(lcfg))
        if found is not None:
            limits.max_submit_jobs, limits.source["max_submit_jobs"] = found, "sacctmgr"
    return limits


def _timeout(lcfg: DictConfig) -> float:
    return float(lcfg.get("squeue_timeout_s") or 60)


def _scontrol_config(timeout: float) -> dict[str, str]:
    """``scontrol show config`` as {key: value}; {} where the controller cannot be asked."""
    try:
        out = _run(["scontrol", "show", "config"], timeout)
    except SlurmError:
        return {}
    conf = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            conf[key.strip()] = value.strip()
    return conf


def _association_max_submit(conf: dict[str, str], timeout: float) -> int | None:
    """The smallest MaxSubmitJobs of this user's associations, where the cluster keeps accounts and enforces their
    limits; None where it does not (no slurmdbd, limits not enforced, none set, or sacctmgr failing)."""
    if "slurmdbd" not in conf.get("AccountingStorageType", ""):
        return None
    enforce = conf.get("AccountingStorageEnforce", "")
    if "limits" not in enforce and "safe" not in enforce:
        return None
    try:
        out = _run(["sacctmgr", "show", "assoc", f"user={getpass.getuser()}", "format=MaxSubmit", "-n", "-P"],
                   timeout)
    except SlurmError:
        return None
    found = [int(v) for v in out.split() if v.strip().isdigit()]
    return min(found) if found else None


def queued_by_user(timeout: float = 60) -> int:
    """This user's jobs queued or running, array tasks one by one (what MaxSubmitJobs counts)."""
    return len(_run(["squeue", "--me", "--noheader", "--array", "--format=%i"], timeout).split())


# ---------------------------------------------------------------------------------------------------- squeue


def _run(cmd: list[str], timeout: float) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"{cmd[0]} not found: launcher=slurm needs the SLURM client commands on PATH "
                         f"(run on a login node, or bring up the dev cluster with slurm/up.sh)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(cmd)} did not answer in {timeout:.0f} s: is slurmctld up?") from None
    if out.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def queue_states(timeout: float = 60) -> dict[str, str]:
    """{job id: state} of the jobs slurmctld still knows, array tasks one by one ("123_4")."""
    states = {}
    for line in _run(["squeue", "--noheader", "--array", "--states=all", "--format=%i %T"], timeout).splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def read_record(cell_dir: Path) -> dict:
    try:
        return store.read_json(store.CellDir(cell_dir).slurm, default={"jobs": []})
    except store.Unreadable as e:  # its jobs are unknown: the cell is treated as not queued (and resubmitted)
        warnings.warn(f"{e}; the cell's SLURM jobs are unknown")
        return {"jobs": []}


def last_job(cell_dir: Path) -> dict | None:
    jobs = read_record(cell_dir)["jobs"]
    return jobs[-1] if jobs else None


def active_job(cell_dir: Path, states: dict[str, str]) -> tuple[str, str] | None:
    """(job id, squeue state) of a job recorded for this cell that has not ended, else None."""
    for job in reversed(read_record(cell_dir)["jobs"]):
        state = states.get(str(job["job_id"]))
        if state in ACTIVE_STATES:
            return str(job["job_id"]), state
    return None


def _append_record(cell_dir: Path, entry: dict) -> None:
    record = read_record(cell_dir)
    record["jobs"].append(entry)
    store.write_json(store.CellDir(cell_dir).slurm, record)


def grid_lock(grid_dir: Path):
    """One submitting launcher per grid at a time: two shells racing could otherwise both see a cell unqueued."""
    return locks.hold(Path(grid_dir) / ".slurm" / "launch.lock", f"the SLURM submission of {grid_dir}", wait=True)


def cancel(job_ids: list[str], wait_s: float = 120, timeout: float = 60) -> None:
    """scancel the jobs and wait until squeue no longer lists them as active (for force=true reruns)."""
    if not job_ids:
        return
    _run(["scancel", *job_ids], timeout)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        states = queue_states(timeout)
        if not any(states.get(j) in ACTIVE_STATES for j in job_ids):
            return
        time.sleep(1)
    raise SlurmError(f"jobs {job_ids} were cancelled but are still listed as active after {wait_s:.0f} s")


# ---------------------------------------------------------------------------------------------------- submit


def _executor(folder: Path, res: Resources, lcfg: DictConfig):
    import submitit

    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=int(lcfg.max_num_timeout),
                                      python=lcfg.get("python") or None)
    setup = [f"export OMP_NUM_THREADS={int(res.cpus)}", *[str(line) for line in (lcfg.get("setup") or [])]]
    params = dict(
        job_name=str(lcfg.get("job_name") or "dadf"),
        time=int(res.time_min),
        nodes=1,
        ntasks_per_node=res.ntasks,
        cpus_per_task=int(res.cpus),
        mem=f"{int(round(float(res.mem_gb) * 1024))}M",
        signal_delay_s=int(lcfg.signal_delay_s),
        array_parallelism=int(lcfg.array_parallelism),
        setup=setup,
        stderr_to_stdout=False,
    )
    if int(res.gpus or 0) > 0:
        params["gpus_per_node"] = int(res.gpus)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(res, key):
            params[key] = str(getattr(res, key))
    extra = lcfg.get("additional_parameters") or {}
    if extra:
        params["additional_parameters"] = OmegaConf.to_container(extra) if OmegaConf.is_config(extra) else dict(extra)
    executor.update_parameters(**params)
    return executor


def logs_folder(grid_dir: Path, lcfg: DictConfig) -> Path:
    base = Path(lcfg.logs_dir) / Path(grid_dir).name if lcfg.get("logs_dir") else Path(grid_dir) / ".slurm" / "logs"
    return base.resolve()


def plan(cells, lcfg: DictConfig) -> dict[Resources, list]:
    """Cells grouped by the resources they ask for, in grid order."""
    groups: dict[Resources, list] = {}
    known: dict[tuple[str, str], Resources] = {}  # resources depend on the method and dataset only
    for cell in cells:
        key = (cell.data["method"]["name"], cell.data["dataset"]["name"])
        if key not in known:
            known[key] = resources_for(cell.data, lcfg)
        groups.setdefault(known[key], []).append(cell)
    return groups


def array_plan(cells, lcfg: DictConfig, limits: Limits | None = None) -> list[tuple[Resources, list[list]]]:
    """Per resource group, its cells (in grid order) split into job arrays of at most ``limits.array_size`` cells.
    ``limits=None`` reads them (``cluster_limits``). Submits nothing."""
    size = (limits or cluster_limits(lcfg)).array_size
    return [(res, [group[i:i + size] for i in range(0, len(group), size)]) for res, group in plan(cells, lcfg).items()]


def submit(cells, lcfg: DictConfig, grid_dir: Path, limits: Limits | None = None) -> dict[str, str]:
    """Submit the cells (frozen configs already written) as the arrays of ``array_plan``; record each job id;
    return {cell id: job id}."""
    from dadf.grid.runner import CellJob

    submitted: dict[str, str] = {}
    limits = limits or cluster_limits(lcfg)
    for res, arrays in array_plan(cells, lcfg, limits):
        executor = _executor(logs_folder(grid_dir, lcfg), res, lcfg)
        if len(arrays) > 1:
            print(f"{sum(map(len, arrays))} cells ({res.describe()}) go out as {len(arrays)} arrays of at most "
                  f"{limits.array_size} ({limits.describe()})")
        for group in arrays:
            try:
                jobs = executor.submit_array([CellJob(str(Path(c.dir).resolve())) for c in group])
            except Exception as e:  # noqa: BLE001 -- sbatch refused (bad partition/account/qos, limits...)
                done = f" ({len(submitted)} cells were submitted before it; relaunching submits the rest)" \
                    if submitted else ""
                raise SlurmError(f"sbatch refused the array for {len(group)} cells ({res.describe()}): "
                                 f"{str(e).strip()[-1500:]}{done}; the cluster's limits as read: "
                                 f"{limits.describe()}") from None
            for cell, job in zip(group, jobs):
                _append_record(cell.dir, {"job_id": str(job.job_id), "submitted": time.time(),
                                          "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                                          "resources": res.describe()})
                submitted[cell.id] = str(job.job_id)
            array_id = str(jobs[0].job_id).split("_")[0]
            print(f"submitted job {array_id} ({len(group)} cell{'s' * (len(group) != 1)}, {res.describe()})")
    return submitted


def run_slurm(cells, lcfg: DictConfig, force: bool, retry_failed: bool, prepare) -> tuple[list, list, list, dict]:
    """(skipped as finished, skipped as queued/running, submitted cells, {cell id: job id}). Does not wait."""
    check_config(lcfg)
    if not cells:
        return [], [], [], {}
    grid_dir = Path(cells[0].dir).parent
    timeout = _timeout(lcfg)
    with grid_lock(grid_dir):
        states = queue_states(timeout)
        active = {c.id: active_job(c.dir, states) for c in cells}
        if force:
            cancel([a[0] for a in active.values() if a], timeout=timeout)
            active = {}
        queued = [c for c in cells if active.get(c.id)]
        limits = cluster_limits(lcfg)
        room, in_queue, why = None, 0, []
        if limits.max_submit_jobs is not None:
            in_queue = queued_by_user(timeout)
            room = max(0, limits.max_submit_jobs - in_queue)
            why.append(f"max_submit_jobs={limits.max_submit_jobs} ({limits.source['max_submit_jobs']}) and "
                       f"{in_queue} of your jobs were queued or running")
        if limits.max_job_count is not None:  # the controller's own cap, over every user's jobs
            free = max(0, limits.max_job_count - len(states) - 1)
            if room is None or free < room:
                room = free
                why.append(f"the cluster holds at most MaxJobCount={limits.max_job_count} jobs and knows of "
                           f"{len(states)}")
        todo, finished, waiting = take(
            [c for c in cells if not active.get(c.id)], room, lambda cs: prepare(cs, force, retry_failed),
            unfinished=lambda c: force or not (store.is_done(c.dir) or (
                not retry_failed and store.read_status(c.dir).get("state") == store.FAILED)))
        submitted = submit(todo, lcfg, grid_dir, limits) if todo else {}
        if waiting:
            print(f"{waiting} cell{'s' * (waiting != 1)} wait for the next launch: {'; '.join(why)}; run the same "
                  f"command again when some have ended to submit the rest")
    return finished, queued, todo, submitted


def take(candidates: list, room: int | None, prepare, unfinished) -> tuple[list, list, int]:
    """(cells to submit, cells found finished, how many unfinished cells wait): the first ``room`` cells (None = all)
    that ``prepare`` (cells -> (to run, finished)) takes to run, in grid order. Cells beyond the room are left as
    they are on disk; ``unfinished(cell)`` counts those a later launch would submit."""
    if room is None:
        todo, finished = prepare(candidates)
        return todo, finished, 0
    todo, finished, i = [], [], 0
    while len(todo) < room and i < len(candidates):
        batch = candidates[i:i + room - len(todo)]
        i += len(batch)
        more, done = prepare(batch)
        todo += more
        finished += done
    return todo, finished, sum(1 for c in candidates[i:] if unfinished(c))


def watch_hint(grid_dir: Path) -> str:
    rel = os.path.relpath(Path(grid_dir).resolve())
    rel = str(Path(grid_dir).resolve()) if rel.startswith("..") else rel
    return f"{shlex.quote(sys.executable)} jobs/status.py {shlex.quote(rel)}"


def cell_view(cell_dir: Path, states: dict[str, str] | None) -> dict:
    """What status.py shows for one cell: its state on disk, reconciled with the queue when there is one.

    Extra states: ``queued`` (submitted, not started), ``lost`` (on disk running/requeued/pending-with-a-job, but no
    job for it is in the queue any more: killed, out of memory, node failure; relaunching resubmits it). Where the
    queue does not decide (no job recorded, or the queue not read), a running cell whose process is gone or whose
    heartbeat stopped is ``lost`` too (store.liveness).
    """
    status = store.read_status(cell_dir)
    state = status.get("state", store.PENDING)
    try:
        job = last_job(cell_dir)
    except store.Unreadable:  # a damaged slurm.json: judge the cell by its own files alone
        job = None
    view = {"state": state, "reason": status.get("reason"), "job_id": job and job["job_id"],
            "log": job and job["stderr"], "stdout": job and job["stdout"]}
    if states is None or job is None or state in (store.DONE, store.UNREADABLE):
        lost = store.liveness(cell_dir, status)
        if lost:
            view.update(state=store.LOST, reason=lost)
        return view
    alive = active_job(cell_dir, states)
    if state == store.FAILED:
        if alive and alive[1] in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING"):
            # SLURM requeued the job after this run ended (e.g. a signal outside the step loop): a rerun is coming.
            view.update(state=store.REQUEUED, queue_state=alive[1],
                        reason=f"job {alive[0]} was requeued by SLURM after this run ended with: {view['reason']}")
        return view
    if alive is None:
        view["state"] = store.LOST
        view["reason"] = (f"job {job['job_id']} is no longer in the queue but the cell is {state} on disk "
                          f"(killed, out of memory, time limit without requeue or node failure); relaunch to resubmit")
    elif state == store.PENDING and alive[1] == "PENDING":
        view["state"] = "queued"
    view["queue_state"] = alive and alive[1]
    return view

