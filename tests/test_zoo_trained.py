"""The trained zoo: shipped checkpoints evaluate to what they record, and training on any device."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from export.weights import find_shipped, list_shipped
from zoo.checkpoint import TRANSPORT_FP16, load_model, read_checkpoint, save_fp16
from zoo.train import pick_memory_format, planned_epochs

from conftest import REPO, SHIPPED_TESTSET, run_cli
from test_zoo_data_train import small_cifar  # noqa: F401 - the real-JPEG training fixture

WEIGHTS = REPO / "assets" / "weights"

# A sample of the shipped checkpoints, re-evaluated on all 10,000 shipped test images: one
# trained here (CPU, float32), two float16-stored from the GPU runs (one from
# ../shared/checkpoints, one trained in session 5). The heavier VGG/ResNet files are
# checked by `python -m zoo.verify` (README), not in the default suite.
# ShiftNet (~55 s on 10k images, the slowest of the three) runs with the slow tests only, to
# keep the default suite under ~15 min on 2 cores.
SAMPLE = ["shufflenet_v2_w0.5_cifar10.fp16.pt",
          pytest.param("shiftnet_depth20_w3_cifar10.fp16.pt", marks=pytest.mark.slow),
          "shufflenet_v1_g3_w0.5_cifar10.fp16.pt"]


@pytest.mark.parametrize("name", SAMPLE)
def test_shipped_fp16_checkpoint_evaluates_to_its_recorded_top1(name):
    path = WEIGHTS / name
    ck = read_checkpoint(path)
    assert ck["transport"] == TRANSPORT_FP16
    # Cast back on load: every float tensor the model sees is float32.
    assert all(v.dtype != torch.float16 for v in ck["state_dict"].values())
    assert path.stat().st_size < 0.6 * 4 * sum(v.numel() for v in ck["state_dict"].values()
                                                if v.is_floating_point()) + 1e5
    r = run_cli("zoo.evaluate", "--weights", path, "--data", SHIPPED_TESTSET, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["n"] == 10000
    recorded = ck["metrics"]["test_top1"]
    assert abs(res["top1"] - recorded) <= 0.001, (name, res["top1"], recorded)
    # The provenance the README promises is in the file itself.
    assert ck["recipe"]["device"].startswith("cuda") and ck["recipe"]["epochs"] >= 1
    assert len(ck["history"]) == ck["epochs_done"]


def test_every_shipped_checkpoint_is_found_by_its_variant_and_records_its_training():
    shipped = list_shipped(WEIGHTS)
    assert len(shipped) >= 20
    seen = set()
    for s in shipped:
        v = s.variant
        key = (v["model"], json.dumps(v.get("params", {}), sort_keys=True), v["dataset"])
        assert key not in seen, f"two shipped checkpoints for {key}"
        seen.add(key)
        found = find_shipped(v["model"], dict(v.get("params", {})), v["dataset"], root=WEIGHTS)
        assert found is not None and found.path == s.path
        ck = read_checkpoint(s.path)
        assert 0.1 < ck["metrics"]["test_top1"] <= 1.0, s.path
        assert ck["epochs_done"] >= 1 and ck["recipe"]["epochs"] >= ck["epochs_done"]
        log = s.path.with_name(s.path.name + ".log.jsonl")
        assert log.is_file(), f"{s.path.name}: no training log beside it"
    total = sum(p.stat().st_size for p in WEIGHTS.glob("*.pt"))
    assert total < 160e6, total


def test_fp16_transport_round_trip_keeps_the_function(tmp_path):
    from zoo._registry import create_model, resolve_variant
    from zoo.checkpoint import save_checkpoint

    v = resolve_variant("shufflenet_v2", "cifar10", width=0.5)
    torch.manual_seed(0)
    m = create_model(v).eval()
    save_checkpoint(tmp_path / "a.pt", m, v, metrics={"test_top1": 0.5})
    save_fp16(tmp_path / "a.pt", tmp_path / "a.fp16.pt")
    assert (tmp_path / "a.fp16.pt").stat().st_size < 0.6 * (tmp_path / "a.pt").stat().st_size
    m2, meta = load_model(tmp_path / "a.fp16.pt")
    assert meta["metrics"] == {"test_top1": 0.5}
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = m(x), m2(x)
    assert b.dtype == torch.float32 and torch.allclose(a, b, atol=5e-2, rtol=0)
    assert (a.argmax(1) == b.argmax(1)).all()


# ---- zoo.train --device --------------------------------------------------------------------

def test_planned_epochs_fit_the_budget():
    # 2 warm-up epochs took 100 s in all; 300 s left at 10 s an epoch -> 2 + 30, capped at 60.
    assert planned_epochs(60, 300, [10.0], done=2, done_before=2) == 32
    assert planned_epochs(20, 300, [10.0], done=2, done_before=2) == 20
    # No time left still finishes one more epoch than done: the schedule needs an end.
    assert planned_epochs(60, -5, [10.0], done=2, done_before=2) == 3
    assert planned_epochs(60, None, [10.0], done=2) == 60


def test_memory_format_rule():
    from zoo._registry import create_model, resolve_variant

    dw = create_model(resolve_variant("mobilenet_v2", "cifar10"))
    dense = create_model(resolve_variant("vgg16", "cifar10"))
    assert pick_memory_format("auto", "cpu", dw) == torch.channels_last
    assert pick_memory_format("auto", "cuda", dw) == torch.contiguous_format
    assert pick_memory_format("auto", "cuda", dense) == torch.channels_last
    assert pick_memory_format("contiguous", "cpu", dense) == torch.contiguous_format


def _train_args(data: Path, out: Path) -> list:
    return ["--model", "shufflenet_v1", "--groups", "3", "--width", "0.25", "--dataset", "cifar10",
            "--data", data, "--batch-size", "50", "--eval-every", "1", "--threads", "1",
            "--out", out]


def test_train_device_auto_on_cpu_records_the_device_and_fits_a_budget(small_cifar, tmp_path):  # noqa: F811
    out = tmp_path / "ck.pt"
    r = run_cli("zoo.train", *_train_args(small_cifar, out), "--device", "auto", "--epochs", "50",
                "--warmup-epochs", "1", "--time-budget", "0.001",
                env={"ARMQ_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    ck = torch.load(out, weights_only=True)
    # The budget is spent by the first epoch: the schedule is cut to 2 epochs and ends.
    assert ck["epochs_done"] == 2 and ck["recipe"]["epochs"] == 2
    assert ck["recipe"]["device"].startswith("cpu") and ck["recipe"]["time_budget"] == 0.001
    log = [json.loads(line) for line in out.with_name("ck.pt.log.jsonl").read_text().splitlines()]
    assert [rec["device"].split()[0] for rec in log] == ["cpu", "cpu"]
    assert log[0]["planned_epochs"] == 2 and "test_top1" in log[-1]


def test_train_device_cuda_without_a_gpu_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal cannot be shown")
    data = tmp_path / "data"      # the output may not lie inside the data folder
    data.mkdir()
    r = run_cli("zoo.train", *_train_args(data, tmp_path / "x.pt"), "--device", "cuda",
                env={"ARMQ_CACHE": str(tmp_path / "cache")})
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "--device cuda" in last and "Traceback" not in r.stderr
    r = run_cli("zoo.train", *_train_args(data, tmp_path / "x.pt"), "--bf16")
    assert r.returncode != 0 and "--bf16 needs --device cuda" in r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here: zoo.train --device cuda is exercised where a "
                           "GPU exists (scripts/train_zoo_gpu.sh ran it on an H100)")
def test_train_on_cuda_with_bf16(small_cifar, tmp_path):  # noqa: F811
    out = tmp_path / "ck.pt"
    r = run_cli("zoo.train", *_train_args(small_cifar, out), "--device", "cuda", "--bf16",
                "--epochs", "2", env={"ARMQ_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    ck = torch.load(out, weights_only=True)
    assert ck["recipe"]["device"].startswith("cuda") and ck["recipe"]["bf16"] is True
    assert ck["recipe"]["memory_format"] == "contiguous"  # grouped convs: NCHW on CUDA
    assert all(v.device.type == "cpu" for v in ck["state_dict"].values())
    m, _ = load_model(out)
    assert 0 <= ck["history"][-1]["test_top1"] <= 1
