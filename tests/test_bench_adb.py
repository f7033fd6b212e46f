"""The adb target without a phone.

What this covers, and what it does not:
  * the benchmark_model log parser, on SAMPLE logs WRITTEN BY HAND after the log
    statements of TFLite's tools/benchmark (benchmark_model.cc: "Initialized session
    in", "Running benchmark for at least", Stat::OutputToStream's "count= first= curr=
    min= max= avg= std=", "Inference timings in us: ...", memory footprint lines;
    tools/logging.h's "INFO: " prefix of newer versions; the profiler's "Summary by
    node type" table). They are not captured from a device;
  * the one-line errors when adb is absent (no binary) and, with Debian's real `adb`
    when installed, when no device is connected (its own server on a private port,
    killed afterwards);
  * the whole push / run / pull / cleanup plumbing against a STAND-IN `adb` (a Python
    script that runs `adb shell` commands with the local sh, push/pull as copies)
    with a stand-in benchmark_model printing the sample log, and runner.py for real
    in --adb-python mode;
  * NOT covered: a real phone, real adb transport, the real benchmark_model binary,
    Android's mksh/toybox (the stand-in uses this machine's sh and coreutils).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _fake_remote import install_fake_adb
from android_bench.compare import entry_of
from android_bench.targets.adb import (AdbTarget, classify_adb_failure, cpu_from_cpuinfo,
                                       make_target, parse_benchmark_output, parse_stat_line,
                                       result_from_benchmark)
from android_bench.targets.base import (BenchConfig, ModelSpec, PartialResults, RunnerFailed,
                                        TargetOptions, TargetUnavailable, finish_result)

ROOT = Path(__file__).resolve().parent.parent

# --- sample logs: hand-written after the documented format (see module docstring) ---

SAMPLE_OLD = """\
STARTING!
Log parameter values verbosely: [0]
Min num runs: [50]
Min runs duration (seconds): [0]
Min warmup runs: [11]
Min warmup runs duration (seconds): [0]
Num threads: [4]
Graph: [/data/local/tmp/armq.a1B2c3/m0/mobilenet_v2.int8.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/armq.a1B2c3/m0/mobilenet_v2.int8.tflite
The input model file size (MB): 3.57766
Initialized session in 4.812ms.
Running benchmark for at least 11 iterations and at least 0 seconds but terminate if exceeding 900 seconds.
count=11 first=14380 curr=9012 min=8896 max=14380 avg=9640.45 std=1509

Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 900 seconds.
count=50 first=9101 curr=8977 min=8843 max=9655 avg=9046.3 std=154

Inference timings in us: Init: 4812, First inference: 14380, Warmup (avg): 9640.45, Inference (avg): 9046.3
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.91406 overall=9.32812
"""

SAMPLE_NEW = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [20]
INFO: Min runs duration (seconds): [0]
INFO: Max runs duration (seconds): [900]
INFO: Num threads: [1]
INFO: Min warmup runs: [2]
INFO: Min warmup runs duration (seconds): [0]
INFO: Graph: [/data/local/tmp/armq.Zx81Qa/m0/resnet50.tflite]
INFO: Enable op profiling: [1]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model /data/local/tmp/armq.Zx81Qa/m0/resnet50.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 102.161
INFO: Initialized session in 151.22ms.
INFO: Running benchmark for at least 2 iterations and at least 0 seconds but terminate if exceeding 900 seconds.
INFO: count=2 first=1318720 curr=1203510 min=1203510 max=1318720 avg=1.26112e+06 std=57605

INFO: Running benchmark for at least 20 iterations and at least 0 seconds but terminate if exceeding 900 seconds.
INFO: count=20 first=1201020 curr=1195430 min=1190110 max=1218760 avg=1.19872e+06 std=6822

INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t   12.312\t   11.946\t  1.002%\t  1.002%\t     0.000\t        1\t[resnet/conv1]

============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t       53\t  1032.122\t    86.318%\t    86.318%\t     0.000\t       53
\t                     ADD\t       16\t    68.901\t     5.762%\t    92.080%\t     0.000\t       16
\t         AVERAGE_POOL_2D\t        1\t     1.042\t     0.087%\t    92.167%\t     0.000\t        1

Timings (microseconds): count=20 first=1199123 curr=1193871 min=1188034 max=1216970 avg=1.19698e+06 std=6810
Memory (bytes): count=0
70 nodes defined 70 nodes observed

INFO: Inference timings in us: Init: 151220, First inference: 1318720, Warmup (avg): 1.26112e+06, Inference (avg): 1.19872e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=108.75 overall=121.125
INFO: Overall peak memory footprint (MB) via periodic monitoring: 123.5
"""

SAMPLE_ONE_WARMUP = """\
INFO: Initialized session in 0.9ms.
INFO: Running benchmark for at least 1 iterations and at least 0 seconds but terminate if exceeding 60 seconds.
INFO: count=1 curr=5230

INFO: Running benchmark for at least 5 iterations and at least 0 seconds but terminate if exceeding 60 seconds.
INFO: count=5 curr=4100(all same)

INFO: Inference timings in us: Init: 900, First inference: 5230, Warmup (avg): 5230, Inference (avg): 4100
"""

SAMPLE_ERROR = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [/data/local/tmp/armq.k2/m0/missing.tflite]
ERROR: Could not open '/data/local/tmp/armq.k2/m0/missing.tflite'.
ERROR: Failed to mmap model /data/local/tmp/armq.k2/m0/missing.tflite
ERROR: Benchmarking failed.
"""

CPUINFO_A76 = """\
processor\t: 0
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
"""


# ---- parser ----------------------------------------------------------------------------

def test_stat_lines():
    s = parse_stat_line("count=50 first=9101 curr=8977 min=8843 max=9655 avg=9046.3 std=154")
    assert s == {"count": 50, "first": 9101, "curr": 8977, "min": 8843, "max": 9655,
                 "avg": 9046.3, "std": 154}
    s = parse_stat_line("INFO: count=2 first=1318720 curr=1203510 min=1203510 max=1318720 "
                        "avg=1.26112e+06 std=57605")
    assert s["avg"] == pytest.approx(1261120.0)
    s = parse_stat_line("count=5 curr=4100(all same)")
    assert s["min"] == s["max"] == s["avg"] == 4100 and s["std"] == 0
    assert parse_stat_line("count=0") == {"count": 0}
    assert parse_stat_line("Memory (bytes): count=0") is None


def test_parse_old_format():
    p = parse_benchmark_output(SAMPLE_OLD)
    assert p["threads"] == 4 and p["model_size_mb"] == pytest.approx(3.57766)
    assert p["init_us"] == 4812 and p["first_us"] == 14380
    assert p["warmup"]["count"] == 11 and p["warmup"]["avg"] == pytest.approx(9640.45)
    inf = p["inference"]
    assert (inf["count"], inf["min"], inf["max"], inf["std"]) == (50, 8843, 9655, 154)
    assert inf["avg"] == pytest.approx(9046.3)
    assert p["memory"] == {"init_mb": pytest.approx(4.91406), "overall_mb": pytest.approx(9.32812)}
    assert p["profile"] is None and p["errors"] == []


def test_parse_new_format_with_profile_and_exponents():
    p = parse_benchmark_output(SAMPLE_NEW)
    assert p["threads"] == 1 and p["init_us"] == 151220 and p["first_us"] == 1318720
    assert p["inference"]["count"] == 20
    assert p["inference"]["avg"] == pytest.approx(1198720.0)    # from "1.19872e+06"
    assert p["memory"]["peak_mb"] == pytest.approx(123.5)
    ops = p["profile"]["by_op_type"]
    assert [o["op_type"] for o in ops] == ["CONV_2D", "ADD", "AVERAGE_POOL_2D"]
    assert ops[0]["nodes"] == 53 and ops[0]["ms"] == pytest.approx(1032.122)
    assert ops[0]["pct"] == pytest.approx(86.318)


def test_parse_single_warmup_and_all_same():
    p = parse_benchmark_output(SAMPLE_ONE_WARMUP)
    assert p["warmup"]["count"] == 1 and p["first_us"] == 5230
    assert p["inference"]["avg"] == 4100 and p["inference"]["std"] == 0


def test_parse_failure_is_one_line():
    with pytest.raises(RunnerFailed) as e:
        parse_benchmark_output(SAMPLE_ERROR)
    assert "Could not open" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RunnerFailed, match="no inference statistics"):
        parse_benchmark_output("garbage\n")


def test_result_schema_from_sample(tmp_path):
    m = tmp_path / "mobilenet_v2.int8.tflite"
    m.write_bytes(b"TFL3 not a real model")
    card = tmp_path / "mobilenet_v2.json"
    card.write_text(json.dumps({"name": "mobilenet_v2", "cost": {"macs": 300_000_000},
                                "input": {"name": "input", "shape": [1, 3, 224, 224]}}))
    spec = ModelSpec(m, card)
    device = {"model": "Pixel 6", "release": "14", "abi": "arm64-v8a",
              "cpu": cpu_from_cpuinfo(CPUINFO_A76, "arm64-v8a", "Tensor")}
    cfg = BenchConfig(threads=4, warmup=10, runs=50)
    raw = result_from_benchmark(parse_benchmark_output(SAMPLE_OLD), spec, cfg, device, "bm")
    r = finish_result(raw, {"kind": "adb", "emulated": False}, spec)   # schema check
    assert r["model"]["int8"] is True and r["model"]["cost"]["macs"] == 300_000_000
    tm = r["timing_ms"]
    assert tm["median"] is None and tm["mean"] == pytest.approx(9.0463)
    assert tm["init"] == pytest.approx(4.812) and tm["first"] == pytest.approx(14.38)
    assert r["system"]["cpu"]["features"]["dotprod"] is True
    assert r["system"]["cpu"]["n_cpus"] == 2
    assert any("no median" in w for w in r["warnings"])
    assert entry_of(r).latency_ms == pytest.approx(9.0463)       # compare uses the mean


def test_classify_adb_errors():
    assert "no Android device" in classify_adb_failure("error: no devices/emulators found", None)
    assert "--serial" in classify_adb_failure("error: more than one device/emulator", None)
    assert "not connected" in classify_adb_failure("error: device 'abc' not found", "abc")
    assert "USB debugging prompt" in classify_adb_failure("error: device unauthorized.", None)
    assert classify_adb_failure("sh: foo: not found", None) is None


# ---- adb absent / real adb without a device -------------------------------------------

def test_adb_absent_is_a_one_line_error(tmp_path):
    m = tmp_path / "m.tflite"
    m.write_bytes(b"x")
    t = make_target(TargetOptions(extra={"adb": str(tmp_path / "no-adb"),
                                         "benchmark_binary": "/data/local/tmp/bm"}))
    with pytest.raises(TargetUnavailable, match="not found: install Android platform-tools"):
        t.run([m], BenchConfig(runs=1, warmup=0))
    p = subprocess.run([sys.executable, "-m", "android_bench", "--target", "adb",
                        "--adb", str(tmp_path / "no-adb"), "--benchmark-binary", "bm",
                        "--model", str(m), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode != 0
    assert p.stderr.strip().count("\n") == 0 and "adb" in p.stderr and "not found" in p.stderr


def test_needs_benchmark_binary_or_python(tmp_path):
    m = tmp_path / "m.tflite"
    m.write_bytes(b"x")
    fake = _fake_adb(tmp_path)
    t = AdbTarget(adb=str(fake))
    with pytest.raises(TargetUnavailable, match="--benchmark-binary"):
        t.run([m], BenchConfig(runs=1, warmup=0))


@pytest.mark.skipif(not shutil.which("adb"), reason="Debian's adb not installed")
def test_real_adb_without_device(tmp_path, monkeypatch):
    """Debian's adb, its server on a private port (killed afterwards), no phone."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    m = tmp_path / "m.tflite"
    m.write_bytes(b"x")
    try:
        t = make_target(TargetOptions(extra={"benchmark_binary": "/data/local/tmp/bm"}))
        t0 = time.monotonic()
        with pytest.raises(TargetUnavailable) as e:
            t.run([m], BenchConfig(runs=1, warmup=0))
        assert time.monotonic() - t0 < 120
        assert "no Android device connected" in str(e.value)
    finally:
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)


