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

from test_contract_round3 import MAIN_OF, model_dir, refused, run_inproc

MAIN_OF.setdefault("deploy", "deploy.cli")     # `python -m deploy` runs deploy.cli.main

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


# ---- 7. messages -------------------------------------------------------------------------------

def _entry(main) -> tuple[int, str]:
    from test_contract_round2 import _run_entry

    return _run_entry(main)


def test_disk_full_names_the_users_file_not_a_temp(tmp_path):
    """A copy into --out on a full disk named its source, a temp file on another disk
    (shutil puts the source in filename, the destination in filename2)."""
    import errno
    import os

    from zoo.util import atomic_output, atomic_path

    out = tmp_path / "out" / "model.onnx"

    def copy_into(argv):
        with atomic_path(out) as tmp:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/elsewhere/armq-x/m.onnx",
                          None, str(tmp))      # (errno, strerror, filename, winerror, filename2)

    def write_into(argv):
        with atomic_output(out) as f:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # f.write: no file name

    for main in (copy_into, write_into):
        rc, err = _entry(main)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"disk full while writing {out} (" in err and "elsewhere" not in err, err
    assert not list((tmp_path / "out").iterdir())


def test_disk_full_in_the_temp_folder_says_so():
    import errno
    import os
    import tempfile

    def main(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                      os.path.join(tempfile.gettempdir(), "armq-onnx-x", "m.onnx"))
    rc, err = _entry(main)
    assert rc == 2 and "point TMPDIR at a disk with room" in err, err


def test_read_only_file_system_is_one_line():
    """A run folder on a read-only mount: 'internal error: OSError: [Errno 30]'."""
    import errno
    import os

    def main(argv):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/runs/x/plots")
    rc, err = _entry(main)
    assert rc == 2 and err.count("\n") == 1, err
    assert "cannot write /runs/x/plots: read-only file system" in err and "internal" not in err


def test_ptq_model_given_as_its_card(tmp_path):
    """`quant.ptq --model <name>.json` (documented) quantized, then refused to write the
    card it had been given: 'output ... is the input'."""
    art = model_dir(tmp_path)
    before = json.loads((art / "tiny.json").read_text())
    r = run_inproc("quant.ptq", "--model", art / "tiny.json", "--calib", tmp_path / "data",
                   "--out", art, "--num-calib", 2)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((art / "tiny.json").read_text())
    assert card["artifacts"]["onnx_int8"]["path"] == "tiny.int8.onnx"
    assert (art / "tiny.int8.onnx").is_file() and card["artifacts"]["onnx"] == before["artifacts"]["onnx"]


