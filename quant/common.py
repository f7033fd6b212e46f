"""Shared vocabulary of the quant stage: backends, calibration methods, model lookup.

Torch-free and onnxruntime-free, so a CLI can check every user input (paths,
cards, labels) before the heavy imports and fail with one line.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from export.card import CardError, ModelCard, artifact_key, card_path_for, load_card
from export.card import data_config  # noqa: F401 - its home is the card's module; quant's name
from export.formats import Runtime
from zoo.util import ArmqError, same_file, shown


class QuantError(ArmqError):
    """A user-fixable problem in the quant stage (printed as one line)."""


class Backend(str, Enum):
    """Which runtime the INT8 model is made for."""

    ORT = "ort"          # ONNX Runtime, QDQ ONNX
    TFLITE = "tflite"    # LiteRT / TFLite flatbuffer, full-integer
    MNN = "mnn"          # MNN offline INT8 (mnnquant) of the FP32 .mnn model
    ALL = "all"

    @property
    def float_key(self) -> str:
        """The FP32 artifact key of its format (export.formats: runtime -> format)."""
        return Runtime(self.value).format.value

    @property
    def int8_key(self) -> str:
        return f"{self.float_key}_int8"

    @property
    def suffix(self) -> str:
        return "." + self.float_key


CONCRETE_BACKENDS = (Backend.ORT, Backend.TFLITE, Backend.MNN)


class Method(str, Enum):
    """How activation ranges are picked from the calibration images."""

    MINMAX = "minmax"          # observed min/max
    ENTROPY = "entropy"        # KL-divergence optimal clipping (TensorRT style)
    PERCENTILE = "percentile"  # clip the outer PERCENTILE tails
    AUTO = "auto"              # try the three, keep the best on held-out images


CONCRETE_METHODS = (Method.MINMAX, Method.ENTROPY, Method.PERCENTILE)
# Percentile kept on each side of an activation histogram (percentile method).
PERCENTILE = 99.999


def backend_for_path(path: Path) -> Backend | None:
    s = path.name.lower()
    if s.endswith(".onnx"):
        return Backend.ORT
    if s.endswith(".tflite"):
        return Backend.TFLITE
    if s.endswith(".mnn"):
        return Backend.MNN
    return None


def is_int8_file(path: Path) -> bool:
    return ".int8." in path.name


@dataclass
class ModelRef:
    """One model to work on: its card and where the card lives."""

    card: ModelCard
    card_path: Path
    given: Path | None = None      # the model file the user named, if any

    @property
    def name(self) -> str:
        return self.card.name

    def artifact(self, key: str) -> Path | None:
        if key not in self.card.artifacts:
            return None
        p = self.card.artifact_path(self.card_path, key)
        if self.given is not None and artifact_key(self.given.name) == key \
                and not same_file(p, self.given):
            # never silently a different file than the one the command line named
            raise QuantError(f"{shown(self.given)}: its card {shown(self.card_path.name)} records "
                             f"artifacts.{key}.path '{shown(self.card.artifacts[key].get('path'))}', "
                             f"a different file; re-export the model or fix the card")
        return p if p.is_file() else None


def _card_for_model_file(p: Path) -> ModelRef:
    if not p.is_file():
        raise QuantError(f"model {p} does not exist")
    cp = card_path_for(p)
    if not cp.is_file():
        raise QuantError(f"model {p} has no model card ({cp.name} is missing beside it; "
                         f"export it with `python -m export.onnx`)")
    return ModelRef(load_card(cp), cp, p)


def resolve_models(model: str | None, search_dir: Path) -> list[ModelRef]:
    """--model as a file (x.onnx / x.tflite / x.mnn / x.json), a name in search_dir, or every card there."""
    if model:
        p = Path(model)
        if p.suffix.lower() in (".onnx", ".tflite", ".mnn"):
            return [_card_for_model_file(p)]
        if p.suffix.lower() == ".json":
            if not p.is_file():
                raise QuantError(f"model card {p} does not exist")
            return [ModelRef(load_card(p), p)]
        if p.is_dir():
            raise QuantError(f"--model {p} is a folder; name a model file or a model name")
        cp = search_dir / f"{model}.json"
        if not cp.is_file():
            raise QuantError(f"no model '{model}' in {search_dir} ({cp.name} not found)")
        return [ModelRef(load_card(cp), cp)]
    if not search_dir.is_dir():
        raise QuantError(f"no --model given and {search_dir} does not exist "
                         f"(run `python -m export.onnx` first)")
    refs = []
    for cp in sorted(search_dir.glob("*.json")):
        try:
            refs.append(ModelRef(load_card(cp), cp))
        except CardError:
            continue  # other JSON files (reports, caches) are not cards
    if not refs:
        raise QuantError(f"no model cards in {search_dir} (run `python -m export.onnx` first)")
    return refs


def check_labels(found: tuple[str, ...] | list[str], card: ModelCard, source: str) -> None:
    """Every class folder of a labelled data set must be one of the model's classes."""
    known = set(card.class_names)
    unknown = [c for c in found if c not in known]
    if unknown:
        preview = ", ".join(card.class_names[:5]) + (", ..." if len(card.class_names) > 5 else "")
        raise QuantError(f"{source}: class folder '{unknown[0]}' is not a class of {card.name} "
                         f"({len(unknown)} unknown of {len(found)}; the model's classes: {preview})")


def one_line_warnings(prog: str) -> None:
    """Print Python warnings as `prog: warning: message`, one line each."""
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        # escaped: a file name in a warning must not drive the terminal
        print(f"{prog}: warning: {shown(str(message).splitlines()[0])}", file=file or sys.stderr)
    warnings.showwarning = show


