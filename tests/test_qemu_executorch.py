"""ExecuTorch programs (.pte) under QEMU: runner.py --et-lib (libarmq_et.so through ctypes),
the qemu target's dispatch, deploy's QEMU bench stages, and (slow) FP32/INT8 programs under
QEMU against the local ExecuTorch runtime on real images."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SHIPPED_TESTSET, run_cli
from test_executorch import TINY, needs_et

RUNNER = REPO / "android_bench" / "runner.py"


def test_runner_without_the_library_is_one_line(tmp_path):
    """A .pte with --et-lib naming no library: exit 3 (runtime missing), one line, no JSON."""
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"\0" * 64)
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(RUNNER), "--model", str(pte), "--et-lib",
                        str(tmp_path / "libarmq_et.so"), "--json", str(out)],
                       capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 3 and len(lines) == 1, r.stderr
    assert "cannot load the ExecuTorch runner library" in lines[0] and not out.exists()


def _qemu_target(monkeypatch, tmp_path, fail: str | None):
    """A QemuTarget whose sysroot build is replaced: `fail` is the QemuSetupError of the
    ExecuTorch part (None: everything builds). Returns the target and the ensure calls."""
    from android_bench import qemu_setup
    from android_bench.targets.base import TargetOptions
    from android_bench.targets.qemu import QemuTarget
    calls: list[dict] = []

    def ensure(**kw):
        calls.append(kw)
        if fail and kw.get("executorch"):
            raise qemu_setup.QemuSetupError(fail)
        return qemu_setup.Sysroot(tmp_path, "qemu-aarch64", False, {})
    (tmp_path / "root" / qemu_setup.GUEST_DIR.lstrip("/")).mkdir(parents=True)
    monkeypatch.setattr(qemu_setup, "ensure", ensure)
    return QemuTarget(TargetOptions(cpu="cortex-a76", extra={"icount": False})), calls


def test_qemu_target_runs_pte_through_the_library(monkeypatch, tmp_path):
    from android_bench import qemu_et
    from android_bench.targets.base import BenchConfig
    t, calls = _qemu_target(monkeypatch, tmp_path, None)
    argv = t.command(["--model", "m.int8.pte", "--json", "r.json"], BenchConfig(), tmp_path)
    assert calls[-1]["executorch"] and argv[argv.index("--et-lib") + 1] == qemu_et.GUEST_LIB
    assert t.environment(BenchConfig())["PYTHONPATH"].endswith("site-litert")   # numpy
    argv = t.command(["--model", "m.onnx"], BenchConfig(), tmp_path)
    assert not calls[-1]["executorch"] and "--et-lib" not in argv


def test_qemu_pte_without_toolchain_fails_that_model_only(monkeypatch, tmp_path):
    """No cross compiler to fetch: the .pte model fails in one line (RunnerFailed: the
    other models of the run go on), not the whole target."""
    from android_bench.targets.base import BenchConfig, RunnerFailed
    t, _ = _qemu_target(monkeypatch, tmp_path, "apt-get download (amd64 packages) failed: E: offline")
    with pytest.raises(RunnerFailed, match="^no ExecuTorch runner for QEMU: apt-get download"):
        t.command(["--model", "m.pte"], BenchConfig(), tmp_path)
    assert t.command(["--model", "m.tflite"], BenchConfig(), tmp_path)


@pytest.mark.parametrize("runtimes,with_pte", [("ort,executorch", True), ("ort", False)])
def test_deploy_qemu_bench_takes_pte_with_executorch(tmp_path, runtimes, with_pte):
    from deploy.cli import build_parser, resolve_all
    from deploy.plan import Plan
    from deploy.settings import Settings
    from deploy.stages import Results
    s = Settings(build_parser().parse_args(["--targets", "local,qemu:cortex-a76",
                                            "--runtimes", runtimes, "--out", str(tmp_path)]))
    planned = resolve_all(s)
    plan = Plan(s, planned, tmp_path, Results(tmp_path / "results.json", {"stages": []}), None)
    p = planned[0]
    card = plan.card(p)
    card.parent.mkdir(parents=True, exist_ok=True)
    arts = {}
    for key, name in (("onnx", f"{p.tag}.onnx"), ("pte", f"{p.tag}.pte"),
                      ("pte_int8", f"{p.tag}.int8.pte")):
        (card.parent / name).write_bytes(b"x")
        arts[key] = {"path": name}
    card.write_text(json.dumps({"artifacts": arts}))
    stage = next(st for group, _ in plan.stages() for st in group
                 if st.kind == "bench" and "qemu" in st.target)
    stage.prepare(stage)
    assert not [n for n in plan.notes if "not built" in n], plan.notes   # its stages ran
    models = [a for a in stage.argv if a.endswith((".pte", ".onnx"))]
    assert any(m.endswith(".onnx") for m in models)
    assert any(m.endswith(".int8.pte") for m in models) == with_pte
    assert any(m.endswith(f"{p.tag}.pte") for m in models) == with_pte


@pytest.mark.slow   # two exports + PT2E, the runner build once (~30 s), 4 QEMU runs
@needs_et
def test_qemu_pte_outputs_match_local(tmp_path):
    """FP32 and INT8 programs under QEMU (cortex-a76, libarmq_et.so) give the local
    ExecuTorch runtime's outputs on real CIFAR images, with instruction counts."""
    from android_bench import qemu_setup
    try:
        qemu_setup.ensure(cpus=["cortex-a76"], executorch=True)
    except qemu_setup.QemuSetupError as e:
        pytest.skip(f"no QEMU ExecuTorch runner here: {e}")
    (tmp_path / "tiny.py").write_text(TINY)
    src = f"{tmp_path}/tiny.py:tiny"
    r = run_cli("export.executorch", "--source", src, "--dataset", "cifar10", "--num-images",
                "8", "--out", tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    card = tmp_path / "tiny_cifar10.json"
    q = run_cli("quant.et_ptq", "--card", card, "--calib", REPO / "assets/data/cifar10_calib.tar.gz",
                "--num-calib", "16", "--source", src, timeout=1800)
    assert q.returncode == 0, q.stderr[-2000:]
    from export.parity import parity_inputs
    from zoo.config import default_data_config
    x, _ = parity_inputs(default_data_config("cifar10", None, 10), SHIPPED_TESTSET, 6, "test")
    np.save(tmp_path / "x.npy", x)
    files = [tmp_path / "tiny_cifar10.pte", tmp_path / "tiny_cifar10.int8.pte"]
    outs = {}
    for target in ("local", "qemu"):
        b = run_cli("android_bench", "--model", *files, "--target", target,
                    *(["--cpu", "cortex-a76"] if target == "qemu" else []), "--runs", "2",
                    "--warmup", "1", "--inputs", tmp_path / "x.npy", "--outputs-dir",
                    tmp_path / target, "--json", tmp_path / f"{target}.json", timeout=1800)
        assert b.returncode == 0, b.stderr[-2000:]
        outs[target] = json.loads((tmp_path / f"{target}.json").read_text())["results"]
    for loc, emu in zip(outs["local"], outs["qemu"]):
        assert emu["runtime"]["runner"].startswith("armq_et") and emu["emulated"]
        ins = emu["instructions"]
        assert ins["per_inference"] > 0 and ins["other_threads_timed"] == 0
        a, b = np.load(loc["outputs_npy"]), np.load(emu["outputs_npy"])
        assert a.shape == b.shape == (6, 1, 10)
        assert np.abs(a - b).max() < 1e-4, (emu["model"]["file"], np.abs(a - b).max())
