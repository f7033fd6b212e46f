"""A real exported model for the quant tests: the CIFAR-10 ShuffleNet V1 g3 of the
project, exported with `python -m export.onnx` (the stage before quant), from a
private copy of the shipped checkpoint when there is one (the training run
rewrites it), else with random weights."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CKPT = REPO / "assets" / "weights" / "shufflenet_v1_g3_cifar10.pt"
CALIB = REPO / "assets" / "data" / "cifar10_calib.tar.gz"
TEST = REPO / "assets" / "data" / "cifar10_test.tar.gz"
NAME = "shufflenet_v1_g3_w1_cifar10"


def run(module: str, *args, timeout: float = 900, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ARMQ_THREADS": "2", **(env or {})})


def export_model(out: Path) -> tuple[Path, bool]:
    """Export the model into `out`; returns (card path, trained?)."""
    out.mkdir(parents=True, exist_ok=True)
    args = ["--model", "shufflenet_v1", "--groups", "3", "--dataset", "cifar10", "--out", out,
            "--num-images", "4"]
    trained = SHIPPED_CKPT.is_file()
    if trained:
        ck = out.parent / "weights.pt"
        shutil.copyfile(SHIPPED_CKPT, ck)
        args += ["--weights", ck]
    else:
        args += ["--random-weights"]
    r = run("export.onnx", *args)
    assert r.returncode == 0, r.stderr
    return out / f"{NAME}.json", trained


def copy_model(src_card: Path, dst: Path, with_card: bool = True) -> Path:
    """Copy the float ONNX model (and its card) into another folder; returns the .onnx."""
    dst.mkdir(parents=True, exist_ok=True)
    onnx = src_card.with_suffix(".onnx")
    shutil.copyfile(onnx, dst / onnx.name)
    if with_card:
        shutil.copyfile(src_card, dst / src_card.name)
    return dst / onnx.name


def shared_model(tmp_path_factory) -> tuple[Path, bool]:
    """The exported model, once per pytest session (whichever test needs it first)."""
    base = tmp_path_factory.getbasetemp() / "quant_model"
    card = base / "art" / f"{NAME}.json"
    flag = base / "trained"
    if not card.is_file():
        card, trained = export_model(base / "art")
        flag.write_text("1" if trained else "0")
    return card, flag.read_text() == "1"
