"""Helpers shared by the zoo test files (not a conftest: nothing here is automatic)."""
from __future__ import annotations

from torch import nn


def _trunk(model: nn.Module) -> nn.Sequential:
    return model.stages if hasattr(model, "stages") else model.features


def last_stage_hw(model: nn.Module, x):
    """Output and the spatial size of the last conv stage (before the head)."""
    seen = {}

    def hook(mod, inp, out):
        seen["hw"] = tuple(out.shape[-2:])

    last = _trunk(model)[-1]
    if isinstance(last, nn.MaxPool2d):   # AlexNet: the stage is what feeds the final pool
        last = _trunk(model)[-2]
    h = last.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        h.remove()
    return out, seen["hw"]
