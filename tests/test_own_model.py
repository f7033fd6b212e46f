"""The user's own model (export/source.py, export/foreign.py): every kind of source through
export and quant, and each foreign-model mistake answered with one line naming the fix.
Tiny models, a handful of images: seconds each."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export import onnx as export_onnx
from export.graph_io import GraphMismatch
from export.source import SourceError, SourceKind, load_torch_model, parse_source
from zoo.util import ArmqError

from _export_util import run_module

TINY = """
    from torch import nn

    def build(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same tiny trained-like network as a factory, a state dict, a .pt2, TorchScript
    and ONNX."""
    d = tmp_path_factory.mktemp("own")
    (d / "tiny.py").write_text(textwrap.dedent(TINY))
    import importlib.util
    spec = importlib.util.spec_from_file_location("tiny_own_model", d / "tiny.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(1)
    net = mod.build().eval()
    x = torch.randn(1, 3, 32, 32)
    torch.save(net.state_dict(), d / "tiny_sd.pt")
    torch.export.save(torch.export.export(net, (x,)), d / "tiny.pt2")
    torch.jit.save(torch.jit.trace(net, x), d / "tiny.ts")
    torch.onnx.export(net, (x,), str(d / "tiny.onnx"), dynamo=False, input_names=["input"],
                      output_names=["logits"])
    return d


def _export(files: Path, out: Path, *args: str) -> dict:
    assert export_onnx.main([*args, "--num-images", "4", "--out", str(out)]) == 0
    (card,) = [p for p in out.glob("*.json")]
    return json.loads(card.read_text())


def test_parse_source_kinds(files):
    assert parse_source(f"{files}/tiny.py:build").kind is SourceKind.FACTORY
    assert parse_source("zoo.shufflenet:shufflenet_v2").kind is SourceKind.FACTORY
    assert parse_source(str(files / "tiny.pt2")).kind is SourceKind.EXPORTED_PROGRAM
    assert parse_source(str(files / "tiny.ts")).kind is SourceKind.TORCHSCRIPT
    assert parse_source(str(files / "tiny.onnx")).kind is SourceKind.ONNX
    assert parse_source("torchvision:mobilenet_v2").kind is SourceKind.TORCHVISION
    # A state dict is not a model: the line says where it goes instead.
    with pytest.raises(SourceError, match="pass it as --weights beside --source file.py:fn"):
        parse_source(str(files / "tiny_sd.pt"))


@pytest.mark.parametrize("kind", ["pt2", "ts", "onnx", "factory"])
def test_every_source_exports_to_onnx_with_its_record(files, tmp_path, one_thread, kind):
    spec = f"{files}/tiny.py:build" if kind == "factory" else str(files / f"tiny.{kind}")
    extra = ["--weights", str(files / "tiny_sd.pt")] if kind == "factory" else []
    card = _export(files, tmp_path / "art", "--source", spec, "--dataset", "cifar10", *extra)
    rec = card["source"]["model_source"]
    assert rec["spec"] == spec and rec["sha256"]
    assert card["output"]["shape"] == [1, 10] and len(card["class_names"]) == 10
    onnx_file = tmp_path / "art" / card["artifacts"]["onnx"]["path"]
    # Every kind is the same network: the exported graphs agree with the torch module.
    from export.runtime import ort_session, run_onnx
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = run_onnx(ort_session(onnx_file, 1), x)
    want = run_onnx(ort_session(files / "tiny.onnx", 1), x)
    assert np.abs(got - want).max() < 1e-4


def test_missing_input_size_and_normalisation(files, tmp_path):
    base = ["--source", str(files / "tiny.pt2"), "--num-images", "2", "--out", str(tmp_path)]
    with pytest.raises(ArmqError, match="pass --mean R G B --std R G B"):
        export_onnx.main(base)
    with pytest.raises(ArmqError, match="needs its input size: pass --input-size N"):
        export_onnx.main([*base, "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"])
    # The ONNX graph's static input is a size; a contradicting flag is refused.
    with pytest.raises(ArmqError, match="takes 32 px; pass --input-size 32"):
        export_onnx.main(["--source", str(files / "tiny.onnx"), "--input-size", "64", "--mean",
                          "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25", "--out",
                          str(tmp_path)])
    assert not list(tmp_path.glob("*.json"))


def test_missing_flag_is_one_cli_line(files, tmp_path):
    r = run_module("export.onnx", "--source", f"{files}/tiny.py:build", "--out", tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--mean" in lines[0] and "--dataset" in lines[0], r.stderr


def test_class_count_mismatch_with_the_data(files, tmp_path):
    imgs = tmp_path / "three"
    for c in ("a", "b", "c"):
        (imgs / c).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 20, 30)).save(imgs / c / "x.png")
    with pytest.raises(ArmqError, match="has 3 class folders but the model outputs 10 classes"):
        export_onnx.main(["--source", str(files / "tiny.pt2"), "--dataset", "cifar10",
                          "--images", str(imgs), "--out", str(tmp_path / "art")])
    with pytest.raises(ArmqError, match="--num-classes 5 but the model outputs 10"):
        export_onnx.main(["--source", str(files / "tiny.ts"), "--dataset", "cifar10",
                          "--num-classes", "5", "--out", str(tmp_path / "art")])


def test_labels_come_from_the_class_folders(files, tmp_path, one_thread):
    imgs = tmp_path / "ten"
    names = [f"k{i}" for i in range(10)]
    for c in names:
        (imgs / c).mkdir(parents=True)
        Image.new("RGB", (32, 32), (40, 50, 60)).save(imgs / c / "x.png")
    card = _export(files, tmp_path / "art", "--source", str(files / "tiny.pt2"), "--input-size",
                   "32", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25",
                   "--images", str(imgs))
    assert card["class_names"] == names
    assert card["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_torchscript_and_onnx_where_unsupported(files, tmp_path):
    from export import tflite as export_tflite

    with pytest.raises(SourceError, match=r"TorchScript file cannot go through .*torch.export.save"):
        export_tflite.main(["--source", str(files / "tiny.ts"), "--dataset", "cifar10",
                            "--out", str(tmp_path)])
    with pytest.raises(SourceError, match="no maintained ONNX->TFLite converter"):
        export_tflite.main(["--source", str(files / "tiny.onnx"), "--dataset", "cifar10",
                            "--out", str(tmp_path)])
    with pytest.raises(SourceError, match="TorchScript file cannot go through the dynamo"):
        export_onnx.main(["--source", str(files / "tiny.ts"), "--dataset", "cifar10",
                          "--exporter", "dynamo", "--opset", "18", "--out", str(tmp_path)])
    # A .pt2 holds its weights: a --weights beside it is refused, not silently dropped.
    with pytest.raises(ArmqError, match="holds its own weights; drop --weights"):
        export_onnx.main(["--source", str(files / "tiny.pt2"), "--dataset", "cifar10",
                          "--weights", str(files / "tiny_sd.pt"), "--out", str(tmp_path)])
    assert not list(tmp_path.glob("*.json"))


def test_torchvision_says_why_or_builds():
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - the PyPI wheel does not import beside torch 2.13 CPU
        with pytest.raises(SourceError, match="write a factory file.py:fn"):
            load_torch_model(parse_source("torchvision:mobilenet_v2"))
        return
    m = load_torch_model(parse_source("torchvision:mobilenet_v2"))
    assert isinstance(m, torch.nn.Module)


def test_card_vs_graph_and_changed_source(files, tmp_path, one_thread):
    from quant import evaluate, ptq
    from quant.common import resolve_models
    from quant.tflite_ptq import build_torch_model

    own = tmp_path / "mine.py"
    own.write_text(textwrap.dedent(TINY))
    out = tmp_path / "art"
    _export(files, out, "--source", f"{own}:build", "--weights", str(files / "tiny_sd.pt"),
            "--dataset", "cifar10")
    card_path = out / "mine_cifar10.json"
    # ONNX Runtime INT8 from the card (a few calibration images).
    calib = Path(__file__).resolve().parents[1] / "assets" / "data" / "cifar10_calib.tar.gz"
    assert ptq.main(["--calib", str(calib), "--model", "mine_cifar10", "--backend", "ort",
                     "--num-calib", "8", "--holdout", "0", "--out", str(out)]) == 0
    assert (out / "mine_cifar10.int8.onnx").is_file()
    # The TFLite backend rebuilds the torch model from the --source given again (checked
    # against the card's record), never from the file the card names...
    (ref,) = resolve_models(str(card_path), out)
    with pytest.raises(ArmqError, match="pass --source again"):
        build_torch_model(ref)
    assert build_torch_model(ref, parse_source(f"{own}:build")) is not None
    # ...refuses another function of the same file, another kind of source...
    with pytest.raises(ArmqError, match="names function 'other'"):
        build_torch_model(ref, parse_source(f"{own}:other"))
    with pytest.raises(ArmqError, match="is a pt2, but the card.s model came from a factory"):
        build_torch_model(ref, parse_source(str(files / "tiny.pt2")))
    # ...and a factory file that changed since the export.
    own.write_text(textwrap.dedent(TINY) + "\n# edited\n")
    with pytest.raises(ArmqError, match="changed since export"):
        build_torch_model(ref, parse_source(f"{own}:build"))
    # A card that does not describe its graph: one line, before any number is made.
    d = json.loads(card_path.read_text())
    d["class_names"] = d["class_names"][:5]    # a consistent card (the validator's part)...
    d["variant"]["num_classes"] = d["preprocessing"]["num_classes"] = 5
    d["output"]["shape"][-1] = 5               # ...that does not describe its graph
    card_path.write_text(json.dumps(d))
    with pytest.raises(GraphMismatch, match="lists 5 classes but mine_cifar10.int8.onnx outputs 10"):
        evaluate.main(["--model", str(out / "mine_cifar10.int8.onnx"), "--data", str(calib)])


def test_deploy_model_specs(files):
    from deploy.spec import SpecError, parse_model_spec

    s = parse_model_spec(f"{files}/tiny.py:build:weights=w.pt:name=mine:input_size=32")
    assert (s.source, s.name, s.weights, s.input_size) == (f"{files}/tiny.py:build", "mine",
                                                           "w.pt", 32)
    p = parse_model_spec(f"{files}/tiny.pt2:dataset=cifar10")
    assert (p.source, p.name, p.dataset) == (f"{files}/tiny.pt2", "tiny", "cifar10")
    assert parse_model_spec("shufflenet_v1:groups=3").source is None
    # deploy skips (not fails) the TFLite stages of a source litert-torch cannot take.
    from deploy.settings import Planned
    from zoo._registry import Variant
    for f, why in (("tiny.onnx", "ONNX->TFLite"), ("tiny.ts", "torch.export.save"), ("tiny.pt2", None)):
        spec = parse_model_spec(f"{files}/{f}:dataset=cifar10")
        got = Planned(spec, Variant("tiny", "cifar10")).no_tflite_reason()
        assert (got is None) if why is None else (why in got), (f, got)
    with pytest.raises(SpecError, match="is not one of dataset=, input_size="):
        parse_model_spec(f"{files}/tiny.pt2:width=2")
    with pytest.raises(SpecError, match="does not exist"):
        parse_model_spec("nowhere.py:build")


def test_sweep_takes_own_models(files, tmp_path):
    from deploy.spec import load_sweep

    toml = tmp_path / "own.toml"
    toml.write_text(f'models = ["{files}/tiny.pt2:name=prog"]\n[[model]]\n'
                    f'source = "{files}/tiny.py:build"\nweights = "w.pt"\nname = "mine"\n')
    specs = load_sweep(toml)["models"]
    assert [(s.name, s.source, s.weights) for s in specs] == [
        ("prog", f"{files}/tiny.pt2", None), ("mine", f"{files}/tiny.py:build", "w.pt")]


def test_a_card_never_chooses_code_to_run(files, tmp_path, one_thread, capsys):
    """A card someone sent names a Python file (with its true sha256): quant.ptq must not
    import it. The TFLite backend needs the user's own --source; without it, one line (or,
    with no --backend, TFLite skipped with a note) and the file never ran."""
    from quant import ptq

    out = tmp_path / "art"
    _export(files, out, "--source", f"{files}/tiny.py:build", "--weights",
            str(files / "tiny_sd.pt"), "--dataset", "cifar10")
    card_path = out / "tiny_cifar10.json"
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(textwrap.dedent(TINY) + f"\nopen({str(marker)!r}, 'w').write('x')\n")
    d = json.loads(card_path.read_text())
    d["source"]["model_source"].update(spec=f"{evil}:build", path=str(evil),
                                       sha256=__import__("hashlib").sha256(evil.read_bytes()).hexdigest())
    card_path.write_text(json.dumps(d))
    calib = Path(__file__).resolve().parents[1] / "assets" / "data" / "cifar10_calib.tar.gz"
    base = ["--calib", str(calib), "--model", "tiny_cifar10", "--num-calib", "8", "--holdout", "0",
            "--out", str(out)]
    r = run_module("quant.ptq", *base, "--backend", "tflite")
    assert r.returncode == 2 and "pass --source again" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    # the user's own file is not the one the card names: refused too
    r = run_module("quant.ptq", *base, "--backend", "tflite", "--source", f"{files}/tiny.py:build")
    assert r.returncode == 2 and "is not the file the card's model was exported from" in r.stderr
    # no --backend: ONNX Runtime INT8 runs, TFLite is skipped with a note naming the flag
    capsys.readouterr()
    assert ptq.main(base) == 0
    assert "TFLite skipped" in capsys.readouterr().err
    assert (out / "tiny_cifar10.int8.onnx").is_file() and not (out / "tiny_cifar10.int8.tflite").exists()
    assert not marker.exists()


def test_source_is_refused_for_a_zoo_card(files):
    """quant.ptq / quant.et_ptq --source with a zoo model's card: one line, never ignored."""
    from export.source import source_for_card

    assert source_for_card(None, {"checkpoint": "x.pt"}) is None
    with pytest.raises(SourceError, match="this card's model is the zoo's"):
        source_for_card(f"{files}/tiny.py:build", {"checkpoint": "x.pt"})
    rec = {"model_source": {"kind": "factory", "spec": f"{files}/tiny.py:build"}}
    assert source_for_card(f"{files}/tiny.py:build", rec).kind is SourceKind.FACTORY
