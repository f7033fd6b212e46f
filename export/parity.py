"""The parity check of an export: real images preprocessed as the card says, the
PyTorch reference logits, and the comparison the exported model must pass."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.config import DataConfig
from zoo.util import ArmqError

from .common import DEFAULT_ATOL, RANDOM_SEED, REPO, warn


def default_images(dataset: str) -> Path | None:
    """The real images a parity check uses when none are named: the shipped sample,
    else the shared data set of the model's dataset."""
    shared = Path(os.environ.get("ARMQ_SHARED_DATA", REPO.parent / "shared" / "data"))
    from zoo.assets import assets_dir  # the checkout's assets/, or the copy in an installed wheel

    assets = assets_dir() / "data"
    cands = [assets / f"{dataset}_test.tar.gz", assets / f"{dataset}_test.tar", assets / dataset]
    if dataset == "cifar10":
        cands += [shared / "cifar10" / "test.tar", shared / "cifar10" / "test"]
    elif dataset == "imagenet":
        cands += [shared / "imagenet-1k-samples.tar", shared / "imagenet-1k-samples"]
    for c in cands:
        if c.is_file() or (c.is_dir() and any(c.iterdir())):
            return c
    return None


_IMAGE_CACHE: dict = {}


def parity_inputs(data: DataConfig, images: Path | None, n: int, prog: str) -> tuple[np.ndarray, dict]:
    """float32 NCHW batch, preprocessed exactly as the card says, and where it came from."""
    from zoo.data import load_images, normalize

    src = images if images is not None else default_images(data.dataset)
    if src is None:
        warn(prog, f"no {data.dataset} images found: parity is checked on random inputs")
        rng = np.random.default_rng(RANDOM_SEED)
        x = rng.standard_normal((n, 3, data.input_size, data.input_size)).astype(np.float32)
        return x, {"data": "random", "n": n}
    import warnings

    st = Path(src).stat()
    key = (str(Path(src).resolve()), st.st_mtime_ns, st.st_size, data.resize, data.input_size,
           data.interpolation, tuple(data.class_names), n)
    li = _IMAGE_CACHE.get(key)
    if li is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            li = load_images(src, data.resize, data.input_size, data.interpolation,
                             class_names=tuple(data.class_names) or None, limit=n)
        while len(_IMAGE_CACHE) >= 4:  # a few configs: repeated exports in one process
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = li
    shown = str(src)
    for base in (REPO, REPO.parent):
        try:
            shown = str(Path(src).resolve().relative_to(base))
            break
        except ValueError:
            continue
    return normalize(li.images, data), {"data": shown, "n": int(len(li.images))}


@dataclass(frozen=True)
class Tolerance:
    """When an exported model agrees with PyTorch: max |exported - torch| over the logits
    within atol + rtol * max |torch logit|, and at least `min_agreement` of the images with
    the same top-1 class. rtol is relative to the largest logit because a deep net with
    random or reparameterised weights (MobileOne: train-time branches fused) can have
    logits in the thousands, where float32 rounding alone exceeds a fixed 1e-4; top-1
    agreement then says whether the difference changes an answer."""

    atol: float = DEFAULT_ATOL
    rtol: float = 0.0
    min_agreement: float = 0.0

    @classmethod
    def of(cls, args: Any) -> "Tolerance":
        """From the flags --atol, --rtol, --min-agreement (export.common.make_parser)."""
        return cls(float(args.atol), float(getattr(args, "rtol", 0.0) or 0.0),
                   float(getattr(args, "min_agreement", 0.0) or 0.0))

    def bound(self, max_abs_logit: float) -> float:
        return self.atol + self.rtol * max_abs_logit


def compare(ref: np.ndarray, got: np.ndarray, atol: float | Tolerance, what: str,
            data: dict) -> dict:
    """Parity record; raises when the exported model fails the tolerance (a float: atol)."""
    tol = atol if isinstance(atol, Tolerance) else Tolerance(float(atol))
    if ref.shape != got.shape:
        raise ArmqError(f"{what} output shape {tuple(got.shape)} differs from PyTorch's {tuple(ref.shape)}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    rec = {**data,
           "max_abs_diff": float(diff.max()),
           "mean_abs_diff": float(diff.mean()),
           "max_abs_logit": float(np.abs(ref).max()),
           "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
           "atol": tol.atol, "rtol": tol.rtol, "min_agreement": tol.min_agreement}
    rec["bound"] = tol.bound(rec["max_abs_logit"])
    close = bool(np.isfinite(diff).all() and rec["max_abs_diff"] <= rec["bound"])
    agree = rec["top1_agreement"] >= tol.min_agreement
    rec["passed"] = close and agree
    where = f"on {rec['n']} images"
    if not close:
        hint = "" if tol.rtol else (
            f"; logits reach {rec['max_abs_logit']:.3g}: if the top-1 agreement is right, a "
            "relative bound may fit (--rtol, with --min-agreement)")
        raise ArmqError(f"parity check failed: max |{what} - torch| = {rec['max_abs_diff']:.3g} > "
                        f"{rec['bound']:.3g} (atol {tol.atol:g} + rtol {tol.rtol:g} x max |logit| "
                        f"{rec['max_abs_logit']:.3g}) {where} (top-1 agreement "
                        f"{rec['top1_agreement']:.3f}){hint}; nothing written")
    if not agree:
        raise ArmqError(f"parity check failed: top-1 agreement {what} vs torch "
                        f"{rec['top1_agreement']:.3f} < --min-agreement {tol.min_agreement:g} "
                        f"{where} (max |diff| {rec['max_abs_diff']:.3g}); nothing written")
    return rec


def torch_reference(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).float().numpy()
