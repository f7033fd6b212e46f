"""android_bench.compare: the speed-up math (pure) and the CLI on result files shaped
like runner.py's output (armq-bench/1; written here, numbers chosen by hand)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from android_bench.compare import (INT8_THEORETICAL, CompareError, compare, efficiency,
                                   entry_of, format_table, main, make_pairs, measured_speedup,
                                   ratio, speedup_range, theoretical_speedup)

ROOT = Path(__file__).resolve().parent.parent


def result(name, median, *, int8=False, macs=None, kind="ssh", host="pi@board", threads=1,
           instructions=None, emulated=False, ci=None, file=None):
    r = {"format": "armq-bench/1",
         "model": {"file": file or f"{name}{'.int8' if int8 else ''}.onnx", "int8": int8,
                   "card_name": name, "cost": {"macs": macs} if macs else None},
         "runtime": {"name": "onnxruntime", "version": "1.20.1", "threads": threads},
         "timing_ms": {"median": median, "mean": median * 1.02,
                       "median_ci95": ci or [median * 0.98, median * 1.02]},
         "target": {"kind": kind, "emulated": emulated,
                    **({"host": host} if kind == "ssh" else {"cpu": "cortex-a76"})}}
    if instructions is not None:
        r["instructions"] = instructions
    return r


# ---- pure math ------------------------------------------------------------------------

def test_ratios():
    assert ratio(10, 4) == 2.5
    assert ratio(None, 1) is None and ratio(1, 0) is None and ratio(-1, 1) is None
    assert measured_speedup(26.0, 10.0) == pytest.approx(2.6)
    assert efficiency(2.6, 4.0) == pytest.approx(0.65)       # ShuffleNet Table 8's rule
    assert efficiency(None, 4.0) is None


def test_theoretical():
    # MAC ratio (AlexNet 720M vs ShuffleNet 0.5x 38M: the paper's ~18x)
    assert theoretical_speedup(720e6, 38e6) == pytest.approx(18.95, rel=1e-3)
    assert theoretical_speedup(100, 100, base_int8=False, model_int8=True) == INT8_THEORETICAL
    assert theoretical_speedup(100, 50, base_int8=True, model_int8=False) == pytest.approx(0.5)
    assert theoretical_speedup(None, 50) is None


def test_speedup_range_from_cis():
    lo, hi = speedup_range([9.0, 11.0], [4.0, 5.0])
    assert lo == pytest.approx(9 / 5) and hi == pytest.approx(11 / 4)
    assert speedup_range(None, [1, 2]) is None


# ---- pairing -------------------------------------------------------------------------

def test_int8_vs_fp32_pair():
    es = [entry_of(result("shufflenet", 10.0, macs=40e6)),
          entry_of(result("shufflenet", 4.0, macs=40e6, int8=True))]
    (p,) = make_pairs(es)
    assert p.kind == "int8 vs fp32" and p.theoretical == 4.0
    assert p.measured == pytest.approx(2.5) and p.efficiency == pytest.approx(0.625)
    assert p.measured_range[0] < 2.5 < p.measured_range[1]


def test_baseline_pairs_only_within_a_setting():
    es = [entry_of(result("alexnet", 130.0, macs=720e6)),
          entry_of(result("shufflenet", 10.0, macs=40e6)),
          entry_of(result("shufflenet", 4.0, macs=40e6, int8=True)),
          entry_of(result("shufflenet", 9.0, macs=40e6, threads=4)),   # other setting
          entry_of(result("mobilenet", 20.0, macs=300e6, host="pi@other"))]
    pairs = make_pairs(es, baseline="alexnet")
    kinds = sorted((p.kind, p.model.label, p.base.label) for p in pairs)
    assert kinds == [("int8 vs fp32", "shufflenet int8", "shufflenet fp32"),
                     ("vs baseline", "shufflenet fp32", "alexnet fp32"),
                     ("vs baseline", "shufflenet int8", "alexnet fp32")]
    fp = next(p for p in pairs if p.kind == "vs baseline" and not p.model.int8)
    assert fp.theoretical == pytest.approx(18.0) and fp.measured == pytest.approx(13.0)
    assert fp.efficiency == pytest.approx(13 / 18)
    i8 = next(p for p in pairs if p.kind == "vs baseline" and p.model.int8)
    assert i8.theoretical == pytest.approx(72.0)               # 18x MACs x 4x width
    with pytest.raises(CompareError, match="no such model"):
        make_pairs(es, baseline="vgg")


def test_qemu_pairs_use_instruction_counts():
    es = [entry_of(result("m", 900.0, kind="qemu", emulated=True, instructions=4.0e8)),
          entry_of(result("m", 800.0, kind="qemu", emulated=True, int8=True,
                          instructions={"per_inference": 1.6e8, "regions": 20}))]
    (p,) = make_pairs(es)
    assert p.instr_ratio == pytest.approx(2.5) and p.efficiency == pytest.approx(2.5 / 4)
    assert p.measured == pytest.approx(900 / 800)
    text = format_table([p])
    assert "EMULATED" in text and "2.50x" in text


def test_missing_costs_are_reported_not_invented():
    es = [entry_of(result("a", 10.0)), entry_of(result("b", 5.0))]
    (p,) = make_pairs(es, baseline="a")
    assert p.theoretical is None and p.efficiency is None
    assert any("no MACs" in n for n in p.notes)


def test_table_and_cli(tmp_path, capsys):
    f1, f2 = tmp_path / "fp32.json", tmp_path / "all.json"
    f1.write_text(json.dumps(result("shufflenet", 10.0, macs=40e6)))
    f2.write_text(json.dumps({"results": [result("shufflenet", 4.0, macs=40e6, int8=True),
                                          result("alexnet", 130.0, macs=720e6)]}))
    pairs = compare([f1, f2], baseline="alexnet")
    text = format_table(pairs)
    assert "shufflenet int8" in text and "4.00x" in text and "0.62" in text
    assert "ShuffleNet v1" in text
    assert main([str(f1), str(f2), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pairs"][0]["efficiency"] == pytest.approx(0.625)
    # as a module, errors are one line and exit 2
    p = subprocess.run([sys.executable, "-m", "android_bench.compare", str(f1)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "nothing to compare" in p.stderr
    p = subprocess.run([sys.executable, "-m", "android_bench.compare", str(tmp_path / "no.json")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "not found" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {}}')
    with pytest.raises(CompareError, match="not an android_bench result"):
        compare([bad])


def test_speedup_is_instructions_when_emulated_and_theories_apart(tmp_path):
    """QEMU: the speed-up is the instruction ratio, and the emulated-ms ratio is not printed
    as one; a pair's theory splits into the MAC ratio and INT8's bit-width factor."""
    es = [entry_of(result("m", 236.0, kind="qemu", emulated=True, instructions=9.3e7)),
          entry_of(result("m", 100.0, kind="qemu", emulated=True, int8=True, instructions=1.0e8))]
    (p,) = make_pairs(es)
    assert p.speedup == pytest.approx(0.93) and p.basis == "instructions"
    assert p.measured == pytest.approx(2.36)                 # kept, but not the speed-up
    assert p.mac_ratio == 1.0 and p.bit_width == 4.0 and p.theoretical == 4.0
    text = format_table([p])
    assert "0.93x" in text and "2.36" not in text and "instructions" in text
    d = p.to_dict()
    assert d["speedup"] == pytest.approx(0.93) and d["basis"] == "instructions"
    es = [entry_of(result("alexnet", 130.0, macs=720e6)),
          entry_of(result("shufflenet", 4.0, macs=40e6, int8=True))]
    (b,) = make_pairs(es, baseline="alexnet")
    assert b.mac_ratio == pytest.approx(18.0) and b.bit_width == 4.0
    assert b.theoretical == pytest.approx(72.0) and b.speedup == pytest.approx(32.5)
    assert "MAC ratio" in format_table([b]) and "bit width" in format_table([b])


def test_baseline_pairs_match_precision():
    """With the baseline in both precisions, each model meets the baseline of its own
    precision (a same-width MAC ratio); an INT8 model without an INT8 baseline meets the
    FP32 one, and then the bit-width factor enters its theory."""
    es = [entry_of(result("alexnet", 130.0, macs=720e6)),
          entry_of(result("alexnet", 50.0, macs=720e6, int8=True)),
          entry_of(result("shufflenet", 10.0, macs=40e6)),
          entry_of(result("shufflenet", 4.0, macs=40e6, int8=True))]
    vs = {p.model.label: p for p in make_pairs(es, baseline="alexnet") if p.kind == "vs baseline"}
    assert set(vs) == {"shufflenet fp32", "shufflenet int8"}
    assert vs["shufflenet int8"].base.label == "alexnet int8"
    assert vs["shufflenet int8"].theoretical == pytest.approx(18.0)
    assert vs["shufflenet int8"].measured == pytest.approx(12.5)
    assert vs["shufflenet fp32"].base.label == "alexnet fp32"
    (only_fp32,) = [p for p in make_pairs(es[:1] + es[3:], baseline="alexnet")
                    if p.kind == "vs baseline"]
    assert only_fp32.base.label == "alexnet fp32" and only_fp32.theoretical == pytest.approx(72.0)
