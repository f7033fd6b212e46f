"""Hardening, round 4 (issue 28, classes 5-7): silent wrong results, processes and state
after a kill, messages.

  5. rundiff and NaN; --mean/--std on the 0..255 scale or not finite, refused where the
     value enters (the export flags) and in the card validator (one rule: export.card);
  6. a killed deploy takes its stages with it; `latest` only names a finished run;
  7. one-line messages naming the problem instead of internal errors or wrong names.

CLI cases assert the contract of tests/test_contract_round3.py (`refused`): non-zero exit,
the last stderr line `<prog>: error: ...` naming the problem, nothing under the test's
folder changed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_contract_round3 import model_dir, refused, run_inproc

NAN, INF = float("nan"), float("inf")


# ---- 5. silent wrong results -----------------------------------------------------------------

def _run_doc(count: float, top1: float) -> dict:
    """A minimal results.json: one model, one accuracy figure, one QEMU count."""
    return {"format": "armq-deploy/1", "run": {"id": "r", "status": "done"},
            "stages": [{"id": "s", "kind": "accuracy", "status": "done"}],
            "models": {"m": {"accuracy": {"results": {"onnx": {"top1": top1}}},
                             "bench": {"qemu:cortex-a76": {"onnx": {
                                 "file": "m.onnx", "emulated": True, "instructions": count,
                                 "instructions_spread_pct": 0.0}}}}}}


def _write_run(folder: Path, doc: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(doc))   # NaN as the JSON literal NaN
    return folder


@pytest.mark.parametrize("a,b,agree", [
    ((NAN, 0.5), (1e7, 0.5), False),    # a count not measured in one run only
    ((1e7, NAN), (1e7, 0.5), False),    # an accuracy figure NaN in one run only
    ((NAN, NAN), (NAN, NAN), True),     # identical runs, both not measured
    ((INF, 0.5), (1e7, 0.5), False),
], ids=["count-nan-vs-number", "top1-nan-vs-number", "nan-vs-nan", "count-inf-vs-number"])
def test_rundiff_nan(a, b, agree, tmp_path):
    """NaN vs a number differs; NaN vs NaN on the same field agrees (it compared as
    'agree' and 'DIFFER nan vs nan': the other way round)."""
    ra = _write_run(tmp_path / "a", _run_doc(*a))
    rb = _write_run(tmp_path / "b", _run_doc(*b))
    r = run_inproc("deploy.rundiff", ra, rb)
    assert r.returncode == (0 if agree else 1), r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("agree" if agree else "DIFFER"), r.stdout
    if not agree:
        assert "differs: " in r.stdout and ("nan" in r.stdout or "inf" in r.stdout), r.stdout


@pytest.mark.parametrize("flags,needle", [
    (["--mean", 128, 128, 128, "--std", 64, 64, 64], "argument --mean: 128: must be in 0..1"),
    (["--mean", .5, .5, .5, "--std", 64, 64, 64], "for 0..255 values divide by 255"),
    (["--mean", "nan", .5, .5, "--std", .2, .2, .2], "--mean: nan: must be a finite number"),
    (["--mean", .5, .5, .5, "--std", "inf", .2, .2], "--std: inf: must be a finite number"),
    (["--mean", .5, .5, .5, "--std", 0, .2, .2], "--std: 0: must be positive"),
    (["--mean", .5, .5, .5, "--std", -0.2, .2, .2], "--std: -0.2: must be positive"),
    (["--mean", -0.5, .5, .5, "--std", .2, .2, .2], "--mean: -0.5: must be in 0..1"),
], ids=["0-255-scale", "std-64", "mean-nan", "std-inf", "std-0", "std-negative", "mean-negative"])
def test_export_norm_flags_refused(flags, needle, tmp_path):
    """export.onnx wrote cards with these that every later stage refused (or, 0..255 scale,
    accepted: every image normalised to about -2)."""
    refused(tmp_path, "export.onnx", needle, "--source", "torchvision:resnet18",
            "--input-size", 32, *flags, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("patch,needle", [
    ({"preprocessing__mean": [128.0, 128.0, 128.0]}, "'preprocessing.mean' values must be in 0..1"),
    ({"preprocessing__std": [64.0, 64.0, 64.0]}, "for 0..255 values divide by 255"),
    ({"preprocessing__std": [0.2, -0.1, 0.2]}, "'preprocessing.std' values must be positive"),
], ids=["mean-128", "std-64", "std-negative"])
def test_card_norm_scale_refused(patch, needle, tmp_path):
    art = model_dir(tmp_path, **patch)
    refused(tmp_path, "quant.evaluate", needle, "--card", art / "tiny.json",
            "--data", tmp_path / "data")


def test_norm_rule_accepts_real_normalisations():
    """Guard against a rule that refuses everything: the zoo's presets and a raw-pixel
    model (mean 0, std 1/255) pass."""
    from export.card import norm_problem
    from zoo.config import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

    for mean, std in ((CIFAR10_MEAN, CIFAR10_STD), (IMAGENET_MEAN, IMAGENET_STD),
                      ((0.0,) * 3, (1 / 255,) * 3), ((0.5,) * 3, (0.5,) * 3), ((0,) * 3, (1,) * 3)):
        assert norm_problem("mean", list(mean)) is None and norm_problem("std", list(std)) is None
