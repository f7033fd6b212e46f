"""Building blocks shared by the model families.

Written for INT8 converters: every activation is a module (so a quantizer can
fuse Conv+BN+Act and observe it), branches carry their own ReLU before a
concat, and pooling is AdaptiveAvgPool2d rather than `x.mean()`.
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import DataConfig


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never dropping by more than 10%.

    The rule of the MobileNet v2/v3 reference code, needed to hit the papers' counts.
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional activation module."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU, padding: int | None = None,
                 dilation: int = 1):
        pad = (kernel - 1) // 2 * dilation if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish) else act())
        super().__init__(*layers)


class ShuffleImpl(str, Enum):
    """How a channel shuffle is expressed in the graph.

    TRANSPOSE: reshape (N,g,C/g,H,W) -> transpose -> reshape; exports as
    Reshape/Transpose/Reshape, which TFLite turns into NHWC transposes.
    GATHER: index the channel axis with a constant permutation; exports as one
    Gather. Converters and runtimes handle the two very differently.
    """

    TRANSPOSE = "transpose"
    GATHER = "gather"


DEFAULT_SHUFFLE = ShuffleImpl.TRANSPOSE


def shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """perm such that out[:, i] = in[:, perm[i]] equals the transpose shuffle."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


class ChannelShuffle(nn.Module):
    def __init__(self, channels: int, groups: int, impl: ShuffleImpl | str = DEFAULT_SHUFFLE):
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels cannot be shuffled in {groups} groups")
        self.channels, self.groups, self.impl = channels, groups, ShuffleImpl(impl)
        # Not persistent: a checkpoint is the same whichever impl loads it.
        self.register_buffer("perm", shuffle_permutation(channels, groups), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return x
        if self.impl is ShuffleImpl.GATHER:
            return torch.index_select(x, 1, self.perm)
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, impl={self.impl.value}"


def set_shuffle_impl(model: nn.Module, impl: ShuffleImpl | str) -> nn.Module:
    """Switch every ChannelShuffle in a model (weights are unaffected)."""
    for m in model.modules():
        if isinstance(m, ChannelShuffle):
            m.impl = ShuffleImpl(impl)
    return model


class SqueezeExcite(nn.Module):
    """SE block: global pool -> 1x1 reduce -> act -> 1x1 expand -> gate -> multiply."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module] = nn.ReLU,
                 gate: type[nn.Module] = nn.Hardsigmoid):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = act(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * s


class ClassifierHead(nn.Module):
    """Global average pool + optional dropout + linear."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(x))))


def is_cifar(data: DataConfig) -> bool:
    return data.dataset == "cifar10"


def init_weights(model: nn.Module) -> None:
    """He init for convs, N(0, 0.01) for linears, BN to identity (then zero-init-last)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
