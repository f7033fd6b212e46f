"""User errors of the export CLIs: one line on stderr, non-zero exit, no traceback,
and nothing new in the output folder."""
from __future__ import annotations

import importlib.util
import os
import textwrap

import pytest

from zoo.checkpoint import save_checkpoint

from _export_util import all_files, random_trained_like, run_module


@pytest.fixture(scope="module")
def g3_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    net = random_trained_like("shufflenet_v1", "cifar10", None, groups=3)
    return save_checkpoint(d / "g3.pt", net, net.variant)


def assert_one_line_error(r, prog: str, *needles: str) -> str:
    assert r.returncode != 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"python -m {prog}: error: "), lines[0]
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def run_in_clean_out(tmp_path, module: str, *args):
    """Run with --out pointing at a folder holding one file; return (result, new entries)."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "keep.txt").write_text("x")
    before = all_files(out)
    r = run_module(module, *args, "--out", out)
    return r, all_files(out) - before


def test_unknown_model(tmp_path):
    r, new = run_in_clean_out(tmp_path, "export.onnx", "--model", "no_such_net")
    assert_one_line_error(r, "export.onnx", "unknown model 'no_such_net'")
    assert not new


def test_weights_that_do_not_match_the_architecture(tmp_path, g3_ckpt):
    r, new = run_in_clean_out(tmp_path, "export.onnx", "--model", "shufflenet_v1", "--groups", "8",
                              "--weights", g3_ckpt)
    assert_one_line_error(r, "export.onnx", "does not match the architecture")
    assert not new
    r, new = run_in_clean_out(tmp_path, "export.onnx", "--model", "shufflenet_v2",
                              "--weights", g3_ckpt)
    assert_one_line_error(r, "export.onnx", "shufflenet_v1 weights, not shufflenet_v2")
    assert not new
    # A bare state dict for the wrong width: caught by the shapes.
    import torch

    bare = tmp_path / "bare.pt"
    net = random_trained_like("shufflenet_v2", "cifar10", None, width=0.5)
    torch.save(net.state_dict(), bare)
    r, new = run_in_clean_out(tmp_path, "export.onnx", "--model", "shufflenet_v2",
                              "--dataset", "cifar10", "--weights", bare)
    assert_one_line_error(r, "export.onnx", "does not match the architecture")
    assert not new


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing", "directory", "pickle"])
def test_unreadable_or_corrupt_checkpoint(tmp_path, g3_ckpt, kind):
    bad = tmp_path / f"{kind}.pt"
    if kind == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        data = g3_ckpt.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "directory":
        bad.mkdir()
    elif kind == "pickle":
        import pickle

        bad.write_bytes(pickle.dumps({"state_dict": {"w": object()}}))
    r, new = run_in_clean_out(tmp_path, "export.onnx", "--model", "shufflenet_v1",
                              "--weights", bad)
    line = assert_one_line_error(r, "export.onnx", str(bad))
    assert "internal error" not in line
    assert not new


def test_output_folder_not_writable(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    before = all_files(tmp_path)
    r = run_module("export.onnx", "--model", "shufflenet_v2", "--dataset", "cifar10",
                   "--out", blocker / "art")
    assert_one_line_error(r, "export.onnx", "not writable")
    assert all_files(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0555")
def test_output_folder_read_only(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        r = run_module("export.onnx", "--model", "shufflenet_v2", "--out", out)
        assert_one_line_error(r, "export.onnx", "not writable")
        assert not any(out.iterdir())
    finally:
        out.chmod(0o755)


def test_failed_parity_writes_nothing(tmp_path):
    """A model that computes something else while being exported fails the check."""
    src = tmp_path / "liar.py"
    src.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Liar(nn.Module):
            def __init__(self, data):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)
                self.fc = nn.Linear(4, data.num_classes)

            def forward(self, x):
                y = self.fc(self.conv(x).mean((2, 3)))
                if torch.onnx.is_in_onnx_export():
                    y = y + 1.0
                return y

        def build(data):
            return Liar(data)
    """))
    r, new = run_in_clean_out(tmp_path, "export.onnx", "--model-py", f"{src}:build",
                              "--dataset", "cifar10", "--random-weights", "--num-images", "4")
    assert_one_line_error(r, "export.onnx", "parity check failed")
    assert not new


@pytest.mark.parametrize("args,needle", [
    (["--model", "shufflenet_v1", "--groups", "5"], "--groups 5 is not one of"),
    (["--model", "shufflenet_v1", "--num-images", "0"], "--num-images"),
    (["--model", "shufflenet_v1", "--opset", "7"], "--opset 7"),
    (["--model", "shufflenet_v1", "--bogus"], "unrecognized arguments"),
    (["--model-py", "nowhere.py:build"], "does not exist"),
    (["--model", "shufflenet_v2", "--weights", "w.pt", "--random-weights"], "exclude each other"),
])
def test_usage_errors(tmp_path, args, needle):
    r, new = run_in_clean_out(tmp_path, "export.onnx", *args)
    assert_one_line_error(r, "export.onnx", needle)
    assert not new


def test_tflite_cli_errors(tmp_path, g3_ckpt):
    r, new = run_in_clean_out(tmp_path, "export.tflite", "--model", "no_such_net")
    line = assert_one_line_error(r, "export.tflite")
    assert "no_such_net" in line or "TFLite runtime" in line
    assert not new
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    r, new = run_in_clean_out(tmp_path, "export.tflite", "--model", "shufflenet_v1",
                              "--weights", bad)
    assert_one_line_error(r, "export.tflite")
    assert not new
    if importlib.util.find_spec("ai_edge_litert") is not None:
        r, new = run_in_clean_out(tmp_path, "export.tflite", "--model", "shufflenet_v1",
                                  "--groups", "8", "--weights", g3_ckpt)
        assert_one_line_error(r, "export.tflite", "does not match the architecture")
        assert not new


@pytest.mark.parametrize("what", ["missing.onnx", "corrupt.onnx", "corrupt.tflite", "model.txt"])
def test_audit_cli_errors(tmp_path, what):
    p = tmp_path / what
    if what != "missing.onnx":
        p.write_bytes(os.urandom(512))
    if what.endswith(".tflite") and importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("no TFLite runtime")
    r = run_module("export.audit", p)
    assert_one_line_error(r, "export.audit", what)
