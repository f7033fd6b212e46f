"""android_bench: runner.py and the local target on real (tiny) models.

No test asserts a wall-clock time: only that the measurements exist and are
consistent (ordering of statistics, confidence interval around the median).
"""
from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _bench_models import shared_models

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "android_bench" / "runner.py"
PY = sys.executable


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return shared_models(tmp_path_factory)


def run_runner(*args, env=None, timeout=600):
    return subprocess.run([PY, str(RUNNER), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_cli(*args, timeout=900):
    return subprocess.run([PY, "-m", "android_bench", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def check_timing(t: dict, runs: int) -> None:
    for k in ("init", "first", "warmup_total", "mean", "median", "p90", "p99", "min", "max",
              "std", "median_ci95", "median_ci_coverage"):
        assert k in t, k
    assert t["runs"] == runs
    assert 0 < t["min"] <= t["median"] <= t["p90"] <= t["p99"] <= t["max"]
    assert t["min"] <= t["mean"] <= t["max"] and t["std"] >= 0
    lo, hi = t["median_ci95"]
    assert lo <= t["median"] <= hi
    assert t["init"] > 0 and t["first"] > 0


# ---- runner.py standalone ------------------------------------------------------------

def test_runner_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(RUNNER.read_text())
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "ai_edge_litert",
                                               "tflite_runtime", "MNN",
                                               "executorch"}
    mods, full = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
            full |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            mods.add(node.module.split(".")[0])
            full.add(node.module)
    assert mods <= allowed, mods - allowed
    # MNN.tools pip-installs a package and sends telemetry when imported (export/runtime.py)
    assert not any(m == "MNN.tools" or m.startswith("MNN.tools.") for m in full)
    assert "torch" not in mods and not mods & {"zoo", "export", "quant", "android_bench"}


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_runner_random_and_real_inputs(models, kind, tmp_path):
    out = tmp_path / "r.json"
    p = run_runner("--model", models[kind], "--card", models["card"], "--warmup", 2,
                   "--runs", 12, "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    assert d["format"] == "armq-bench/1"
    check_timing(d["timing_ms"], 12)
    assert len(d["samples_ms"]) == 12
    assert d["input"]["source"] == {"kind": "random", "seed": 0, "n": 1,
                                    "distribution": "standard normal"}
    assert d["input"]["shape"] == [1, 3, 32, 32]
    assert d["runtime"]["name"] == "onnxruntime" and d["runtime"]["threads"] == 1
    assert d["model"]["int8"] is (kind == "int8")
    assert d["model"]["cost"]["macs"] > 0 and d["model"]["card_name"] == "shufflenet_tiny"
    cpu = d["system"]["cpu"]
    assert cpu["machine"] and isinstance(cpu["features"], dict)
    assert d["outputs"][0]["name"] == "logits"
    # Same seed -> same output; real inputs -> the outputs of those images.
    out2, npy = tmp_path / "r2.json", tmp_path / "y.npy"
    p = run_runner("--model", models[kind], "--warmup", 0, "--runs", 5, "--json", out2,
                   "--inputs", models["inputs"], "--outputs-npy", npy, "--profile")
    assert p.returncode == 0, p.stderr
    d2 = json.loads(out2.read_text())
    assert d2["input"]["source"]["kind"] == "file" and d2["input"]["source"]["n"] == 4
    y = np.load(npy)
    assert y.shape == (4, 1, 10)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(models[kind]), providers=["CPUExecutionProvider"])
    x = np.load(models["inputs"])
    ref = np.stack([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert d2["output_check"]["argmax"] == [int(v) for v in ref.reshape(4, -1).argmax(1)]
    prof = d2["profile"]
    assert prof["available"] and prof["by_op_type"]
    assert abs(sum(o["pct"] for o in prof["by_op_type"]) - 100) < 0.5
    assert any("Conv" in o["op_type"] for o in prof["by_op_type"])


def test_runner_json_to_stdout_and_markers(models):
    p = run_runner("--model", models["fp32"], "--warmup", 1, "--runs", 3, "--markers")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["markers"] == {"regions": 5, "first": 0, "warmup": [1, 1], "timed": [2, 3],
                            "extra_after_timed": 0}


def test_runner_integer_input_model(tmp_path):
    """A model whose input is int8 gets seeded random int8 data."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceSum", ["f"], ["y"], keepdims=0)],
        "int8_in", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "int8in.onnx"
    onnx.save(m, str(path))
    outs = []
    for _ in range(2):
        p = run_runner("--model", path, "--warmup", 0, "--runs", 2, "--seed", 7)
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        assert d["input"]["dtype"] == "int8"
        assert d["input"]["source"]["distribution"] == "uniform integers"
        outs.append(d["output_check"]["first_values"])
    assert outs[0] == outs[1]


def test_runner_errors_are_one_line(models, tmp_path):
    p = run_runner("--model", tmp_path / "nope.onnx")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "not found" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    p = run_runner("--model", bad)
    assert p.returncode == 2 and "cannot load" in p.stderr and "Traceback" not in p.stderr
    # Runtime missing: a fake package that fails to import.
    fake = tmp_path / "fake"
    (fake / "onnxruntime").mkdir(parents=True)
    (fake / "onnxruntime" / "__init__.py").write_text("raise ImportError('no wheel here')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    p = run_runner("--model", models["fp32"], env=env)
    assert p.returncode == 3 and "onnxruntime is not installed" in p.stderr
    assert "Traceback" not in p.stderr
    # Inputs of the wrong shape.
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3, 5, 5), np.float32))
    p = run_runner("--model", models["fp32"], "--inputs", wrong)
    assert p.returncode == 2 and "does not fit" in p.stderr


# ---- statistics and CPU features (imported as a module) -----------------------------

def _runner_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("armq_runner_under_test", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_median_ci_order_statistics():
    r = _runner_module()
    x = [float(i) for i in range(1, 101)]
    lo, hi, cov = r.median_ci(x)
    assert (lo, hi) == (40.0, 61.0)           # the textbook ranks for n = 100
    assert 0.95 <= cov < 0.97
    lo, hi, cov = r.median_ci([1.0, 2.0, 3.0])  # n < 6: the 95% level is unreachable
    assert (lo, hi) == (1.0, 3.0) and cov == pytest.approx(0.75)
    for n in (6, 7, 20, 51, 1000):
        xs = sorted(np.random.default_rng(n).random(n).tolist())
        lo, hi, cov = r.median_ci(xs)
        assert lo <= float(np.median(xs)) <= hi and cov >= 0.95
        # Exact coverage: P(r <= B <= n-r) for the chosen rank r.
        rank = xs.index(lo) + 1
        exact = sum(math.comb(n, k) for k in range(rank, n - rank + 1)) / 2 ** n
        assert cov == pytest.approx(exact, abs=1e-4)


def test_cpu_features_and_int8_warning(monkeypatch):
    r = _runner_module()
    a72 = ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
           "CPU implementer\t: 0x41\nCPU part\t: 0xd08\n")
    a76 = a72.replace("cpuid", "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp") \
             .replace("0xd08", "0xd0b")
    monkeypatch.setattr(r.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(r, "_getauxval", lambda kind: None)
    monkeypatch.setattr(r, "_read_text", lambda path: a72)
    c = r.cpu_info()
    assert c["model"] == "Cortex-A72" and c["features"]["asimd"] and not c["features"]["dotprod"]
    assert r.int8_warnings(c, is_int8=True) and not r.int8_warnings(c, is_int8=False)
    monkeypatch.setattr(r, "_read_text", lambda path: a76)
    c = r.cpu_info()
    assert c["model"] == "Cortex-A76" and c["features"]["dotprod"] and c["features"]["fphp"]
    assert not r.int8_warnings(c, is_int8=True)
    # AT_HWCAP wins over /proc/cpuinfo: asimddp (bit 20) and i8mm (HWCAP2 bit 13).
    monkeypatch.setattr(r, "_read_text", lambda path: "")
    monkeypatch.setattr(r, "_getauxval", lambda kind: (1 << 1 | 1 << 20) if kind == 16 else 1 << 13)
    c = r.cpu_info()
    assert c["features"]["dotprod"] and c["features"]["i8mm"] and c["feature_source"] == "AT_HWCAP"


# ---- the local target and the CLI ----------------------------------------------------

def test_local_target_two_models(models, tmp_path):
    from android_bench.targets.base import BenchConfig
    from android_bench.targets.local import LocalTarget
    cfg = BenchConfig(warmup=1, runs=5, inputs=str(models["inputs"]), save_outputs=True,
                      out_dir=str(tmp_path))
    res = LocalTarget().run([models["fp32"], models["int8"]], cfg)
    assert [r["model"]["file"] for r in res] == ["shufflenet_tiny.onnx", "shufflenet_tiny.int8.onnx"]
    for r in res:
        assert r["target"]["kind"] == "local" and r["target"]["emulated"] is False
        assert r["model"]["card"] == str(models["card"])
        assert r["timing_ms"]["clock"] == "wall"
        check_timing(r["timing_ms"], 5)
        assert np.load(r["outputs_npy"]).shape == (4, 1, 10)


def test_cli_table_and_json(models, tmp_path):
    out = tmp_path / "bench.json"
    p = run_cli("--model", models["fp32"], models["int8"], "--warmup", 2, "--runs", 10,
                "--json", out)
    assert p.returncode == 0, p.stderr
    assert "shufflenet_tiny.int8.onnx" in p.stdout and "median ms" in p.stdout
    d = json.loads(out.read_text())
    assert d["format"] == "armq-bench-results/1" and len(d["results"]) == 2
    assert d["failures"] == [] and d["config"]["runs"] == 10
    # The result file feeds android_bench.compare.
    from android_bench.compare import entry_of
    e = entry_of(d["results"][1])
    assert e.int8 and e.latency_ms > 0 and e.macs > 0


def test_cli_missing_model_is_one_line_error(tmp_path):
    p = run_cli("--model", tmp_path / "missing.onnx")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("python -m android_bench: error: model file")
    assert "Traceback" not in p.stderr


def test_cli_partial_results_kept(models, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    out = tmp_path / "bench.json"
    p = run_cli("--model", models["fp32"], bad, "--warmup", 0, "--runs", 3, "--json", out)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert "broken.onnx" in err and "1 of 2 models finished" in err
    d = json.loads(out.read_text())
    assert [r["model"]["file"] for r in d["results"]] == ["shufflenet_tiny.onnx"]
    assert d["failures"][0]["model"].endswith("broken.onnx")


def test_cli_runtime_missing_and_hang(models, tmp_path):
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(b"TFL3")
    p = run_cli("--model", tfl, "--runtime", "tflite_runtime", "--runs", 1)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no TFLite runtime" in p.stderr.strip().splitlines()[-1]
    # A runner that hangs: an interpreter that never answers.
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nsleep 300\n")
    hang.chmod(0o755)
    p = run_cli("--model", models["fp32"], "--python", hang, "--timeout", 2, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no result after 2 s" in p.stderr.strip().splitlines()[-1]


def test_op_profile_opens_the_one_ort_session(models, monkeypatch):
    """android_bench.profile opens its session through export.runtime.ort_session (its
    profiler path and thread rule), so ARMQ_THREADS counts and an explicit count wins."""
    from android_bench.profile import command, profile_onnx

    monkeypatch.setenv("ARMQ_THREADS", "2")
    p = profile_onnx(Path(models["fp32"]), runs=2, warmup=0)
    assert p["available"] and p["threads"] == 2 and p["nodes"]
    assert profile_onnx(Path(models["fp32"]), runs=2, warmup=0, threads=1)["threads"] == 1
    argv = command(["m.onnx"], 5, Path("o.json"), python="py")
    assert argv[argv.index("--threads") + 1] == "1"    # deploy: the local benchmark's count
