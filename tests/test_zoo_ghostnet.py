"""GhostNet: builds and runs in both configs, matches the paper's counts, rejects bad variants."""
from __future__ import annotations

import pytest
import torch

from zoo import ZooError, create_model, resolve_variant
from zoo.cost import cost_of
from zoo.ghostnet import GhostModule

# GhostNet (arXiv:1911.11907) Table 7, ImageNet 224x224: (width, M FLOPs = mult-adds, M params).
PAPER = [(0.5, 42, 2.6), (1.0, 141, 5.2), (1.3, 226, 7.3)]
MACS_TOL, PARAMS_TOL = 0.03, 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("width,macs_m,params_m", PAPER, ids=[f"w{p[0]}" for p in PAPER])
def test_paper_counts(width, macs_m, params_m):
    rep = cost_of(resolve_variant("ghostnet", "imagenet", width=width))
    macs, params = rep.macs / 1e6, rep.params / 1e6
    assert abs(macs / macs_m - 1) <= MACS_TOL, f"{macs:.2f}M MACs vs {macs_m}M (Table 7)"
    assert abs(params / params_m - 1) <= PARAMS_TOL, f"{params:.3f}M params vs {params_m}M"


def test_cifar_forward_and_last_stage():
    model = create_model("ghostnet", "cifar10", width=0.5)
    seen = {}
    model.conv_last.register_forward_hook(lambda m, i, o: seen.update(hw=tuple(o.shape[-2:])))
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert tuple(seen["hw"]) == (4, 4)


def test_imagenet_forward_reduced_size():
    model = create_model("ghostnet", "imagenet", input_size=64).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1000)


def test_ghost_module_halves_and_zero_init():
    m = GhostModule(8, 16)
    assert m.primary[0].out_channels == 8 and m.cheap[0].groups == 8
    model = create_model("ghostnet", "cifar10")
    # Zero-init residual: every bottleneck starts as its shortcut.
    assert all(float(b.ghost2.primary[1].weight.detach().abs().sum()) == 0 for b in model.blocks)


@pytest.mark.parametrize("params", [{"width": 0.75}, {"groups": 2}, {"width": 2.0}])
def test_bad_variant(params):
    with pytest.raises(ZooError):
        resolve_variant("ghostnet", "imagenet", **params)
