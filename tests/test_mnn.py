"""The MNN backend on the project's real model and data: ONNX -> .mnn parity, offline INT8
with the shipped calibration images, the benchmark runner, bad files, and the safety
rule (no network, no pip, no subprocess, never MNN.tools) checked on the very run that
made the files the other tests read."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("MNN")

from _quant_models import CALIB, NAME, TEST, shared_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVENTS = ("socket.connect", "socket.getaddrinfo", "subprocess.Popen", "os.system", "os.exec",
          "os.posix_spawn", "os.spawn", "os.fork")

# Runs export.mnn and quant.ptq --backend mnn in one interpreter under an audit hook and
# reports every network / process event and whether MNN.tools was ever imported.
GUARDED = textwrap.dedent("""
    import json, sys
    seen = []
    def hook(event, args):
        if event in EVENTS or event.startswith(("os.exec", "os.spawn", "os.posix_spawn")):
            seen.append(event)
    sys.addaudithook(hook)
    from export import mnn as export_mnn
    from quant import ptq
    rc = [export_mnn.main(["--card", CARD, "--num-images", "8"]),
          ptq.main(["--calib", CALIB, "--model", CARD, "--backend", "mnn", "--num-calib", "100",
                    "--eval", TEST, "--eval-limit", "200", "--out", OUT])]
    print("GUARD " + json.dumps({"rc": rc, "seen": seen,
                                 "mnn_tools": any(m == "MNN.tools" or m.startswith("MNN.tools.")
                                                  for m in sys.modules)}))
