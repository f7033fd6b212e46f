"""android_bench.guidelines: the ShuffleNet V2 micro-networks (widths, costs, ONNX
export) and a real run of the small configuration on the local target."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from android_bench.guidelines import (G1_RATIOS, Cell, GuidelineError, build_model,
                                      cells_from_results, export_case, format_tables, make_cases)

ROOT = Path(__file__).resolve().parent.parent


def by(cases, g):
    return [c for c in cases if c.guideline == g]


def test_paper_configuration_holds_flops_constant():
    cases = make_cases(scales=(1, 2, 4), size=56, blocks=10)
    for g in ("G1", "G2", "G3"):
        for s in (1, 2, 4):
            macs = [c.macs for c in by(cases, g) if c.scale == s]
            assert max(macs) / min(macs) < 1.06, (g, s, macs)
    g4 = [c.macs for c in by(cases, "G4") if c.scale == 1]
    assert len(set(g4)) == 1                         # ReLU / shortcut add no MACs
    # the paper's x1 widths
    g1 = {c.row: (c.spec["c1"], c.spec["c2"]) for c in by(cases, "G1") if c.scale == 1}
    assert g1 == G1_RATIOS
    g2 = {c.row: c.spec["c"] for c in by(cases, "G2") if c.scale == 1}
    assert g2 == {"g=1": 128, "g=2": 180, "g=4": 256, "g=8": 360}
    assert {c.column for c in by(cases, "G3")} == {"c=64", "c=128", "c=256"}
    assert {c.column for c in by(cases, "G4")} == {"c=32", "c=64", "c=128"}
    # x2 doubles both widths: 4x the FLOPs
    x1 = next(c for c in by(cases, "G1") if c.scale == 1 and c.row == "1:1")
    x2 = next(c for c in by(cases, "G1") if c.scale == 2 and c.row == "1:1")
    assert x2.macs == 4 * x1.macs


def test_memory_access_follows_the_guidelines():
    """The analytic MAC (memory access cost) grows the way each guideline says."""
    cases = make_cases(size=56)
    g1 = [c.memory_access for c in by(cases, "G1")]          # 1:1, 1:2, 1:6, 1:12
    assert g1 == sorted(g1) and g1[0] < g1[-1]
    g2 = [c.memory_access for c in by(cases, "G2")]          # g = 1, 2, 4, 8
    assert g2 == sorted(g2)
    g4 = {c.row: c.memory_access for c in by(cases, "G4")}
    assert g4["ReLU no, shortcut no"] < g4["ReLU yes, shortcut no"] < g4["ReLU yes, shortcut yes"]


def test_bad_arguments():
    with pytest.raises(GuidelineError):
        make_cases(["G5"])
    with pytest.raises(GuidelineError):
        make_cases(scales=(0,))
    with pytest.raises(GuidelineError):
        make_cases(size=0)


def test_export_small_networks_and_run_them(tmp_path):
    import onnx
    import onnxruntime as ort
    import torch

    cases = make_cases(size=8, width=0.125, blocks=2)
    for c in cases:
        p = export_case(c, tmp_path)
        g = onnx.load(str(p)).graph
        n_conv = sum(1 for n in g.node if n.op_type == "Conv")
        assert n_conv == len(c.convs) * c.blocks, c.row
        if c.spec["kind"] == "g4":
            assert (sum(n.op_type == "Relu" for n in g.node) > 0) == c.spec["relu"]
            assert (sum(n.op_type == "Add" for n in g.node) > 0) == c.spec["shortcut"]
        if c.spec["kind"] == "g3" and c.spec["parallel"]:
            assert sum(n.op_type == "Concat" for n in g.node) == c.blocks
        x = np.random.default_rng(0).standard_normal((1, c.in_channels, 8, 8)).astype(np.float32)
        y = ort.InferenceSession(str(p)).run(None, {"input": x})[0]
        with torch.no_grad():
            ref = build_model(c)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-4)
        # no partial card beside it: android_bench validates every card it finds
        assert not (tmp_path / f"{c.file_stem}.json").exists()


def test_cells_and_table_with_a_failed_case():
    cases = make_cases(["G2"], size=8, width=0.125, blocks=2)
    results = [{"model": {"file": f"{c.file_stem}.onnx"},
                "timing_ms": {"median": 2.0 * (i + 1), "median_ci95": [1.9, 2.1]}}
               for i, c in enumerate(cases[:3])]
    failures = [{"model": f"/x/{cases[3].file_stem}.onnx", "error": "runner killed by SIGKILL"}]
    cells = cells_from_results(cases, results, failures)
    assert [c.median_ms for c in cells] == [2.0, 4.0, 6.0, None]
    assert cells[0].images_per_s == 500.0 and cells[3].error == "runner killed by SIGKILL"
    text = format_tables(cells, "local")
    assert "Table 2 (G2)" in text and "500.0 (2.00)" in text and "failed" in text
    assert isinstance(cells[0], Cell)


@pytest.mark.skipif(not (ROOT / "android_bench" / "targets" / "local.py").exists(),
                    reason="local target not in this checkout yet")
def test_cli_on_the_local_target(tmp_path):
    out = tmp_path / "g.json"
    p = subprocess.run([sys.executable, "-m", "android_bench.guidelines", "--target", "local",
                        "--size", "8", "--width", "0.125", "--blocks", "2", "--runs", "3",
                        "--warmup", "1", "--quiet", "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    for t in ("Table 1 (G1)", "Table 2 (G2)", "Table 3 (G3)", "Table 4 (G4)"):
        assert t in p.stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "armq-guidelines/1" and doc["target"]["kind"] == "local"
    assert len(doc["cells"]) == 4 + 4 + 5 + 4
    assert all(c["median_ms"] and c["median_ms"] > 0 and c["error"] is None
               for c in doc["cells"])
