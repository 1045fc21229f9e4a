"""Chaos benchmark: run a small real grid, kill the launcher or a cell's process at random moments, relaunch after
each kill, and compare every cell with an uninterrupted run (scores and final weights, bit for bit).

    python jobs/bench_chaos.py [--kills 20 --seed 0 --root /data --workdir DIR --workers 1]
    python jobs/bench_chaos.py --kills 3 -- trainer.steps=100        # extra overrides go to every launch

1. Reference: one uninterrupted `jobs/launch_grid.py` of the grid (default: `grid=mnist_ovr method=ae` on classes
   0 and 1, 150 steps, a checkpoint every 10); each cell's `scores.npz` and newest checkpoint are kept.
2. Chaos: launches in a fresh runs folder. Each launch runs in its own process group and carries a unique
   `DADF_CHAOS_TAG` in its environment, so that every descendant can be found in /proc, even one whose parent died.
   After a seeded random delay (uniform over the reference launch's wall time) one seeded kind of kill is sent:
   the launcher (SIGKILL, SIGTERM, or SIGINT to its process group, as Ctrl-C does) or a cell's worker process
   (SIGKILL, SIGTERM). The benchmark waits for the launcher to exit (a timeout counts as a hang, and the group is
   killed), waits a grace period, and counts every tagged process still alive as an orphan (printed, then killed
   so the benchmark can go on). Then it relaunches. When a launch finishes the grid before its kill, the
   remaining kills go to a new runs folder (a new round).
3. A final uninterrupted relaunch finishes the last round.
4. Every cell of every round is compared with the reference: scores.npz arrays and the `method` entry of the
   newest checkpoint's state.pt, bit for bit. A cell that is missing, not done, or has unreadable files is lost.

Prints a table and a headline, writes JSON (default bench/chaos.json). It exits 0 whatever the product does (it is
a report); it exits 2 only when it cannot run at all (bad arguments, the reference launch fails).
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from dadf.grid.store import CellDir

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TAG_VAR = "DADF_CHAOS_TAG"
SESSION = f"chaos-{uuid.uuid4().hex[:12]}"  # every launch's tag starts with it: the cleanup finds them all

KINDS = [("launcher", "SIGKILL"), ("launcher", "SIGTERM"), ("launcher", "SIGINT"),
         ("cell", "SIGKILL"), ("cell", "SIGTERM")]
HELPERS = ("resource_tracker", "semaphore_tracker", "forkserver")  # multiprocessing's helpers are not cells


# ---------------------------------------------------------------------------------------------------- processes

def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def tagged_processes(prefix: str) -> list[dict]:
    """Live processes whose environment holds DADF_CHAOS_TAG starting with ``prefix`` (zombies excluded)."""
    key = f"{TAG_VAR}=".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        env = _read(f"/proc/{entry}/environ")
        if key not in env:
            continue
        tag = next((v[len(key):].decode(errors="replace") for v in env.split(b"\0") if v.startswith(key)), "")
        if not tag.startswith(prefix):
            continue
        stat = _read(f"/proc/{entry}/stat").decode(errors="replace")
        fields = stat[stat.rfind(")") + 2:].split() if ")" in stat else []
        if not fields or fields[0] in ("Z", "X"):
            continue
        cmd = _read(f"/proc/{entry}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        found.append({"pid": int(entry), "ppid": int(fields[1]), "pgid": int(fields[2]), "tag": tag,
                      "cmdline": cmd})
    return sorted(found, key=lambda p: p["pid"])


def is_cell_process(p: dict, launcher_pid: int) -> bool:
    """A Python process under the launcher that runs cells (a pool worker, train.py, torchrun...)."""
    if p["pid"] == launcher_pid:
        return False
    argv0 = p["cmdline"].split(" ", 1)[0]
    return "python" in Path(argv0).name and not any(h in p["cmdline"] for h in HELPERS)


def kill_tagged(prefix: str, timeout: float = 10.0) -> list[dict]:
    """SIGKILL every process carrying a tag with ``prefix``; wait until they are gone. Returns those it found."""
    found = tagged_processes(prefix)
    for p in found:
        try:
            os.kill(p["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    while tagged_processes(prefix) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def short_cmd(cmd: str, n: int = 90) -> str:
    return cmd if len(cmd) <= n else cmd[: n - 3] + "..."


class Launch:
    """One `jobs/launch_grid.py` subprocess in its own session (process group), tagged in its environment."""

    current: Launch | None = None  # the one running, for the cleanup on exit

    def __init__(self, overrides: list[str], log: Path, tag: str, threads: int):
        self.tag, self.log = tag, log
        env = dict(os.environ, **{TAG_VAR: tag, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                                  "PYTHONUNBUFFERED": "1"})
        # the launches import the dadf of this tree, whatever the venv's install points at
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([PYTHON, "jobs/launch_grid.py", *overrides], cwd=REPO, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        Launch.current = self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def wait(self, timeout: float) -> int | None:
        """Exit code, or None when it is still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill_group()
        self._out.close()
        if Launch.current is self:
            Launch.current = None

    def tail(self, n: int = 2000) -> str:
        self._out.flush()
        return self.log.read_bytes()[-n:].decode(errors="replace")


