"""The ExecuTorch backend (XNNPACK delegate): card keys, the venv hint, FP32 parity, the
channels-last trap, INT8 agreement. Everything that runs ExecuTorch needs its venv
(`make venv-executorch`) and is skipped, with that reason, where it is missing."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, SHIPPED_TESTSET, run_cli
from export import et_venv
from export.card import artifact_key, card_path_for, model_stem

ET_PY = et_venv.et_python(required=False)
# `make test-executorch` (CI) sets ARMQ_REQUIRE_ET=1: there a missing venv fails these tests
# instead of skipping them.
needs_et = pytest.mark.skipif(ET_PY is None and os.environ.get("ARMQ_REQUIRE_ET") != "1",
                              reason="no ExecuTorch venv (.venv-et or $ARMQ_ET_PYTHON): run "
                              "`make venv-executorch`")

TINY = textwrap.dedent("""
    import torch
    from torch import nn

    def tiny(num_classes=10, **_):
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), nn.ReLU(),
            nn.Conv2d(16, 32, 1), nn.ReLU6(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))
""")


def et_script(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `code` with the ExecuTorch venv's Python, this checkout first on the path."""
    assert ET_PY is not None, "no ExecuTorch venv (ARMQ_REQUIRE_ET=1): run `make venv-executorch`"
    return subprocess.run([ET_PY, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=et_venv.child_env())


def test_artifact_keys_of_executorch_files():
    assert artifact_key("m.pte") == "pte"
    assert artifact_key("m_w0.5.int8.pte") == "pte_int8"
    assert model_stem("mobilenet_v1_w0.25_cifar10.int8.pte") == "mobilenet_v1_w0.25_cifar10"
    assert card_path_for(Path("a/x.int8.pte")) == Path("a/x.json")


def test_missing_venv_is_one_line_naming_make_target(tmp_path):
    r = run_cli("export.executorch", "--model", "shufflenet_v1", "--out", tmp_path,
                env={"ARMQ_ET_PYTHON": str(tmp_path / "no-python")}, timeout=120)
    if et_venv.has_executorch():
        pytest.skip("this interpreter has executorch itself: it never looks for the venv")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "make venv-executorch" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not list(tmp_path.glob("*.pte"))


@pytest.mark.slow   # two ExecuTorch processes and a lowering: 26 s idle, ~110 s loaded
@needs_et
def test_fp32_export_parity_and_evaluate(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY)
    r = run_cli("export.executorch", "--model-py", f"{tmp_path}/tiny.py:tiny", "--dataset",
                "cifar10", "--num-images", "8", "--out", tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((tmp_path / "tiny_cifar10.json").read_text())
    pte = card["artifacts"]["pte"]
    assert (tmp_path / pte["path"]).is_file() and pte["path"].endswith(".pte")
    assert pte["parity"]["data"] != "random" and pte["parity"]["n"] == 8
    assert pte["parity"]["max_abs_diff"] < 1e-4 and pte["parity"]["top1_agreement"] == 1.0
    assert pte["audit"]["delegated_subgraphs"] >= 1 and pte["audit"]["num_undelegated"] == 0
    # the main venv evaluates the .pte through the ExecuTorch venv (quant.runners.EtRunner)
    ev = run_cli("quant.evaluate", "--card", tmp_path / "tiny_cifar10.json", "--data",
                 SHIPPED_TESTSET, "--limit", "20", "--json", timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    res = json.loads(ev.stdout)["results"]["pte"]
    assert res["file"] == "tiny_cifar10.pte" and 0 <= res["top1"] <= 100


@needs_et
def test_channels_last_program_is_refused():
    """A channels-last example bakes dim order (0, 2, 3, 1) into the program; NCHW inputs
    then give wrong logits silently. The export refuses such an example, and a program made
    that way elsewhere is refused when armq opens it."""
    r = et_script("""
        import numpy as np, torch
        from torch import nn
        from zoo.util import ArmqError
        from export.executorch import check_example, export_program, lower
        from export.runtime import et_method
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten()).eval()
        x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
        cl = torch.from_numpy(x[:1]).to(memory_format=torch.channels_last)
        try:
            check_example(cl)          # what export_program runs on its example
            print("NOT REFUSED")
        except ArmqError as e:
            print("EXPORT REFUSED:", e)
        flat, _ = lower(torch.export.export(m, (cl,)))   # what a user's own script may do
        try:
            et_method(flat)(x)
            print("NOT DETECTED")
        except ArmqError as e:
            print("RUN REFUSED:", e)
        ok, _ = lower(export_program(m, x))
        ref = m(torch.from_numpy(x)).detach().numpy()
        print("NCHW DIFF", float(np.abs(et_method(ok)(x) - ref).max()))
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "EXPORT REFUSED: the example input is channels-last" in out, out
    assert "RUN REFUSED:" in out and "dim order [0, 2, 3, 1]" in out, out
    diff = float(out.split("NCHW DIFF")[1].split()[0])
    assert diff < 1e-5, out


@pytest.mark.slow   # PT2E calibration + lowering: 21 s idle, ~115 s loaded
@needs_et
def test_int8_agreement_on_cifar_images():
    """XNNPACKQuantizer PT2E, calibrated on real CIFAR images, lowered and run: its top-1
    agrees with torch's on those images (tiny net, trained-free: agreement, not accuracy)."""
    r = et_script(f"""
        import numpy as np, torch
        from zoo.config import default_data_config
        from zoo.data import load_images, normalize
        from export.executorch import lower
        from export.runtime import et_method
        from quant.et_ptq import quantize
        ns = {{}}
        exec({TINY!r}, ns)
        torch.manual_seed(0)
        m = ns["tiny"]().eval()
        cfg = default_data_config("cifar10", None, 10)
        li = load_images({str(SHIPPED_TESTSET)!r}, cfg.resize, cfg.input_size, cfg.interpolation,
                         limit=40)
        x = normalize(li.images, cfg)
        flat, audit = lower(quantize(m, x[:20]))
        y = et_method(flat)(x[20:])
        ref = m(torch.from_numpy(x[20:])).detach().numpy()
        print("AGREE", float((y.argmax(1) == ref.argmax(1)).mean()), audit["num_undelegated"])
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    agree, undelegated = r.stdout.split("AGREE")[1].split()
    assert float(agree) >= 0.85 and int(undelegated) == 0, r.stdout


def test_deploy_runtimes_flag(tmp_path):
    from deploy.cli import build_parser, resolve_all
    from deploy.plan import Plan
    from deploy.settings import Settings, parse_runtimes
    from deploy.spec import SpecError
    from deploy.stages import Results

    def settings(*argv):
        return Settings(build_parser().parse_args(["--targets", "local", *argv]))

    assert settings().runtimes == ("ort", "tflite")
    assert settings("--runtimes", "executorch,ort,tflite", "--skip-tflite").runtimes == \
        ("ort", "executorch")
    s = settings("--runtimes", "ort,executorch")
    assert s.skip_tflite and s.to_dict()["runtimes"] == ["ort", "executorch"]
    planned = resolve_all(s)
    plan = Plan(s, planned, tmp_path, Results(tmp_path / "results.json", {"stages": []}), None)
    stages = {st.kind: st for group, _ in plan.stages() for st in group}
    assert "export_tflite" not in stages
    assert stages["quant_executorch"].needs == [f"{planned[0].tag}/export_executorch"]
    assert parse_runtimes("executorch") == ("ort", "executorch")   # ort always runs
    with pytest.raises(SpecError, match="expected a comma-separated list"):
        parse_runtimes(3)
    r = run_cli("deploy", "--runtimes", "ort,foo", "--out", tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "unknown runtime 'foo'" in lines[0], r.stderr


@pytest.mark.slow   # ShuffleNet V1 lowered twice + PT2E calibration: 175 s here, 12+ min loaded
@needs_et
def test_int8_shipped_shufflenet_agrees_with_fp32(tmp_path):
    """The shipped checkpoint end to end: .pte, .int8.pte (XNNPACK PT2E, CIFAR calibration
    images), then quant.evaluate --card on real test images: INT8 agrees with FP32."""
    r = run_cli("export.executorch", "--model", "shufflenet_v1", "--groups", "3", "--dataset",
                "cifar10", "--num-images", "8", "--out", tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    card = tmp_path / "shufflenet_v1_g3_w1_cifar10.json"
    q = run_cli("quant.et_ptq", "--card", card, "--calib", REPO / "assets/data/cifar10_calib.tar.gz",
                "--num-calib", "32", timeout=2400)
    assert q.returncode == 0, q.stderr[-2000:]
    arts = json.loads(card.read_text())["artifacts"]
    assert arts["pte_int8"]["path"].endswith(".int8.pte")
    assert (arts["pte"]["precision"], arts["pte_int8"]["precision"]) == ("float32", "int8")
    ev = run_cli("quant.evaluate", "--card", card, "--data", SHIPPED_TESTSET, "--limit", "50",
                 "--json", timeout=900)
    assert ev.returncode == 0, ev.stderr[-2000:]
    res = json.loads(ev.stdout)["results"]
    assert res["pte_int8"]["ref"] == "pte" and res["pte_int8"]["agreement"] >= 94.0, res
    assert res["pte"]["top1"] >= 80.0, res
