"""Classic baselines: AlexNet, VGG-16 (with BN), ResNet-18 and ResNet-50.

They are the reference points the efficient-network papers compare against
(ShuffleNet Tables 6 and 8, MobileNet Tables 8 and 9), built so an INT8
converter sees the same patterns as in the efficient families: Conv+BN+ReLU as
`ConvBNAct`, activations as modules, a ReLU module after each residual add.

CIFAR-10 configs (32 px): stride-1 3x3 stem and no early max-pool for the
ResNets (the usual CIFAR ResNet stem); AlexNet gets a 5x5 stride-1 first conv
and padded pools; VGG-16 pools three times instead of five. Each keeps its last
stage at 4x4 or larger (see the classes' docstrings).
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .config import DataConfig
from .layers import init_weights, is_cifar, ClassifierHead, ConvBNAct


class MLPHead(nn.Module):
    """AlexNet/VGG classifier: fixed-grid pool -> flatten -> (FC-ReLU-Dropout) x2 -> FC."""

    def __init__(self, cin: int, grid: int, hidden: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        # Adaptive so any input size maps onto the grid the FC layers were sized for
        # (an identity at the config's own input size).
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(cin * grid * grid, hidden)
        self.act1 = nn.ReLU(inplace=True)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = nn.ReLU(inplace=True)
        self.drop2 = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.pool(x))
        x = self.drop1(self.act1(self.fc1(x)))
        x = self.drop2(self.act2(self.fc2(x)))
        return self.fc(x)


# ---- AlexNet ----------------------------------------------------------------------------

class AlexNet(nn.Module):
    """AlexNet as in Krizhevsky et al. 2012 (Fig. 2), the baseline of ShuffleNet Tables 6/8.

    ShuffleNet (arXiv:1707.01083) Table 8 lists "AlexNet [21]" at 720 MFLOPs and
    42.8% top-1 error, [21] being Krizhevsky et al. 2012 itself; MobileNet
    (arXiv:1704.04861) Table 9 gives the same 720M mult-adds with 60M parameters.
    720M is the original two-GPU network: conv2, conv4 and conv5 only see the
    half of the previous layer on their own GPU, i.e. they are grouped convs with
    groups=2 (the single-tower torchvision variant, 64-192-384-256-256 channels,
    is 714M MACs / 61.1M params: a different network that happens to cost the
    same). This is the two-tower one: 96-256-384-384-256 channels, kernel
    11/5/3/3/3, overlapping 3x3/2 max-pools, FC 4096-4096; 724M MACs and 61.0M
    parameters at 224x224.

    Departures, for 8-bit deployment: local response normalization (Sec. 3.3) is
    left out and every conv has BatchNorm instead, which folds into the conv.

    CIFAR-10: the first conv is 5x5 stride 1 and the pools pad by 1, so the
    feature maps run 32 -> 16 -> 8 (conv3-5) -> 4, and the FC layers see 256x4x4.
    """

    def __init__(self, data: DataConfig):
        super().__init__()
        cifar = is_cifar(data)
        if cifar:
            conv1, pool_pad, grid = ConvBNAct(3, 96, 5, 1), 1, 4
        else:
            conv1, pool_pad, grid = ConvBNAct(3, 96, 11, 4, padding=2), 0, 6
        self.features = nn.Sequential(
            conv1,
            nn.MaxPool2d(3, 2, pool_pad),
            ConvBNAct(96, 256, 5, groups=2),
            nn.MaxPool2d(3, 2, pool_pad),
            ConvBNAct(256, 384, 3),            # conv3 sees both towers
            ConvBNAct(384, 384, 3, groups=2),
            ConvBNAct(384, 256, 3, groups=2),
            nn.MaxPool2d(3, 2, pool_pad),
        )
        self.head = MLPHead(256, grid, 4096, data.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(
    "classic", "AlexNet (two-tower, grouped conv2/4/5; BN in place of LRN)",
    paper="Krizhevsky et al., ImageNet Classification with Deep CNNs, NIPS 2012",
)
def alexnet(data: DataConfig) -> nn.Module:
    return AlexNet(data)


# ---- VGG-16 -----------------------------------------------------------------------------

# Configuration D of the paper (Table 1): channels per 3x3 conv, "M" a 2x2/2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M")


class VGG(nn.Module):
    """VGG-16 (configuration D) with BatchNorm after every conv.

    ImageNet: Table 1's 13 convs and 5 pools, then FC 4096-4096 with dropout on
    the 512x7x7 map (an AdaptiveAvgPool2d(7) first, so other input sizes work).
    CIFAR-10: the usual CIFAR VGG keeps all five pools and runs block 5 at 2x2;
    here the pools after blocks 4 and 5 are dropped so blocks 4-5 run at 4x4,
    and the head is global average pool + one FC (512 -> 10).
    """

    def __init__(self, data: DataConfig, cfg=VGG16_CFG):
        super().__init__()
        cifar = is_cifar(data)
        layers: list[nn.Module] = []
        cin, pools, max_pools = 3, 0, 3 if cifar else 5
        for v in cfg:
            if v == "M":
                if pools < max_pools:
                    layers.append(nn.MaxPool2d(2, 2))
                pools += 1
            else:
                layers.append(ConvBNAct(cin, v, 3))
                cin = v
        self.features = nn.Sequential(*layers)
        if cifar:
            self.head = ClassifierHead(cin, data.num_classes)
        else:
            self.head = MLPHead(cin, 7, 4096, data.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(
    "classic", "VGG-16 (configuration D) with BatchNorm",
    paper="Simonyan & Zisserman, Very Deep ConvNets, ICLR 2015 (arXiv:1409.1556)",
)
def vgg16(data: DataConfig) -> nn.Module:
    return VGG(data)


# ---- ResNet -----------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """Two 3x3 convs (Fig. 5 left); stride on the first; projection shortcut when shapes change."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = ConvBNAct(cin, planes, 3, stride)
        self.conv2 = ConvBNAct(planes, cout, 3, act=None)
        self.shortcut = (ConvBNAct(cin, cout, 1, stride, act=None)
                         if stride != 1 or cin != cout else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.conv2[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.conv2(self.conv1(x)))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand x4 (Fig. 5 right).

    The stride sits on the first 1x1, as in the paper's own model (ResNet "v1");
    torchvision's "v1.5" moves it to the 3x3, which costs 4.09G MACs instead of
    the 3.8G of the paper's Table 1.
    """

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = ConvBNAct(cin, planes, 1, stride)
        self.conv2 = ConvBNAct(planes, planes, 3)
        self.conv3 = ConvBNAct(planes, cout, 1, act=None)
        self.shortcut = (ConvBNAct(cin, cout, 1, stride, act=None)
                         if stride != 1 or cin != cout else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.conv3[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.conv3(self.conv2(self.conv1(x))))


class ResNet(nn.Module):
    """ResNet (He et al., Table 1) with projection shortcuts only where shapes change (option B).

    ImageNet: 7x7/2 stem + 3x3/2 max-pool, four stages at 56/28/14/7.
    CIFAR-10: 3x3/1 stem, no max-pool, four stages at 32/16/8/4.
    The last BN of every residual branch starts at gamma = 0 (Goyal et al. 2017),
    so each block starts as identity.
    """

    def __init__(self, data: DataConfig, block: type[nn.Module], repeats: tuple[int, ...]):
        super().__init__()
        if is_cifar(data):
            self.stem = ConvBNAct(3, 64, 3, 1)
            self.pool = nn.Identity()
        else:
            self.stem = ConvBNAct(3, 64, 7, 2)
            self.pool = nn.MaxPool2d(3, 2, 1)
        stages: list[nn.Module] = []
        cin = 64
        for i, n in enumerate(repeats):
            planes = 64 * 2 ** i
            units = []
            for j in range(n):
                units.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(cin, data.num_classes)
        init_weights(self)
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.pool(self.stem(x))))


@register_model(
    "classic", "ResNet-18: basic residual blocks",
    paper="He et al., Deep Residual Learning, CVPR 2016 (arXiv:1512.03385)",
)
def resnet18(data: DataConfig) -> nn.Module:
    return ResNet(data, BasicBlock, (2, 2, 2, 2))


@register_model(
    "classic", "ResNet-50: bottleneck residual blocks (stride on the first 1x1, as the paper)",
    paper="He et al., Deep Residual Learning, CVPR 2016 (arXiv:1512.03385)",
)
def resnet50(data: DataConfig) -> nn.Module:
    return ResNet(data, Bottleneck, (3, 4, 6, 3))
