"""export.onnx on real models, real images and onnxruntime.

Every registered zoo model is exported in both configs (CIFAR-10 at 32 px,
ImageNet at the smallest size it allows) from a checkpoint this test writes,
and the ONNX file is re-run here, independently of the exporter's own check.
"""
from __future__ import annotations

import hashlib
import json
import textwrap

import numpy as np
import pytest
import torch

import zoo
from export import onnx as export_onnx
from export import weights as W
from export.card import load_card
from zoo.checkpoint import save_checkpoint
from zoo.layers import ChannelShuffle

from _export_util import IMAGES, REPO, configs, load_json, random_trained_like, real_batch, \
    run_module, sweep_params

ATOL = 1e-4
N_IMAGES = 8


def sha256(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def ort_outputs(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if isinstance(inp.shape[0], int):
        return np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    return sess.run(None, {inp.name: x})[0]


def torch_outputs(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def export_args(model: str, dataset: str, size: int | None, out, *extra) -> list[str]:
    a = ["--model", model, "--dataset", dataset, "--num-images", str(N_IMAGES), "--out", str(out)]
    if size:
        a += ["--input-size", str(size)]
    return a + [str(e) for e in extra]


def run_main(args: list[str]) -> int:
    return export_onnx.main(args)


@pytest.mark.parametrize("model,dataset", sweep_params(zoo.list_models()))
def test_every_zoo_model_exports_with_parity(model, dataset, tmp_path):
    size = dict(configs(model))[dataset]
    net = random_trained_like(model, dataset, size)
    ckpt = save_checkpoint(tmp_path / "w.pt", net, net.variant)
    out = tmp_path / "art"
    assert run_main(export_args(model, dataset, size, out, "--weights", ckpt)) == 0

    tag = net.variant.tag
    card = load_json(out / f"{tag}.json")
    onnx_path = out / f"{tag}.onnx"
    entry = card["artifacts"]["onnx"]
    assert card["name"] == tag and onnx_path.is_file()
    assert entry["sha256"] == sha256(onnx_path) and entry["opset"] == 17
    assert entry["exporter"] == export_onnx.DEFAULT_EXPORTER
    assert card["source"]["sha256"] == sha256(ckpt)
    # Independent re-run on real images preprocessed as the card says.
    x = real_batch(card, N_IMAGES)
    ref, got = torch_outputs(net, x), ort_outputs(onnx_path, x)
    assert got.shape == (N_IMAGES, card["output"]["shape"][1])
    assert np.abs(ref - got).max() <= ATOL
    assert entry["parity"]["passed"] and entry["parity"]["max_abs_diff"] <= ATOL
    assert entry["parity"]["n"] == N_IMAGES and entry["parity"]["data"] != "random"
    assert entry["parity"]["top1_agreement"] == pytest.approx(
        float((ref.argmax(1) == got.argmax(1)).mean()))
    # The card's op histogram is the file's.
    import onnx

    nodes = onnx.load(str(onnx_path)).graph.node
    assert sum(entry["ops"].values()) == len(nodes)
    assert entry["ops"].get("Transpose", 0) == sum(n.op_type == "Transpose" for n in nodes)
    assert card["cost"]["params"] == sum(p.numel() for p in net.parameters())
    assert card["cost"]["macs"] > 0
    assert len(card["class_names"]) == card["output"]["shape"][1]


def test_shipped_checkpoint_is_the_default(tmp_path):
    """`python -m export.onnx --model shufflenet_v1 --groups 3` exports the shipped
    CIFAR-10 checkpoint, taking its dataset."""
    shipped = REPO / "assets" / "weights" / "shufflenet_v1_g3_cifar10.pt"
    assert shipped.is_file(), f"{shipped} is shipped in the repository"
    out = tmp_path / "art"
    r = run_module("export.onnx", "--model", "shufflenet_v1", "--groups", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    card = load_card(out / "shufflenet_v1_g3_w1_cifar10.json")
    assert card.variant["dataset"] == "cifar10"
    assert card.source["shipped"] is True
    assert card.source["checkpoint"].endswith("assets/weights/shufflenet_v1_g3_cifar10.pt")
    assert len(card.source["sha256"]) == 64 and "metrics" in card.source
    par = card.artifacts["onnx"]["parity"]
    # Checked on the shipped CIFAR-10 test sample (export.parity.default_images' first choice).
    assert par["passed"] is True
    assert par["data"] == "assets/data/cifar10_test.tar.gz" and par["n"] > 0
    # A trained net has confident logits: ORT and torch agree on every class decision.
    assert par["top1_agreement"] >= 0.9
    assert "warning" not in r.stderr


def test_shipped_lookup_matches_variant_dicts(tmp_path, monkeypatch):
    wdir = tmp_path / "weights"
    small = random_trained_like("shufflenet_v2", "cifar10", None, width=0.5)
    v = small.variant
    ck = save_checkpoint(wdir / "v2_half_cifar.pt", small, v)
    # Side files the training run writes next to a checkpoint are not candidates.
    save_checkpoint(wdir / "v2_half_cifar.pt.resume.pt", small, v)
    (wdir / "junk.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("ARMQ_WEIGHTS_DIR", str(wdir))

    with pytest.warns(UserWarning, match="junk.pt"):
        found = W.list_shipped()
    assert [s.path.name for s in found] == ["v2_half_cifar.pt"]
    params = dict(v.params)
    assert W.matches(found[0].variant, "shufflenet_v2", params)
    assert W.matches(found[0].variant, "shufflenet_v2", {**params, "shuffle": "gather"})
    assert W.matches(found[0].variant, "shufflenet_v2", params, "cifar10", 10)
    assert not W.matches(found[0].variant, "shufflenet_v2", params, "imagenet")
    assert not W.matches(found[0].variant, "shufflenet_v2", params, None, 100)
    assert not W.matches(found[0].variant, "shufflenet_v2", {**params, "width": 1.0})
    assert not W.matches(found[0].variant, "shufflenet_v1", params)

    out = tmp_path / "art"
    with pytest.warns(UserWarning):
        assert run_main(["--model", "shufflenet_v2", "--width", "0.5", "--shuffle-impl",
                         "gather", "--num-images", "4", "--out", str(out)]) == 0
    card = load_card(out / "shufflenet_v2_sgather_w0.5_cifar10.json")
    assert card.source["sha256"] == sha256(ck) and card.source["shipped"] is True
    assert card.artifacts["onnx"]["ops"].get("Transpose", 0) == 0


def test_no_match_exports_random_weights_with_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARMQ_WEIGHTS_DIR", str(tmp_path / "empty"))
    out = tmp_path / "art"
    assert run_main(["--model", "shufflenet_v2", "--width", "0.5", "--dataset", "cifar10",
                     "--num-images", "4", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "random-init" in err
    card = load_card(out / "shufflenet_v2_w0.5_cifar10.json")
    assert card.source["weights"] == "random"
    assert card.artifacts["onnx"]["parity"]["passed"]


def test_dynamic_batch_and_no_simplify(tmp_path):
    net = random_trained_like("shufflenet_v2", "cifar10", None, width=0.5)
    v = net.variant
    ck = save_checkpoint(tmp_path / "w.pt", net, v)
    out = tmp_path / "dyn"
    assert run_main(["--weights", str(ck), "--dynamic-batch", "--num-images", "6",
                     "--out", str(out)]) == 0
    card = load_json(out / f"{v.tag}.json")
    entry = card["artifacts"]["onnx"]
    assert entry["dynamic_batch"] and entry["input"]["shape"][0] == "N"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / f"{v.tag}.onnx"), providers=["CPUExecutionProvider"])
    assert isinstance(sess.get_inputs()[0].shape[0], str)
    x = real_batch(card, 5)
    got = sess.run(None, {"input": x})[0]
    assert got.shape == (5, 10)
    assert np.abs(got - torch_outputs(net, x)).max() <= ATOL

    raw = tmp_path / "raw"
    assert run_main(["--weights", str(ck), "--no-simplify", "--num-images", "2",
                     "--out", str(raw)]) == 0
    raw_entry = load_json(raw / f"{v.tag}.json")["artifacts"]["onnx"]
    assert raw_entry["simplified"] is False
    assert sum(raw_entry["ops"].values()) == raw_entry["nodes_before_simplify"]
    simp = tmp_path / "simp"
    assert run_main(["--weights", str(ck), "--num-images", "2", "--out", str(simp)]) == 0
    simp_entry = load_json(simp / f"{v.tag}.json")["artifacts"]["onnx"]
    assert simp_entry["simplified"] is True
    assert sum(simp_entry["ops"].values()) < sum(raw_entry["ops"].values())


def test_shuffle_forms_compute_the_same_function(tmp_path):
    net = random_trained_like("shufflenet_v1", "cifar10", None)
    ck = save_checkpoint(tmp_path / "w.pt", net, net.variant)
    shuffles = sum(isinstance(m, ChannelShuffle) and m.groups > 1 for m in net.modules())
    assert shuffles > 0
    outs, ops = {}, {}
    for impl in ("transpose", "gather"):
        out = tmp_path / impl
        assert run_main(["--model", "shufflenet_v1", "--weights", str(ck), "--shuffle-impl", impl,
                         "--num-images", "4", "--out", str(out)]) == 0
        (card_path,) = out.glob("*.json")
        card = load_json(card_path)
        ops[impl] = card["artifacts"]["onnx"]["ops"]
        outs[impl] = ort_outputs(out / card["artifacts"]["onnx"]["path"], real_batch(card, 4))
    assert ops["gather"].get("Transpose", 0) == 0 and ops["gather"]["Gather"] == shuffles
    assert ops["transpose"]["Transpose"] == shuffles and "Gather" not in ops["transpose"]
    assert np.abs(outs["transpose"] - outs["gather"]).max() <= ATOL


def test_model_py_file_and_module(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text(textwrap.dedent("""
        from torch import nn

        def build(data, width=1.0):
            c = int(16 * width)
            return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                 nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, data.num_classes))
    """))
    out = tmp_path / "art"
    assert run_main(["--model-py", f"{src}:build", "--model", "tiny", "--width", "2",
                     "--dataset", "cifar10", "--random-weights", "--num-images", "4",
                     "--out", str(out)]) == 0
    card = load_json(out / "tiny_w2_cifar10.json")
    assert card["source"]["model_source"]["spec"] == f"{src}:build"
    assert card["source"]["model_source"]["kind"] == "factory"
    assert card["source"]["model_source"]["sha256"] == sha256(src)
    assert card["artifacts"]["onnx"]["audit"]["depthwise"]["depthwise_convs"] == 1
    assert card["cost"]["params"] > 0
    # module:function form, with a zoo builder standing in for the user's package.
    out2 = tmp_path / "art2"
    assert run_main(["--model-py", "zoo.shufflenet:shufflenet_v2", "--model", "mine",
                     "--width", "0.5", "--dataset", "cifar10", "--random-weights",
                     "--num-images", "2", "--out", str(out2)]) == 0
    assert (out2 / "mine_w0.5_cifar10.onnx").is_file()


def test_card_keeps_entries_of_the_same_weights_only(tmp_path):
    a = random_trained_like("shufflenet_v2", "cifar10", None, seed=1, width=0.5)
    v = a.variant
    ck_a = save_checkpoint(tmp_path / "a.pt", a, v)
    out = tmp_path / "art"
    args = ["--num-images", "2", "--out", str(out)]
    assert run_main(["--weights", str(ck_a), *args]) == 0
    card_path = out / f"{v.tag}.json"
    # A later stage (e.g. quant) adds its own section to the card.
    d = load_json(card_path)
    d["artifacts"]["onnx_int8"] = {"path": "x.int8.onnx", "sha256": "0" * 64, "size_bytes": 1}
    card_path.write_text(json.dumps(d))
    assert run_main(["--weights", str(ck_a), "--opset", "18", *args]) == 0
    d = load_json(card_path)
    assert "onnx_int8" in d["artifacts"] and d["artifacts"]["onnx"]["opset"] == 18
    b = random_trained_like("shufflenet_v2", "cifar10", None, seed=5, width=0.5)
    ck_b = save_checkpoint(tmp_path / "b.pt", b, v)
    assert run_main(["--weights", str(ck_b), *args]) == 0
    d = load_json(card_path)
    assert "onnx_int8" not in d["artifacts"] and d["source"]["sha256"] == sha256(ck_b)


def test_dynamo_exporter_is_available_but_not_default(tmp_path):
    pytest.importorskip("onnxscript")
    v = zoo.resolve_variant("shufflenet_v2", "cifar10", width=0.5)
    out = tmp_path / "art"
    assert run_main(["--model", "shufflenet_v2", "--width", "0.5", "--dataset", "cifar10",
                     "--random-weights", "--exporter", "dynamo", "--opset", "18",
                     "--num-images", "2", "--out", str(out)]) == 0
    entry = load_json(out / f"{v.tag}.json")["artifacts"]["onnx"]
    assert entry["exporter"] == "dynamo" and entry["opset"] == 18 and entry["parity"]["passed"]
    from zoo.util import ArmqError

    with pytest.raises(ArmqError, match="opset"):
        run_main(["--model", "shufflenet_v2", "--exporter", "dynamo", "--opset", "17",
                  "--out", str(out)])


def test_parity_images_default_to_the_models_dataset():
    from export.parity import default_images

    from armq import assets_dir

    # CIFAR-10: the shipped sample comes first; ImageNet has none shipped: the shared samples.
    assert default_images("cifar10") == assets_dir() / "data" / "cifar10_test.tar.gz"
    if IMAGES["imagenet"].exists():
        assert default_images("imagenet") == IMAGES["imagenet"]
    assert default_images("no_such_dataset") is None
