"""android_bench qemu target: real tiny FP32/INT8 models under aarch64 emulation.

Builds (once, cached in ~/.cache/armq or $ARMQ_CACHE) the Debian arm64 sysroot and the
instruction-count plugin; needs apt-get + network the first time, qemu-user and a C
compiler (installed with apt-get when missing and we are root). Checks that the
emulated outputs equal the host's, that instruction counts per inference are
reproducible run to run, and that results are complete and labelled emulated.
No wall-clock time is asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _bench_models import shared_models

ROOT = Path(__file__).resolve().parent.parent
CPUS = ("cortex-a72", "cortex-a76")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return shared_models(tmp_path_factory)


@pytest.fixture(scope="module")
def host_outputs(models, tmp_path_factory):
    """Outputs of the host's onnxruntime on the same 4 CIFAR images."""
    import onnxruntime as ort
    x = np.load(models["inputs"])
    out = {}
    for kind in ("fp32", "int8"):
        s = ort.InferenceSession(str(models[kind]), providers=["CPUExecutionProvider"])
        out[kind] = np.stack([s.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    return out


def _config(models, out_dir):
    from android_bench.targets.base import BenchConfig
    return BenchConfig(warmup=1, runs=3, inputs=str(models["inputs"]), save_outputs=True,
                       out_dir=str(out_dir))


@pytest.fixture(scope="module")
def qemu_results(models, tmp_path_factory):
    """{cpu: [fp32 result, int8 result]} from one QemuTarget.run per CPU."""
    from android_bench.targets.base import TargetOptions
    from android_bench.targets.qemu import QemuTarget
    res = {}
    for cpu in CPUS:
        out = tmp_path_factory.mktemp(f"q-{cpu}")
        t = QemuTarget(TargetOptions(cpu=cpu))
        res[cpu] = t.run([models["fp32"], models["int8"]], _config(models, out),
                         progress=lambda s: print(s, file=sys.stderr))
    return res


@pytest.mark.parametrize("cpu", CPUS)
def test_results_complete_and_labelled_emulated(qemu_results, cpu):
    for r, kind in zip(qemu_results[cpu], ("fp32", "int8")):
        assert r["format"] == "armq-bench/1"
        assert r["emulated"] is True and r["target"]["emulated"] is True
        assert r["target"]["kind"] == "qemu" and r["target"]["cpu"] == cpu
        assert r["timing_ms"]["clock"] == "emulated"
        assert any(w.startswith("emulated:") for w in r["warnings"])
        t = r["timing_ms"]
        assert t["runs"] == 3 and t["min"] <= t["median"] <= t["max"]
        lo, hi = t["median_ci95"]
        assert lo <= t["median"] <= hi
        assert r["runtime"]["name"] == "onnxruntime" and r["model"]["int8"] is (kind == "int8")
        c = r["system"]["cpu"]
        assert c["machine"] == "aarch64" and c["feature_source"].startswith("AT_HWCAP")
        assert c["features"]["asimd"]
        assert c["features"]["dotprod"] is (cpu == "cortex-a76")
        assert c["model"] == {"cortex-a72": "Cortex-A72", "cortex-a76": "Cortex-A76"}[cpu]
        ins = r["instructions"]
        assert ins["cpu"] == cpu and len(ins["timed"]) == 3 and len(ins["warmup"]) == 1
        assert ins["per_inference"] > 1_000_000
        assert ins["process_total"] > sum(ins["timed"]) + ins["first"]
        assert ins["spread_pct"] < 1.0   # the 4 input images differ a little, no more
    int8 = qemu_results[cpu][1]
    no_dot = any("dot-product" in w for w in int8["warnings"])
    assert no_dot is (cpu == "cortex-a72")


def _output_step(int8_model) -> float:
    """The scale of the DequantizeLinear that produces the INT8 model's output: one step
    of the output quantizer."""
    import onnx
    from onnx import numpy_helper
    g = onnx.load(str(int8_model)).graph
    inits = {i.name: i for i in g.initializer}
    node = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == g.output[0].name)
    return float(numpy_helper.to_array(inits[node.input[1]]))


@pytest.mark.parametrize("cpu", CPUS)
def test_emulated_outputs_equal_host(qemu_results, host_outputs, models, cpu):
    for r, kind in zip(qemu_results[cpu], ("fp32", "int8")):
        y = np.load(r["outputs_npy"])
        ref = host_outputs[kind]
        assert y.shape == ref.shape
        scale = float(np.abs(ref).max())
        # FP32: different kernels (NEON vs AVX), different summation order: tiny differences.
        atol = 1e-4 * max(scale, 1e-3) + 1e-6
        if kind == "int8":
            # INT8: ARM's and x86's integer kernels requantize with their own rounding
            # (x86 even runs S8S8 as U8S8), so an intermediate value may land one step
            # off and that step travels through the following layers: outputs agree to a
            # few steps of the output quantizer (seen here: at most 3 of ~120 used steps),
            # mostly exactly, and the class is the same.
            step = _output_step(models["int8"])
            d = np.abs(y - ref) / step
            assert d.max() <= 4.001 and d.mean() <= 1.0, (d.max(), d.mean())
            atol = 4.001 * step
        np.testing.assert_allclose(y, ref, rtol=0, atol=atol)
        flat = ref.reshape(len(ref), -1)
        top2 = np.sort(flat, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * atol   # not a near-tie within the tolerance
        got = np.asarray(r["output_check"]["argmax"])
        assert (got[clear] == flat.argmax(1)[clear]).all(), (got, flat.argmax(1), clear)
        assert kind == "int8" or clear.all()


def test_dotprod_cpu_needs_fewer_int8_instructions(qemu_results):
    """The cpuinfo view per CPU makes the runtime pick dot-product kernels on the A76
    only: INT8 needs fewer instructions there than on the A72."""
    a72 = qemu_results["cortex-a72"][1]["instructions"]["per_inference"]
    a76 = qemu_results["cortex-a76"][1]["instructions"]["per_inference"]
    assert a76 < a72


def _close(a: int, b: int, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * max(a, b)


def test_instruction_counts_reproducible_via_cli(models, qemu_results, tmp_path):
    """Same model, same inputs, same CPU: the CLI run counts what the first run did.
    (Exactly, in practice; the bound leaves room for onnxruntime's clock-driven
    bookkeeping, a few hundred instructions out of millions.)"""
    out = tmp_path / "q.json"
    p = subprocess.run([sys.executable, "-m", "android_bench", "--target", "qemu", "--cpu",
                        "cortex-a76", "--model", str(models["fp32"]), str(models["int8"]),
                        "--warmup", "1", "--runs", "3", "--inputs", str(models["inputs"]),
                        "--outputs-dir", str(tmp_path), "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert p.returncode == 0, p.stderr
    assert "EMULATED" in p.stdout and "instr/inf" in p.stdout
    d = json.loads(out.read_text())
    assert d["target"]["emulated"] is True and len(d["results"]) == 2
    for again, first in zip(d["results"], qemu_results["cortex-a76"]):
        a, b = again["instructions"], first["instructions"]
        assert _close(a["per_inference"], b["per_inference"])
        assert all(_close(x, y) for x, y in zip(a["timed"] + a["warmup"], b["timed"] + b["warmup"]))
        assert a["guest_threads"] == 1 and a["other_threads_timed"] == 0
        assert again["output_check"] == first["output_check"]
        np.testing.assert_array_equal(np.load(again["outputs_npy"]), np.load(first["outputs_npy"]))


def test_qemu_hang_is_one_line_error(models):
    p = subprocess.run([sys.executable, "-m", "android_bench", "--target", "qemu", "--cpu",
                        "cortex-a76", "--model", str(models["fp32"]), "--timeout", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no result after 1 s" in p.stderr.strip().splitlines()[-1]


def test_unknown_cpu_is_one_line_error(models):
    p = subprocess.run([sys.executable, "-m", "android_bench", "--target", "qemu", "--cpu",
                        "cortex-m4", "--model", str(models["fp32"])],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "unknown qemu cpu 'cortex-m4'" in p.stderr
    assert "Traceback" not in p.stderr
    # the one target syntax (deploy's, quant.evaluate --on's) says the same
    p = subprocess.run([sys.executable, "-m", "android_bench", "--target", "qemu:cortex-m4",
                        "--model", str(models["fp32"])],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "python -m android_bench: error: --target: 'qemu:cortex-m4': unknown qemu cpu "
        "'cortex-m4' (one of cortex-a53, cortex-a72, cortex-a76, neoverse-n1, max)"]
