"""Shift-based networks (Wu et al., "Shift: A Zero FLOP, Zero Parameter Alternative
to Spatial Convolutions", CVPR 2018, arXiv:1711.08141).

The shift op moves each channel of a tensor by a fixed offset; channels are
split into k*k groups, one per offset in a k x k window (the centre group does
not move), and vacated pixels are zero. It has no parameters and no
multiply-adds. A CSC module (1x1 conv -> shift -> 1x1 conv) replaces a k x k
spatial conv; its expansion rate eps sets the width of the shifted tensor.

`shiftnet` builds
- CIFAR-10: ShiftResNet-20/56/110 (`depth`), the paper's CIFAR models: the
  ResNet basic block (two 3x3 convs) replaced by one CSC module whose middle
  width is eps x the block's output width (`width` = eps, the paper's
  expansion rate); 16/32/64 channels, stride-1 stem.
- ImageNet: ShiftNet-A (the paper's ImageNet ShiftNet): a 7x7 stem, then four groups
  of CSC modules (5x5 shifts in the first two, 3x3 in the last two) with a
  concat+avg-pool shortcut at each downsampling. ShiftNet-B and -C are not
  built: we could not verify their channel/depth tables from an available
  copy of the paper, so only A, whose 4.1M parameters we reproduce, is offered.

Published figures are pinned in tests/test_zoo_shiftnet.py: ShiftResNet
parameter counts per depth and eps from the authors' shiftresnet-cifar README
("CIFAR-10 Accuracy" table, the paper's CIFAR experiments; all 12 match to the
printed 0.01M), and ShiftNet-A's 4.1M parameters from the paper's ImageNet
comparison (we count 4.19M, +2%; our copy of that table could not be checked
against the paper text, see the test). ShiftNet-A costs 1.42G MACs here.

Two graph forms of the shift (`Shift(impl=...)`, switch with `set_shift_impl`):
- "slice" (default): one zero Pad, then one Slice per offset group and a
  Concat. Exports to ONNX Pad/Slice/Concat, which quantize trivially (no
  arithmetic: every output element is an input element or zero, so it shares
  the input's scale/zero-point). zoo.cost charges it as pure data movement
  (pad + concat memory access, 0 MACs): the zero-FLOP op of the paper.
- "conv": a depthwise kxk conv with fixed one-hot kernels (a non-persistent
  buffer, so checkpoints are identical). Same function, but it *is* a conv:
  k*k MACs per output element (counted by zoo.cost), one fused kernel instead
  of k*k+2 copy ops, and any INT8 converter handles it (one-hot weights
  quantize exactly). Useful where runtimes are slow at many small slices.
"""
from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import Param, ZooError, register_model
from .config import DataConfig
from .layers import ClassifierHead, ConvBNAct


class ShiftImpl(str, Enum):
    SLICE = "slice"
    CONV = "conv"


def shift_offsets(kernel: int) -> list[tuple[int, int]]:
    """(dy, dx) of each of the k*k groups, row-major; the centre one is (0, 0)."""
    r = kernel // 2
    return [(i // kernel - r, i % kernel - r) for i in range(kernel * kernel)]


def shift_groups(channels: int, kernel: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, dy, dx) per channel group: C // k^2 channels per offset; the
    C mod k^2 leftover channels join the centre (unshifted) group."""
    n = channels // (kernel * kernel)
    out, c = [], 0
    centre = (kernel * kernel) // 2
    for i, (dy, dx) in enumerate(shift_offsets(kernel)):
        size = n + (channels - n * kernel * kernel if i == centre else 0)
        if size:
            out.append((c, c + size, dy, dx))
        c += size
    return out


class Shift(nn.Module):
    """Zero-parameter grouped shift: out[c, y, x] = in[c, y + dy_c, x + dx_c] (0 outside)."""

    def __init__(self, channels: int, kernel: int = 3, impl: ShiftImpl | str = ShiftImpl.SLICE):
        super().__init__()
        if kernel % 2 == 0 or kernel < 1:
            raise ValueError(f"shift kernel must be odd, got {kernel}")
        self.channels, self.kernel, self.impl = channels, kernel, ShiftImpl(impl)
        self.groups = shift_groups(channels, kernel)
        w = torch.zeros(channels, 1, kernel, kernel)
        r = kernel // 2
        for c0, c1, dy, dx in self.groups:
            w[c0:c1, 0, r + dy, r + dx] = 1.0
        self.register_buffer("weight", w, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.kernel // 2
        if self.impl is ShiftImpl.CONV:
            return F.conv2d(x, self.weight, None, 1, r, 1, self.channels)
        h, w = x.shape[-2:]
        xp = F.pad(x, (r, r, r, r))
        return torch.cat([xp[:, c0:c1, r + dy:r + dy + h, r + dx:r + dx + w]
                          for c0, c1, dy, dx in self.groups], 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel={self.kernel}, impl={self.impl.value}"


def set_shift_impl(model: nn.Module, impl: ShiftImpl | str) -> nn.Module:
    """Switch every Shift in a model between the slice and conv forms (weights unaffected)."""
    for m in model.modules():
        if isinstance(m, Shift):
            m.impl = ShiftImpl(impl)
    return model


class ShiftResBlock(nn.Module):
    """ShiftResNet block (authors' CIFAR code): 1x1 (C_in -> eps*C_out) + BN + ReLU,
    shift, 1x1 (-> C_out, stride s) + BN, plus identity / 1x1-conv shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int = 3):
        super().__init__()
        mid = int(cout * expansion)
        self.conv1 = ConvBNAct(cin, mid, 1)
        self.shift = Shift(mid, kernel)
        self.conv2 = ConvBNAct(mid, cout, 1, stride, act=None)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout \
            else ConvBNAct(cin, cout, 1, stride, act=None)
        self.act = nn.ReLU(inplace=True)
        nn.init.zeros_(self.conv2[1].weight)  # zero-init residual branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.shift(self.conv1(x))) + self.shortcut(x))


class ShiftResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with ShiftResBlocks, n = 3, 9, 18 for depth 20, 56, 110."""

    def __init__(self, data: DataConfig, depth: int = 20, expansion: int = 3):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = ConvBNAct(3, 16, 3, 1 if data.dataset == "cifar10" else 2)
        blocks: list[nn.Module] = []
        cin = 16
        for si, cout in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(ShiftResBlock(cin, cout, 2 if (si > 0 and i == 0) else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class CSCDownBlock(nn.Module):
    """ShiftNet downsampling module: CSC branch (stride 2) concatenated with a 3x3/2
    average-pooled shortcut, so the branch makes only C_out - C_in channels."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int):
        super().__init__()
        branch = cout - cin
        mid = branch * expansion
        self.conv1 = ConvBNAct(cin, mid, 1)
        self.shift = Shift(mid, kernel)
        # The branch's own ReLU comes before the concat (the shortcut input is post-ReLU).
        self.conv2 = ConvBNAct(mid, branch, 1, 2)
        self.pool = nn.AvgPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv2(self.shift(self.conv1(x))), self.pool(x)], 1)


