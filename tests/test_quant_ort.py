"""quant.ptq / quant.evaluate with the ONNX Runtime backend, end to end on the
project's CIFAR-10 ShuffleNet V1 and real CIFAR-10 images (shipped sets):
accuracy kept, the runtime graph really INT8 (depthwise included), the card
updated, the output byte-identical across runs, per-layer debugging and float
fallback doing what they say."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _quant_models import CALIB, NAME, TEST, copy_model, shared_model

from quant import onnx_layers, onnx_ptq
from quant.calib import load_set
from quant.common import Method, ModelRef
from quant.ptq import main as ptq_main
from quant.evaluate import main as eval_main
from export.card import load_card


def _s(args):
    return [str(a) for a in args]


N_CALIB, N_EVAL = "128", "300"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return shared_model(tmp_path_factory)


@pytest.fixture(scope="module")
def quantized(model, tmp_path_factory):
    """One ORT quantization + evaluation shared by the tests below."""
    card, trained = model
    out = tmp_path_factory.mktemp("ort")
    copy_model(card, out)
    ptq_main(_s(["--calib", CALIB, "--model", out / f"{NAME}.onnx", "--backend", "ort",
              "--num-calib", N_CALIB, "--eval", TEST, "--eval-limit", N_EVAL, "--out", out]))
    return out, trained


def test_int8_model_written_and_recorded(quantized):
    out, _ = quantized
    q = out / f"{NAME}.int8.onnx"
    assert q.is_file()
    card = load_card(out / f"{NAME}.json")
    art = card.artifacts["onnx_int8"]
    assert art["path"] == q.name
    cal = art["calibration"]
    assert cal["method"] == "minmax" and cal["num_images"] == int(N_CALIB)
    assert cal["per_channel"] is True and cal["source"].endswith("cifar10_calib.tar.gz")
    assert art["activations"] == "int8" and art["format"] == "QDQ"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_runtime_graph_is_int8_including_depthwise(quantized):
    out, _ = quantized
    rt = load_card(out / f"{NAME}.json").artifacts["onnx_int8"]["audit"]["runtime"]
    # ShuffleNet V1 g3 has 16 units, each with one depthwise 3x3, and 3 stride-2 units
    # whose shortcut AveragePool runs as a depthwise conv (quant.onnx_graph).
    assert load_card(out / f"{NAME}.json").artifacts["onnx_int8"]["avgpools_as_depthwise"] == 3
    assert rt["depthwise_int8"] == 16 + 3 and rt["depthwise_float"] == 0
    assert rt["float_compute"] == 0, rt["float_islands"]
    assert rt["ops"]["QLinearConv"] == 49 + 3 and "QLinearAveragePool" not in rt["ops"]
    assert rt["quantize_nodes"] == 1          # only the input is quantized from float
    assert rt["dequantize_to_float"] == {}    # nothing but the logits leaves int8


def test_x86_host_graph_explains_the_slow_s8s8(quantized):
    """On x86, ORT's S8->U8 rewrite misses fan-out tensors: convs stay float there.
    This is why the audit builds the ARM64 graph (documented in quant/onnx_ptq.py)."""
    out, _ = quantized
    host = onnx_ptq.runtime_audit(out / f"{NAME}.int8.onnx", arm=False)
    assert host["float_compute"] > 0
    assert any(s.startswith("Conv:") for s in host["float_islands"])


def test_accuracy_kept(quantized):
    out, trained = quantized
    acc = load_card(out / f"{NAME}.json").accuracy
    fp, q = acc["onnx"], acc["onnx_int8"]
    assert fp["n"] == q["n"] == int(N_EVAL)
    assert q["agreement"] >= 90.0 and q["sqnr_db"] >= 12.0
    if trained:
        assert fp["top1"] > 30.0
        assert fp["top1"] - q["top1"] <= 3.0  # 300 images: +-1.5 pt of sampling noise


def test_evaluate_cli_json(quantized, capsys):
    out, _ = quantized
    eval_main(_s(["--model", out / f"{NAME}.int8.onnx", "--data", TEST, "--limit", "50", "--json"]))
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 50 and res["ref"].endswith(f"{NAME}.onnx")
    assert {"top1", "top5", "agreement", "sqnr_db"} <= res.keys()


def test_deterministic_bytes(model, tmp_path):
    """Same float model, same images, same options -> byte-identical INT8 ONNX."""
    card, _ = model
    outs = []
    for i in range(2):
        d = tmp_path / f"run{i}"
        copy_model(card, d)
        ptq_main(_s(["--calib", CALIB, "--model", d / f"{NAME}.onnx", "--backend", "ort",
                  "--method", "percentile", "--num-calib", "48", "--out", d]))
        outs.append((d / f"{NAME}.int8.onnx").read_bytes())
    assert outs[0] == outs[1]


def test_auto_keeps_the_best_method_on_holdout(model, tmp_path):
    card, _ = model
    copy_model(card, tmp_path)
    ptq_main(_s(["--calib", CALIB, "--model", tmp_path / f"{NAME}.onnx", "--backend", "ort",
              "--method", "auto", "--num-calib", "64", "--holdout", "64", "--out", tmp_path]))
    cal = load_card(tmp_path / f"{NAME}.json").artifacts["onnx_int8"]["calibration"]
    assert cal["requested"] == "auto" and cal["holdout_images"] == 64
    assert cal["holdout_metric"] == "top1"
    tried = cal["tried"]
    assert set(tried) == {"minmax", "entropy", "percentile"}
    key = lambda m: (tried[m]["metric"], tried[m]["agreement"], tried[m]["sqnr_db"])  # noqa: E731
    assert cal["method"] == max(tried, key=key)


def test_layer_errors_and_float_fallback(model, tmp_path):
    """Per-layer SQNR (qdq_loss_debug) ranks the layers; excluding the worst conv keeps
    it in float in the runtime graph, everything else stays int8."""
    card, _ = model
    ref = ModelRef(load_card(card), card)
    x = load_set(CALIB, ref.card, limit=40, progress=False).x
    pre = tmp_path / "pre.onnx"
    onnx_ptq.preprocess(card.with_suffix(".onnx"), pre)
    name, batch, _ = onnx_ptq.model_input(pre)
    ranges = onnx_ptq.calibrate(pre, x[:32], Method.MINMAX, name, batch, tmp_path)
    q = tmp_path / "q.onnx"
    onnx_ptq.quantize(pre, ranges, Method.MINMAX, q)
    rows = onnx_layers.layer_errors(pre, q, x[32:], name, batch, tmp_path)
    convs = [r for r in rows if r["op"] == "Conv"]
    assert len(convs) == 49
    scores = [r["score"] for r in rows if r["score"] is not None]
    assert scores == sorted(scores)
    assert all(r["weight_sqnr"] is not None for r in convs)
    worst = convs[0]["node"]
    qf = tmp_path / "qf.onnx"
    onnx_ptq.quantize(pre, ranges, Method.MINMAX, qf,
                      nodes_to_exclude=onnx_layers.exclusion_for(pre, worst))
    rt = onnx_ptq.runtime_audit(qf)
    # the worst conv and the consumers of its output run in float, nothing else
    assert any(worst in s for s in rt["float_islands"])
    assert 1 <= rt["float_compute"] <= 6 and rt["ops"]["QLinearConv"] >= 45


def test_fallback_cli_records_excluded_nodes(model, tmp_path):
    card, _ = model
    copy_model(card, tmp_path)
    # --max-drop 0 with 1 allowed layer: the loop runs at most once and records what it did.
    ptq_main(_s(["--calib", CALIB, "--model", tmp_path / f"{NAME}.onnx", "--backend", "ort",
              "--num-calib", "48", "--holdout", "48", "--fallback", "1", "--max-drop", "0",
              "--out", tmp_path]))
    art = load_card(tmp_path / f"{NAME}.json").artifacts["onnx_int8"]
    assert art["ranking"], "per-layer ranking missing"
    rt = art["audit"]["runtime"]
    assert len(art["excluded_nodes"]) <= 1
    assert set(art["excluded_nodes"]) <= {r["node"] for r in art["ranking"]}
    if art["excluded_nodes"]:  # kept only when it lowered the held-out drop
        assert art["holdout_drop"] < art["holdout_drop_before_fallback"]
        assert rt["float_compute"] >= 1
    else:
        assert rt["float_compute"] == 0