def _sweep(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "sweep.toml"
    p.write_text(body)
    return p


DEEP = "x = " + "[" * 5000 + "]" * 5000 + "\n"


@pytest.mark.parametrize("body,needle", [
    ('models = ["shufflenet_v1"]\n' + DEEP, "not valid TOML (arrays or tables nested too deeply)"),
    ('models = ["shufflenet_v1"]\nnum_calib = 0\n', "'num_calib' must be an integer >= 1"),
    ('models = ["shufflenet_v1"]\njobs = 0\n', "'jobs' must be an integer >= 1"),
    ('models = ["shufflenet_v1"]\nruns = {local = 0}\n', "'runs' must be an integer >= 1 or a table"),
    ('[[model]]\nname = "shufflenet_v1"\nwidth = [1, 2]\n',
     "[[model]] #1: 'width' must be a string or a number, not a list"),
    ('[[model]]\nname = "shufflenet_v1"\nwidth = "0.5:groups=8"\n',
     "[[model]] #1: 'width' must not contain ':'"),
    ('[[model]]\nname = "shufflenet_v1:groups=8"\n', "[[model]] #1: 'name' must not contain ':'"),
    ('[[model]]\nsource = "tiny.pt2:weights=other.pt"\n',
     "[[model]] #1: 'source' must be one model source"),
    ('[[model]]\nname = "shufflenet_v1"\nx = {a = 1}\n', "'x' must be a string or a number, not a table"),
    ('models = ["shufflenet_v1"]\ndataset = ["a"]\n', "'dataset' must be a string, not a list"),
    ('models = ["shufflenet_v1"]\ntitle = 5\n', "'title' must be a string, not a number"),
    ('models = ["shufflenet_v1"]\nskip_tflite = "yes"\n', "'skip_tflite' must be true or false"),
    ('models = ["shufflenet_v1"]\nruntimes = ["ort", "onnx"]\n', "'runtimes': unknown runtime 'onnx'"),
    ('deploy = 5\nmodels = ["shufflenet_v1"]\n', "'deploy' must be a table"),
], ids=["deep", "num-calib-0", "jobs-0", "runs-table-0", "value-list", "value-adds-key",
        "name-adds-key", "source-adds-key", "value-table", "dataset-list", "title-number",
        "skip-tflite-str", "runtimes-unknown", "deploy-not-table"])
def test_sweep_values_named_one_line(body, needle, tmp_path):
    """A deep TOML was an internal error, 0 was silently replaced by the default, a value
    with ':' added a key, and errors showed Python reprs instead of naming the key."""
    sweep = _sweep(tmp_path, body)
    refused(tmp_path, "deploy", needle, "--sweep", sweep, *NO_RUN)


# Checked after every other setting: a sweep that is wrongly accepted fails fast, not with a run.
NO_RUN = ("--eval-data", "/nonexistent/eval", "--out", "/nonexistent/runs")


def test_sweep_zero_flags_refused_not_replaced(tmp_path):
    refused(tmp_path, "deploy", "--num-calib must be at least 1", "--num-calib", 0, *NO_RUN)


def test_sweep_model_table_still_joins_plain_values():
    """Guard: the [[model]] form of a plain spec still parses to the same spec."""
    from deploy.spec import _model_table_text, parse_model_spec

    text = _model_table_text({"name": "shufflenet_v1", "groups": 3, "width": 0.5}, "t")
    assert text == "shufflenet_v1:groups=3:width=0.5"
    assert parse_model_spec(text).params == {"groups": 3, "width": 0.5}


def test_deep_device_inventory_one_line(tmp_path):
    inv = tmp_path / "devices.toml"
    inv.write_text(DEEP)
    refused(tmp_path, "deploy", "not valid TOML (arrays or tables nested too deeply)",
            "--devices", inv, "--out", tmp_path / "runs")


def _results(tmp_path: Path, **model) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "results.json").write_text(json.dumps({
        "format": "armq-deploy/1", "run": {"id": "r", "status": "complete"}, "stages": [],
        "models": {"m": model}}))
    return d


@pytest.mark.parametrize("model", [
    {"artifacts": {"onnx": "m.onnx"}}, {"artifacts": ["m.onnx"]}, {"weights": "x"},
    {"bench": {"local": {"onnx": 5}}}, {"accuracy": {"results": {"onnx": 5}}}],
    ids=["artifact-str", "artifacts-list", "weights-str", "bench-entry-int", "accuracy-int"])
def test_results_field_of_the_wrong_type_one_line(model, tmp_path):
    """An artifact entry of the wrong type: 'internal error: AttributeError' in rundiff."""
    run = _results(tmp_path, **model)
    refused(tmp_path, "deploy.rundiff", "a field has an unexpected type", run, run)


def test_zoo_results_field_of_the_wrong_type_one_line(tmp_path):
    run = _results(tmp_path, weights="x")
    refused(tmp_path, "deploy.zoo_results", "a field has an unexpected type",
            run / "results.json", "--out", tmp_path / "z.md")


@pytest.mark.parametrize("value", ["32px", 32.5, True],
                         ids=["32px", "float", "bool"])
def test_checkpoint_variant_input_size_one_line(value, tmp_path):
    """A checkpoint whose variant says input_size = "32px": an internal TypeError."""
    import torch

    from conftest import SHIPPED_CKPT

    ck = torch.load(SHIPPED_CKPT, map_location="cpu", weights_only=True)
    ck["variant"] = dict(ck["variant"], input_size=value)
    torch.save(ck, tmp_path / "ck.pt")
    refused(tmp_path, "export.onnx", "variant 'input_size' is", "--weights", tmp_path / "ck.pt",
            "--out", tmp_path / "out")


