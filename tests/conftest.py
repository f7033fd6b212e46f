"""Shared fixtures: where the repo and the real data are, and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ARMQ_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR_TEST_TAR = SHARED_DATA / "cifar10" / "test.tar"
CIFAR_TRAIN_TAR = SHARED_DATA / "cifar10" / "train.tar"
IMAGENET_TAR = SHARED_DATA / "imagenet-1k-samples.tar"
SHIPPED_CKPT = REPO / "assets" / "weights" / "shufflenet_v1_g3_cifar10.pt"
SHIPPED_TESTSET = REPO / "assets" / "data" / "cifar10_test.tar.gz"


def run_cli(module: str, *args: str, timeout: float = 600, cwd: Path | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as a user would, capturing output."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session", autouse=True)
def _armq_state_home(tmp_path_factory) -> None:
    """armq's state folder (the inventory boards' known_hosts) in a temp folder, never the
    user's: set in the environment so CLI subprocesses inherit it."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))


@pytest.fixture(scope="session")
def cifar_test_tar() -> Path:
    if not CIFAR_TEST_TAR.exists():
        pytest.fail(f"real data missing: {CIFAR_TEST_TAR} (see ../shared/data/README.md)")
    return CIFAR_TEST_TAR


@pytest.fixture(scope="session")
def imagenet_tar() -> Path:
    if not IMAGENET_TAR.exists():
        pytest.fail(f"real data missing: {IMAGENET_TAR}")
    return IMAGENET_TAR


def _torch_threads(n: int) -> Iterator[None]:
    import torch  # not at the top: the torch-free test files use this conftest too

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small batches: one intra-op thread is faster than two fighting a busy machine.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    yield from _torch_threads(1)


@pytest.fixture(scope="module")
def two_threads() -> Iterator[None]:
    """Full-size ImageNet forwards: two threads (still no more than the machine has)."""
    yield from _torch_threads(2)


def process_alive(pid: int) -> bool:
    """Is `pid` running (a zombie, exited but not reaped, counts as gone)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_running_stage(proc: subprocess.Popen, runs: Path, kind: str,
                           timeout: float = 600) -> Path:
    """Poll a `python -m deploy --out runs` process until its results.json shows stage
    `kind` running; returns that results.json (for tests that interrupt a run mid-stage)."""
    import json
    import time

    deadline = time.monotonic() + timeout
    results = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(runs.glob("2*/results.json"))
        if found:
            results = found[0]
            try:
                st = {s["kind"]: s["status"] for s in json.loads(results.read_text())["stages"]}
            except (json.JSONDecodeError, KeyError, OSError):
                st = {}
            if st.get(kind) == "running":
                return results
        time.sleep(0.2)
    raise AssertionError(f"{kind} never started (deploy exit {proc.poll()})")


def interrupt_deploy(runs: Path, *extra: str, kind: str = "export_onnx") -> tuple[Path, dict]:
    """Run `python -m deploy` on the shipped ShuffleNet (ONNX only, local target) into `runs`,
    send SIGINT while stage `kind` runs and check the Ctrl-C promise: exit 130, results.json
    says interrupted, that stage interrupted, the ONNX quantization skipped for Ctrl-C, and no
    process of the stage left (deploy SIGKILLs the group 10 s after the SIGINT; a loaded
    machine may take a moment to reap it). Returns results.json and its document."""
    import json
    import signal
    import time

    from deploy.stages import SKIPPED

    proc = subprocess.Popen([sys.executable, "-m", "deploy", "--models", "shufflenet_v1:groups=3",
                             "--targets", "local", "--skip-tflite", "--limit-eval", "50",
                             *extra, "--out", str(runs)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a suite started in the background (`make test &`) inherits an
                            # ignored SIGINT, and Python then never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        results = wait_for_running_stage(proc, runs, kind)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    d = json.loads(results.read_text())
    assert d["run"]["status"] == "interrupted"
    st = {s["kind"]: s for s in d["stages"]}
    assert st[kind]["status"] == "interrupted"
    assert st["quant_ort"]["status"] == SKIPPED and "Ctrl-C" in st["quant_ort"]["reason"]
    for _ in range(40):
        r = subprocess.run(["pgrep", "-f", f"export.onnx .*{results.parent.name}"],
                           capture_output=True)
        if r.returncode == 1:
            break
        time.sleep(0.5)
    assert r.returncode == 1, r.stdout
    return results, d
