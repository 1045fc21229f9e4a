"""jobs/gpu_check.py, the prepared first GPU check, on CPU: its smoke version yields every row kind with numbers
(or a recorded reason), its files stay valid when it is killed mid-way, and its wheels install offline."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "gpu_check.py"
KINDS = ("env", "step", "trainer", "syncs", "resume", "packed")
NUMBERS = {"step": ("samples_per_s", "s_per_step"), "trainer": ("samples_per_s", "s_per_step"),
           "resume": ("scores_max_abs_diff", "weights_max_abs_diff"), "packed": ("samples_per_s", "speedup")}


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _gpu_check(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _load(out: Path) -> dict:
    return json.loads(out.with_name(out.name + ".json").read_text())


def _dist(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def _group_gone(pgid: int, within_s: float) -> bool:
    """No process of the session ``pgid`` is left (zombies are reaped by init a moment later)."""
    deadline = time.time() + within_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _table_lines(out: Path) -> list[str]:
    md = out.with_name(out.name + ".md").read_text()
    return [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| # ")]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_has_every_row_kind_and_the_full_factorial_of_step_rows():
    gpu_check = _module()
    for smoke in (False, True):
        specs = gpu_check.plan(smoke)
        assert {s["kind"] for s in specs} == set(KINDS)
        assert len({s["id"] for s in specs}) == len(specs)
        steps = [s for s in specs if s["kind"] == "step"]
        plain = [s for s in steps if not s["penalty"]]
        combos = {(s["method"], s["batch"], s["precision"], s["compile"], s["channels_last"]) for s in plain}
        assert len(combos) == len(plain) == 2 * 2 * 3 * 2 * 2  # methods x batches x precisions x compile x layout
        # and one compiled row with a gradient penalty per method (the penalty runs eagerly in the compiled step)
        assert sorted((s["method"], s["compile"]) for s in steps if s["penalty"]) == [("ama", True),
                                                                                      ("simplex_ae", True)]
        # compiled rows come last: a budget that runs out takes them first
        assert [s["compile"] for s in steps] == sorted(s["compile"] for s in steps)
        assert specs[-1]["kind"] == "step" and specs[-1]["compile"]
        assert [s["method"] for s in specs if s["kind"] == "syncs"] == ["ama", "simplex_ae", "aae"]
    full = [s for s in gpu_check.plan(False) if s["kind"] == "step"]
    assert {s["shape"] for s in full} == {"3x32x32"} and {s["batch"] for s in full} == {64, 256}
    assert not any(s.get("skip") for s in gpu_check.plan(False))
    smoke_compiled = [s for s in gpu_check.plan(True) if s["kind"] == "step" and s["compile"] and not s.get("skip")]
    assert [s["penalty"] for s in smoke_compiled] == [True, False]


def test_rows_are_selected_by_kind_or_glob_in_plan_order():
    gpu_check = _module()
    specs = gpu_check.plan(False)
    chosen = gpu_check.select(specs, ["step:*:compiled:*", "env"])
    assert chosen[0]["id"] == "env" and len(chosen) == 1 + 24 + 2 and all(s["compile"] for s in chosen[1:])
    assert [s["kind"] for s in gpu_check.select(specs, ["resume", "packed"])] == ["resume", "packed"]
    with pytest.raises(SystemExit, match="match no row"):
        gpu_check.select(specs, ["stpe"])


def test_a_failing_row_records_its_error_and_the_next_row_runs(tmp_path):
    gpu_check = _module()
    out = tmp_path / "gc"
    results = gpu_check.Results(out)
    results.write({"smoke": True, "budget_s": 60, "rows": [], "finished": None})
    now = time.time()
    worker = gpu_check.Worker({"smoke": True, "work": str(tmp_path), "out": str(out), "t_start": now,
                               "deadline": now + 60})
    worker.row_broken = lambda spec: {"x": 1 / 0}
    specs = [{"id": "broken", "kind": "broken"}, {"id": "env", "kind": "env"},
             {"id": "later", "kind": "broken", "skip": "not in this version"}]
    assert worker.run(specs, now + 60) == 0
    rows = results.read()["rows"]
    assert [(r["id"], r["status"]) for r in rows] == [("broken", "error"), ("env", "ok"), ("later", "skipped")]
    assert rows[0]["error"].startswith("ZeroDivisionError") and "1 / 0" in rows[0]["traceback"]
    assert rows[2]["reason"] == "not in this version"
    assert "| 1 | broken | – | – | – | error: ZeroDivisionError" in out.with_name("gc.md").read_text()


def test_a_spent_budget_records_every_row_as_skipped_with_the_reason(tmp_path):
    out = tmp_path / "gc"
    proc = _gpu_check("--smoke", "--budget-s", "0", "--out", str(out), "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _load(out)
    assert [r["id"] for r in doc["rows"]] == doc["plan"] and doc["finished"]
    assert all(r["status"] == "skipped" and r["reason"] for r in doc["rows"])
    assert any("--budget-s 0" in r["reason"] for r in doc["rows"])
    assert len(_table_lines(out)) == len(doc["rows"])


@pytest.mark.slow
def test_smoke_run_gives_every_row_kind_with_numbers_or_a_reason(tmp_path):
    out = tmp_path / "gc"
    t0 = time.time()
    proc = _gpu_check("--smoke", "--out", str(out), "--work", str(tmp_path / "work"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _load(out)
    assert doc["smoke"] is True and doc["finished"]
    assert [r["id"] for r in doc["rows"]] == doc["plan"], "every planned row is recorded once, in order"
    for r in doc["rows"]:
        assert r["status"] in ("ok", "error", "skipped"), r
        if r["status"] == "error":
            assert r["error"].strip(), r
        elif r["status"] == "skipped":
            assert r["reason"].strip(), r
        else:
            for key in NUMBERS.get(r["kind"], ()):
                assert isinstance(r[key], (int, float)) and r[key] == r[key], (r["id"], key, r.get(key))
    ok = {k: [r for r in doc["rows"] if r["kind"] == k and r["status"] == "ok"] for k in KINDS}
    assert all(ok.values()), {k: len(v) for k, v in ok.items()}
    env = ok["env"][0]
    assert env["torch"] and env["gpu"] is None and env["reason_no_gpu"]
    eager = [r for r in ok["step"] if not r["compile"]]
    assert len(eager) == 24 and all(r["flops_per_step"] > 0 and r["losses_finite"] for r in eager)
    assert {(r["precision"], r["channels_last"]) for r in eager} == {(p, c) for p in ("fp32", "bf16", "fp16")
                                                                     for c in (False, True)}
    compiled = [r for r in ok["step"] if r["compile"]]
    assert [(r["compile_backend"], r["penalty"]) for r in compiled] == [("aot_eager", True), ("aot_eager", False)]
    assert all(r["flops_per_step"] > 0 and r["losses_finite"] for r in compiled)
    # host syncs are counted on CUDA only: on CPU the row runs the steps and says so
    assert {r["method"] for r in ok["syncs"]} == {"ama", "simplex_ae", "aae"}
    assert all(r["syncs_per_step"] is None and "CUDA" in r["note"] for r in ok["syncs"])
    assert {r["data_on_device"] for r in ok["trainer"]} == {True, False}
    assert {r["method"] for r in ok["trainer"]} == {"ae", "aae"}
    resume = ok["resume"][0]
    assert resume["preempted_exit"] == 128 + signal.SIGUSR2
    assert 0 < resume["signalled_after_step"] <= resume["preempted_at_step"] < resume["steps"]
    # On CPU a preempted and resumed cell ends bit-identical to an uninterrupted one (docs/training.md).
    assert resume["scores_bit_identical"] and resume["weights_bit_identical"] and resume["weights_compared"] > 0
    packed = ok["packed"][0]
    assert packed["models"] == 10 and packed["losses_allclose"] and packed["sequential_samples_per_s"] > 0
    assert len(_table_lines(out)) == len(doc["rows"])
    print(f"smoke run: {time.time() - t0:.1f} s")


@pytest.mark.slow
def test_a_run_of_compiled_rows_only_still_counts_their_flops(tmp_path):
    """FLOPs come from an eager step (the counter does not see inside compiled graphs): without the eager rows in
    the run, the compiled row counts them on an eager copy of its step."""
    out = tmp_path / "gc"
    row = "step:ama:1x8x8:b16:fp32:compiled:contiguous:gp"
    proc = _gpu_check("--smoke", "--rows", f"env,{row}", "--out", str(out), "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in _load(out)["rows"]}
    assert rows[row]["status"] == "ok", rows[row]
    assert rows[row]["penalty"] and rows[row]["flops_per_step"] > 0 and rows[row]["gflop_per_sample"] > 0


@pytest.mark.slow
def test_a_run_killed_mid_way_leaves_valid_files_with_the_finished_rows(tmp_path):
    out = tmp_path / "gc"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--budget-s", "600", "--out", str(out), "--work",
                             str(tmp_path / "work")], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        rows = 0
        while rows < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                rows = len(_load(out)["rows"])
            except (OSError, ValueError):  # not written yet: a half-written file would fail the test below
                pass
        assert rows >= 3, f"no rows within 180 s (exit {proc.poll()})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _group_gone(proc.pid, within_s=15), "the worker outlived the killed run"  # PR_SET_PDEATHSIG
        doc = _load(out)
        assert doc["finished"] is None and len(doc["rows"]) >= 3
        assert [r["id"] for r in doc["rows"]] == doc["plan"][: len(doc["rows"])]
        assert all(r["status"] in ("ok", "error", "skipped") for r in doc["rows"])
        assert doc["rows"][0]["kind"] == "env" and doc["rows"][0]["status"] == "ok"
        assert len(_table_lines(out)) == len(doc["rows"])
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_downloaded_wheels_install_offline(tmp_path):
    wheels, site = tmp_path / "whl", tmp_path / "site"
    got = _gpu_check("--download-wheels", "--only", "braceexpand", "--wheel-dir", str(wheels), timeout=180)
    if got.returncode != 0:
        pytest.skip(f"pip could not download from the package registry here: {got.stderr.strip()[-300:]}")
    assert [_dist(w) for w in wheels.glob("*.whl")] == ["braceexpand"]
    # Offline: no index, and any network access would go to a closed local port.
    offline = {**_env(), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "http_proxy": "http://127.0.0.1:9",
               "https_proxy": "http://127.0.0.1:9"}
    inst = subprocess.run([sys.executable, str(SCRIPT), "--install-only", "--wheel-dir", str(wheels), "--site",
                           str(site)], cwd=REPO, env=offline, capture_output=True, text=True, timeout=120)
    assert inst.returncode == 0, inst.stderr[-2000:]
    assert (site / "braceexpand").exists() or (site / "braceexpand.py").exists(), sorted(os.listdir(site))
    where = subprocess.run([sys.executable, "-c", "import braceexpand; print(braceexpand.__file__)"],
                           env={**offline, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    # Downloading again keeps one version of each (two would stop the offline install).
    again = _gpu_check("--download-wheels", "--only", "braceexpand", "--wheel-dir", str(wheels), timeout=180)
    assert again.returncode == 0 and len(list(wheels.glob("*.whl"))) == 1