def cleanup() -> None:
    """Leave nothing behind: the running launcher's group, then anything still carrying this session's tag."""
    if Launch.current is not None:
        Launch.current.close()
    left = kill_tagged(SESSION)
    for p in left:
        print(f"cleanup: killed leftover pid {p['pid']}: {short_cmd(p['cmdline'])}", file=sys.stderr)


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------------------- cells

def cell_dirs(grid_dir: Path) -> list[str]:
    grid = grid_dir / "grid.json"
    try:
        return list(json.loads(grid.read_text())["cells"])
    except (OSError, ValueError, KeyError):
        return []


def read_state(cell: Path) -> str:
    try:
        return json.loads(CellDir(cell).status.read_text()).get("state", "?")
    except FileNotFoundError:
        return "missing" if not cell.exists() else "no-status"
    except (OSError, ValueError):
        return "unreadable"


def status_line(cell: Path) -> str:
    """The state, with the reason when there is one: "failed: KeyboardInterrupt: ..."."""
    state = read_state(cell)
    try:
        reason = json.loads(CellDir(cell).status.read_text()).get("reason")
    except (OSError, ValueError):
        reason = None
    return f"{state}: {reason[:200]}" if reason else state


def is_done(cell: Path) -> bool:
    return read_state(cell) == "done" and CellDir(cell).metrics.exists()


def newest_checkpoint(cell: Path) -> tuple[int, Path] | None:
    best = None
    root = CellDir(cell).checkpoints
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith("step-") and d.name[5:].isdigit() and (d / "COMPLETE").exists() \
                    and (d / "state.pt").exists():
                step = int(d.name[5:])
                if best is None or step > best[0]:
                    best = (step, d)
    return best


def load_cell(cell: Path) -> dict:
    """The arrays of scores.npz and the newest checkpoint's step and `method` state; raises when unreadable."""
    import numpy as np

    from dadf.train.checkpoint import load_data

    with np.load(CellDir(cell).scores, allow_pickle=False) as z:
        scores = {k: z[k] for k in z.files}
    ck = newest_checkpoint(cell)
    if ck is None:
        raise FileNotFoundError(f"no complete checkpoint under {CellDir(cell).checkpoints}")
    state = load_data(ck[1] / "state.pt")  # as data, as every resume loads it
    return {"scores": scores, "step": ck[0], "ckpt_step": state.get("step"), "method": state["method"]}