@pytest.mark.parametrize("where", ["import", "call"])
def test_factory_calling_sys_exit_is_an_error(where, tmp_path):
    """A factory file calling sys.exit(0) at import gave exit 0 and no file."""
    body = ("import sys\nsys.exit(0)\ndef build(**kw):\n    pass\n" if where == "import"
            else "import sys\ndef build(**kw):\n    sys.exit(0)\n")
    (tmp_path / "exits.py").write_text(body)
    refused(tmp_path, "export.onnx", "SystemExit", "--source", f"{tmp_path / 'exits.py'}:build",
            "--input-size", 32, "--mean", .5, .5, .5, "--std", .5, .5, .5, "--num-classes", 10,
            "--out", tmp_path / "out")


def test_non_utf8_out_refused_up_front(tmp_path):
    """deploy --out with bytes of another locale failed every stage."""
    import os

    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/runs\xff")
    refused(tmp_path, "deploy", "the path is not valid UTF-8", "--out", out)


def test_ssh_control_socket_folder_fits_a_long_tmpdir(tmp_path, monkeypatch):
    """An 80-character TMPDIR made the ControlPath socket path too long for every ssh step."""
    import os
    import tempfile

    from android_bench.targets.ssh import MAX_CONTROL_PATH, control_dir

    long_tmp = tmp_path / ("t" * max(1, 80 - len(str(tmp_path)) - 1))
    long_tmp.mkdir()
    assert len(str(long_tmp)) >= 80
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    d = control_dir()
    try:
        assert d is not None and not d.startswith(str(long_tmp))
        assert len(os.path.join(d, "cm").encode()) <= MAX_CONTROL_PATH
    finally:
        if d:
            os.rmdir(d)
    assert control_dir(bases=(str(long_tmp),)) is None     # then: no multiplexing
    assert list(long_tmp.iterdir()) == []


def test_ssh_connects_with_a_long_tmpdir(tmp_path, monkeypatch):
    """The same through a real ssh connection to a private sshd."""
    import tempfile

    from test_bench_ssh import Sshd, _ensure_sshd, _target

    _ensure_sshd()
    server = Sshd(tmp_path / "sshd").start() if (tmp_path / "sshd").mkdir() is None else None
    try:
        long_tmp = tmp_path / ("t" * max(1, 80 - len(str(tmp_path)) - 1))
        long_tmp.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
        t = _target(server, tmp_path)
        t.connect()
        try:
            assert t._master is not None and t._master.poll() is None
            assert t.multiplex
        finally:
            t.close()
    finally:
        server.stop()


@pytest.mark.parametrize("quiet", [False, True], ids=["bars", "quiet"])
def test_quiet_silences_progress_bars(quiet, tmp_path):
    """-q ("no progress bars") still drew quant.evaluate's and quant.ptq's bars on a terminal."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    from conftest import REPO

    art = model_dir(tmp_path)
    main, sub = pty.openpty()               # stderr on a terminal: where tqdm draws
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))   # 0 columns: no bar
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "quant.evaluate", "--model", str(art / "tiny.onnx"), "--data",
             str(tmp_path / "data"), *(["-q"] if quiet else [])],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=sub, stdin=subprocess.DEVNULL)
        os.close(sub)
        chunks = []
        while True:
            try:
                b = os.read(main, 4096)
            except OSError:                 # EIO: the child closed its end
                break
            if not b:
                break
            chunks.append(b)
        assert proc.wait(timeout=120) == 0, b"".join(chunks)[-2000:]
    finally:
        os.close(main)
    err = b"".join(chunks).decode(errors="replace")
    bar = "img/s" in err or "it/s" in err or "%|" in err
    assert bar is not quiet, err[-2000:]


def test_report_of_a_killed_run_says_so(tmp_path):
    """The watchdog's mark is what a reader sees: the report names the run as killed."""
    from deploy.watchdog import mark_killed

    run = tmp_path / "run"
    run.mkdir()
    rp = run / "results.json"
    rp.write_text(json.dumps({"format": "armq-deploy/1", "run": {"id": "r", "status": "running"},
                              "models": {}, "stages": [
                                  {"id": "a", "kind": "export_onnx", "status": "running"},
                                  {"id": "b", "kind": "quant_ort", "status": "pending"}]}))
    mark_killed(rp)
    d = json.loads(rp.read_text())
    assert d["run"]["status"] == "killed" and d["run"]["finished"]
    assert [s["status"] for s in d["stages"]] == ["interrupted", "skipped"]
    r = run_inproc("deploy.report", rp)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "deploy was killed" in (run / "report.md").read_text()
