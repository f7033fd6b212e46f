"""MobileNeXt (Zhou et al., "Rethinking Bottleneck Structure for Efficient Mobile
Network Design", ECCV 2020, arXiv:2007.02269).

The sandglass block flips MobileNetV2's inverted residual: the shortcut joins
the wide tensors, and the two depthwise 3x3 convs work at the wide ends:

    dw3x3 (ReLU6) -> 1x1 reduce by t (linear) -> 1x1 expand (ReLU6) -> dw3x3 (linear, stride s)

The identity tensor multiplier (Sec. 3.3) adds the shortcut to only the first
`round(C * multiplier)` channels; the rest of the block output passes through
unchanged. The paper's saving assumes the runtime adds in place; in an
exported graph it is Slice + Add + Concat, so zoo.cost's memory access is
slightly *higher* at 0.5 than at 1.0 (21.8M vs 21.5M elements at 224)
unless the converter turns the concat into an in-place write.

Published cost (ImageNet 224x224, width 1.0, multiplier 1.0): 300M MAdds and
3.4M params in the paper's ImageNet comparison; the authors' code release
README ("Model performance at different width multiplier") lists 3.5M / 300M
for it and 6.1M/590M (1.4), 2.5M/210M (0.75), 2.1M/110M (0.5), 1.8M/80M
(0.35); its tensor-multiplier table keeps 300M MAdds for every multiplier.
This module is the authors' released classification network layer for layer
(including their rule that stride-1 transition blocks drop both depthwise
convs and strided ones the first) and counts 295.4M MACs / 3.205M params at
1.0 (-1.5% / -5.7% vs 3.4M); the other widths come out 3-10% under the README,
so only 1.0 is pinned by tests/test_zoo_mobilenext.py.

CIFAR config: stride-1 stem and the first sandglass block (32 -> 96) at
stride 1, so the stages run at 32, 16, 8 and 4 pixels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._registry import Param, register_model
from .config import DataConfig
from .layers import ClassifierHead, ConvBNAct, make_divisible

# Table 3 of the paper: (reduction ratio t, output channels, repeats, stride).
# The 1280-channel last block is scaled like the others for width > 1 only.
SANDGLASS_CFG = (
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 3, 2),
    (6, 288, 3, 2),
    (6, 384, 4, 1),
    (6, 576, 4, 2),
    (6, 960, 2, 1),
    (6, 1280, 1, 1),
)


class SandglassBlock(nn.Module):
    """Fig. 3(b) of the paper, with the authors' rules for the transition blocks.

    A block whose input and output widths differ at stride 1 (e.g. 288 -> 384)
    has no depthwise conv at all; a strided transition block keeps only the
    second (strided) one. Blocks of width-1 stages (`keep_3x3`) keep both.
    """

    def __init__(self, cin: int, cout: int, stride: int, t: int, multiplier: float = 1.0,
                 keep_3x3: bool = False):
        super().__init__()
        hidden = cin // t
        if hidden < cout / 6.0:
            hidden = make_divisible(math.ceil(cout / 6.0), 16)
        full = t == 2 or cin == cout or keep_3x3
        layers: list[nn.Module] = []
        if full:
            layers.append(ConvBNAct(cin, cin, 3, groups=cin, act=nn.ReLU6))
        layers.append(ConvBNAct(cin, hidden, 1, act=None))        # linear bottleneck
        layers.append(ConvBNAct(hidden, cout, 1, act=nn.ReLU6))
        if full or stride == 2:
            layers.append(ConvBNAct(cout, cout, 3, stride, groups=cout, act=None))
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.identity_channels = int(round(cin * multiplier)) if self.residual else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if not self.residual:
            return y
        k = self.identity_channels
        if k >= y.shape[1]:
            return x + y
        return torch.cat([x[:, :k] + y[:, :k], y[:, k:]], 1)


class MobileNeXt(nn.Module):
    def __init__(self, data: DataConfig, width: float = 1.0, multiplier: float = 1.0,
                 dropout: float = 0.2):
        super().__init__()
        cifar = data.dataset == "cifar10"
        stem = make_divisible(32 * width, 8)
        self.stem = ConvBNAct(3, stem, 3, 1 if cifar else 2, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        cin = stem
        for si, (t, c, n, s) in enumerate(SANDGLASS_CFG):
            # The last block's 1280 channels never shrink below 1280 (like MobileNetV2's head).
            cout = make_divisible(c * (max(1.0, width) if si == len(SANDGLASS_CFG) - 1 else width), 8)
            if cifar and si == 0:
                s = 1
            for i in range(n):
                blocks.append(SandglassBlock(cin, cout, s if i == 0 else 1, t, multiplier,
                                             keep_3x3=(n == 1 and s == 1)))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, data.num_classes, dropout)
        for b in blocks:
            if b.residual:
                nn.init.zeros_(b.conv[-1][1].weight)  # zero-init residual branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model(
    "mobilenext", "MobileNeXt: sandglass blocks (shortcut between wide tensors)",
    paper="Zhou et al., Rethinking Bottleneck Structure, ECCV 2020 (arXiv:2007.02269)",
    width=Param(1.0, choices=(0.35, 0.5, 0.75, 1.0, 1.4), help="width multiplier"),
    multiplier=Param(1.0, bounds=(0.05, 1.0),
                     help="identity tensor multiplier: fraction of channels on the shortcut"),
)
def mobilenext(data: DataConfig, width: float = 1.0, multiplier: float = 1.0) -> nn.Module:
    return MobileNeXt(data, width, multiplier)