""")


@pytest.fixture(scope="module")
def mnn_run(tmp_path_factory):
    """The shared ONNX export, converted and quantized by MNN in a guarded interpreter."""
    card0, trained = shared_model(tmp_path_factory)
    art = tmp_path_factory.mktemp("mnn_art")
    for f in (card0, card0.with_suffix(".onnx")):
        shutil.copyfile(f, art / f.name)
    card = art / card0.name
    code = "EVENTS = %r\nCARD, CALIB, TEST, OUT = %r, %r, %r, %r\n" % (
        EVENTS, str(card), str(CALIB), str(TEST), str(art)) + GUARDED
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "ARMQ_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    guard = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("GUARD "))[6:])
    return {"card": card, "doc": json.loads(card.read_text()), "guard": guard,
            "trained": trained, "stdout": r.stdout}


def test_mnn_uses_no_network_no_pip_no_subprocess(mnn_run):
    g = mnn_run["guard"]
    assert g["rc"] == [0, 0]
    assert g["seen"] == [], f"network/process events while armq used MNN: {g['seen']}"
    assert g["mnn_tools"] is False


def test_mnn_fp32_parity_recorded_in_card(mnn_run):
    rec = mnn_run["doc"]["artifacts"]["mnn"]
    path = mnn_run["card"].parent / rec["path"]
    assert path.name == f"{NAME}.mnn" and path.stat().st_size == rec["size_bytes"]
    par = rec["parity"]
    assert par["passed"] and par["n"] == 8 and par["data"] != "random"
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0
    assert rec["ops"]["ConvolutionDepthwise"] == 16


def test_mnn_int8_agreement_and_float_audit(mnn_run):
    doc = mnn_run["doc"]
    rec = doc["artifacts"]["mnn_int8"]
    assert rec["calibration"]["method"] == "entropy" and rec["calibration"]["num_images"] == 100
    assert rec["mnn_config"]["feature_quantize_method"] == "KL"
    audit = rec["audit"]["runtime"]
    # every depthwise conv got int8 scales; no conv/add left computing in float
    assert audit["depthwise_int8"] == 16 and audit["depthwise_float"] == 0
    assert audit["float_compute"] == 0
    acc = doc["accuracy"]["mnn_int8"]
    assert acc["n"] == 200
    if mnn_run["trained"]:
        assert acc["agreement"] >= 95.0, acc
        assert doc["accuracy"]["mnn"]["top1"] >= 85.0


def test_card_eval_and_runner_on_mnn_files(mnn_run, tmp_path):
    """quant.evaluate --card evaluates the MNN files; the device runner runs them and its
    FP32 logits match ONNX Runtime's on real images."""
    from quant.calib import load_set
    from quant.runners import open_runner
    from export.card import load_card

    card = mnn_run["card"]
    r = subprocess.run([sys.executable, "-m", "quant.evaluate", "--card", str(card), "--data",
                        str(TEST), "--limit", "40", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert res["mnn"]["ref"] == "onnx" and res["mnn"]["agreement"] == 100.0
    assert res["mnn_int8"]["ref"] == "mnn"
    x = load_set(TEST, load_card(card), limit=6, progress=False).x
    np.save(tmp_path / "x.npy", x)
    ref = open_runner(card.with_suffix(".onnx"))(x)
    for f in (f"{NAME}.mnn", f"{NAME}.int8.mnn"):
        out = tmp_path / f"{f}.json"
        r = subprocess.run([sys.executable, str(REPO / "android_bench" / "runner.py"), "--model",
                            str(card.parent / f), "--card", str(card), "--runs", "3", "--warmup",
                            "1", "--inputs", str(tmp_path / "x.npy"), "--outputs-npy",
                            str(tmp_path / "y.npy"), "--json", str(out)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        doc = json.loads(out.read_text())
        assert doc["runtime"]["name"] == "mnn" and doc["model"]["int8"] == (".int8." in f)
        assert doc["input"]["shape"] == [1, 3, 32, 32]
        y = np.load(tmp_path / "y.npy").reshape(len(x), -1)
        if ".int8." not in f:
            assert np.abs(y - ref).max() < 1e-4
        else:
            assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.8


def test_corrupt_mnn_is_one_line(mnn_run, tmp_path):
    good = mnn_run["card"].parent / f"{NAME}.mnn"
    bad = tmp_path / f"{NAME}.int8.mnn"
    bad.write_bytes(good.read_bytes()[:4000])
    shutil.copyfile(mnn_run["card"], tmp_path / mnn_run["card"].name)
    cases = [
        [sys.executable, str(REPO / "android_bench" / "runner.py"), "--model", str(bad)],
        [sys.executable, "-m", "quant.evaluate", "--model", str(bad), "--data", str(TEST),
         "--limit", "4"],
        [sys.executable, "-m", "android_bench", "--model", str(bad), "--target", "local",
         "--runs", "1"],
    ]
    for argv in cases:
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode != 0, (argv, r.stderr)
        assert "Traceback" not in r.stderr and any("MNN" in ln and "error" in ln for ln in lines), \
            (argv, r.stderr)
        assert len([ln for ln in lines if "error" in ln]) == 1, (argv, r.stderr)
    # export.mnn refuses an INT8 or non-ONNX input in one line and writes nothing
    before = set(os.listdir(tmp_path))
    r = subprocess.run([sys.executable, "-m", "export.mnn", "--onnx", str(bad)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "expected an FP32 .onnx" in r.stderr
    assert set(os.listdir(tmp_path)) == before


def test_ptq_mnn_bad_method_and_missing_model(mnn_run, tmp_path):
    card = tmp_path / mnn_run["card"].name
    doc = dict(mnn_run["doc"])
    doc["artifacts"] = {k: v for k, v in doc["artifacts"].items() if k == "onnx"}
    card.write_text(json.dumps(doc))
    shutil.copyfile(mnn_run["card"].with_suffix(".onnx"), card.with_suffix(".onnx"))
    r = subprocess.run([sys.executable, "-m", "quant.ptq", "--calib", str(CALIB), "--model",
                        str(card), "--backend", "mnn", "--out", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no FP32 MNN model" in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "quant.ptq", "--calib", str(CALIB), "--model",
                        str(mnn_run["card"]), "--backend", "mnn", "--method", "percentile",
                        "--out", str(mnn_run["card"].parent)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "no MNN counterpart" in r.stderr and r.stderr.count("\n") == 1


def test_deploy_runtimes_setting(tmp_path):
    from deploy.cli import build_parser
    from deploy.plan import Plan
    from deploy.settings import Settings, parse_runtimes, resolve_all
    from deploy.spec import SpecError
    from deploy.stages import Results

    assert parse_runtimes("mnn") == ("ort", "mnn")
    assert parse_runtimes("tflite, ort,mnn") == ("ort", "tflite", "mnn")
    with pytest.raises(SpecError, match="unknown runtime 'onnx'"):
        parse_runtimes("onnx")
    s = Settings(build_parser().parse_args(["--runtimes", "tflite,mnn", "--skip-tflite"]))
    assert s.runtimes == ("ort", "mnn") and s.skip_tflite
    assert Settings(build_parser().parse_args([])).runtimes == ("ort", "tflite")
    # mnn in the list: deploy plans the MNN export (after ONNX) and its PTQ (after that)
    plan = Plan(s, resolve_all(s), tmp_path, Results(tmp_path / "results.json", {}), None)
    stages = {st.kind: st for group, _ in plan.stages() for st in group}
    assert {"export_mnn", "quant_mnn", "quant_ort"} <= set(stages)
    assert not {"export_tflite", "quant_tflite"} & set(stages)
    assert stages["export_mnn"].needs[0].endswith("/export_onnx")
    assert stages["quant_mnn"].needs[0].endswith("/export_mnn")


@pytest.mark.slow
def test_mnn_under_qemu_a76_counts_instructions(mnn_run, tmp_path):
    """The aarch64 MNN wheel runs in the QEMU sysroot; INT8 needs fewer guest
    instructions than FP32 on the dot-product cortex-a76."""
    art = mnn_run["card"].parent
    out = tmp_path / "q.json"
    r = subprocess.run([sys.executable, "-m", "android_bench", "--model", str(art / f"{NAME}.mnn"),
                        "--model", str(art / f"{NAME}.int8.mnn"), "--target", "qemu", "--cpu",
                        "cortex-a76", "--runs", "2", "--warmup", "1", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    instr = {x["model"]["file"]: x["instructions"]["per_inference"] for x in res}
    assert all(x["runtime"]["name"] == "mnn" for x in res)
    assert instr[f"{NAME}.int8.mnn"] < instr[f"{NAME}.mnn"]


def test_tiny_mnn_model_under_qemu_matches_the_host(tmp_path):
    """Default-suite share of the MNN-under-QEMU path (the ShuffleNet run above is slow): a
    hand-made ONNX model converted by export.mnn, run by the aarch64 MNN wheel in the QEMU
    sysroot (cortex-a72) and by the host's MNN on the same inputs -- the same logits, the
    result labelled emulated with reproducible guest instruction counts."""
    from test_cli_contract import tiny_model

    onnx_path = tiny_model(tmp_path / "art")
    r = subprocess.run([sys.executable, "-m", "export.mnn", "--card", str(onnx_path.with_suffix(".json"))],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    model = onnx_path.with_suffix(".mnn")
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    outs = {}
    for target in ("local", "qemu:cortex-a72"):
        r = subprocess.run([sys.executable, "-m", "android_bench", "--model", str(model), "--target",
                            target, "--runs", "2", "--warmup", "1",
                            "--inputs", str(x), "--outputs-dir", str(tmp_path / target.split(":")[0]),
                            "--json", str(tmp_path / f"{target.split(':')[0]}.json")],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        name = target.split(":")[0]
        (res,) = json.loads((tmp_path / f"{name}.json").read_text())["results"]
        assert res["runtime"]["name"] == "mnn"
        (f,) = (tmp_path / name).glob("tiny.mnn.*.outputs.npy")
        outs[name] = (res, np.load(f))
    q, host = outs["qemu"][0], outs["local"][0]
    assert q["target"]["emulated"] is True and host["target"]["emulated"] is False
    assert outs["qemu"][1].shape == (2, 1, 10)
    np.testing.assert_allclose(outs["qemu"][1], outs["local"][1], atol=1e-5)
    ins = q["instructions"]
    assert ins["per_inference"] > 1000 and ins["spread_pct"] < 5.0