def first_difference(a, b, path: str = "") -> str | None:
    """Where two nested states differ (bit for bit for tensors and arrays), or None when they are identical."""
    import numpy as np
    import torch

    if type(a) is not type(b):
        return f"{path or '<root>'}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
        if a.numel() and a.flatten().view(torch.uint8).ne(b.flatten().view(torch.uint8)).any():
            return f"{path}: tensor values differ"
        return None
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype.hasobject:
            return None if np.array_equal(a, b) else f"{path}: array values differ"
        return None if np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes() \
            else f"{path}: array values differ"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(map(str, set(a) ^ set(b)))} differ"
        for k in a:
            d = first_difference(a[k], b[k], f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) and a != a and b != b:
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def compare_cell(ref: dict, cell: Path) -> dict:
    """{"verdict": identical | differs | lost, "detail": ...} of one chaos cell against the reference."""
    state = read_state(cell)
    if state != "done":
        reason = ""
        try:
            reason = json.loads(CellDir(cell).status.read_text()).get("reason", "")
        except (OSError, ValueError):
            pass
        return {"verdict": "lost", "detail": f"state {state}" + (f": {reason[:160]}" if reason else "")}
    if not CellDir(cell).metrics.exists():
        return {"verdict": "lost", "detail": "done but metrics.json is missing"}
    try:
        got = load_cell(cell)
    except Exception as e:  # noqa: BLE001 -- any unreadable file is a corrupt cell
        return {"verdict": "lost", "detail": f"corrupt: {type(e).__name__}: {str(e)[:160]}"}
    diff = first_difference(ref["scores"], got["scores"], "scores")
    if diff is None and ref["step"] != got["step"]:
        diff = f"newest checkpoint at step {got['step']}, reference {ref['step']}"
    if diff is None:
        diff = first_difference(ref["method"], got["method"], "weights")
    return {"verdict": "differs", "detail": diff} if diff else {"verdict": "identical", "detail": ""}


# ---------------------------------------------------------------------------------------------------- the run

class Round:
    """One chaos runs folder, run until its grid is done."""

    def __init__(self, index: int, base: Path, grid_name: str):
        self.index = index
        self.runs_dir = base / f"chaos-{index}"
        self.grid_dir = self.runs_dir / grid_name
        self.interrupted: dict[str, list[int]] = {}  # cell id -> kill numbers that caught it in progress
        self.launches = 0

    def cells(self) -> list[str]:
        return cell_dirs(self.grid_dir)

    def done(self, expected: list[str]) -> bool:
        return all(is_done(self.grid_dir / c) for c in expected)

    def snapshot(self, expected: list[str]) -> dict[str, str]:
        """Each cell's state and newest checkpoint step, e.g. "running@40"."""
        out = {}
        for c in expected:
            ck = newest_checkpoint(self.grid_dir / c)
            out[c] = f"{read_state(self.grid_dir / c)}@{ck[0] if ck else '-'}"
        return out

    def in_progress(self, expected: list[str]) -> dict[str, dict]:
        out = {}
        for c in expected:
            d = self.grid_dir / c
            state = read_state(d)
            if state == "running":
                ck = newest_checkpoint(d)
                out[c] = {"state": state, "checkpoint_step": ck[0] if ck else None}
        return out


def grid_overrides(args, fallback: bool) -> tuple[list[str], str, str]:
    """(overrides without runs_dir/shards_dir, grid name, dataset name)."""
    classes = "[" + ",".join(str(int(c)) for c in args.classes.split(",")) + "]"
    common = ["method=ae", f"grid.classes={classes}", f"trainer.steps={args.steps}",
              f"trainer.checkpoint_every={args.checkpoint_every}", f"trainer.batch_size={args.batch_size}",
              f"launcher.workers={args.workers}"]
    if args.threads:
        common.append(f"launcher.threads_per_worker={args.threads}")
    if fallback:
        return ["grid=quickstart", *common, *args.overrides], "quickstart", "digits"
    over = ["grid=mnist_ovr", f"dataset.root={Path(args.root or 'data').resolve()}", *common]
    if args.size:
        over.append(f"dataset.size={args.size}")
    return over + list(args.overrides), "mnist_ovr", "mnist"


