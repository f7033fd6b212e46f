"""quant's small pieces: metrics, holdout split, the calibration reader, the KL
range search, ONNX scope -> torch module names, the Shape(DQ) rewrite."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant.calib import make_reader, split_holdout
from quant.common import Backend, Method, backend_for_path
from quant.evaluate import format_table
from quant.metrics import agreement, sqnr_db, summarize, topk
from quant.onnx_graph import rewire_shape_queries
from quant.ranges import kl_range
from quant.tflite_ptq import onnx_node_to_module


def test_enums():
    assert Backend("ort").int8_key == "onnx_int8" and Backend.TFLITE.float_key == "tflite"
    assert [m.value for m in Method] == ["minmax", "entropy", "percentile", "auto"]
    from pathlib import Path
    assert backend_for_path(Path("a/x.int8.tflite")) is Backend.TFLITE
    assert backend_for_path(Path("x.onnx")) is Backend.ORT and backend_for_path(Path("x.pt")) is None


def test_metrics():
    logits = np.array([[3, 2, 1, 0], [0, 1, 2, 3], [1, 3, 2, 0]], np.float32)
    labels = np.array([0, 1, 2])
    assert topk(logits, labels, 1) == pytest.approx(100 / 3)
    assert topk(logits, labels, 2) == pytest.approx(200 / 3)
    assert agreement(logits, logits[[0, 1, 1]]) == pytest.approx(200 / 3)
    assert sqnr_db(logits, logits) == math.inf
    assert sqnr_db(np.ones(4), np.ones(4) * 1.1) == pytest.approx(20.0)
    s = summarize(logits, labels, logits)
    assert s["agreement"] == 100.0 and s["sqnr_db"] is None and s["n"] == 3
    assert "top1" not in summarize(logits, np.array([0, -1, 2]), None)


def test_holdout_split_is_deterministic_and_disjoint():
    c, h = split_holdout(100, 0.2)
    assert len(h) == 20 and not set(c) & set(h) and len(c) + len(h) == 100
    assert np.array_equal(h, split_holdout(100, 0.2)[1])
    c, h = split_holdout(10, 0.2)
    assert len(h) == 0 and len(c) == 10  # too few to spare


def test_calibration_reader():
    x = np.arange(10 * 3 * 2 * 2, dtype=np.float32).reshape(10, 3, 2, 2)
    r = make_reader("input", x, 4)
    got = [b["input"].shape[0] for b in iter(r.get_next, None)]
    assert got == [4, 4, 2] and len(r) == 10
    r.rewind()
    assert r.get_next()["input"].shape == (4, 3, 2, 2)
    r.set_range(8, 10)
    assert r.get_next()["input"].shape[0] == 2 and r.get_next() is None


def test_kl_range_clips_outliers_and_keeps_relu_at_zero():
    rng = np.random.default_rng(0)
    body = np.abs(rng.standard_normal(100000))
    vals = np.concatenate([body, [40.0]])  # one huge outlier
    hist, edges = np.histogram(vals, bins=2048, range=(0, vals.max()))
    lo, hi = kl_range(edges, hist.astype(np.float64))
    # The outlier is clipped (MinMax would keep 40) but the body is kept: at least its
    # 99.99th percentile, and no more than a quarter beyond its own maximum.
    assert lo == 0.0 and np.quantile(body, 0.9999) <= hi <= 1.25 * body.max()
    signed = rng.standard_normal(100000)
    hist, edges = np.histogram(signed, bins=2048)
    lo, hi = kl_range(edges, hist.astype(np.float64))
    # No outlier: 256 levels over a Gaussian's range lose little, so its tails stay in.
    assert lo <= np.quantile(signed, 0.00005) < 0 < np.quantile(signed, 0.99995) <= hi
    assert edges[0] <= lo and hi <= edges[-1]


def test_kl_range_models_the_256_level_int8_quantizer():
    # 256 equally spaced distinct values (uneven counts) and far outliers: an int8
    # quantizer over exactly their range represents every value on its own level (no
    # information lost), so that range is the answer -- a search modelling fewer levels
    # (e.g. ORT's 128-level symmetric one) must merge values and picks another range.
    counts = (np.arange(1, 257) * 7 % 97 + 1).astype(np.float64)
    relu = np.zeros(2048)
    relu[:256], relu[-1] = counts, 1.0
    assert kl_range(np.linspace(0, 2048, 2049), relu) == (0.0, 256.0)
    signed = np.zeros(2048)
    signed[896:1152], signed[0], signed[-1] = counts, 1.0, 1.0
    assert kl_range(np.linspace(-1024, 1024, 2049), signed) == (-128.0, 128.0)
    # Mass, not distance, makes an outlier: 10 % of the values far out on either side
    # (folded into the end bin if clipped) keeps the range out there; 1 % is clipped.
    edges = np.linspace(-1024, 1024, 2049)
    for at in (24, 2023):                       # the bins [-1000, -999) and [999, 1000)
        far = signed.copy()
        far[at] = 0.1 * counts.sum()
        lo, hi = kl_range(edges, far)
        assert lo <= -1000.0 and hi >= 1000.0, (at, lo, hi)
        far[at] = 0.01 * counts.sum()
        assert kl_range(edges, far) == (-128.0, 128.0), at
    # A histogram of at most 256 bins is already representable: never clipped.
    few = np.concatenate([counts[:200], [0.0] * 55, [1.0]])
    assert kl_range(np.linspace(0, 1, 257), few) == (0.0, 1.0)


@pytest.mark.skipif(__import__("importlib").util.find_spec("torchao") is None,
                    reason="torchao (the PT2E observers) is not installed")
def test_percentile_range_clips_the_outer_tails_only():
    from quant.common import PERCENTILE
    from quant.pt2e import _observer_classes

    percentile, _ = _observer_classes()
    # 2,018,060 values: 15 sparse bins (2 values each) at either end, then the body.
    # (100 - 99.999) / 2 % of them is 10.09 values a side: the first 5 tail bins (10
    # values) go, the 6th stays -- twice the cut would drop 10 bins, half of it 2.
    assert PERCENTILE == 99.999
    hist = np.full(2048, 1000.0)
    hist[:15], hist[-15:] = 2.0, 2.0
    edges = np.linspace(-1.0, 1.0, 2049)
    lo, hi = percentile._pick(None, edges, hist)
    assert (lo, hi) == (edges[5], edges[-6])
    # A ReLU output keeps 0 as its low end (no clipping there: asymmetric int8 has 0 exact).
    lo, hi = percentile._pick(None, np.linspace(0.0, 2.0, 2049), hist)
    assert lo == 0.0 and hi == pytest.approx(2.0 - 5 * 2 / 2048)
    assert percentile._pick(None, edges, np.zeros(2048)) == (-1.0, 1.0)


def test_onnx_scope_to_module():
    assert onnx_node_to_module("/features/features.3/pw1/pw1.0/Conv") == "features.3.pw1.0"
    assert onnx_node_to_module("/head/fc/Gemm") == "head.fc"
    assert onnx_node_to_module("/stem/stem.0/Conv") == "stem.0"
    assert onnx_node_to_module("Conv_12") is None


def test_format_table():
    t = format_table([{"model": "m", "backend": "ort", "precision": "int8", "method": "minmax",
                       "top1": 91.234, "agreement": 99.0, "sqnr_db": 30.0, "n": 10}])
    head, row = t.splitlines()
    assert "top1 %" in head and "91.23" in row and row.split()[:4] == ["m", "ort", "int8", "minmax"]


def test_shape_of_dequantized_tensor_reads_the_int8_tensor(tmp_path):
    """Shape(DequantizeLinear(q)) is rewired to Shape(q) and the DQ disappears."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Shape", ["d"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    assert rewire_shape_queries(p) == 1
    g = onnx.load(p).graph
    assert [n.op_type for n in g.node] == ["QuantizeLinear", "Shape"]
    out = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros((1, 4), np.float32)})[0]
    assert out.tolist() == [1, 4]


