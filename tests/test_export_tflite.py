"""export.tflite: litert-torch conversion checked in the LiteRT interpreter on real images."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="the tflite extra is not installed")
pytest.importorskip("ai_edge_litert", reason="the tflite extra is not installed")

import zoo  # noqa: E402
from export import onnx as export_onnx  # noqa: E402
from export import tflite as export_tflite  # noqa: E402
from export.runtime import tflite_interpreter  # noqa: E402
from zoo.checkpoint import save_checkpoint  # noqa: E402
from zoo.cost import measure  # noqa: E402

from _export_util import configs, load_json, random_trained_like, real_batch  # noqa: E402

ATOL = 1e-4


def sha256(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def tflite_outputs(path, x_nchw: np.ndarray, layout: str) -> np.ndarray:
    it = tflite_interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = []
    for img in x_nchw:
        a = img[None]
        if layout == "NHWC":
            a = np.ascontiguousarray(a.transpose(0, 2, 3, 1))
        it.set_tensor(inp["index"], a)
        it.invoke()
        res.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(res)


@pytest.fixture(scope="module")
def v2_exports(tmp_path_factory):
    """ONNX then TFLite of one small net into one folder (the card gathers both)."""
    d = tmp_path_factory.mktemp("tfl")
    net = random_trained_like("shufflenet_v2", "cifar10", None, width=0.5)
    ck = save_checkpoint(d / "w.pt", net, net.variant)
    out = d / "art"
    common = ["--weights", str(ck), "--num-images", "8", "--out", str(out)]
    assert export_onnx.main(common) == 0
    assert export_tflite.main(common) == 0
    return net, ck, out


def test_tflite_matches_torch_on_real_images(v2_exports):
    net, ck, out = v2_exports
    tag = net.variant.tag
    card = load_json(out / f"{tag}.json")
    entry = card["artifacts"]["tflite"]
    path = out / entry["path"]
    assert path.name == f"{tag}.tflite" and entry["sha256"] == sha256(path)
    assert entry["layout"] == "NHWC" and entry["input"]["shape"] == [1, 32, 32, 3]
    assert entry["output"]["shape"] == [1, 10]
    assert "onnx" in card["artifacts"], "the TFLite export must keep the ONNX entry"
    assert card["source"]["sha256"] == sha256(ck)
    x = real_batch(card, 8)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = tflite_outputs(path, x, entry["layout"])
    assert np.abs(ref - got).max() <= ATOL
    par = entry["parity"]
    assert par["passed"] and par["max_abs_diff"] <= ATOL and par["n"] == 8
    assert par["top1_agreement"] == pytest.approx(float((ref.argmax(1) == got.argmax(1)).mean()))


def test_depthwise_convs_stay_depthwise(v2_exports):
    net, _, out = v2_exports
    card = load_json(out / f"{net.variant.tag}.json")
    entry = card["artifacts"]["tflite"]
    dw_in_torch = sum(1 for layer in measure(net, 32).layers if layer.op == "dwconv")
    assert entry["ops"]["DEPTHWISE_CONV_2D"] == dw_in_torch
    assert entry["depthwise_preserved"] is True
    assert entry["audit"]["depthwise"]["depthwise_as_conv2d"] == 0


@pytest.mark.slow
def test_nchw_layout_option(tmp_path):
    net = random_trained_like("shufflenet_v2", "cifar10", None, width=0.5)
    ck = save_checkpoint(tmp_path / "w.pt", net, net.variant)
    out = tmp_path / "art"
    assert export_tflite.main(["--weights", str(ck), "--layout", "nchw", "--num-images", "4",
                               "--out", str(out)]) == 0
    card = load_json(out / f"{net.variant.tag}.json")
    entry = card["artifacts"]["tflite"]
    assert entry["layout"] == "NCHW" and entry["input"]["shape"] == [1, 3, 32, 32]
    assert "onnx" not in card["artifacts"]
    x = real_batch(card, 4)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(tflite_outputs(out / entry["path"], x, "NCHW") - ref).max() <= ATOL


# The default suite converts two models whose blocks no other default test covers (SE +
# h-swish; the zero-FLOP shift op) besides ShuffleNet V1/V2 above; `make test-all` runs every
# model in both configs (~40 conversions, ~15 min on 2 cores).
DEFAULT_CASES = {("mobilenet_v3_small", "cifar10"), ("shiftnet", "cifar10")}
CASES = [pytest.param(m, ds, id=f"{m}-{ds}",
                      marks=[] if (m, ds) in DEFAULT_CASES else [pytest.mark.slow])
         for m in zoo.list_models() for ds in ("cifar10", "imagenet")]


@pytest.mark.parametrize("model,dataset", CASES)
def test_every_zoo_model_converts_with_parity(model, dataset, tmp_path):
    size = dict(configs(model))[dataset]
    net = random_trained_like(model, dataset, size)
    ck = save_checkpoint(tmp_path / "w.pt", net, net.variant)
    out = tmp_path / "art"
    args = ["--model", model, "--dataset", dataset, "--weights", str(ck), "--num-images", "4",
            "--out", str(out)]
    if size:
        args += ["--input-size", str(size)]
    assert export_tflite.main(args) == 0
    card = load_json(out / f"{net.variant.tag}.json")
    entry = card["artifacts"]["tflite"]
    x = real_batch(card, 4)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(tflite_outputs(out / entry["path"], x, entry["layout"]) - ref).max() <= ATOL
    assert entry["parity"]["passed"]
