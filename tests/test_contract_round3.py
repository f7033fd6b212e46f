"""Hardening, round 3: the classes of issue 15 that round 2 left open.

  1. the model card is data, not instructions (name, artifact paths, values: one validator);
  2. no output may overwrite an input (zoo.util.declare_inputs / check_not_input);
  6. leftovers: fp16-input and opset-7 models, ARMQ_THREADS=two;
  plus a closed stdout pipe (`... | head -1`) is not an "internal error".

Each CLI case asserts the round-2 contract (non-zero exit, last stderr line
`<prog>: error: ...` naming the problem, no traceback) and that nothing under the test's
folder changed: inputs hash the same and no file appeared (so none outside --out either).
Most CLIs run in-process through cli_entry (seconds saved per case); the broken-pipe case
needs a real process.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_contract_round2 import assert_one_line_error, labelled_folder, tiny_card, tiny_onnx

from zoo.util import ArmqError, atomic_output, check_not_input, cli_entry, declare_inputs

# The CLIs whose `main` is not in the module `python -m` names.
MAIN_OF = {"android_bench": "android_bench.cli", "deploy": "deploy.cli"}


def run_inproc(module: str, *args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m module args` through the same cli_entry, in this process."""
    main = importlib.import_module(MAIN_OF.get(module, module)).main
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                pytest.raises(SystemExit) as ei:
            cli_entry(main, module, [str(a) for a in args])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(module, ei.value.code or 0, out.getvalue(), err.getvalue())


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (symlinks as their target) with its sha256."""
    return {str(p.relative_to(root)): (f"link:{os.readlink(p)}" if p.is_symlink()
                                       else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def refused(root: Path, module: str, needle: str, *args: object,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a CLI that must refuse: the one-line error, and nothing under root changed."""
    before = snapshot(root)
    r = run_inproc(module, *args, env=env)
    assert_one_line_error(r, module, needle)
    assert snapshot(root) == before, "an input changed or a file appeared"
    return r


def model_dir(tmp_path: Path, **card_patch) -> Path:
    """tmp/art/tiny.onnx + tiny.json (card patched), tmp/data (2 labelled classes)."""
    art = tmp_path / "art"
    tiny_onnx(art / "tiny.onnx")
    card = tiny_card(art)
    d = json.loads(card.read_text())
    for dotted, v in card_patch.items():
        *head, last = dotted.split("__")
        o = d
        for k in head:
            o = o[k]
        o[last] = v
    card.write_text(json.dumps(d))
    labelled_folder(tmp_path / "data", classes=("cat", "dog"))
    return art


# ---- 1. the card is data: name --------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "/abs/x", "sub/x", "..", "a\\b"],
                         ids=["dotdot", "absolute", "subfolder", "parent", "backslash"])
def test_ptq_card_name_cannot_steer_outputs(name, tmp_path):
    """A card name of `../../x` or `/abs/x` made quant.ptq write outside --out."""
    if name == "/abs/x":
        name = str(tmp_path / "abs" / "x")
    art = model_dir(tmp_path, name=name)
    refused(tmp_path, "quant.ptq", "'name' must be a plain file stem", "--model", art / "tiny.onnx",
            "--calib", tmp_path / "data", "--out", art, "--num-calib", 2)
    assert not (tmp_path / "abs").exists()


def test_card_name_must_match_model_stem(tmp_path):
    art = model_dir(tmp_path, name="other")
    refused(tmp_path, "quant.ptq", "names the model 'other', not 'tiny'", "--model",
            art / "tiny.onnx", "--calib", tmp_path / "data", "--out", art)
    refused(tmp_path, "quant.evaluate", "names the model 'other', not 'tiny'", "--card",
            art / "tiny.json", "--data", tmp_path / "data")