def settle(launch: Launch, grace: float, rnd: Round | None = None, expected: list[str] = ()
           ) -> tuple[list[dict], list[dict], dict[str, str]]:
    """After the launcher exited: (tagged processes alive right then, those still alive after ``grace`` s = orphans,
    which are then killed, cells whose state or newest checkpoint changed during the grace: written to by
    processes that outlived their launcher)."""
    before = rnd.snapshot(expected) if rnd else {}
    at_exit = tagged_processes(launch.tag)
    time.sleep(grace)
    orphans = tagged_processes(launch.tag)
    after = rnd.snapshot(expected) if rnd else {}
    if orphans:
        kill_tagged(launch.tag)
    changed = {c: f"{before[c]} -> {after[c]}" for c in before if before[c] != after[c]}
    return at_exit, orphans, changed


def describe_exit(code: int | None) -> str:
    if code is None:
        return "hang"
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


def run(args) -> dict:
    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        return run_in(args, work, temp=False)
    work = Path(tempfile.mkdtemp(prefix="dadf-chaos-"))
    try:
        return run_in(args, work, temp=True)
    finally:
        cleanup()  # nothing may still write into the folder
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_in(args, work: Path, temp: bool) -> dict:
    t_start = time.monotonic()
    root = Path(args.root or "data")
    fallback = not (root / "MNIST" / "raw").is_dir()
    overrides, grid_name, dataset = grid_overrides(args, fallback)
    if fallback:
        print(f"note: {root}/MNIST/raw not found: falling back to grid=quickstart on digits (embedded)")
    shards = work / "shards"
    base = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}-s{args.seed}-{SESSION[-6:]}"
    base.mkdir(parents=True)
    print(f"grid: {' '.join(overrides)}")
    print(f"work folder: {base} (shards: {shards})")
    rng = random.Random(args.seed)
    launches_n = 0

    def launch(runs_dir: Path, name: str) -> Launch:
        nonlocal launches_n
        launches_n += 1
        return Launch([*overrides, f"runs_dir={runs_dir}", f"shards_dir={shards}"], base / "logs" / f"{name}.log",
                      f"{SESSION}-{launches_n}", args.threads or 1)

    # -- shards, once, so that the reference's wall time is that of a launch ---------------------------------
    t0 = time.monotonic()
    sh_over = [f"dataset={dataset}", f"shards_dir={shards}"]
    if not fallback:
        sh_over += [f"dataset.root={root.resolve()}"] + ([f"dataset.size={args.size}"] if args.size else [])
    sh = subprocess.run([PYTHON, "jobs/build_shards.py", *sh_over], cwd=REPO, capture_output=True, text=True,
                        timeout=args.launch_timeout,
                        env=dict(os.environ, OMP_NUM_THREADS="1", **{TAG_VAR: f"{SESSION}-shards"},
                                 PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))))
    if sh.returncode != 0:
        raise SetupError(f"building the shards failed (exit {sh.returncode}):\n{(sh.stdout + sh.stderr)[-2000:]}")
    print(f"shards ready in {time.monotonic() - t0:.1f}s")

    # -- 1. reference ----------------------------------------------------------------------------------------
    ref_runs = base / "reference"
    L = launch(ref_runs, "reference")
    code = L.wait(args.launch_timeout)
    ref_wall = L.elapsed()
    tail = L.tail()
    L.close()
    kill_tagged(L.tag)
    expected = cell_dirs(ref_runs / grid_name)
    if code != 0 or not expected or not all(is_done(ref_runs / grid_name / c) for c in expected):
        raise SetupError(f"the reference launch did not finish every cell (exit {describe_exit(code)}):\n{tail}")
    reference = {c: load_cell(ref_runs / grid_name / c) for c in expected}
    span = args.span or ref_wall
    print(f"reference: {len(expected)} cells in {ref_wall:.1f}s (kill delays uniform over 0-{span:.1f}s)")
    hang_timeout = args.hang_timeout or max(120.0, 4 * ref_wall)

    # -- 2. chaos --------------------------------------------------------------------------------------------
    rounds: list[Round] = []
    kills: list[dict] = []
    quiet: list[dict] = []  # launches that ended before their kill
    orphans_all: list[dict] = []
    survivors_all: list[dict] = []
    hangs = 0
    written_after = 0  # kills after which a cell changed on disk although its launcher had exited
    max_launches = 4 * args.kills + 10
    current: Round | None = None
    print(f"\n| {'#':>3} | rnd | {'target':<8} | {'signal':<7} | {'at s':>5} | {'launcher exit':<14} | "
          f"{'cells in progress (ckpt step)':<34} | orphans |")
    print(f"|{'-' * 5}|-----|{'-' * 10}|{'-' * 9}|{'-' * 7}|{'-' * 16}|{'-' * 36}|---------|")
    while len(kills) < args.kills and launches_n < max_launches:
        if current is None or current.done(expected):
            current = Round(len(rounds) + 1, base, grid_name)
            rounds.append(current)
        target, sig_name = KINDS[rng.randrange(len(KINDS))]
        delay = rng.uniform(0.0, span)
        pick = random.Random(f"{args.seed}-{launches_n}")
        current.launches += 1
        L = launch(current.runs_dir, f"round{current.index}-launch{current.launches}")
        code = L.wait(delay)
        victim = None
        if code is None and target == "cell":
            # a cell process exists only once the launcher has started its workers: wait for one
            while victim is None and L.proc.poll() is None and L.elapsed() < delay + hang_timeout:
                cands = [p for p in tagged_processes(L.tag) if is_cell_process(p, L.pid)]
                victim = pick.choice(cands) if cands else None
                if victim is None:
                    time.sleep(0.05)
            code = L.proc.poll()
        if code is not None:  # the launch ended before the kill: nothing was killed
            wall_quiet = L.elapsed()
            at_exit, orphans, _ = settle(L, args.grace)
            quiet.append({"round": current.index, "exit": code, "wall_s": round(wall_quiet, 2),
                          "grid_done": current.done(expected), "orphans": len(orphans)})
            orphans_all += [{**p, "after": "a launch that ended by itself"} for p in orphans]
            L.close()
            continue
        at = L.elapsed()
        in_progress = current.in_progress(expected)
        states_before = {c: read_state(current.grid_dir / c) for c in expected}
        sig = getattr(signal, sig_name)
        try:
            if target == "launcher" and sig_name == "SIGINT":
                os.killpg(L.pid, sig)  # Ctrl-C: the whole foreground group
                sent_to = f"group {L.pid}"
            elif target == "launcher":
                os.kill(L.pid, sig)
                sent_to = f"pid {L.pid}"
            else:
                os.kill(victim["pid"], sig)
                sent_to = f"pid {victim['pid']}: {short_cmd(victim['cmdline'], 70)}"
        except ProcessLookupError:
            sent_to = "gone before the signal"
        code = L.wait(hang_timeout)
        hang = code is None
        if hang:
            hangs += 1
            L.kill_group()
            code = L.proc.returncode
        exit_s = L.elapsed()
        at_exit, orphans, changed = settle(L, args.grace, current, expected)
        L.close()
        for c in expected:  # a cell handed to its worker that had not yet marked itself running
            state = read_state(current.grid_dir / c)
            if c not in in_progress and state != states_before[c] and state in ("failed", "requeued", "running"):
                ck = newest_checkpoint(current.grid_dir / c)
                in_progress[c] = {"state": f"{states_before[c]} (starting)", "checkpoint_step": ck[0] if ck else None}
        after = {c: status_line(current.grid_dir / c) for c in in_progress}
        k = len(kills) + 1
        for c in in_progress:
            current.interrupted.setdefault(c, []).append(k)
        rec = {"kill": k, "round": current.index, "target": target, "signal": sig_name, "sent_to": sent_to,
               "at_s": round(at, 2), "planned_delay_s": round(delay, 2), "launcher_exit": code, "hang": hang,
               "exit_s": round(exit_s, 2),
               "cells_in_progress": in_progress, "cell_states_after": after,
               "alive_at_launcher_exit": [{"pid": p["pid"], "cmdline": p["cmdline"]} for p in at_exit],
               "orphans": [{"pid": p["pid"], "ppid": p["ppid"], "cmdline": p["cmdline"]} for p in orphans],
               "cells_written_after_launcher_exit": changed}
        kills.append(rec)
        survivors_all += [{**p, "kill": k} for p in at_exit]
        orphans_all += [{**p, "kill": k} for p in orphans]
        prog = ", ".join(f"cell{expected.index(c)}:{v['state']}({v['checkpoint_step']})"
                         for c, v in in_progress.items()) or "-"
        print(f"| {k:>3} | {current.index:>3} | {target:<8} | {sig_name:<7} | {at:>5.1f} | "
              f"{describe_exit(None if hang else code):<14} | {short_cmd(prog, 34):<34} | {len(orphans):>7} |",
              flush=True)
        for p in orphans:
            print(f"|     orphan pid {p['pid']} (ppid {p['ppid']}): {short_cmd(p['cmdline'], 100)}")
        for c, v in changed.items():
            print(f"|     cell{expected.index(c)} written to after its launcher exited: {v}")
        if changed:
            written_after += 1

    # -- 3. final uninterrupted relaunch -----------------------------------------------------------------------
    final = None
    if current is not None and not current.done(expected):
        current.launches += 1
        L = launch(current.runs_dir, f"round{current.index}-final")
        code = L.wait(args.launch_timeout)
        hang = code is None
        if hang:
            hangs += 1
            L.kill_group()
        wall_final = L.elapsed()
        _, orphans, _ = settle(L, args.grace)
        orphans_all += [{**p, "after": "the final relaunch"} for p in orphans]
        final = {"round": current.index, "exit": L.proc.returncode, "hang": hang, "wall_s": round(wall_final, 2),
                 "orphans": len(orphans), "tail": "" if L.proc.returncode == 0 else L.tail(1500)}
        L.close()
        print(f"\nfinal relaunch (round {current.index}): exit {describe_exit(None if hang else final['exit'])} "
              f"in {final['wall_s']:.1f}s")

    elif current is not None:
        print(f"\nfinal relaunch: not needed (round {current.index} already finished every cell)")

    # -- 4. compare ------------------------------------------------------------------------------------------
    cells = []
    for r in rounds:
        for c in expected:
            v = compare_cell(reference[c], r.grid_dir / c)
            cells.append({"round": r.index, "cell": c, **v, "interrupted_by_kills": r.interrupted.get(c, [])})
    verdicts = Counter(c["verdict"] for c in cells)
    interrupted = [c for c in cells if c["interrupted_by_kills"]]
    resumed_cells = [c for c in interrupted if c["verdict"] != "lost"]
    by_cell = {(c["round"], c["cell"]): c for c in cells}
    for rec in kills:
        rec["resumed"] = all(by_cell[(rec["round"], c)]["verdict"] != "lost" for c in rec["cells_in_progress"])
    kills_resumed = sum(r["resumed"] for r in kills)

    print(f"\n| round | {'cell':<34} | interrupted by kills | verdict   | detail")
    print(f"|-------|{'-' * 36}|----------------------|-----------|-------")
    for c in cells:
        ks = ",".join(map(str, c["interrupted_by_kills"])) or "-"
        name = f"cell{expected.index(c['cell'])} {c['cell']}"
        print(f"| {c['round']:>5} | {name:<34} | {ks:<20} | {c['verdict']:<9} | {c['detail']}")
    kinds = Counter(f"{r['target']}/{r['signal']}" for r in kills)
    exits = Counter(describe_exit(None if r["hang"] else r["launcher_exit"]) for r in kills)
    print("\nkills per kind: " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in (f"{t}/{s}" for t, s in KINDS)))
    print("launcher exits after a kill: " + ", ".join(f"{k}: {n}" for k, n in sorted(exits.items())))
    print(f"launches: {launches_n - 1} chaos (+1 reference), {len(quiet)} of them ended before their kill; "
          f"{len(rounds)} round(s); processes alive when their launcher exited: {len(survivors_all)}; "
          f"kills after which a cell was still written to by a process that outlived its launcher: {written_after}")
    wall = time.monotonic() - t_start
    caught = sum(bool(r["cells_in_progress"]) for r in kills)
    headline = (f"{len(kills)} kills ({caught} caught a cell running): {kills_resumed} resumed, "
                f"{verdicts['identical']}/{len(cells)} cells "
                f"bit-identical, {verdicts['lost']} lost/corrupt, {verdicts['differs']} differ, "
                f"{len(orphans_all)} orphans, {hangs} hangs")
    if final is not None and final["exit"] != 0:
        headline += f", final relaunch exit {describe_exit(None if final['hang'] else final['exit'])}"
    if len(kills) < args.kills:
        headline += f" (only {len(kills)} of {args.kills} kills: launch cap {max_launches} reached)"
    print(f"\n{headline}   [{wall:.0f}s]")

    result = {
        "benchmark": "chaos", "headline": headline, "seed": args.seed, "kills_requested": args.kills,
        "kills_tried": len(kills), "kills_catching_a_running_cell": caught, "kills_resumed": kills_resumed,
        "kinds": {f"{t}/{s}": kinds.get(f"{t}/{s}", 0) for t, s in KINDS},
        "launcher_exit_codes": dict(exits),
        "cells_total": len(cells), "bit_identical": verdicts["identical"], "differs": verdicts["differs"],
        "lost_or_corrupt": verdicts["lost"],
        "interrupted_cells": len(interrupted), "resumed_cells": len(resumed_cells),
        "orphans": len(orphans_all), "orphan_processes": orphans_all,
        "alive_at_launcher_exit": len(survivors_all), "hangs": hangs,
        "kills_with_cells_written_after_launcher_exit": written_after,
        "rounds": len(rounds), "launches": launches_n - 1, "launches_ended_before_kill": len(quiet),
        "final_relaunch": final, "reference": {"wall_s": round(ref_wall, 2), "cells": expected},
        "kill_delay_span_s": round(span, 2), "hang_timeout_s": round(hang_timeout, 1), "grace_s": args.grace,
        "wall_s": round(wall, 1), "fallback_to_digits": fallback, "grid_overrides": overrides,
        "workers": args.workers, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "work_folder": str(base) if (args.keep or not temp) else None,
        "kills": kills, "quiet_launches": quiet, "cells": cells,
    }
    return result