# ---- the plumbing against a stand-in adb ------------------------------------------------

def _fake_adb(tmp_path: Path) -> Path:
    return install_fake_adb(tmp_path / "fakebin")


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    adb = _fake_adb(tmp_path)
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    dev = tmp_path / "device_tmp"
    dev.mkdir()
    return adb, dev


def _fake_benchmark_model(tmp_path: Path) -> Path:
    sample = tmp_path / "sample.log"
    sample.write_text(SAMPLE_NEW)
    bm = tmp_path / "benchmark_model"
    bm.write_text(f"""#!/bin/sh
echo "$@" > {tmp_path}/bm.args
case "$*" in *hang*) echo $$ > {tmp_path}/bm.pid; exec sleep 600;; esac
cat {sample}
""")
    bm.chmod(0o755)
    return bm


def test_benchmark_model_flow_with_stand_in_adb(fake_env, tmp_path):
    adb, dev = fake_env
    bm = _fake_benchmark_model(tmp_path)
    models = tmp_path / "my models"
    models.mkdir()
    m = models / "resnet 50.tflite"                          # a space: quoting
    m.write_bytes(b"TFL3")
    onnx_model = models / "x.onnx"
    onnx_model.write_bytes(b"x")
    t = make_target(TargetOptions(serial="emulator-5554", remote_dir=str(dev),
                                  extra={"adb": str(adb), "benchmark_binary": str(bm)}))
    with pytest.raises(PartialResults) as e:
        t.run([m, onnx_model], BenchConfig(threads=1, warmup=1, runs=20, profile=True))
    (r,) = e.value.results
    assert "benchmark_model runs .tflite models only" in e.value.failures[0]["error"]
    assert r["timing_ms"]["mean"] == pytest.approx(1198.72) and r["target"]["kind"] == "adb"
    assert r["target"]["serial"] == "emulator-5554" and r["target"]["device"] == "Fake Phone 1"
    assert r["profile"]["by_op_type"][0]["op_type"] == "CONV_2D"
    args = (tmp_path / "bm.args").read_text().split()
    assert "--num_runs=20" in args and "--warmup_runs=2" in args and "--min_secs=0" in args
    assert "--enable_op_profiling=true" in args
    assert any(a.startswith("--graph=") and a.endswith("/m0/resnet") for a in args)  # "resnet 50"
    log = (tmp_path / "adb.log").read_text()
    assert "'-s', 'emulator-5554'" in log and "'push'" in log
    assert list(dev.iterdir()) == []                          # temp dir removed