def test_ptq_outputs_stay_in_out(tmp_path):
    """The INT8 file goes beside its card: a card outside --out is refused, not followed."""
    art = model_dir(tmp_path)
    refused(tmp_path, "quant.ptq", "is not in --out", "--model", art / "tiny.onnx",
            "--calib", tmp_path / "data", "--out", tmp_path / "elsewhere")
    assert not any((tmp_path / "elsewhere").iterdir())


# ---- 1. the card is data: artifact paths ---------------------------------------------------------

@pytest.mark.parametrize("path", ["../outside.onnx", "/abs", "sub/../../outside.onnx"],
                         ids=["dotdot", "absolute", "nested-dotdot"])
def test_card_artifact_path_outside_folder_refused(path, tmp_path):
    if path == "/abs":
        path = str(tmp_path / "outside.onnx")
    art = model_dir(tmp_path, artifacts__onnx__path=path)
    tiny_onnx(tmp_path / "outside.onnx")
    refused(tmp_path, "quant.evaluate", "'artifacts.onnx.path' must be a file name inside",
            "--card", art / "tiny.json", "--data", tmp_path / "data")


def test_card_artifact_symlink_escape_refused(tmp_path):
    art = model_dir(tmp_path, artifacts__onnx__path="link.onnx")
    tiny_onnx(tmp_path / "outside.onnx")
    (art / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    refused(tmp_path, "quant.evaluate", "leads outside the card's folder", "--card",
            art / "tiny.json", "--data", tmp_path / "data")


def test_ptq_uses_the_model_named_not_the_cards(tmp_path):
    """A card's artifacts.onnx.path silently made quant.ptq quantize a different file."""
    art = model_dir(tmp_path, artifacts__onnx__path="other.onnx")
    tiny_onnx(art / "other.onnx", classes=10)
    refused(tmp_path, "quant.ptq", "records artifacts.onnx.path 'other.onnx', a different file",
            "--model", art / "tiny.onnx", "--calib", tmp_path / "data", "--out", art,
            "--num-calib", 2)


def test_record_artifact_only_beside_the_card(tmp_path):
    from export.card import CardError, load_card

    art = model_dir(tmp_path)
    card = load_card(art / "tiny.json")
    tiny_onnx(tmp_path / "away.onnx")
    with pytest.raises(CardError, match="must be written beside its card"):
        card.record_artifact(art / "tiny.json", "onnx", tmp_path / "away.onnx")
    card.record_artifact(art / "tiny.json", "onnx", art / "tiny.onnx")
    assert card.artifacts["onnx"]["path"] == "tiny.onnx"


# ---- 1. the card is data: values, one line naming the field, before any work ---------------------

NAN = float("nan")


@pytest.mark.parametrize("patch,needle", [
    ({"preprocessing__mean": [0.5, 0.5]}, "'preprocessing.mean' must have 3 values"),
    ({"preprocessing__std": [0.2, 0.0, 0.2]}, "'preprocessing.std' values must be positive"),
    ({"preprocessing__mean": [NAN, 0.5, 0.5]}, "'preprocessing.mean' must be a list of finite"),
    ({"preprocessing__std": [float("inf")] * 3}, "'preprocessing.std' must be a list of finite"),
    ({"preprocessing__mean": "0.5"}, "'preprocessing.mean' must be a list of finite"),
    ({"preprocessing__mean": [True, 0.5, 0.5]}, "'preprocessing.mean' must be a list of finite"),
    ({"preprocessing__input_size": 0}, "'preprocessing.input_size' must be a whole number"),
    ({"preprocessing__input_size": 6000}, "'preprocessing.input_size' must be a whole number"),
    ({"preprocessing__input_size": "32px"}, "'preprocessing.input_size' must be a whole number"),
    ({"preprocessing__resize": 8.5}, "'preprocessing.resize' must be a whole number"),
    ({"variant__input_size": "32px"}, "'variant.input_size' must be a whole number"),
    ({"class_names": ["a", "b", "c", "d", "e"]}, "has 5 names but the model has 10"),
    ({"class_names": "cat,dog"}, "'class_names' must be a non-empty list"),
    ({"output__shape": [1, 0]}, "'output.shape' must be a list of positive"),
    ({"preprocessing__num_classes": 7}, "'preprocessing.num_classes' must equal the 10"),
], ids=["mean-2", "std-0", "mean-nan", "std-inf", "mean-str", "mean-bool", "size-0", "size-6000",
        "size-32px", "resize-float", "variant-32px", "classes-5-vs-10", "classes-str",
        "output-shape-0", "num-classes-7"])
def test_card_values_validated_before_work(patch, needle, tmp_path):
    art = model_dir(tmp_path, **patch)
    refused(tmp_path, "quant.evaluate", needle, "--card", art / "tiny.json",
            "--data", tmp_path / "data")


def test_android_bench_validates_card_before_benchmarking(tmp_path):
    art = model_dir(tmp_path, preprocessing__std=[0.2, 0.0, 0.2])
    refused(tmp_path, "android_bench", "'preprocessing.std' values must be positive",
            "--model", art / "tiny.onnx", "--json", tmp_path / "r.json", "--runs", 1)


def test_validator_accepts_the_exported_shape(tmp_path):
    """Guard against a validator that refuses everything: the hand-made card loads."""
    from export.card import load_card

    card = load_card(model_dir(tmp_path) / "tiny.json")
    assert card.name == "tiny" and len(card.class_names) == 10
    dyn = model_dir(tmp_path / "dyn", input__shape=["N", 3, 8, 8], output__shape=["N", 10])
    assert load_card(dyn / "tiny.json").input["shape"][0] == "N"    # --dynamic-batch exports


# ---- 2. no output may overwrite an input ------------------------------------------------------

@pytest.mark.parametrize("target", ["model", "card", "hardlink", "symlink"])
def test_android_bench_json_never_replaces_an_input(target, tmp_path):
    art = model_dir(tmp_path)
    out = {"model": art / "tiny.onnx", "card": art / "tiny.json",
           "hardlink": tmp_path / "hl.json", "symlink": tmp_path / "sl.onnx"}[target]
    if target == "hardlink":
        os.link(art / "tiny.json", out)
    if target == "symlink":
        out.symlink_to(art / "tiny.onnx")
    refused(tmp_path, "android_bench", "is the input", "--model", art / "tiny.onnx",
            "--json", out, "--runs", 1)


def test_android_bench_outputs_dir_never_replaces_the_inputs(tmp_path):
    """--outputs-dir saves <model>.<target>.outputs.npy: a run fed the outputs of an earlier
    run (the same name, in the same folder) must not overwrite them."""
    import numpy as np

    art = model_dir(tmp_path)
    x = art / "tiny.onnx.local.outputs.npy"
    np.save(x, np.zeros((1, 3, 8, 8), np.float32))
    refused(tmp_path, "android_bench", "is the input", "--model", art / "tiny.onnx",
            "--inputs", x, "--outputs-dir", art, "--runs", 1, "--warmup", 0)


def test_profile_json_never_replaces_the_model(tmp_path):
    art = model_dir(tmp_path)
    refused(tmp_path, "android_bench.profile", "is the input", "--model", art / "tiny.onnx",
            "--json", art / "tiny.onnx")


def test_zoo_results_out_never_replaces_results(tmp_path):
    p = tmp_path / "results.json"
    p.write_text("{}")
    refused(tmp_path, "deploy.zoo_results", "is the input", p, "--out", p)


def test_train_out_never_replaces_init(tmp_path):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"not really a checkpoint")
    refused(tmp_path, "zoo.train", "is the input", "--model", "shufflenet_v2", "--data", tmp_path,
            "--init", ck, "--out", ck)


