"""Checkpoints: a state dict plus the variant that rebuilds its architecture.

Only plain containers, strings, numbers and tensors are stored, so every load
uses `torch.load(weights_only=True)`: a checkpoint cannot run code.
"""
from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ._registry import Variant, create_model
from .util import ArmqError, atomic_output

FORMAT = "armq-checkpoint/1"


class CheckpointError(ArmqError):
    pass


def save_checkpoint(path: str | Path, model: torch.nn.Module, variant: Variant,
                    **meta: Any) -> Path:
    payload = {"format": FORMAT, "variant": variant.to_dict(),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               **meta}
    # Through a file object, not the temp path: torch names the zip's records after the
    # file it is given, and a random temp name would make equal checkpoints differ in bytes.
    with atomic_output(path) as f:
        torch.save(payload, f)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely; raise CheckpointError on anything odd."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else "unsafe content"
        raise CheckpointError(f"checkpoint {p} is not a plain weights file ({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {p} is unreadable or corrupt ({first})") from None
    if isinstance(obj, dict) and "state_dict" not in obj and obj and all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        obj = {"state_dict": obj}  # a bare state dict, e.g. a user's own
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {p} holds no state dict")
    return from_transport(obj)


TRANSPORT_FP16 = "fp16"


def from_transport(obj: dict) -> dict:
    """Undo a transport encoding in place: a `transport: fp16` file's float16 tensors are
    cast back to float32 (stored as float16 to halve the shipped size; every model and
    exporter computes in float32)."""
    if obj.get("transport") == TRANSPORT_FP16:
        obj["state_dict"] = {k: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float16
                             else v for k, v in obj["state_dict"].items()}
    return obj


def save_fp16(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint with its float32 tensors cast to float16 (`transport: fp16`).

    BatchNorm running statistics and weights of trained CIFAR nets survive the cast
    within 0.05 pt of top-1 (each shipped file is re-evaluated; README)."""
    ckpt = read_checkpoint(src)
    ckpt["state_dict"] = {k: v.half() if v.dtype == torch.float32 else v
                          for k, v in ckpt["state_dict"].items()}
    ckpt["transport"] = TRANSPORT_FP16
    with atomic_output(dst) as f:
        torch.save(ckpt, f)
    return Path(dst)


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    for k, v in state.items():
        if torch.is_floating_point(v) and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{where}: tensor '{k}' contains NaN or Inf")


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strict load with a one-line explanation of the first mismatch."""
    check_finite(state, where)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{extra[0]}'"
        raise CheckpointError(f"{where} does not match the architecture: {len(missing)} missing "
                              f"and {len(extra)} unexpected tensors ({what})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{where} does not match the architecture: '{k}' has shape "
                                  f"{tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, variant: Variant | None = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild and load a model from an armq checkpoint (or a bare state dict + variant)."""
    ckpt = read_checkpoint(path)
    if variant is None:
        if "variant" not in ckpt:
            raise CheckpointError(f"checkpoint {path} has no model variant: pass --model")
        variant = Variant.from_dict(ckpt["variant"])
    model = create_model(variant)
    load_weights(model, ckpt["state_dict"], f"checkpoint {path}")
    model.eval()
    return model, ckpt


def is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
