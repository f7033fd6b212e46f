"""Bad input to quant.ptq / quant.evaluate, as a user would run them: a one-line
error on stderr, no traceback, a non-zero exit and no partial model file; and the
inputs that must not be errors (unreadable files mixed in, grayscale, RGBA,
16-bit, odd sizes) are preprocessed with a warning."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _quant_models import CALIB, NAME, TEST, copy_model, run, shared_model

from export.card import load_card


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return shared_model(tmp_path_factory)


@pytest.fixture
def art(model, tmp_path):
    """A private copy of the float model + card."""
    d = tmp_path / "art"
    copy_model(model[0], d)
    return d


def _clean(out: Path) -> None:
    leftovers = [p.name for p in out.iterdir() if ".int8." in p.name or p.name.startswith(".")]
    assert not leftovers, f"partial/temp files left: {leftovers}"


def assert_user_error(r, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert ": error: " in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def ptq(art: Path, calib, *extra) -> "object":
    return run("quant.ptq", "--calib", calib, "--model", art / f"{NAME}.onnx", "--backend", "ort",
               "--num-calib", "16", "--out", art, *extra)


def _img(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    ch = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    a = rng.integers(0, 255, (size[1], size[0], ch), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if ch == 1 else a, mode)


def test_missing_calib_dir(art, tmp_path):
    assert_user_error(ptq(art, tmp_path / "nope"), "does not exist")
    _clean(art)


def test_empty_calib_dir(art, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(ptq(art, tmp_path / "empty"), "empty")
    _clean(art)


def test_calib_dir_without_images(art, tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "readme.txt").write_text("no images here")
    (d / "data.npy").write_bytes(b"\x93NUMPY")
    assert_user_error(ptq(art, d), "no image files")
    _clean(art)


def test_only_unreadable_images(art, tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"not a jpeg at all")
    buf = io.BytesIO()
    _img("RGB", (32, 32)).save(buf, "PNG")
    (d / "b.png").write_bytes(buf.getvalue()[:40])  # truncated
    r = ptq(art, d)
    assert_user_error(r, "could be decoded")
    _clean(art)


def test_mixed_sizes_modes_and_junk_are_preprocessed(art, tmp_path):
    """Unreadable files are skipped with a warning; grayscale, RGBA, 16-bit and
    images of another size are converted and resized, not crashed on."""
    d = tmp_path / "mixed"
    d.mkdir()
    for i, (mode, size) in enumerate([("RGB", (32, 32)), ("L", (40, 28)), ("RGBA", (64, 64)),
                                      ("I;16", (33, 31)), ("RGB", (500, 375)), ("L", (8, 8))] * 3):
        _img(mode, size, i).save(d / f"img{i:02d}.png")
    (d / "junk.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (d / "notes.txt").write_text("ignored: not an image extension")
    r = ptq(art, d, "--num-calib", "100")
    assert r.returncode == 0, r.stderr
    assert "warning: skipping junk.jpg" in r.stderr
    assert "Traceback" not in r.stderr
    assert (art / f"{NAME}.int8.onnx").is_file()
    cal = load_card(art / f"{NAME}.json").artifacts["onnx_int8"]["calibration"]
    assert cal["num_images"] == 18 and cal["skipped_files"] == 1


def test_model_without_card(model, tmp_path):
    d = tmp_path / "nocard"
    onnx = copy_model(model[0], d, with_card=False)
    r = run("quant.ptq", "--calib", CALIB, "--model", onnx, "--out", d)
    assert_user_error(r, "no model card")
    _clean(d)
    r = run("quant.evaluate", "--model", onnx, "--data", TEST, "--limit", "4")
    assert_user_error(r, "no model card")


def test_missing_model_and_unknown_name(art, tmp_path):
    assert_user_error(run("quant.ptq", "--calib", CALIB, "--model", art / "ghost.onnx",
                          "--out", art), "does not exist")
    assert_user_error(run("quant.ptq", "--calib", CALIB, "--model", "ghost", "--out", art),
                      "no model 'ghost'")
    assert_user_error(run("quant.ptq", "--calib", CALIB, "--out", tmp_path / "none"),
                      "does not exist")
    _clean(art)


def _labelled_tar(path: Path, classes: list[str]) -> Path:
    with tarfile.open(path, "w") as t:
        for c in classes:
            for i in range(2):
                buf = io.BytesIO()
                _img("RGB", (32, 32), i).save(buf, "PNG")
                info = tarfile.TarInfo(f"{c}/{i}.png")
                info.size = len(buf.getvalue())
                t.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def test_labels_not_matching_the_model(art, tmp_path):
    bad = _labelled_tar(tmp_path / "zoo.tar", ["cat", "zebra"])
    line = assert_user_error(ptq(art, CALIB, "--eval", bad), "zebra", "not a class")
    assert "airplane" in line  # says which classes the model has
    _clean(art)
    r = run("quant.evaluate", "--model", art / f"{NAME}.onnx", "--data", bad)
    assert_user_error(r, "zebra")


def test_evaluate_needs_labels(art, tmp_path):
    d = tmp_path / "flat"
    d.mkdir()
    _img("RGB", (32, 32)).save(d / "a.png")
    r = run("quant.evaluate", "--model", art / f"{NAME}.onnx", "--data", d)
    assert_user_error(r, "not a labelled ImageFolder")


def test_bad_numbers(art):
    assert_user_error(ptq(art, CALIB, "--num-calib", "0"), "--num-calib")
    assert_user_error(ptq(art, CALIB, "--max-drop", "-1"), "--max-drop")
    _clean(art)


def test_bad_backend_and_method_are_usage_errors(art):
    r = ptq(art, CALIB, "--method", "magic")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "magic" in r.stderr
