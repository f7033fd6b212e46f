"""Shared fixtures: where the repo and the real data are, and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
