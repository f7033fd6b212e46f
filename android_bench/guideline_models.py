"""The ShuffleNet V2 guideline micro-networks as torch modules, exported to ONNX.

torch is imported inside the functions: android_bench itself never imports torch
at module level (the device side never has it), and only the host that exports the
networks needs it.
"""
from __future__ import annotations

import math
from pathlib import Path

from .guideline_cases import Case, GuidelineError


def build_model(case: Case):
    """The torch network of a case (random weights; no BatchNorm)."""
    import torch
    from torch import nn

    spec = case.spec

    class G1Block(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.a = nn.Conv2d(c1, c2, 1, bias=False)
            self.b = nn.Conv2d(c2, c1, 1, bias=False)

        def forward(self, x):
            return self.b(self.a(x))

    class G3Block(nn.Module):
        def __init__(self, c, k, parallel):
            super().__init__()
            self.parallel = parallel
            if parallel:
                self.convs = nn.ModuleList(nn.Conv2d(c, c // k, 1, bias=False) for _ in range(k))
            else:
                self.convs = nn.ModuleList(nn.Conv2d(c, c, 1, bias=False) for _ in range(k))

        def forward(self, x):
            if self.parallel:
                return torch.cat([conv(x) for conv in self.convs], dim=1)
            for conv in self.convs:
                x = conv(x)
            return x

    class Bottleneck(nn.Module):
        def __init__(self, c, relu, shortcut):
            super().__init__()
            self.c1 = nn.Conv2d(4 * c, c, 1, bias=False)
            self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.c3 = nn.Conv2d(c, 4 * c, 1, bias=False)
            self.relu, self.shortcut = relu, shortcut

        def forward(self, x):
            act = torch.relu if self.relu else (lambda t: t)
            y = self.c3(act(self.c2(act(self.c1(x)))))
            if self.shortcut:
                y = y + x
            return act(y)

    kind, n = spec["kind"], case.blocks
    if kind == "g1":
        layers = [G1Block(spec["c1"], spec["c2"]) for _ in range(n)]
    elif kind == "g2":
        layers = [nn.Conv2d(spec["c"], spec["c"], 1, groups=spec["groups"], bias=False)
                  for _ in range(n)]
    elif kind == "g3":
        layers = [G3Block(spec["c"], spec["k"], spec["parallel"]) for _ in range(n)]
    elif kind == "g4":
        layers = [Bottleneck(spec["c"], spec["relu"], spec["shortcut"]) for _ in range(n)]
    else:
        raise GuidelineError(f"unknown micro-network kind {kind}")
    torch.manual_seed(0)
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():  # keep activations in a sane range through 10-40 layers
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
    return model


def export_case(case: Case, out_dir: Path) -> Path:
    import torch
    import warnings

    path = Path(out_dir) / f"{case.file_stem}.onnx"
    model = build_model(case)
    x = torch.zeros(1, case.in_channels, case.size, case.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"])
    # No card beside it: the cost comes from the case, the input shape from the graph (a
    # hand-made partial card would not pass export.card's validator, rightly).
    return path
