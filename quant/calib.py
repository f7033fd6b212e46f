"""Calibration and evaluation images, preprocessed exactly as the model card says.

`load_set` decodes a folder / ImageFolder tree / archive (zoo.data does the
decoding: grayscale, RGBA, 16-bit and odd sizes are converted, unreadable
files are skipped with a warning) and normalizes with the card's mean/std.
`ImageCalibrationReader` is the onnxruntime `CalibrationDataReader` over such
an array.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.card import ModelCard
from zoo.data import DataError, list_images, load_images, normalize

from .common import QuantError, check_labels, data_config


MAX_SKIP_WARNINGS = 5


def _tidy(msg: str) -> str:
    """PIL names the in-memory buffer ('<_io.BytesIO object at 0x..>'): say what it means."""
    return re.sub(r"cannot identify image file <_io\.BytesIO object at 0x[0-9a-f]+>",
                  "not a readable image", msg)


@dataclass
class ImageSet:
    x: np.ndarray              # float32 N x C x H x W, normalized
    labels: np.ndarray         # int64 N, -1 where unknown
    names: tuple[str, ...]     # member names (for reports)
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels >= 0).all())

    def subset(self, idx: np.ndarray) -> "ImageSet":
        return ImageSet(self.x[idx], self.labels[idx], tuple(self.names[i] for i in idx),
                        self.source, self.skipped)


def check_source(source: str | Path, what: str) -> Path:
    """Cheap checks before anything heavy is imported: exists, has image files."""
    p = Path(source)
    if not p.exists():
        raise QuantError(f"{what} {p} does not exist")
    if p.is_dir() and not any(p.iterdir()):
        raise QuantError(f"{what} {p} is empty")
    try:
        records = list_images(p)
    except DataError as e:
        raise QuantError(f"{what}: {e}") from None
    if not records:
        raise QuantError(f"{what} {p} contains no image files")
    return p


def load_set(source: str | Path, card: ModelCard, limit: int | None = None,
             require_labels: bool = False, progress: bool = True, what: str = "images") -> ImageSet:
    """Decode + preprocess images for `card`'s model.

    With require_labels, the class folders must all be classes of the model
    (a one-line error otherwise); without, labels are kept where they match.
    """
    cfg = data_config(card)
    src = Path(source)
    if require_labels:
        records = list_images(src)
        folders = sorted({r.label for r in records if r.label is not None})
        if not folders or any(r.label is None for r in records):
            raise QuantError(f"{what} {src} is not a labelled ImageFolder tree "
                             f"(expected <class>/<image> with the model's class names)")
        check_labels(folders, card, f"{what} {src}")
    # Hold the per-file warnings back: if nothing decodes, the error alone is the message.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = load_images(src, cfg.resize, cfg.input_size, cfg.interpolation,
                               class_names=tuple(card.class_names), limit=limit,
                               progress=progress, desc=f"decoding {src.name}")
        except DataError as e:
            raise QuantError(f"{what}: {e}") from None
    skips = [str(w.message) for w in caught if str(w.message).startswith("skipping ")]
    for msg in skips[:MAX_SKIP_WARNINGS]:
        warnings.warn(_tidy(msg), stacklevel=2)
    if len(skips) > MAX_SKIP_WARNINGS:
        warnings.warn(f"skipped {len(skips) - MAX_SKIP_WARNINGS} more unreadable files in {src}",
                      stacklevel=2)
    x = normalize(data.images, cfg)
    return ImageSet(x, data.labels, data.names, str(src), len(data.skipped))


def split_holdout(n: int, fraction: float = 0.2, minimum: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic calibration / held-out split: every k-th image is held out.

    load_images spreads a limited subset over the whole (class-sorted) source,
    so a stride keeps both parts class-balanced. Returns (calib_idx, holdout_idx);
    holdout is empty when there are too few images to spare.
    """
    idx = np.arange(n)
    if n < 2 * minimum:
        return idx, idx[:0]
    k = max(2, int(round(1 / fraction)))
    hold = idx[k - 1::k]
    return np.setdiff1d(idx, hold), hold


def batches(x: np.ndarray, batch: int):
    for i in range(0, len(x), batch):
        yield x[i:i + batch]


def make_reader(input_name: str, x: np.ndarray, batch: int):
    """An onnxruntime CalibrationDataReader over preprocessed images."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds `x` in batches of `batch` under the model's input name."""

        def __init__(self) -> None:
            self.input_name, self.x, self.batch = input_name, x, max(1, batch)
            self.start, self.end = 0, len(x)
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.pos >= self.end:
                return None
            chunk = self.x[self.pos:min(self.pos + self.batch, self.end)]
            self.pos += len(chunk)
            return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

        def rewind(self) -> None:
            self.pos = self.start

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end = max(0, start_index), min(len(self.x), end_index)
            self.rewind()

        def __len__(self) -> int:
            return len(self.x)

    return ImageCalibrationReader()