class SetupError(RuntimeError):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kills to send (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kinds of kill and their delays")
    parser.add_argument("--root", default=None,
                        help="folder holding MNIST/raw, e.g. /data; absent: grid=quickstart on digits")
    parser.add_argument("--workdir", help="folder for shards and runs (kept); default: a temporary folder, removed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--out", default="bench/chaos.json", help="JSON results (relative to the repo)")
    parser.add_argument("--workers", type=int, default=1, help="launcher.workers")
    parser.add_argument("--threads", type=int, default=1,
                        help="launcher.threads_per_worker and OMP_NUM_THREADS (0: leave the launcher's default)")
    parser.add_argument("--classes", default="0,1", help="grid.classes (default 0,1)")
    parser.add_argument("--steps", type=int, default=150, help="trainer.steps")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="trainer.checkpoint_every")
    parser.add_argument("--batch-size", type=int, default=64, help="trainer.batch_size")
    parser.add_argument("--size", type=int, default=None,
                        help="dataset.size: resizes the images (it is not a sample count); default: native 28x28")
    parser.add_argument("--span", type=float, default=None,
                        help="kill delays are uniform over 0..span s (default: the reference launch's wall time)")
    parser.add_argument("--grace", type=float, default=3.0, help="seconds after the launcher exits before "
                        "counting the processes still alive as orphans")
    parser.add_argument("--hang-timeout", type=float, default=None,
                        help="seconds to wait for the launcher after a kill (default max(120, 4 x reference))")
    parser.add_argument("--launch-timeout", type=float, default=1800, help="limit of uninterrupted launches (s)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every launch (after --)")
    args = parser.parse_args(argv)
    if args.kills < 0 or args.workers < 1:
        parser.error("--kills must be >= 0 and --workers >= 1")

    atexit.register(cleanup)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    try:
        result = run(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up the launches and their processes", file=sys.stderr)
        return 130
    finally:
        cleanup()
        signal.signal(signal.SIGTERM, previous)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
