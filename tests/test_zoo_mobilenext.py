"""MobileNeXt: builds and runs in both configs, the paper's counts, identity multiplier, bad variants."""
from __future__ import annotations

import pytest
import torch

from zoo import ZooError, create_model, resolve_variant
from zoo.cost import cost_of
from zoo.mobilenext import SandglassBlock


pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_counts():
    # MobileNeXt (arXiv:2007.02269) Table 4: MobileNeXt-1.0, 300M MAdds, 3.4M params
    # (the authors' README says 3.5M). Our network is the authors' released
    # classification code layer for layer (transition-block rules included) and
    # counts 295.4M MAdds / 3.205M params: MAdds -1.5%, params -5.7% (-8.4% vs the
    # README). We found no variant of the published block rules that reaches 3.4M
    # at 300M, so the params tolerance here is 6%, not the zoo's usual 5%.
    rep = cost_of(resolve_variant("mobilenext", "imagenet"))
    assert abs(rep.macs / 300e6 - 1) <= 0.03, rep.macs
    assert abs(rep.params / 3.4e6 - 1) <= 0.06, rep.params


def test_identity_multiplier_keeps_cost():
    # Sec. 3.3: the identity tensor multiplier changes no weight and no mult-add.
    full = create_model("mobilenext", "cifar10", multiplier=1.0)
    half = create_model("mobilenext", "cifar10", multiplier=0.5)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(full) == n(half)
    blk = SandglassBlock(16, 16, 1, 6, multiplier=0.5).eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        y, branch = blk(x), blk.conv(x)
    assert torch.allclose(y[:, :8], x[:, :8] + branch[:, :8])
    assert torch.equal(y[:, 8:], branch[:, 8:])


def test_cifar_forward_and_last_stage():
    model = create_model("mobilenext", "cifar10", width=0.5, multiplier=0.5)
    seen = {}
    model.blocks[-1].register_forward_hook(lambda m, i, o: seen.update(hw=tuple(o.shape[-2:])))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert tuple(seen["hw"]) == (4, 4)


def test_imagenet_forward_reduced_size():
    model = create_model("mobilenext", "imagenet", input_size=64, width=0.35).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("params", [{"width": 0.6}, {"multiplier": 0.0}, {"multiplier": 1.5},
                                    {"part": 4}])
def test_bad_variant(params):
    with pytest.raises(ZooError):
        resolve_variant("mobilenext", "imagenet", **params)
