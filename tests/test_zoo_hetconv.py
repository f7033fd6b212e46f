"""HetConv: the layer is a heterogeneous-kernel conv, VGG-16 matches the paper's table,
MobileNet-HetConv builds, bad variants are refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo import ZooError, create_model, resolve_variant
from zoo.cost import measure
from zoo.hetconv import HetConv2d, paper_convention_macs

# HetConv (arXiv:1903.04120) Table 1, VGG-16 on CIFAR-10: FLOPs (mult-adds) in millions per P.
PAPER_VGG16_CIFAR = {1: 313.74, 2: 175.23, 4: 105.98, 8: 71.35, 16: 54.04, 32: 45.38, 64: 41.05}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("part", sorted(PAPER_VGG16_CIFAR))
def test_vgg16_cifar_paper_flops(part):
    v = resolve_variant("hetconv_vgg16", "cifar10", part=part)
    model = create_model(v)
    rep = measure(model, 32)
    paper = PAPER_VGG16_CIFAR[part] * 1e6
    # The paper's formula D^2 N (9M/P + M - M/P) (our count minus the 1x1 taps that
    # duplicate 3x3 centre taps) must match the table...
    assert abs(paper_convention_macs(model, rep) / paper - 1) <= 0.03
    # ...and the deployed two-conv form costs exactly N*M/P per pixel more per HetConv layer
    # (+9.8% at P=2, +8.0% at P=4, +1.1% at P=64).
    dup = sum(layer.macs // part for layer in rep.layers if layer.name.endswith("conv1.0"))
    assert rep.macs == paper_convention_macs(model, rep) + dup
    if part >= 32:
        assert abs(rep.macs / paper - 1) <= 0.03


def test_hetconv_is_a_heterogeneous_kernel_conv():
    """Grouped 3x3 + 1x1 == one 3x3 conv whose filter n has full 3x3 kernels on the
    M/P channels of its group and only a centre tap on the others."""
    torch.manual_seed(0)
    m, n, p = 8, 12, 4
    layer = HetConv2d(m, n, 1, p).eval()
    for bn in (layer.conv3[1], layer.conv1[1]):  # make the BNs non-trivial
        bn.running_mean.uniform_(-1, 1); bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2); bn.bias.data.uniform_(-1, 1)

    def fold(cbn):
        conv, bn = cbn[0], cbn[1]
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return conv.weight * s[:, None, None, None], bn.bias - bn.running_mean * s

    w3, b3 = fold(layer.conv3)
    w1, b1 = fold(layer.conv1)
    w = torch.zeros(n, m, 3, 3)
    for o in range(n):
        g = o // (n // p)
        w[o, g * (m // p):(g + 1) * (m // p)] = w3[o]
    w[:, :, 1, 1] += w1[:, :, 0, 0]
    taps = (w != 0).sum(dim=(2, 3))
    assert set(taps.unique().tolist()) <= {1, 9}
    assert (taps == 9).sum(1).tolist() == [m // p] * n  # M/P 3x3 kernels per filter
    x = torch.randn(2, m, 5, 5)
    with torch.no_grad():
        assert torch.allclose(layer(x), F.relu(F.conv2d(x, w, b3 + b1, padding=1)), atol=1e-5)


def test_part1_is_plain_vgg16():
    model = create_model("hetconv_vgg16", "cifar10", part=1)
    assert all(m.conv1 is None for m in model.modules() if isinstance(m, HetConv2d))


def test_cifar_forward_backward():
    for name, kw in (("hetconv_vgg16", {"part": 64}), ("mobilenet_v1_hetconv", {"width": 0.25})):
        model = create_model(name, "cifar10", **kw)
        out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        out.sum().backward()


def test_imagenet_forward_reduced_size():
    model = create_model("mobilenet_v1_hetconv", "imagenet", input_size=64, width=0.5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_mobilenet_hetconv_part_capped():
    # width 0.25: 8..256 channels; P=32 is capped per layer at gcd(P, C_in, C_out).
    model = create_model("mobilenet_v1_hetconv", "cifar10", width=0.25, part=32)
    layers = [m for m in model.modules() if isinstance(m, HetConv2d)]
    assert [m.part for m in layers][:3] == [8, 16, 32]
    assert all(m.cin % m.part == 0 and m.cout % m.part == 0 for m in layers)


@pytest.mark.parametrize("model,params", [
    ("hetconv_vgg16", {"part": 3}), ("hetconv_vgg16", {"part": 128}),
    ("hetconv_vgg16", {"width": 0.5}), ("mobilenet_v1_hetconv", {"part": 64}),
    ("mobilenet_v1_hetconv", {"width": 0.3}),
])
def test_bad_variant(model, params):
    with pytest.raises(ZooError):
        resolve_variant(model, "imagenet", **params)
