"""AlexNet, VGG-16-BN, ResNet-18/50: builds, forward passes in both configs, the papers' counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo import create_model, resolve_variant
from zoo.cost import cost_of

# (model, published M mult-adds, published M params, source). ImageNet, 224x224.
PAPER = [
    # ShuffleNet (arXiv:1707.01083) Tables 6 and 8: "AlexNet [21]" 720 MFLOPs (mult-adds);
    # MobileNets (arXiv:1704.04861) Table 9: AlexNet 720M mult-adds, 60M parameters.
    ("alexnet", 720, 60, "ShuffleNet Tables 6/8; MobileNet Table 9"),
    # MobileNets Table 8: VGG 16, 15300M mult-adds, 138M parameters (ShuffleNet Table 6:
    # 15300 MFLOPs). 138M is the BN-free net of the VGG paper (Table 2: 138M for D); the
    # BN version here adds 2x4224 BN params and drops the 4224 conv biases (+0.003%).
    ("vgg16", 15300, 138, "MobileNet Table 8; ShuffleNet Table 6; VGG Table 2"),
    # ResNet (arXiv:1512.03385) Table 1: 1.8e9 / 3.8e9 FLOPs (mult-adds). The paper gives
    # no parameter counts; 11.7M / 25.6M are torchvision's (11,689,512 / 25,557,032).
    ("resnet18", 1800, 11.7, "ResNet Table 1; torchvision docs (params)"),
    ("resnet50", 3800, 25.6, "ResNet Table 1; torchvision docs (params)"),
]

MACS_TOL, PARAMS_TOL = 0.03, 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("model,macs_m,params_m,source", PAPER, ids=[p[0] for p in PAPER])
def test_paper_counts(model, macs_m, params_m, source):
    rep = cost_of(resolve_variant(model, "imagenet"))
    assert rep.input_size == 224
    macs, params = rep.macs / 1e6, rep.params / 1e6
    assert abs(macs / macs_m - 1) <= MACS_TOL, f"{model}: {macs:.1f}M MACs vs {macs_m}M ({source})"
    assert abs(params / params_m - 1) <= PARAMS_TOL, \
        f"{model}: {params:.3f}M params vs {params_m}M ({source})"


@pytest.mark.parametrize("name,size", [("alexnet", 96), ("vgg16", 64), ("resnet18", 64),
                                       ("resnet50", 64)])
def test_imagenet_forward_reduced_size(name, size):
    model = create_model(name, "imagenet", input_size=size).eval()
    assert model.default_cfg.num_classes == 1000
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 1000)


def test_alexnet_is_two_tower():
    """conv2, conv4, conv5 are grouped in two (Krizhevsky et al. Fig. 2); conv3 is not."""
    model = create_model("alexnet", "cifar10")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]


def test_resnet_residual_branches_start_as_identity():
    from zoo.classic import BasicBlock, Bottleneck

    for name, kind, n in (("resnet18", BasicBlock, 8), ("resnet50", Bottleneck, 16)):
        blocks = [m for m in create_model(name, "cifar10").modules() if isinstance(m, kind)]
        assert len(blocks) == n
        for b in blocks:
            assert torch.all(b.last_bn.weight == 0)
            assert isinstance(b.act, nn.ReLU)  # the post-add ReLU is a module


def test_resnet50_strides_on_first_1x1():
    """The paper's ResNet-50 (Table 1's 3.8 GFLOPs) downsamples in the first 1x1 conv."""
    model = create_model("resnet50", "imagenet")
    first = model.stages[1][0]
    assert first.conv1[0].stride == (2, 2) and first.conv1[0].kernel_size == (1, 1)
    assert first.conv2[0].stride == (1, 1)
