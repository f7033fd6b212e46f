"""GhostNet (Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020,
arXiv:1911.11907).

A Ghost module makes half of its output channels with an ordinary (1x1) conv and
the other half from those with a cheap depthwise 3x3 conv, then concatenates
them; each branch carries its own BN + ReLU before the concat. Ghost
bottlenecks (Fig. 3) stack two Ghost modules around an optional stride-2
depthwise conv and SE, with a residual shortcut.

Published cost (Table 7 of the paper, ImageNet 224x224):
  GhostNet 0.5x:  42M FLOPs, 2.6M params
  GhostNet 1.0x: 141M FLOPs, 5.2M params
  GhostNet 1.3x: 226M FLOPs, 7.3M params
("FLOPs" there are multiply-adds.) Our counts and their deviation are pinned in
tests/test_zoo_ghostnet.py.

CIFAR config: stride-1 stem and the first stride-2 bottleneck (16 -> 24
channels) runs at stride 1, so the four stages see 32, 16, 8 and 4 pixels.
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import Param, register_model
from .config import DataConfig
from .layers import ConvBNAct, SqueezeExcite, make_divisible

# Table 1 of the paper (kernel sizes from the authors' code release):
# (depthwise kernel, expansion "#exp", output "#out", SE ratio, stride)
GHOSTNET_CFG: tuple[tuple[tuple[int, int, int, float, int], ...], ...] = (
    ((3, 16, 16, 0.0, 1),),
    ((3, 48, 24, 0.0, 2),),
    ((3, 72, 24, 0.0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0.0, 2),),
    ((3, 200, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 184, 80, 0.0, 1),
     (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0.0, 1),
     (5, 960, 160, 0.25, 1)),
)
HEAD_CHANNELS = 1280  # the 1x1 conv after global pooling (Table 1), not width-scaled


class GhostModule(nn.Module):
    """Primary 1x1 conv -> `init` channels; cheap depthwise 3x3 on them -> the rest; concat.

    With ratio s = 2 (the paper's setting) each half is oup/2 channels. The
    cheap op is a depthwise conv (d = 3). `relu=False` gives the linear module
    used at the end of a bottleneck.
    """

    def __init__(self, cin: int, cout: int, relu: bool = True, ratio: int = 2, dw_size: int = 3):
        super().__init__()
        if cout % ratio:
            raise ValueError(f"GhostModule: {cout} output channels not divisible by ratio {ratio}")
        self.cout = cout
        init = cout // ratio
        act = nn.ReLU if relu else None
        self.primary = ConvBNAct(cin, init, 1, act=act)
        self.cheap = ConvBNAct(init, cout - init, dw_size, groups=init, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1)


class GhostBottleneck(nn.Module):
    """Fig. 3: Ghost(expand, ReLU) -> [DW stride 2] -> [SE] -> Ghost(project, linear) + shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride: int, se_ratio: float):
        super().__init__()
        self.ghost1 = GhostModule(cin, mid, relu=True)
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=None) if stride > 1 \
            else nn.Identity()
        # SE as in MobileNetV3, which GhostNet follows: ReLU, hard-sigmoid gate,
        # reduction to a multiple of 4.
        self.se = SqueezeExcite(mid, make_divisible(mid * se_ratio, 4)) if se_ratio > 0 \
            else nn.Identity()
        self.ghost2 = GhostModule(mid, cout, relu=False)
        if cin == cout and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvBNAct(cin, cin, kernel, stride, groups=cin, act=None),
                ConvBNAct(cin, cout, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.se(self.dw(self.ghost1(x)))) + self.shortcut(x)


class GhostHead(nn.Module):
    """Global pool -> 1x1 conv (with bias) -> ReLU -> dropout -> FC, as in Table 1."""

    def __init__(self, cin: int, hidden: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(cin, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.act(self.conv(self.pool(x))))))


class GhostNet(nn.Module):
    def __init__(self, data: DataConfig, width: float = 1.0, dropout: float = 0.2):
        super().__init__()
        cifar = data.dataset == "cifar10"
        stem = make_divisible(16 * width, 4)
        self.stem = ConvBNAct(3, stem, 3, 1 if cifar else 2)
        blocks: list[nn.Module] = []
        cin = stem
        first_stride2 = True
        for stage in GHOSTNET_CFG:
            for k, exp, out, se, s in stage:
                if cifar and s == 2 and first_stride2:
                    s, first_stride2 = 1, False  # keep the last stage at 4x4 for 32 px
                mid = make_divisible(exp * width, 4)
                cout = make_divisible(out * width, 4)
                blocks.append(GhostBottleneck(cin, mid, cout, k, s, se))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        last = make_divisible(GHOSTNET_CFG[-1][-1][1] * width, 4)  # 960 x width
        self.conv_last = ConvBNAct(cin, last, 1)
        self.head = GhostHead(last, HEAD_CHANNELS, data.num_classes, dropout)
        for b in blocks:
            # Zero-init residual: each bottleneck starts as its shortcut.
            nn.init.zeros_(b.ghost2.primary[1].weight)
            nn.init.zeros_(b.ghost2.cheap[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_last(self.blocks(self.stem(x))))


@register_model(
    "ghostnet", "GhostNet: Ghost modules (1x1 conv + cheap depthwise op, concat) with SE",
    paper="Han et al., GhostNet, CVPR 2020 (arXiv:1911.11907)",
    width=Param(1.0, choices=(0.5, 1.0, 1.3), help="width multiplier (Table 7)"),
)
def ghostnet(data: DataConfig, width: float = 1.0) -> nn.Module:
    return GhostNet(data, width)
