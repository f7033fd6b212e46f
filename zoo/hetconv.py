"""HetConv (Singh et al., "HetConv: Heterogeneous Kernel-Based Convolutions for
Deep CNNs", CVPR 2019, arXiv:1903.04120).

A HetConv filter with part P applies 3x3 kernels to M/P of its M input
channels and 1x1 kernels to the other M - M/P; the 3x3 positions shift by one
channel from filter to filter (Fig. 3). Up to a fixed permutation of channels
that is exactly a grouped 3x3 conv (groups = P) plus a 1x1 conv over the
channels each filter does not see in 3x3. We build it the efficient way, as
two convs whose outputs are summed:

    y = BN(GroupConv3x3_P(x)) + BN(Conv1x1(x)),  then ReLU

The 1x1 conv runs over all M channels, so each filter also gets a 1x1 weight
on its M/P "3x3" channels. That weight duplicates the centre tap of the 3x3
kernel (same function class), and it costs N*M/P extra MACs per output pixel:
the deployed cost is D^2*N*M*(9/P + 1) where the paper counts
D^2*N*(9M/P + M - M/P). Exactly removing the duplicate needs a masked 1x1
(full cost anyway) or P-1 rotated convs, so we keep the two-conv form and
report both counts: `paper_convention_macs()` subtracts the duplicated taps.
Each branch has its own BN so both fold into their convs for INT8; the add
and ReLU fuse in the usual Add+ReLU pattern. P = 1 is a standard 3x3 conv.

`hetconv_vgg16`: VGG-16 with every 3x3 conv but the first (3 input channels)
a HetConv. CIFAR-10 config is the paper's CIFAR VGG-16 (that of Li et al.,
"Pruning Filters for Efficient ConvNets", which the paper follows): all five
max-pools, so block 5 runs at 2x2 (the paper's FLOPs depend on it; an
exception to the zoo's >= 4x4 rule), head FC 512-512(BN, ReLU)-10. ImageNet
config: VGG-16 configuration D with BN, FC 4096-4096-1000 on the 7x7 map.

Published (the paper's VGG-16 on CIFAR-10 table, FLOPs = mult-adds; the same numbers
are quoted as "original" by the Efficient-HetConv reproduction README):
P=1 313.74M, P=2 175.23M, P=4 105.98M, P=8 71.35M, P=16 54.04M,
P=32 45.38M, P=64 41.05M; checked in tests/test_zoo_hetconv.py.

`mobilenet_v1_hetconv`: MobileNet V1 with every depthwise-separable pair
(dw3x3 + pw1x1) replaced by one HetConv layer, the substitution the paper
argues for (one layer instead of two sequential ones, no extra latency). The
stem stays a standard conv. P is capped per layer at gcd(P, C_in, C_out) so
every layer is valid at every width. We found no published table for this
network in a copy we could read, so its cost is checked against the HetConv
formula only.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._registry import Param, register_model
from .config import DataConfig
from .layers import ClassifierHead, ConvBNAct, make_divisible

PARTS = (1, 2, 4, 8, 16, 32, 64)


class HetConv2d(nn.Module):
    """HetConv(P) + BN + ReLU as a grouped 3x3 branch plus a 1x1 branch, summed."""

    def __init__(self, cin: int, cout: int, stride: int = 1, part: int = 4,
                 act: type[nn.Module] = nn.ReLU):
        super().__init__()
        if cin % part or cout % part:
            raise ValueError(f"HetConv: part {part} must divide {cin} and {cout} channels")
        self.cin, self.cout, self.part = cin, cout, part
        self.conv3 = ConvBNAct(cin, cout, 3, stride, groups=part, act=None)
        self.conv1 = ConvBNAct(cin, cout, 1, stride, act=None) if part > 1 else None
        self.act = act(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(x)
        if self.conv1 is not None:
            y = y + self.conv1(x)
        return self.act(y)

    def extra_repr(self) -> str:
        return f"part={self.part}"


def paper_convention_macs(model: nn.Module, report) -> int:
    """`report.macs` (a zoo.cost report of `model`) minus the 1x1 taps that duplicate
    3x3 centre taps (see the module doc): the paper's D^2 * N * (9M/P + M - M/P)."""
    parts = {f"{name}.conv1.0": m.part for name, m in model.named_modules()
             if isinstance(m, HetConv2d) and m.conv1 is not None}
    dup = sum(layer.macs // parts[layer.name] for layer in report.layers if layer.name in parts)
    return report.macs - dup


# ---- VGG-16 --------------------------------------------------------------------------------

# Configuration D (Simonyan & Zisserman, Table 1): channels per 3x3 conv, "M" = 2x2/2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M")


class VGGHead(nn.Module):
    """FC-BN-ReLU (CIFAR, 512-512-10) or FC-ReLU-Dropout x2 (ImageNet, 4096-4096-1000)."""

    def __init__(self, cin: int, hidden: int, num_classes: int, bn: bool, layers: int,
                 grid: int = 1, dropout: float = 0.5):
        super().__init__()
        mods: list[nn.Module] = [nn.AdaptiveAvgPool2d(grid), nn.Flatten(1)]
        width = cin * grid * grid
        for _ in range(layers):
            mods.append(nn.Linear(width, hidden))
            if bn:
                mods.append(nn.BatchNorm1d(hidden))
            mods.append(nn.ReLU(inplace=True))
            if dropout > 0:
                mods.append(nn.Dropout(dropout))
            width = hidden
        mods.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class HetConvVGG16(nn.Module):
    def __init__(self, data: DataConfig, part: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            elif cin == 3:
                layers.append(ConvBNAct(cin, v, 3))  # the first layer stays standard
                cin = v
            else:
                layers.append(HetConv2d(cin, v, 1, part))
                cin = v
        self.features = nn.Sequential(*layers)
        if data.dataset == "cifar10":
            self.head = VGGHead(cin, 512, data.num_classes, bn=True, layers=1, dropout=0.0)
        else:
            self.head = VGGHead(cin, 4096, data.num_classes, bn=False, layers=2, grid=7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(
    "hetconv", "VGG-16 with HetConv filters (grouped 3x3 + 1x1, summed)",
    paper="Singh et al., HetConv, CVPR 2019 (arXiv:1903.04120)",
    part=Param(4, choices=PARTS, help="part P: 1/P of each filter's kernels are 3x3"),
)
def hetconv_vgg16(data: DataConfig, part: int = 4) -> nn.Module:
    return HetConvVGG16(data, part)


# ---- MobileNet V1 --------------------------------------------------------------------------

# MobileNet V1 (Howard et al. 2017, Table 1): (output channels, stride) of each
# depthwise-separable pair after the 32-channel 3x3/2 stem; the last s2 of the
# table is s1 at 7x7, as in the reference implementation.
MOBILENET_V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1HetConv(nn.Module):
    def __init__(self, data: DataConfig, width: float = 1.0, part: int = 32):
        super().__init__()
        cifar = data.dataset == "cifar10"
        stem = make_divisible(32 * width)
        self.stem = ConvBNAct(3, stem, 3, 1 if cifar else 2, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        cin, first_down = stem, cifar
        for c, s in MOBILENET_V1_LAYERS:
            if s == 2 and first_down:
                s, first_down = 1, False  # CIFAR: 32 -> 32 -> 16 -> 8 -> 4
            cout = make_divisible(c * width)
            blocks.append(HetConv2d(cin, cout, s, math.gcd(part, cin, cout), act=nn.ReLU6))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


@register_model(
    "hetconv", "MobileNet V1 with each depthwise-separable pair replaced by one HetConv",
    paper="Singh et al., HetConv, CVPR 2019 (arXiv:1903.04120)",
    width=Param(1.0, choices=(0.25, 0.5, 0.75, 1.0), help="MobileNet width multiplier"),
    part=Param(32, choices=(2, 4, 8, 16, 32), help="part P (capped per layer at gcd(P, C_in, C_out))"),
)
def mobilenet_v1_hetconv(data: DataConfig, width: float = 1.0, part: int = 32) -> nn.Module:
    return MobileNetV1HetConv(data, width, part)
