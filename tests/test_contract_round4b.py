"""Hardening, round 4 (issue 28, classes 5-7): silent wrong results, processes and state
after a kill, messages.

  5. rundiff and NaN; --mean/--std on the 0..255 scale or not finite, refused where the
     value enters (the export flags) and in the card validator (one rule: export.card);
  6. a killed deploy takes its stages with it; `latest` only names a finished run;
  7. one-line messages naming the problem instead of internal errors or wrong names.

CLI cases assert the contract of tests/test_contract_round3.py (`refused`): non-zero exit,
the last stderr line `<prog>: error: ...` naming the problem, nothing under the test's
folder changed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_contract_round3 import model_dir, refused, run_inproc

NAN, INF = float("nan"), float("inf")


# ---- 5. silent wrong results -----------------------------------------------------------------

def _run_doc(count: float, top1: float) -> dict:
    """A minimal results.json: one model, one accuracy figure, one QEMU count."""
    return {"format": "armq-deploy/1", "run": {"id": "r", "status": "done"},
            "stages": [{"id": "s", "kind": "accuracy", "status": "done"}],
            "models": {"m": {"accuracy": {"results": {"onnx": {"top1": top1}}},
                             "bench": {"qemu:cortex-a76": {"onnx": {
                                 "file": "m.onnx", "emulated": True, "instructions": count,
                                 "instructions_spread_pct": 0.0}}}}}}


def _write_run(folder: Path, doc: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(doc))   # NaN as the JSON literal NaN
    return folder


@pytest.mark.parametrize("a,b,agree", [
    ((NAN, 0.5), (1e7, 0.5), False),    # a count not measured in one run only
    ((1e7, NAN), (1e7, 0.5), False),    # an accuracy figure NaN in one run only
    ((NAN, NAN), (NAN, NAN), True),     # identical runs, both not measured
    ((INF, 0.5), (1e7, 0.5), False),
], ids=["count-nan-vs-number", "top1-nan-vs-number", "nan-vs-nan", "count-inf-vs-number"])
def test_rundiff_nan(a, b, agree, tmp_path):
    """NaN vs a number differs; NaN vs NaN on the same field agrees (it compared as
    'agree' and 'DIFFER nan vs nan': the other way round)."""
    ra = _write_run(tmp_path / "a", _run_doc(*a))
    rb = _write_run(tmp_path / "b", _run_doc(*b))
    r = run_inproc("deploy.rundiff", ra, rb)
    assert r.returncode == (0 if agree else 1), r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("agree" if agree else "DIFFER"), r.stdout
    if not agree:
        assert "differs: " in r.stdout and ("nan" in r.stdout or "inf" in r.stdout), r.stdout


@pytest.mark.parametrize("flags,needle", [
    (["--mean", 128, 128, 128, "--std", 64, 64, 64], "argument --mean: 128: must be in 0..1"),
    (["--mean", .5, .5, .5, "--std", 64, 64, 64], "for 0..255 values divide by 255"),
    (["--mean", "nan", .5, .5, "--std", .2, .2, .2], "--mean: nan: must be a finite number"),
    (["--mean", .5, .5, .5, "--std", "inf", .2, .2], "--std: inf: must be a finite number"),
    (["--mean", .5, .5, .5, "--std", 0, .2, .2], "--std: 0: must be positive"),
    (["--mean", .5, .5, .5, "--std", -0.2, .2, .2], "--std: -0.2: must be positive"),
    (["--mean", -0.5, .5, .5, "--std", .2, .2, .2], "--mean: -0.5: must be in 0..1"),
], ids=["0-255-scale", "std-64", "mean-nan", "std-inf", "std-0", "std-negative", "mean-negative"])
def test_export_norm_flags_refused(flags, needle, tmp_path):
    """export.onnx wrote cards with these that every later stage refused (or, 0..255 scale,
    accepted: every image normalised to about -2)."""
    refused(tmp_path, "export.onnx", needle, "--source", "torchvision:resnet18",
            "--input-size", 32, *flags, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("patch,needle", [
    ({"preprocessing__mean": [128.0, 128.0, 128.0]}, "'preprocessing.mean' values must be in 0..1"),
    ({"preprocessing__std": [64.0, 64.0, 64.0]}, "for 0..255 values divide by 255"),
    ({"preprocessing__std": [0.2, -0.1, 0.2]}, "'preprocessing.std' values must be positive"),
], ids=["mean-128", "std-64", "std-negative"])
def test_card_norm_scale_refused(patch, needle, tmp_path):
    art = model_dir(tmp_path, **patch)
    refused(tmp_path, "quant.evaluate", needle, "--card", art / "tiny.json",
            "--data", tmp_path / "data")


def test_norm_rule_accepts_real_normalisations():
    """Guard against a rule that refuses everything: the zoo's presets and a raw-pixel
    model (mean 0, std 1/255) pass."""
    from export.card import norm_problem
    from zoo.config import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

    for mean, std in ((CIFAR10_MEAN, CIFAR10_STD), (IMAGENET_MEAN, IMAGENET_STD),
                      ((0.0,) * 3, (1 / 255,) * 3), ((0.5,) * 3, (0.5,) * 3), ((0,) * 3, (1,) * 3)):
        assert norm_problem("mean", list(mean)) is None and norm_problem("std", list(std)) is None


# ---- 6. processes and state after a kill -------------------------------------------------------

# A stage like every armq CLI (cli_entry: SIGTERM and Ctrl-C clean up): it makes a temp folder,
# says its pid, sleeps, and removes the folder on the way out.
STAGE = """
import os, shutil, sys, tempfile, time
from zoo.util import cli_entry
def main(argv):
    d = tempfile.mkdtemp(dir=argv[0])
    try:
        with open(argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(argv[1] + ".tmp", argv[1])
        time.sleep(120)
    finally:
        shutil.rmtree(d)
cli_entry(main, "stage", sys.argv[1:])
"""

# deploy's Runner and local executor (with its watchdog) running that stage, under cli_entry
# like deploy: SIGTERM stops the stage the way Ctrl-C does.
DEPLOY = """
import sys
from pathlib import Path
from deploy.executors.local import LocalExecutor
from deploy.stages import Results, Runner, Stage
from zoo.util import cli_entry
def main(argv):
    run, stage_py, scratch, pid_file = (Path(a) for a in argv)
    run.mkdir()
    res = Results(run / "results.json", {"format": "armq-deploy/1", "run": {"status": "running"},
                                         "models": {}, "stages": []})
    ex = LocalExecutor()
    ex.bind(run)
    s = Stage(id="sleep", kind="bench",
              argv=[sys.executable, str(stage_py), str(scratch), str(pid_file)])
    s2 = Stage(id="after", kind="compare", argv=[sys.executable, "-c", "pass"])
    try:
        Runner(res, run, [s, s2], executor=ex).run_all([([s, s2], False)])
    finally:
        ex.close()
cli_entry(main, "deploy", sys.argv[1:])
"""


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if ln.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


def _kill(pid: int) -> None:
    """A test that fails must not leave its stage sleeping."""
    import os
    import signal

    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _wait_for(cond, timeout: float) -> float:
    """Seconds until cond() held; fails after timeout."""
    import time

    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def _start_runner(tmp_path: Path, ignore_sigint: bool = False):
    import signal
    import subprocess
    import sys

    from conftest import REPO

    (tmp_path / "sleeper.py").write_text(STAGE)
    (tmp_path / "runner.py").write_text(DEPLOY)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    pid_file = tmp_path / "stage.pid"
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "run"),
         str(tmp_path / "sleeper.py"), str(scratch), str(pid_file)], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint
        else None)
    try:
        _wait_for(lambda: pid_file.exists() or proc.poll() is not None, 60)
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    return proc, int(pid_file.read_text()), scratch


def test_sigkilled_runner_takes_its_stage_with_it(tmp_path):
    """SIGKILL (or the OOM killer) of deploy left its stage running, its temp folder behind
    and results.json saying "running"."""
    import json
    import signal

    proc, stage_pid, scratch = _start_runner(tmp_path)
    assert any(scratch.iterdir()) and _pid_alive(stage_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        _wait_for(lambda: not _pid_alive(stage_pid), 5)
    finally:
        _kill(stage_pid)
    _wait_for(lambda: not any(scratch.iterdir()), 5)        # it cleaned up as on Ctrl-C
    results = tmp_path / "run" / "results.json"
    _wait_for(lambda: json.loads(results.read_text())["run"]["status"] == "killed", 5)
    st = {s["id"]: s for s in json.loads(results.read_text())["stages"]}
    assert st["sleep"]["status"] == "interrupted" and st["sleep"]["reason"] == "deploy was killed"
    assert st["after"]["status"] == "skipped"


def test_stage_of_a_deploy_started_with_sigint_ignored_stops_at_once(tmp_path):
    """A background job (SIGINT ignored, inherited by the stages): deploy's SIGINT to its
    stage was ignored, the stage died only at the SIGKILL 10 s later, its temp folder left."""
    import json
    import signal

    proc, stage_pid, scratch = _start_runner(tmp_path, ignore_sigint=True)
    proc.send_signal(signal.SIGTERM)                 # deploy stops its stage with SIGINT
    try:
        took = _wait_for(lambda: proc.poll() is not None, 9)
    finally:
        _kill(stage_pid)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
    assert took < 5 and not _pid_alive(stage_pid)
    assert not any(scratch.iterdir()), "the stage's temp folder was left"
    d = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {s["id"]: s["status"] for s in d["stages"]} == {"sleep": "interrupted",
                                                           "after": "skipped"}


def test_sigkilled_deploy_leaves_latest_alone(tmp_path):
    """`latest` pointed at a run from its start: a killed deploy left it at a run that never
    finished. Now it moves when a run ends; the killed run's results.json says so."""
    import json
    import signal
    import subprocess
    import sys

    from conftest import REPO

    from deploy.cli import point_latest

    runs = tmp_path / "runs"
    old = runs / "20000101-000000"
    old.mkdir(parents=True)
    point_latest(old)
    proc = subprocess.Popen([sys.executable, "-m", "deploy", "--models", "shufflenet_v1:groups=3",
                             "--targets", "local", "--skip-tflite", "--out", str(runs)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: any(runs.glob("2*/results.json")) or proc.poll() is not None, 120)
    finally:
        proc.kill()
        proc.wait()
    results = next(runs.glob("2*/results.json"))
    assert (runs / "latest").resolve() == old.resolve()
    _wait_for(lambda: json.loads(results.read_text())["run"]["status"] == "killed", 10)


def test_point_latest_replaces_a_link_never_a_folder(tmp_path):
    from deploy.cli import point_latest

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    point_latest(a)
    point_latest(b)
    assert (tmp_path / "latest").resolve() == b.resolve()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".latest")] == []
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").mkdir()            # the user's own folder called latest
    point_latest(a)
    assert (tmp_path / "latest").is_dir() and not (tmp_path / "latest").is_symlink()
