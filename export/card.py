"""The model card: the JSON file that travels beside every exported model.

Stages talk through files: `export` writes `<name>.onnx|.tflite` and `<name>.json`;
`quant`, `android_bench` and `deploy` read the card for preprocessing, labels
and cost, and add their own sections. Torch-free (the device side reads it).

Layout (version "armq-card/1"):
    name            file stem shared by the model files, e.g. shufflenet_v1_g3_w1_cifar10
    variant         zoo Variant dict (model, dataset, input_size, num_classes, params)
    input           {"name", "shape" [N,C,H,W], "layout": "NCHW", "dtype": "float32"}
    output          {"name", "shape"}
    preprocessing   zoo DataConfig dict (resize, input_size, mean, std, interpolation, ...)
    class_names     list, index = class id
    cost            {"macs", "params", "memory_access"} from zoo.cost
    source          {"checkpoint", "sha256", "metrics"} or {"weights": "random"}
    artifacts       {key: {...}} for key in ARTIFACT_KEYS (onnx, onnx_int8, tflite, tflite_int8,
                    pte, pte_int8)
                    each: path (relative to the card), sha256, size_bytes, and the
                    producing stage's details (exporter, opset, parity, audit, calibration)
    accuracy        {artifact key: {"top1", "top5", "agreement", "sqnr_db", "data", "n"}}
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.util import ArmqError, atomic_output, load_json, shown

CARD_FORMAT = "armq-card/1"
# The model files a card can name, in the order every stage lists them: FP32 ONNX (the
# export the others derive from), its INT8 QDQ model, FP32 TFLite, full-integer TFLite,
# FP32 and INT8 ExecuTorch programs (XNNPACK delegate).
# The one home of these keys: quant, android_bench.profile and deploy import them.
ARTIFACT_KEYS = ("onnx", "onnx_int8", "tflite", "tflite_int8", "pte", "pte_int8")
# file suffix -> format (the key of its FP32 file); an INT8 file adds `.int8.` before it
_FORMAT_OF_SUFFIX = {".onnx": "onnx", ".tflite": "tflite", ".pte": "pte"}


def artifact_key(filename: str) -> str | None:
    """The ARTIFACT_KEYS key of a model file name: `x.int8.onnx` -> onnx_int8, `x.tflite` ->
    tflite, `x.pte` -> pte; None for anything else."""
    name = filename.lower()
    fmt = next((f for suf, f in _FORMAT_OF_SUFFIX.items() if name.endswith(suf)), None)
    if fmt is None:
        return None
    return f"{fmt}_int8" if ".int8." in name else fmt


class CardError(ArmqError):
    pass


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelCard:
    name: str
    variant: dict
    input: dict
    output: dict
    preprocessing: dict
    class_names: list[str]
    cost: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    artifacts: dict[str, dict] = field(default_factory=dict)
    accuracy: dict[str, dict] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"format": CARD_FORMAT, "name": self.name, "variant": self.variant,
             "input": self.input, "output": self.output, "preprocessing": self.preprocessing,
             "class_names": self.class_names, "cost": self.cost, "source": self.source,
             "artifacts": self.artifacts, "accuracy": self.accuracy}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "card") -> "ModelCard":
        if not isinstance(d, dict) or d.get("format") != CARD_FORMAT:
            raise CardError(f"{where} is not an armq model card (format {CARD_FORMAT})")
        required = ("name", "variant", "input", "output", "preprocessing", "class_names")
        missing = [k for k in required if k not in d]
        if missing:
            raise CardError(f"{where} lacks '{missing[0]}'")
        # The name reaches terminals, file names and reports: control characters in it are
        # refused here, once, instead of escaped at every print.
        if not isinstance(d["name"], str) or not d["name"] or shown(d["name"]) != d["name"]:
            raise CardError(f"{where}: 'name' must be a non-empty string without control "
                            f"characters, not {shown(repr(d['name'])[:60])}")
        pre = d["preprocessing"]
        if not isinstance(pre, dict) or not all(k in pre for k in ("mean", "std", "input_size", "resize")):
            raise CardError(f"{where}: preprocessing needs mean, std, input_size and resize")
        for k in ("variant", "input", "output", "cost", "source", "artifacts", "accuracy"):
            if k in d and not isinstance(d[k], dict):
                raise CardError(f"{where}: '{k}' must be an object, not {type(d[k]).__name__}")
        bad = next((k for k in ("artifacts", "accuracy")
                    for v in d.get(k, {}).values() if not isinstance(v, dict)), None)
        if bad:
            raise CardError(f"{where}: every entry of '{bad}' must be an object")
        names = d["class_names"]
        if not isinstance(names, list) or not all(isinstance(c, (str, int)) for c in names):
            raise CardError(f"{where}: 'class_names' must be a list of names")
        known = set(required) | {"format", "cost", "source", "artifacts", "accuracy"}
        return cls(name=str(d["name"]), variant=dict(d["variant"]), input=dict(d["input"]),
                   output=dict(d["output"]), preprocessing=dict(pre),
                   class_names=[str(c) for c in d["class_names"]], cost=dict(d.get("cost", {})),
                   source=dict(d.get("source", {})), artifacts=dict(d.get("artifacts", {})),
                   accuracy=dict(d.get("accuracy", {})),
                   extra={k: v for k, v in d.items() if k not in known})

    # ---- file helpers --------------------------------------------------------------------

    def artifact_path(self, card_path: str | Path, key: str) -> Path:
        """Absolute path of artifact `key` (e.g. 'onnx_int8') of the card at card_path."""
        if key not in self.artifacts:
            raise CardError(f"card {card_path} has no '{key}' model")
        return Path(card_path).parent / self.artifacts[key]["path"]

    def record_artifact(self, card_path: str | Path, key: str, model_path: str | Path,
                        installed_as: str | Path | None = None, **details: Any) -> None:
        """Record `model_path`'s hash and size under `key`; the path recorded is
        `installed_as` when the bytes are still in a temp file (a transaction)."""
        model_path = Path(model_path)
        shown = Path(installed_as) if installed_as is not None else model_path
        rel = shown.resolve().relative_to(Path(card_path).resolve().parent) \
            if shown.resolve().parent == Path(card_path).resolve().parent else shown.resolve()
        self.artifacts[key] = {"path": str(rel), "sha256": sha256_of(model_path),
                               "size_bytes": model_path.stat().st_size, **details}


MODEL_FILE_SUFFIXES = (".int8.onnx", ".int8.tflite", ".int8.pte", ".onnx", ".tflite", ".pte",
                       ".json")


def model_stem(filename: str) -> str:
    """`x.int8.onnx` -> `x`. Model names may hold dots (`mobilenet_v1_w0.25_cifar10`), so
    only the known suffixes are cut, never everything after the first dot."""
    low = filename.lower()
    for suf in MODEL_FILE_SUFFIXES:
        if low.endswith(suf) and len(filename) > len(suf):
            return filename[: -len(suf)]
    return Path(filename).stem


def card_path_for(model_path: str | Path) -> Path:
    """`artifacts/x.int8.onnx` -> `artifacts/x.json` (the card is per model, not per file)."""
    p = Path(model_path)
    return p.with_name(model_stem(p.name) + ".json")


def load_card(path: str | Path) -> ModelCard:
    p = Path(path)
    if p.suffix != ".json":
        p = card_path_for(p)
    if not p.is_file():
        raise CardError(f"no model card {p} (export the model with `python -m export.onnx` first)")
    try:
        d = load_json(p, "model card")    # bounded size and nesting depth
    except CardError:
        raise
    except ArmqError as e:
        raise CardError(str(e)) from None
    return ModelCard.from_dict(d, str(p))


def save_card(card: ModelCard, path: str | Path) -> Path:
    with atomic_output(path, "w") as f:
        json.dump(card.to_dict(), f, indent=2)
        f.write("\n")
    return Path(path)
