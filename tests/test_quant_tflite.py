"""quant.ptq with the TFLite backend (litert-torch PT2E), end to end on the
project's CIFAR-10 ShuffleNet V1: a full-integer model (int8 in, int8 out),
every conv and depthwise conv int8, no float island, accuracy kept."""
from __future__ import annotations

import importlib.util

import pytest

from _quant_models import CALIB, NAME, TEST, copy_model, shared_model

from export.card import load_card

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="the tflite extra (litert-torch, ai-edge-litert) is not installed")


def _s(args):
    return [str(a) for a in args]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    card, trained = shared_model(tmp_path_factory)
    out = tmp_path_factory.mktemp("tflite")
    copy_model(card, out)
    from quant.ptq import main
    main(_s(["--calib", CALIB, "--model", out / f"{NAME}.json", "--backend", "tflite",
          "--num-calib", "64", "--eval", TEST, "--eval-limit", "200", "--out", out]))
    return out, trained


def test_full_integer_model(quantized):
    out, _ = quantized
    art = load_card(out / f"{NAME}.json").artifacts["tflite_int8"]
    assert (out / art["path"]).is_file() and art["path"] == f"{NAME}.int8.tflite"
    io = art["io"]
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    assert io["layout"] == "NHWC" and io["input"]["shape"] == [1, 32, 32, 3]
    assert io["input"]["scale"] > 0
    rt = art["audit"]["runtime"]
    assert rt["depthwise_int8"] == 16 and rt["depthwise_float"] == 0
    assert rt["float_compute"] == 0, rt["float_islands"]
    assert rt["quantize_from_float"] == 0 and rt["dequantize"] == 0
    assert rt["ops"]["CONV_2D"] == 33  # 16 units x 2 pointwise + the stem
    cal = art["calibration"]
    assert cal["method"] == "minmax" and cal["num_images"] == 64 and cal["per_channel"]


def test_accuracy_kept(quantized):
    out, trained = quantized
    acc = load_card(out / f"{NAME}.json").accuracy
    q = acc["tflite_int8"]
    assert q["n"] == 200 and q["agreement"] >= 90.0 and q["sqnr_db"] >= 12.0
    if trained:
        assert acc["onnx"]["top1"] - q["top1"] <= 3.0
