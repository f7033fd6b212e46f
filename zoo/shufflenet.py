"""ShuffleNet V1 (Zhang et al., CVPR 2018) and V2 (Ma et al., ECCV 2018).

CIFAR configs replace the stride-2 stem + max-pool with a stride-1 stem, so the
three stages run at 16, 8 and 4 pixels for a 32-pixel input.
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import Param, register_model
from .config import DataConfig
from .layers import ChannelShuffle, ClassifierHead, ConvBNAct, ShuffleImpl, DEFAULT_SHUFFLE

SHUFFLE_PARAM = Param(DEFAULT_SHUFFLE.value, choices=tuple(i.value for i in ShuffleImpl),
                      help="channel-shuffle graph form")

# ShuffleNet V1, Table 1: output channels of Stage2 for 1x, per group count
# (Stage3 and Stage4 double each time); 4/8/4 units per stage.
V1_STAGE2 = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
V1_REPEATS = (4, 8, 4)


def _round_to(v: float, multiple: int) -> int:
    return max(multiple, int(round(v / multiple)) * multiple)


# Stem width per scale: 24 at 1x, not scaled linearly. With these the model
# matches the paper's complexities (0.25x 13M, 0.5x 38M, 1.5x 292M, 2x 524M
# MFLOPs for g=3; Tables 2 and 8); linear scaling of the stem misses 0.25x by 15%.
V1_STEM = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


def _v1_stem(width: float, stage2: int, groups: int) -> int:
    """The stem nearest the table value whose leftover (stage2 - stem) splits into
    `groups`: Stage2's first unit concatenates the stem with a grouped conv output."""
    target = V1_STEM[width]
    for d in range(0, target, 4):
        for s in (target + d, target - d):
            if s >= 4 and (stage2 - s) % groups == 0:
                return s
    raise ValueError(f"no stem width fits {stage2} channels in {groups} groups")


class ShuffleV1Unit(nn.Module):
    """Fig. 2(b)/(c): GConv1x1 -> shuffle -> DWConv3x3 -> GConv1x1, add or concat."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, first_group: bool,
                 shuffle: str):
        super().__init__()
        self.stride = stride
        branch_out = cout - cin if stride == 2 else cout
        mid = cout // 4
        g1 = groups if first_group else 1
        self.pw1 = ConvBNAct(cin, mid, 1, groups=g1)
        self.shuffle = ChannelShuffle(mid, g1, shuffle) if g1 > 1 else nn.Identity()
        self.dw = ConvBNAct(mid, mid, 3, stride, groups=mid, act=None)
        self.pw2 = ConvBNAct(mid, branch_out, 1, groups=groups, act=None)
        if stride == 2:
            # The unit's input is post-ReLU, so the pooled shortcut needs no ReLU
            # of its own; the branch gets its ReLU before the concat.
            self.shortcut = nn.AvgPool2d(3, 2, 1)
            self.act = nn.ReLU(inplace=True)
        else:
            self.shortcut = None
            self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.dw(self.shuffle(self.pw1(x))))
        if self.shortcut is not None:
            return torch.cat([self.shortcut(x), self.act(y)], 1)
        return self.act(x + y)


class ShuffleNetV1(nn.Module):
    def __init__(self, data: DataConfig, groups: int = 3, width: float = 1.0,
                 shuffle: str = DEFAULT_SHUFFLE.value):
        super().__init__()
        cifar = data.dataset == "cifar10"
        stage_out = [_round_to(V1_STAGE2[groups] * width * 2 ** i, 4 * groups) for i in range(3)]
        stem = _v1_stem(width, stage_out[0], groups)
        self.stem = ConvBNAct(3, stem, 3, 1 if cifar else 2)
        self.pool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        units: list[nn.Module] = []
        cin = stem
        for si, (cout, n) in enumerate(zip(stage_out, V1_REPEATS)):
            for i in range(n):
                # Stage2's first pointwise conv is not grouped: its input is tiny (Sec. 3.3).
                units.append(ShuffleV1Unit(cin, cout, 2 if i == 0 else 1, groups,
                                           first_group=not (si == 0 and i == 0), shuffle=shuffle))
                cin = cout
        self.features = nn.Sequential(*units)
        self.head = ClassifierHead(cin, data.num_classes)
        for u in units:
            if u.shortcut is None:
                # Residual branches start as identity ("zero-init residual"): without
                # it, training from scratch at lr 0.1 blows up in the first epoch.
                nn.init.zeros_(u.pw2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.pool(self.stem(x))))


@register_model(
    "shufflenet", "ShuffleNet V1: pointwise group conv + channel shuffle",
    paper="Zhang et al., ShuffleNet, CVPR 2018 (arXiv:1707.01083)",
    groups=Param(3, choices=(1, 2, 3, 4, 8), help="groups of the pointwise convs"),
    width=Param(1.0, choices=(0.25, 0.5, 1.0, 1.5, 2.0), help="scale factor s (Table 1)"),
    shuffle=SHUFFLE_PARAM,
)
def shufflenet_v1(data: DataConfig, groups: int = 3, width: float = 1.0,
                  shuffle: str = DEFAULT_SHUFFLE.value) -> nn.Module:
    return ShuffleNetV1(data, groups, width, shuffle)


# ShuffleNet V2, Table 5: stage output channels and final conv width per scale.
V2_CHANNELS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024),
               1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}
V2_REPEATS = (4, 8, 4)


class ShuffleV2Unit(nn.Module):
    """Fig. 3(c)/(d): channel split, one branch of 1x1-DW3x3-1x1, concat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int, shuffle: str):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(ConvBNAct(cin, cin, 3, 2, groups=cin, act=None),
                                         ConvBNAct(cin, half, 1))
            b2_in = cin
        else:
            self.branch1 = None
            b2_in = half
        self.branch2 = nn.Sequential(ConvBNAct(b2_in, half, 1),
                                     ConvBNAct(half, half, 3, stride, groups=half, act=None),
                                     ConvBNAct(half, half, 1))
        self.shuffle = ChannelShuffle(cout, 2, shuffle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.branch2(b)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    def __init__(self, data: DataConfig, width: float = 1.0, shuffle: str = DEFAULT_SHUFFLE.value):
        super().__init__()
        cifar = data.dataset == "cifar10"
        *stages, last = V2_CHANNELS[width]
        self.stem = ConvBNAct(3, 24, 3, 1 if cifar else 2)
        self.pool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        units: list[nn.Module] = []
        cin = 24
        for cout, n in zip(stages, V2_REPEATS):
            for i in range(n):
                units.append(ShuffleV2Unit(cin, cout, 2 if i == 0 else 1, shuffle))
                cin = cout
        self.features = nn.Sequential(*units)
        self.conv_last = ConvBNAct(cin, last, 1)
        self.head = ClassifierHead(last, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_last(self.features(self.pool(self.stem(x)))))


@register_model(
    "shufflenet", "ShuffleNet V2: channel split + shuffle, equal-width units",
    paper="Ma et al., ShuffleNet V2, ECCV 2018 (arXiv:1807.11164)",
    width=Param(1.0, choices=(0.5, 1.0, 1.5, 2.0), help="channel multiplier (Table 5)"),
    shuffle=SHUFFLE_PARAM,
)
def shufflenet_v2(data: DataConfig, width: float = 1.0,
                  shuffle: str = DEFAULT_SHUFFLE.value) -> nn.Module:
    return ShuffleNetV2(data, width, shuffle)