class CSCBlock(nn.Module):
    """ShiftNet residual module: 1x1 -> shift -> 1x1, identity shortcut, ReLU after the add."""

    def __init__(self, channels: int, expansion: int, kernel: int):
        super().__init__()
        mid = channels * expansion
        self.conv1 = ConvBNAct(channels, mid, 1)
        self.shift = Shift(mid, kernel)
        self.conv2 = ConvBNAct(mid, channels, 1, act=None)
        self.act = nn.ReLU(inplace=True)
        nn.init.zeros_(self.conv2[1].weight)  # zero-init residual branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.shift(self.conv1(x))))


# ShiftNet-A: (output channels, modules, shift kernel, eps of the first module, eps of the rest).
SHIFTNET_A = (
    (64, 5, 5, 4, 4),
    (128, 6, 5, 4, 3),
    (256, 7, 3, 3, 2),
    (512, 3, 3, 2, 1),
)
SHIFTNET_A_STEM = 32


class ShiftNetA(nn.Module):
    """ShiftNet-A for ImageNet. The paper's modules are pre-activation (BN-ReLU-conv);
    here they are conv-BN-ReLU so every BN folds into its conv for INT8 (same
    convs and shifts; BN sits on the conv outputs instead of the inputs)."""

    def __init__(self, data: DataConfig):
        super().__init__()
        self.stem = ConvBNAct(3, SHIFTNET_A_STEM, 7, 2)
        blocks: list[nn.Module] = []
        cin = SHIFTNET_A_STEM
        for cout, n, k, e_first, e_rest in SHIFTNET_A:
            blocks.append(CSCDownBlock(cin, cout, e_first, k))
            blocks.extend(CSCBlock(cout, e_rest, k) for _ in range(n - 1))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


EXPANSIONS = (1, 3, 6, 9)
DEPTHS = (20, 56, 110)
DEFAULT_EXPANSION = 3
DEFAULT_DEPTH = 20


@register_model(
    "shiftnet", "Shift (zero-FLOP, zero-param) + 1x1 convs: ShiftResNet (CIFAR), ShiftNet-A (ImageNet)",
    paper="Wu et al., Shift, CVPR 2018 (arXiv:1711.08141)",
    width=Param(DEFAULT_EXPANSION, choices=EXPANSIONS,
                help="expansion rate eps of the CSC modules (CIFAR ShiftResNet)"),
    depth=Param(DEFAULT_DEPTH, choices=DEPTHS, help="ShiftResNet depth (CIFAR)"),
)
def shiftnet(data: DataConfig, width: int = DEFAULT_EXPANSION,
             depth: int = DEFAULT_DEPTH) -> nn.Module:
    if data.dataset == "cifar10":
        return ShiftResNet(data, int(depth), int(width))
    if width != DEFAULT_EXPANSION or depth != DEFAULT_DEPTH:
        raise ZooError("shiftnet: --width (expansion) and --depth select the CIFAR ShiftResNet; "
                       "the ImageNet config is ShiftNet-A, whose per-group expansions are fixed")
    return ShiftNetA(data)
