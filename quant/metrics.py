"""Accuracy and fidelity numbers: top-k, top-1 agreement, SQNR."""
from __future__ import annotations

import math

import numpy as np

from zoo.util import ArmqError, shown


def topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of rows whose label is among the k largest logits."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean() * 100.0)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of rows where the two models' top-1 classes agree."""
    return float((a.argmax(1) == b.argmax(1)).mean() * 100.0)


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `test` against `ref`, in dB."""
    ref = np.asarray(ref, np.float64)
    noise = float(((ref - np.asarray(test, np.float64)) ** 2).sum())
    signal = float((ref ** 2).sum())
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * math.log10(signal / noise)


def check_logits(logits: np.ndarray, labels: np.ndarray | None, ref: np.ndarray | None,
                 num_classes: int | None = None, what: str = "model") -> None:
    """The one check that a model's output can be scored: N x C with C the card's class
    count and wide enough for every label. A 5-output model scored against a 10-class
    card would otherwise give a plausible-looking "top-1 0.0" and exit 0."""
    if logits.ndim != 2 or logits.shape[0] != (len(labels) if labels is not None else logits.shape[0]):
        raise ArmqError(f"{shown(what)}: output shape {tuple(logits.shape)} is not "
                        f"(images, classes) for {len(labels) if labels is not None else '?'} images")
    width = int(logits.shape[1])
    if num_classes is not None and width != num_classes:
        raise ArmqError(f"{shown(what)}: the model has {width} outputs but its card names "
                        f"{num_classes} classes (wrong model for this card?)")
    if labels is not None and len(labels) and int(labels.max()) >= width:
        raise ArmqError(f"{shown(what)}: the data has label {int(labels.max())} but the model "
                        f"has only {width} outputs")
    if ref is not None and ref.shape != logits.shape:
        raise ArmqError(f"{shown(what)}: output shape {tuple(logits.shape)} differs from the "
                        f"reference's {tuple(ref.shape)}")


def summarize(logits: np.ndarray, labels: np.ndarray | None, ref: np.ndarray | None,
              num_classes: int | None = None, what: str = "model") -> dict:
    check_logits(logits, labels, ref, num_classes, what)
    out: dict = {"n": int(len(logits))}
    if labels is not None and len(labels) and (labels >= 0).all():
        out["top1"] = round(topk(logits, labels, 1), 3)
        out["top5"] = round(topk(logits, labels, 5), 3)
    if ref is not None:
        out["agreement"] = round(agreement(logits, ref), 3)
        s = sqnr_db(ref, logits)
        out["sqnr_db"] = round(s, 2) if math.isfinite(s) else None
    return out
