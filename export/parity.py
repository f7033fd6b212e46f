"""The parity check of an export: real images preprocessed as the card says, the
PyTorch reference logits, and the comparison the exported model must pass."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zoo.config import DataConfig
from zoo.util import ArmqError

from .common import RANDOM_SEED, REPO, warn


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


def compare(ref: np.ndarray, got: np.ndarray, atol: float, what: str, data: dict) -> dict:
    """Parity record; raises when the exported model differs by more than atol."""
    if ref.shape != got.shape:
        raise ArmqError(f"{what} output shape {tuple(got.shape)} differs from PyTorch's {tuple(ref.shape)}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    rec = {**data,
           "max_abs_diff": float(diff.max()),
           "mean_abs_diff": float(diff.mean()),
           "max_abs_logit": float(np.abs(ref).max()),
           "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
           "atol": atol}
    rec["passed"] = bool(np.isfinite(diff).all() and rec["max_abs_diff"] <= atol)
    if not rec["passed"]:
        raise ArmqError(f"parity check failed: max |{what} - torch| = {rec['max_abs_diff']:.3g} > "
                        f"{atol:g} on {rec['n']} images (top-1 agreement "
                        f"{rec['top1_agreement']:.3f}); nothing written")
    return rec


def torch_reference(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).float().numpy()
