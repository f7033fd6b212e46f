"""export.audit on real exported models, an INT8 model from onnxruntime's quantizer,
and small hand-built QDQ graphs whose float ops are known by construction."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import onnx as export_onnx
from export.audit import audit
from zoo.checkpoint import save_checkpoint
from zoo.cost import measure

from _export_util import load_json, random_trained_like, real_batch, run_module


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    net = random_trained_like("shufflenet_v1", "cifar10", None, groups=3)
    ck = save_checkpoint(d / "w.pt", net, net.variant)
    out = d / "art"
    assert export_onnx.main(["--weights", str(ck), "--num-images", "4", "--out", str(out)]) == 0
    card = load_json(out / f"{net.variant.tag}.json")
    return net, out / card["artifacts"]["onnx"]["path"], card


def test_fp32_onnx_audit(fp32_onnx):
    net, path, card = fp32_onnx
    rep = audit(path)
    nodes = onnx.load(str(path)).graph.node
    assert rep["format"] == "onnx" and rep["opset"] == 17
    assert rep["ops"] == dict(Counter(n.op_type for n in nodes))
    assert rep["num_ops"] == len(nodes)
    assert rep["transpose_count"] == sum(n.op_type == "Transpose" for n in nodes) > 0
    assert rep["quantized"] is False and rep["float_ops"] == []
    layers = measure(net, 32).layers
    assert rep["depthwise"]["depthwise_convs"] == sum(layer.op == "dwconv" for layer in layers)
    assert rep["depthwise"]["grouped_convs"] == sum(layer.op in ("gconv", "gpwconv") for layer in layers)
    assert rep["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    # The export stage stored the same audit in the card.
    assert card["artifacts"]["onnx"]["ops"] == rep["ops"]


def test_int8_qdq_onnx_audit(fp32_onnx, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, \
        quantize_static

    _, path, card = fp32_onnx
    images = real_batch(card, 8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"input": images[i:i + 1]} for i in range(len(images)))

        def get_next(self):
            return next(self.it, None)

    q = tmp_path / "int8.onnx"
    quantize_static(str(path), str(q), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    rep = audit(q)
    assert rep["quantized"] is True
    assert rep["ops"]["QuantizeLinear"] > 0 and rep["ops"]["DequantizeLinear"] > 0
    # Every conv is wrapped DQ -> Conv -> Q by the quantizer: none is left in float.
    assert "Conv" not in rep["float_op_histogram"]
    graph = onnx.load(str(q)).graph
    producers = {o: n for n in graph.node for o in n.output}
    for f in rep["float_ops"]:
        node = graph.node[f["index"]]
        assert node.op_type == f["op"]
        # A flagged op reads a dequantized tensor, directly or through other float ops.
        assert any(i in producers and (producers[i].op_type == "DequantizeLinear"
                                       or any(producers[i] is graph.node[g["index"]]
                                              for g in rep["float_ops"]))
                   for i in node.input)


def _qdq_graph(path):
    """x -Q-DQ-> Conv(DQ weights) -Q-DQ-> Softmax -> y1  (Conv is integer, Softmax float)
       x -> Conv(DQ weights) -> y2                      (weight-only: this Conv is float)
       DQ -> Relu -> Q -> DQ -> y3                       (sandwiched Relu: integer)"""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8), "w")
    inits = [w,
             numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "zp"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ws")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w", "ws", "zp"], ["wd"], name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv_int", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["cq"], name="q_c"),
        helper.make_node("DequantizeLinear", ["cq", "s", "zp"], ["cd"], name="dq_c"),
        helper.make_node("Softmax", ["cd"], ["y1"], name="softmax", axis=1),
        helper.make_node("Conv", ["x", "wd"], ["y2"], name="conv_float", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["cd"], ["r"], name="relu_int"),
        helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["rq"], name="q_r"),
        helper.make_node("DequantizeLinear", ["rq", "s", "zp"], ["y3"], name="dq_r"),
    ]
    shape = [1, 3, 8, 8]
    g = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8, 8]) for n in ("y1", "y2", "y3")],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return m


def test_float_ops_in_a_hand_built_qdq_graph(tmp_path):
    import onnxruntime as ort

    p = tmp_path / "qdq.onnx"
    _qdq_graph(p)
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    assert all(np.isfinite(o).all() for o in outs)
    rep = audit(p)
    assert rep["quantized"] is True
    assert sorted(f["name"] for f in rep["float_ops"]) == ["conv_float", "softmax"]
    assert rep["float_op_histogram"] == {"Softmax": 1, "Conv": 1}
    assert {f["name"] for f in rep["float_compute_ops"]} == {"conv_float", "softmax"}


def test_audit_cli_prints_the_same_dict(fp32_onnx):
    _, path, _ = fp32_onnx
    r = run_module("export.audit", path, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(json.dumps(audit(path)))
    r = run_module("export.audit", path)
    assert r.returncode == 0 and "Transpose" in r.stdout and "depthwise" in r.stdout


needs_tflite = pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="the tflite extra is not installed")


@needs_tflite
def test_fp32_tflite_audit(fp32_onnx, tmp_path):
    from export import tflite as export_tflite

    net, _, _ = fp32_onnx
    ck = save_checkpoint(tmp_path / "w.pt", net, net.variant)
    out = tmp_path / "art"
    assert export_tflite.main(["--weights", str(ck), "--num-images", "2", "--out", str(out)]) == 0
    path = out / f"{net.variant.tag}.tflite"
    rep = audit(path)
    from export.runtime import tflite_interpreter

    it = tflite_interpreter(path, delegates=False)
    names = [d["op_name"] for d in it._get_ops_details()]
    assert rep["ops"] == dict(Counter(names)) and rep["transpose_count"] == names.count("TRANSPOSE")
    assert rep["quantized"] is False and rep["float_ops"] == []
    layers = measure(net, 32).layers
    assert rep["depthwise"]["depthwise_convs"] == sum(layer.op == "dwconv" for layer in layers)
    assert rep["depthwise"]["preserved"] is True
    assert rep["inputs"][0]["shape"] == [1, 32, 32, 3]


@needs_tflite
@pytest.mark.slow
def test_int8_tflite_audit_finds_the_float_softmax(tmp_path):
    """A PT2E-quantized net: convs and the linear run in int8, the softmax (no int8
    kernel in the quantizer's list) is fed by a DEQUANTIZE and stays float."""
    import logging
    import os
    import warnings

    import torch
    from torch import nn

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    logging.getLogger("torchao").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import quantize_pt2e

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
                      nn.Softmax(-1)).eval()
    args = (torch.randn(1, 3, 16, 16),)
    q = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        em = quantize_pt2e.prepare_pt2e(torch.export.export(m, args).module(), q)
        for _ in range(4):
            em(torch.randn(1, 3, 16, 16))
        em = quantize_pt2e.convert_pt2e(em, fold_quantize=False)
        edge = litert_torch.convert(em, args, quant_config=QuantConfig(pt2e_quantizer=q))
    path = tmp_path / "int8.tflite"
    path.write_bytes(edge.model_content())
    rep = audit(path)
    assert rep["quantized"] is True
    assert "SOFTMAX" in rep["float_op_histogram"]
    assert not {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} & set(rep["float_op_histogram"])
    assert rep["depthwise"]["depthwise_convs"] == 1 and rep["depthwise"]["preserved"]