def test_atomic_output_refuses_a_declared_input(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("keep me")
    link = tmp_path / "link.txt"
    os.link(src, link)

    def main(argv):
        declare_inputs(src)
        check_not_input(tmp_path / "new.txt")           # a new file is fine
        with atomic_output(link, "w") as f:              # a hard link of the input is not
            f.write("replaced")
        return 0

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as ei:
        cli_entry(main, "prog", [])
    assert ei.value.code == 2 and "is the input" in err.getvalue()
    assert src.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["in.txt", "link.txt"]
    with atomic_output(link, "w") as f:      # cli_entry forgot the run's inputs afterwards
        f.write("a later run may")


def test_check_not_input_explicit_list(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    with pytest.raises(ArmqError, match="is the input"):
        check_not_input(tmp_path / "." / "a", [a])
    check_not_input(tmp_path / "b", [a])


# ---- 6. leftovers: fp16 input, old opset, ARMQ_THREADS ---------------------------------------

def _fp16_input(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(path))
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    m.graph.node.insert(0, helper.make_node("Cast", ["input"], ["input32"], to=TensorProto.FLOAT))
    m.graph.node[1].input[0] = "input32"
    onnx.save(m, str(path))


def _opset7(path: Path) -> None:
    import onnx
    from onnx import helper

    m = onnx.load(str(path))
    m.opset_import[0].version, m.ir_version = 7, 3
    for t in m.graph.initializer:      # IR 3 lists initializers as graph inputs
        m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.save(m, str(path))


def test_fp16_input_model_one_line(tmp_path):
    art = model_dir(tmp_path)
    _fp16_input(art / "tiny.onnx")
    needle = "input 'input' is float16, but the model card's preprocessing makes float32"
    refused(tmp_path, "quant.ptq", needle, "--model", art / "tiny.onnx", "--calib",
            tmp_path / "data", "--out", art, "--num-calib", 2)
    refused(tmp_path, "quant.evaluate", needle, "--model", art / "tiny.onnx",
            "--data", tmp_path / "data")
    # audit describes the model as it is: an answer, not an internal error
    r = run_inproc("export.audit", art / "tiny.onnx")
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr


def test_old_opset_refused_before_onnxruntime(tmp_path):
    """Opset 7 reached onnxruntime as a QDQ model in a deleted temp folder."""
    art = model_dir(tmp_path)
    _opset7(art / "tiny.onnx")
    r = refused(tmp_path, "quant.ptq", "tiny.onnx: ONNX opset 7 is too old", "--model",
                art / "tiny.onnx", "--calib", tmp_path / "data", "--out", art, "--num-calib", 2)
    assert "armq-ptq-" not in r.stderr


def test_armq_threads_not_a_number(tmp_path):
    art = model_dir(tmp_path)
    refused(tmp_path, "quant.evaluate", "ARMQ_THREADS='two'", "--model", art / "tiny.onnx",
            "--data", tmp_path / "data", env={"ARMQ_THREADS": "two"})


# ---- a closed pipe is not an error ------------------------------------------------------------

def test_broken_pipe_exits_quietly(tmp_path):
    """`python -m <cli> ... | head -1` ended as "internal error: BrokenPipeError"."""
    model = tiny_onnx(tmp_path / "tiny.onnx")
    p = subprocess.Popen([sys.executable, "-m", "export.audit", "--json", model], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                    # the reader is gone before the first line
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(timeout=120) == 141, err       # 128 + SIGPIPE, as a shell reports it
    assert err == "", err


def test_broken_pipe_in_process():
    def main(argv):
        raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    # stdout a StringIO: the devnull redirect must not touch this process's real fd 1
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as ei:
        cli_entry(main, "prog", [])
    assert ei.value.code == 141 and err.getvalue() == ""


def test_declare_inputs_outside_a_cli_run_checks_but_keeps_nothing(tmp_path):
    """A main() called as a library must not leave inputs behind for later, unrelated writes."""
    src = tmp_path / "ck.pt"
    src.write_bytes(b"weights")
    with pytest.raises(ArmqError, match="is the input"):
        declare_inputs(src, outputs=[src])
    declare_inputs(src)
    with atomic_output(src) as f:
        f.write(b"a later writer may replace it")
    assert src.read_bytes() == b"a later writer may replace it"