@pytest.mark.skipif(__import__("importlib").util.find_spec("litert_torch") is None,
                    reason="the tflite extra (litert-torch) is not installed")
def test_pt2e_relu6_and_residual_adds_are_annotated():
    # conv + ReLU6 (hardtanh 0..6) gets one observer, after the clamp (sharing the conv's
    # pre-clamp range cost efficientnet_lite0 its accuracy), and chained residual adds
    # are quantized (torch.export records no source_fn_stack for litert's add pattern).
    import torch
    from torch import nn
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    from quant.pt2e import make_quantizer

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
            self.b1 = nn.Conv2d(8, 8, 1)
            self.b2 = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            x = self.stem(x)
            x = x + self.b1(x)
            return x + self.b2(x)

    gm = torch.export.export(Net().eval(), (torch.randn(1, 3, 8, 8),)).module()
    prepare_pt2e(gm, make_quantizer(Method.MINMAX))
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    clamps = [n for n in nodes if "hardtanh" in str(n.target)]
    adds = [n for n in nodes if n.target is torch.ops.aten.add.Tensor]
    assert len(clamps) == 1 and len(adds) == 2
    ann = clamps[0].meta["quantization_annotation"]
    assert ann.output_qspec is not None and not isinstance(ann.output_qspec, SharedQuantizationSpec)
    conv = clamps[0].args[0]
    assert conv.meta["quantization_annotation"].output_qspec is None
    for a in adds:
        qa = a.meta.get("quantization_annotation")
        assert qa is not None and qa.output_qspec is not None and len(qa.input_qspec_map) == 2


@pytest.mark.skipif(__import__("importlib").util.find_spec("litert_torch") is None,
                    reason="the tflite extra (litert-torch) is not installed")
def test_pt2e_float_module_takes_its_shared_ops_along():
    # Keeping the pool in float (the TFLite fallback walks the ONNX ranking, where
    # GlobalAveragePool can be the worst node) must leave the flatten that shared the
    # pool's quantization in float too: prepare_pt2e failed with KeyError otherwise.
    import torch
    from torch import nn
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from quant.pt2e import make_quantizer

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    def annotated(gm, word):
        return [n.meta.get("quantization_annotation") is not None for n in gm.graph.nodes
                if n.op == "call_function" and word in str(n.target)]

    gm = torch.export.export(Net().eval(), (torch.randn(1, 3, 8, 8),)).module()
    q = make_quantizer(Method.MINMAX)
    q.annotate(gm)
    assert annotated(gm, "adaptive_avg_pool") == [True] and all(annotated(gm, "view"))
    gm = torch.export.export(Net().eval(), (torch.randn(1, 3, 8, 8),)).module()
    prepared = prepare_pt2e(gm, make_quantizer(Method.MINMAX, float_modules=["pool"]))
    assert annotated(prepared, "adaptive_avg_pool") == [False]
    assert not any(annotated(prepared, "view"))
    prepared(torch.randn(1, 3, 8, 8))