def test_hung_benchmark_is_killed(fake_env, tmp_path):
    adb, dev = fake_env
    bm = _fake_benchmark_model(tmp_path)
    m = tmp_path / "hang.tflite"
    m.write_bytes(b"TFL3")
    t = make_target(TargetOptions(remote_dir=str(dev),
                                  extra={"adb": str(adb), "benchmark_binary": str(bm)}))
    t0 = time.monotonic()
    with pytest.raises(PartialResults) as e:
        t.run([m], BenchConfig(runs=5, warmup=0, timeout_s=3))
    assert time.monotonic() - t0 < 120 and "no result after" in str(e.value)
    pid = int((tmp_path / "bm.pid").read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("hung benchmark_model left running")
    assert list(dev.iterdir()) == []


def test_adb_python_mode_runs_runner_for_real(fake_env, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    adb, dev = fake_env
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    np.save(tmp_path / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    t = make_target(TargetOptions(remote_dir=str(dev),
                                  extra={"adb": str(adb), "adb_python": sys.executable}))
    (r,) = t.run([model], BenchConfig(warmup=1, runs=5, inputs=str(tmp_path / "x.npy"),
                                      save_outputs=True, out_dir=str(tmp_path / "out")))
    assert r["format"] == "armq-bench/1" and r["runtime"]["name"] == "onnxruntime"
    assert r["timing_ms"]["runs"] == 5 and r["timing_ms"]["median"] > 0
    assert r["input"]["source"]["n"] == 2 and r["target"]["mode"] == "python"
    assert np.load(tmp_path / "out" / "relu.onnx.outputs.npy").shape[0] == 2
    assert list(dev.iterdir()) == []


def test_no_device_through_stand_in(fake_env, tmp_path, monkeypatch):
    adb, dev = fake_env
    monkeypatch.setenv("FAKE_ADB_STATE", "error: no devices/emulators found")
    m = tmp_path / "m.tflite"
    m.write_bytes(b"x")
    t = make_target(TargetOptions(extra={"adb": str(adb), "benchmark_binary": "bm"}))
    with pytest.raises(TargetUnavailable, match="no Android device connected"):
        t.run([m], BenchConfig(runs=1, warmup=0))


def test_probe_reads_the_phone_cpu(fake_env, tmp_path, monkeypatch):
    """--probe's answer (RemoteTarget.cpu): architecture from getprop, flags from the phone's
    /proc/cpuinfo (here CPUINFO_A76 standing in for it); nothing is copied to the phone."""
    adb, dev = fake_env
    (tmp_path / "cpuinfo").write_text(CPUINFO_A76)
    monkeypatch.setenv("FAKE_CPUINFO", str(tmp_path / "cpuinfo"))
    t = make_target(TargetOptions(serial="ZX1", remote_dir=str(dev),
                                  extra={"adb": str(adb), "adb_python": sys.executable}))
    cpu = t.cpu()
    assert cpu["machine"] == "aarch64" and cpu["source"] == "/proc/cpuinfo (adb)"
    assert "asimddp" in cpu["flags"] and "asimd" in cpu["flags"]
    assert "'push'" not in (tmp_path / "adb.log").read_text() and list(dev.iterdir()) == []


def test_one_cpuinfo_reader_for_runner_phone_board_and_probe():
    """runner.parse_cpuinfo is the one /proc/cpuinfo reader: the phone's record, a board's
    probe (the device sends the text, the host reads it) and the runner agree on a text."""
    import json

    from android_bench.runner import parse_cpuinfo
    from android_bench.targets.remote import PROBE_MARK, cpuinfo_flags, parse_probe

    info = parse_cpuinfo(CPUINFO_A76)
    assert "asimddp" in info["flags"] and info["parts"] == ["0xd0b"]
    assert (info["implementer"], info["n_processors"]) == ("0x41", 2)
    phone = cpu_from_cpuinfo(CPUINFO_A76, "arm64-v8a", "Tensor")
    assert phone["features"]["dotprod"] and phone["n_cpus"] == 2 and phone["model"] == "Tensor"
    probe = parse_probe("noise\n" + PROBE_MARK + json.dumps({"machine": "aarch64",
                                                             "cpuinfo": CPUINFO_A76}))
    assert probe["cpu_flags"] == cpuinfo_flags(CPUINFO_A76) == info["flags"]
    assert "cpuinfo" not in probe
    x86 = "processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu sse2 avx2 avx512_vnni\n"
    assert parse_cpuinfo(x86)["model"] == "Some Xeon" and "avx512_vnni" in cpuinfo_flags(x86)
