"""README "Your own model": its code block, extracted and run verbatim (bash) in an empty
temp folder. The full run trains, exports, quantizes, evaluates, benchmarks (local and
QEMU) and runs deploy: minutes on 2 cores, so it is `slow`; scripts/install_check.sh runs
the same block from the installed wheel in CI. The fast test checks the block is there
and is valid bash naming every stage."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ARMQ_SHARED_DATA", REPO.parent / "shared" / "data"))


def _block() -> str:
    spec = importlib.util.spec_from_file_location("readme_block", REPO / "scripts" / "readme_block.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.extract(REPO / "README.md", "## Your own model")


def test_block_is_bash_with_every_stage(tmp_path):
    block = _block()
    script = tmp_path / "own.sh"
    script.write_text(block)
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for stage in ("export.onnx", "export.tflite", "quant.ptq", "--backend all", "quant.evaluate",
                  "--target local", "--target qemu", "python -m deploy"):
        assert stage in block, stage


@pytest.mark.slow
def test_readme_own_model_runs_verbatim(tmp_path):
    if not (SHARED_DATA / "cifar10" / "train.tar").is_file():
        pytest.fail(f"real data missing: {SHARED_DATA}/cifar10/train.tar")
    (tmp_path / "own.sh").write_text(_block())
    env = {**os.environ, "PYTHONPATH": str(REPO), "ARMQ_SHARED_DATA": str(SHARED_DATA),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", "-euo", "pipefail", "own.sh"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    card = json.loads((tmp_path / "art" / "mycnn_cifar10.json").read_text())
    assert set(card["artifacts"]) == {"onnx", "onnx_int8", "tflite", "tflite_int8"}
    assert card["source"]["model_source"]["kind"] == "factory"
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.is_symlink()]
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    res = json.loads((run / "results.json").read_text())
    acc = res["models"]["mycnn_cifar10"]["accuracy"]["results"]
    # deploy --targets local,qemu:cortex-a76: the x86 recipe (U8S8) and the a76 one (S8S8)
    assert set(acc) == {"onnx", "onnx_int8", "onnx_int8_u8s8", "tflite", "tflite_int8"}
    assert all(not v.get("error") for v in acc.values()), acc
    # A few hundred steps learn something: far above the 10 % of chance.
    assert acc["onnx"]["top1"] > 25, acc["onnx"]
    assert (run / "report.html").is_file()
