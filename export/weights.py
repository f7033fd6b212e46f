"""Shipped checkpoints: find the trained weights of a variant without being told.

Shipped checkpoints are armq checkpoints in `assets/weights/*.pt` (override the
folder with ARMQ_WEIGHTS_DIR), each holding the zoo variant dict it was trained
as. Matching is done on those dicts alone, so this module needs neither the
model registry nor a naming convention for the files:

    model name          equal
    params              equal, except the graph-only ones (the channel-shuffle
                        form changes the exported graph, not the weights)
    dataset             equal when the caller names one; otherwise any, and the
                        caller takes the checkpoint's
    num_classes         equal after filling in the dataset's default

Files are read once, into memory, and hashed from those same bytes: the
training run rewrites its checkpoint after every epoch (by rename), so hashing
the path after loading it could describe a different file.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo._registry import KNOBS
from zoo.util import ArmqError

# Params that only change the graph form, never the state dict.
GRAPH_ONLY_PARAMS = frozenset(k for k, p in KNOBS.items() if p.graph_only)
DEFAULT_CLASSES = {"imagenet": 1000, "cifar10": 10}
# When several datasets match and the caller named none: the CLI's default first.
DATASET_PREFERENCE = ("imagenet", "cifar10")


class WeightsError(ArmqError):
    pass


def weights_dir() -> Path:
    env = os.environ.get("ARMQ_WEIGHTS_DIR")
    if env:
        return Path(env)
    from zoo.assets import assets_dir  # the checkout's assets/, or the copy in an installed wheel

    return assets_dir() / "weights"


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    sha256: str
    data: dict  # the checkpoint dict: state_dict, variant (maybe), metrics, ...

    @property
    def variant(self) -> dict | None:
        v = self.data.get("variant")
        return dict(v) if isinstance(v, dict) else None


def load_pinned(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read a checkpoint's bytes once, hash them and load them with weights_only=True."""
    import torch

    p = Path(path)
    if p.is_dir():
        raise WeightsError(f"checkpoint {p} is a directory, not a file")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {p} does not exist") from None
    except OSError as e:
        raise WeightsError(f"checkpoint {p} cannot be read ({e.strerror or e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4" chatter on odd files
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else "unsafe content"
        raise WeightsError(f"checkpoint {p} is not a plain weights file ({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, TypeError,
            KeyError, AttributeError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"checkpoint {p} is unreadable or corrupt ({first[:200]})") from None
    if isinstance(obj, dict) and "state_dict" not in obj and obj and all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        obj = {"state_dict": obj}  # a bare state dict
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise WeightsError(f"checkpoint {p} holds no state dict")
    if "variant" in obj and not (isinstance(obj["variant"], dict) and "model" in obj["variant"]):
        raise WeightsError(f"checkpoint {p} has a malformed 'variant' entry")
    from .card import variant_problem

    why = variant_problem(obj["variant"]) if "variant" in obj else None
    if why is not None:
        raise WeightsError(f"checkpoint {p}: variant {why}")
    from zoo.checkpoint import from_transport

    return LoadedCheckpoint(p, hashlib.sha256(raw).hexdigest(), from_transport(obj))


@dataclass(frozen=True)
class Shipped:
    path: Path
    variant: dict


def _is_candidate(p: Path) -> bool:
    # Skip hidden temp files (atomic writes) and `x.pt.resume.pt` side files; names may hold
    # other dots (`shufflenet_v2_w0.5_cifar10.fp16.pt`).
    return p.is_file() and not p.name.startswith(".") and not p.name.endswith(".resume.pt")


def list_shipped(root: str | os.PathLike | None = None) -> list[Shipped]:
    """Every readable armq checkpoint with a variant in the shipped-weights folder."""
    import torch

    folder = Path(root) if root is not None else weights_dir()
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.pt")):
        if not _is_candidate(p):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - a bad shipped file must not break exports
            warnings.warn(f"ignoring shipped checkpoint {p}: unreadable ({type(e).__name__})",
                          stacklevel=2)
            continue
        v = obj.get("variant") if isinstance(obj, dict) else None
        if isinstance(v, dict) and "model" in v and isinstance(obj.get("state_dict"), dict):
            out.append(Shipped(p, dict(v)))
    return out


def _classes(dataset: str, num_classes: Any) -> Any:
    return num_classes if num_classes is not None else DEFAULT_CLASSES.get(dataset)


def matches(ckpt_variant: dict, model: str, params: dict, dataset: str | None = None,
            num_classes: int | None = None) -> bool:
    """Whether weights trained as `ckpt_variant` fit the requested model.

    `params` are the caller's fully resolved variant params (defaults filled in).
    """
    if ckpt_variant.get("model") != model:
        return False
    ck_params = {k: v for k, v in dict(ckpt_variant.get("params", {})).items()
                 if k not in GRAPH_ONLY_PARAMS}
    want = {k: v for k, v in params.items() if k not in GRAPH_ONLY_PARAMS}
    if ck_params != want:
        return False
    ck_ds = str(ckpt_variant.get("dataset", "imagenet"))
    if dataset is not None and ck_ds != dataset:
        return False
    if num_classes is not None:
        if _classes(ck_ds, ckpt_variant.get("num_classes")) != _classes(ck_ds, num_classes):
            return False
    return True


def find_shipped(model: str, params: dict, dataset: str | None = None,
                 num_classes: int | None = None,
                 root: str | os.PathLike | None = None) -> Shipped | None:
    """The shipped checkpoint for a variant, or None. With dataset=None any dataset
    matches; ties go to DATASET_PREFERENCE order, then file name."""
    found = [s for s in list_shipped(root)
             if matches(s.variant, model, params, dataset, num_classes)]
    if not found:
        return None

    def rank(s: Shipped):
        ds = str(s.variant.get("dataset", "imagenet"))
        order = DATASET_PREFERENCE.index(ds) if ds in DATASET_PREFERENCE else len(DATASET_PREFERENCE)
        return order, s.path.name

    return sorted(found, key=rank)[0]
