"""MobileNet V1 (Howard et al. 2017), V2 (Sandler et al., CVPR 2018) and V3 (Howard et al., ICCV 2019).

ImageNet configs follow the papers' tables layer for layer (V1 Table 1, V2 Table 2,
V3 Tables 1 and 2); channel counts under a width multiplier are rounded with
`make_divisible` (multiples of 8), the rule of the reference TF code, which the
published mult-add counts depend on.

CIFAR-10 configs (32 px): the stem runs at stride 1 and the first stride-2 stage
after it runs at stride 1 too (the usual CIFAR adaptation, as for MobileNetV2 in
most CIFAR code bases), so a 32-pixel input reaches the last stage at 4x4
instead of 1x1.

Quantization-friendly by construction: every activation is a module (ReLU6 /
Hardswish / Hardsigmoid), Conv+BN+Act come as `ConvBNAct`, pooling is
`AdaptiveAvgPool2d`, SE is `zoo.layers.SqueezeExcite`, and residual adds are
plain tensor adds with no activation after them (linear bottlenecks).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ._registry import Param, register_model
from .config import DataConfig
from .layers import init_weights, is_cifar, ClassifierHead, ConvBNAct, SqueezeExcite, make_divisible


# ---- MobileNet V1 -----------------------------------------------------------------------

# Table 1 of the paper: (pointwise output channels, depthwise stride) after the
# 3x3/2 stem of 32 channels. (The table prints s2 for the second-to-last
# depthwise layer; at 7x7 it is s1, as in the reference implementation.)
V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class DepthwiseSeparable(nn.Module):
    """Fig. 3 (right): 3x3 depthwise + BN + ReLU6, then 1x1 pointwise + BN + ReLU6.

    ReLU6 rather than the paper's ReLU, as in the reference TF implementation:
    the bounded range suits 8-bit activations.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, stride, groups=cin, act=nn.ReLU6)
        self.pw = ConvBNAct(cin, cout, 1, act=nn.ReLU6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    def __init__(self, data: DataConfig, width: float = 1.0):
        super().__init__()
        cifar = is_cifar(data)
        stem = make_divisible(32 * width)
        self.stem = ConvBNAct(3, stem, 3, 1 if cifar else 2, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        cin, first_down = stem, cifar
        for c, s in V1_LAYERS:
            if s == 2 and first_down:
                s, first_down = 1, False   # CIFAR: 32 -> 32 -> 16 -> 8 -> 4
            cout = make_divisible(c * width)
            blocks.append(DepthwiseSeparable(cin, cout, s))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, data.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


@register_model(
    "mobilenet", "MobileNet V1: depthwise separable convolutions",
    paper="Howard et al., MobileNets, arXiv:1704.04861 (2017)",
    width=Param(1.0, choices=(0.25, 0.5, 0.75, 1.0), help="width multiplier alpha (Table 6)"),
)
def mobilenet_v1(data: DataConfig, width: float = 1.0) -> nn.Module:
    return MobileNetV1(data, width)


# ---- MobileNet V2 -----------------------------------------------------------------------

# Table 2 of the paper: expansion t, output channels c, repeats n, first stride s.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """Fig. 3(b)/Table 1: 1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear project.

    Residual add when the shape is kept; the projection's BN gamma starts at 0
    so the block starts as identity.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = ConvBNAct(cin, hidden, 1, act=nn.ReLU6) if expand != 1 else nn.Identity()
        self.dw = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        self.project = ConvBNAct(hidden, cout, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.use_res else y


class MobileNetV2(nn.Module):
    def __init__(self, data: DataConfig, width: float = 1.0):
        super().__init__()
        cifar = is_cifar(data)
        stem = make_divisible(32 * width)
        self.stem = ConvBNAct(3, stem, 3, 1 if cifar else 2, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        cin, first_down = stem, cifar
        for t, c, n, s in V2_STAGES:
            if s == 2 and first_down:
                s, first_down = 1, False   # CIFAR: the 24-channel stage keeps 32x32
            cout = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.features = nn.Sequential(*blocks)
        # The last conv is never narrowed below 1280 (end of Sec. 4: "for multipliers
        # less than one, we apply width multiplier to all layers except the very last").
        last = make_divisible(1280 * max(1.0, width))
        self.conv_last = ConvBNAct(cin, last, 1, act=nn.ReLU6)
        self.head = ClassifierHead(last, data.num_classes, dropout=0.2)
        init_weights(self)
        for b in blocks:
            if b.use_res:
                nn.init.zeros_(b.project[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_last(self.features(self.stem(x))))


@register_model(
    "mobilenet", "MobileNet V2: inverted residuals and linear bottlenecks",
    paper="Sandler et al., MobileNetV2, CVPR 2018 (arXiv:1801.04381)",
    width=Param(1.0, bounds=(0.35, 1.4), help="width multiplier (0.35-1.4 as in the paper)"),
)
def mobilenet_v2(data: DataConfig, width: float = 1.0) -> nn.Module:
    return MobileNetV2(data, width)


# ---- MobileNet V3 -----------------------------------------------------------------------

class V3Block(NamedTuple):
    kernel: int
    exp: int       # expansion ("exp size")
    out: int
    se: bool
    hswish: bool   # HS, else RE
    stride: int


def _paper_table(rows: str) -> tuple[V3Block, ...]:
    """Blocks from rows written as Tables 1/2 print them: kernel, exp size, #out, SE
    ("SE" or "-"), NL ("RE" or "HS"), s. Text keeps the tables checkable against the
    paper line by line (and both tables share one reader instead of two literal lists)."""
    blocks = []
    for line in rows.strip().splitlines():
        k, exp, out, se, nl, s = line.split()
        if se not in ("SE", "-") or nl not in ("RE", "HS"):
            raise ValueError(f"MobileNetV3 table row {line.strip()!r}: SE is 'SE' or '-', "
                             "NL is 'RE' or 'HS'")
        blocks.append(V3Block(int(k), int(exp), int(out), se == "SE", nl == "HS", int(s)))
    return tuple(blocks)


# Table 1 of the paper (MobileNetV3-Large).
V3_LARGE = _paper_table("""
    3  16   16   -   RE  1
    3  64   24   -   RE  2
    3  72   24   -   RE  1
    5  72   40   SE  RE  2
    5  120  40   SE  RE  1
    5  120  40   SE  RE  1
    3  240  80   -   HS  2
    3  200  80   -   HS  1
    3  184  80   -   HS  1
    3  184  80   -   HS  1
    3  480  112  SE  HS  1
    3  672  112  SE  HS  1
    5  672  160  SE  HS  2
    5  960  160  SE  HS  1
    5  960  160  SE  HS  1
""")
# Table 2 of the paper (MobileNetV3-Small).
V3_SMALL = _paper_table("""
    3  16   16   SE  RE  2
    3  72   24   -   RE  2
    3  88   24   -   RE  1
    5  96   40   SE  HS  2
    5  240  40   SE  HS  1
    5  240  40   SE  HS  1
    5  120  48   SE  HS  1
    5  144  48   SE  HS  1
    5  288  96   SE  HS  2
    5  576  96   SE  HS  1
    5  576  96   SE  HS  1
""")
# (last 1x1 conv, head width) - Tables 1/2: 960/1280 (Large), 576/1024 (Small).
V3_HEAD = {"large": (960, 1280), "small": (576, 1024)}


class InvertedResidualV3(nn.Module):
    """Fig. 4: V2's block plus an optional SE (after the depthwise) and h-swish."""

    def __init__(self, cin: int, exp: int, cout: int, kernel: int, stride: int, se: bool,
                 act: type[nn.Module]):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        self.expand = ConvBNAct(cin, exp, 1, act=act) if exp != cin else nn.Identity()
        self.dw = ConvBNAct(exp, exp, kernel, stride, groups=exp, act=act)
        # Sec. 5.3: SE bottleneck fixed at 1/4 of the expansion width; hard-sigmoid gate.
        self.se = SqueezeExcite(exp, make_divisible(exp / 4)) if se else nn.Identity()
        self.project = ConvBNAct(exp, cout, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.use_res else y


class V3Head(nn.Module):
    """Pool -> 1x1 (as Linear, no BN) + h-swish -> dropout -> classifier (Table 1 'NBN' rows)."""

    def __init__(self, cin: int, hidden: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.pre_logits = nn.Linear(cin, hidden)
        self.act = nn.Hardswish(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.act(self.pre_logits(self.flatten(self.pool(x))))))


class MobileNetV3(nn.Module):
    def __init__(self, data: DataConfig, arch: str, width: float = 1.0):
        super().__init__()
        cifar = is_cifar(data)
        cfg = V3_LARGE if arch == "large" else V3_SMALL
        stem = make_divisible(16 * width)
        self.stem = ConvBNAct(3, stem, 3, 1 if cifar else 2, act=nn.Hardswish)
        blocks: list[nn.Module] = []
        cin, first_down = stem, cifar
        table_in = 16
        for b in cfg:
            s = b.stride
            if s == 2 and first_down:
                s, first_down = 1, False   # CIFAR: 32 -> 32 -> 16 -> 8 -> 4
            # The expansion is a ratio of the (scaled) input width, as in the
            # reference code (e.g. 64 = 4 x 16); at width 1.0 this is Table 1/2 exactly.
            exp = make_divisible(cin * b.exp / table_in)
            cout = make_divisible(b.out * width)
            table_in = b.out
            blocks.append(InvertedResidualV3(cin, exp, cout, b.kernel, s, b.se,
                                             nn.Hardswish if b.hswish else nn.ReLU))
            cin = cout
        self.features = nn.Sequential(*blocks)
        last_conv, hidden = V3_HEAD[arch]
        last_conv = make_divisible(last_conv * width)
        # The head's 1280/1024 is scaled up with the multiplier, never down (as
        # for V2's last layer); this reproduces Table 3's 0.75 counts.
        hidden = make_divisible(hidden * max(1.0, width))
        self.conv_last = ConvBNAct(cin, last_conv, 1, act=nn.Hardswish)
        self.head = V3Head(last_conv, hidden, data.num_classes)
        init_weights(self)
        for b in blocks:
            if b.use_res:
                nn.init.zeros_(b.project[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_last(self.features(self.stem(x))))


V3_WIDTH = Param(1.0, bounds=(0.35, 1.25),
                 help="width multiplier (the paper's Fig. 7 uses 0.35-1.25)")


@register_model(
    "mobilenet", "MobileNet V3-Large: NAS-found blocks with SE and h-swish",
    paper="Howard et al., Searching for MobileNetV3, ICCV 2019 (arXiv:1905.02244)",
    width=V3_WIDTH,
)
def mobilenet_v3_large(data: DataConfig, width: float = 1.0) -> nn.Module:
    return MobileNetV3(data, "large", width)


@register_model(
    "mobilenet", "MobileNet V3-Small: NAS-found blocks with SE and h-swish",
    paper="Howard et al., Searching for MobileNetV3, ICCV 2019 (arXiv:1905.02244)",
    width=V3_WIDTH,
)
def mobilenet_v3_small(data: DataConfig, width: float = 1.0) -> nn.Module:
    return MobileNetV3(data, "small", width)
