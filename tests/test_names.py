"""One set of runtime / format / precision names (export/formats.py) behind every stage and
every label of the report."""
from __future__ import annotations

import pytest

from export.formats import Format, Precision, Runtime


def test_every_package_spells_the_names_through_export_formats():
    from deploy.settings import RUNTIMES
    from export.card import ARTIFACT_KEYS, FORMAT_EXTENSIONS, RUNTIME_NAMES
    from quant.common import CONCRETE_BACKENDS

    assert RUNTIMES == ("ort", "tflite", "mnn", "executorch")
    assert {r.format for r in Runtime} == set(Format) and all(f.runtime.format is f for f in Format)
    assert FORMAT_EXTENSIONS == {"onnx": ".onnx", "tflite": ".tflite", "mnn": ".mnn", "pte": ".pte"}
    assert RUNTIME_NAMES["pte"] == "ExecuTorch" and RUNTIME_NAMES["onnx"] == "ONNX Runtime"
    # quant's backends are runtimes; their artifact keys are cards' keys
    for b in CONCRETE_BACKENDS:
        assert Runtime(b.value).format.value == b.float_key and b.int8_key in ARTIFACT_KEYS
    assert [p.label for p in Precision] == ["FP32", "INT8"]


@pytest.fixture
def figures(monkeypatch):
    """The plots' figures instead of their PNG bytes, to read their tick labels."""
    from deploy import plots

    monkeypatch.setattr(plots, "_png", lambda fig: fig)
    return plots


def ticks(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_xticklabels()]


def test_accuracy_plot_labels_every_format_by_its_name(figures):
    doc = {"models": {"m": {"name": "m", "accuracy": {"results": {
        k: {"top1": 90.0 + i} for i, k in enumerate(
            ("onnx", "onnx_int8_u8s8", "tflite_int8", "mnn", "mnn_int8", "pte", "pte_int8"))}}}}}
    labels = [t.split("\n")[1] for t in ticks(figures.plot_accuracy(doc))]
    assert labels == ["ONNX FP32", "ONNX INT8 U8S8", "TFLite INT8", "MNN FP32", "MNN INT8",
                      "ExecuTorch FP32", "ExecuTorch INT8"]


def test_int8_speedup_plot_names_mnn_bars_mnn(figures, monkeypatch):
    from deploy import analysis

    sp = [{"label": "m", "format": f, "target": "local", "speedup": 2.0}
          for f in ("onnx", "tflite", "mnn", "pte")]
    monkeypatch.setattr(analysis, "int8_speedups", lambda doc: sp)
    labels = [t.split("\n")[1] for t in ticks(figures.plot_int8_speedup({}))]
    assert labels == ["ONNX Runtime", "TFLite", "MNN", "ExecuTorch"]
