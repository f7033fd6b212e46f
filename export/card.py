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
                    mnn, mnn_int8, pte, pte_int8) and recipe keys (onnx_int8_u8s8: artifact_key)
                    each: path (relative to the card), sha256, size_bytes, and the
                    producing stage's details (exporter, opset, parity, audit, calibration)
    accuracy        {artifact key: {"top1", "top5", "agreement", "sqnr_db", "data", "n"}}
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from zoo._registry import MAX_INPUT_SIZE, MIN_INPUT_SIZE
from zoo.config import DataConfig
from zoo.util import ArmqError, atomic_output, load_json, shown

from .formats import Format

CARD_FORMAT = "armq-card/1"
# The model files a card can name, in the order every stage lists them: FP32 ONNX (the
# export the others derive from), its INT8 QDQ model, FP32 TFLite, full-integer TFLite,
# FP32 MNN (converted from the ONNX model), MNN offline INT8, FP32 and INT8 ExecuTorch
# programs (XNNPACK delegate).
# The one home of these keys: quant, android_bench.profile and deploy import them.
ARTIFACT_KEYS = ("onnx", "onnx_int8", "tflite", "tflite_int8", "mnn", "mnn_int8", "pte",
                 "pte_int8")
# The runtime that runs each format, as reports and summaries name it (export.formats).
RUNTIME_NAMES = {f.value: f.runtime.label for f in Format}
# What a format's FP32 parity check compares with (export.onnx/tflite: torch; export.mnn:
# ONNX Runtime on the ONNX model it was converted from).
PARITY_REFERENCE = {"onnx": "torch", "tflite": "torch", "mnn": "ORT", "pte": "torch"}


# INT8 recipes that change the bytes of an ONNX INT8 file (quant.config.Recipe, the one
# home of which recipe suits which CPU). The default recipe (S8S8) keeps the plain
# `x.int8.onnx` name and the `onnx_int8` key; any other recipe is named in both:
# `x.u8s8.int8.onnx` -> `onnx_int8_u8s8`, so two recipes of one model live side by side.
DEFAULT_RECIPE_TAG = "s8s8"
RECIPE_TAGS = ("s8s8", "u8s8", "u8s8r")   # quant.config.RecipeName's values (a test checks)
# File extension of each model format (a new backend adds its format to export.formats).
FORMAT_EXTENSIONS = {f.value: f.extension for f in Format}
MODEL_FORMATS = tuple(FORMAT_EXTENSIONS)


def artifact_key(filename: str) -> str | None:
    """The card key of a model file name: `x.int8.onnx` -> onnx_int8, `x.u8s8.int8.onnx` ->
    onnx_int8_u8s8, `x.tflite` -> tflite; None for anything else."""
    name = filename.lower()
    fmt = next((f for f, ext in FORMAT_EXTENSIONS.items() if name.endswith(ext)), None)
    if fmt is None:
        return None
    if ".int8." not in name:
        return fmt
    before = name[: name.rindex(".int8.")]
    tag = before.rsplit(".", 1)[-1] if "." in before else ""
    return int8_key(fmt, tag if tag in RECIPE_TAGS else None)


def int8_key(fmt: str, recipe_tag: str | None = None) -> str:
    """The card key of `fmt`'s INT8 file made with recipe `recipe_tag` (None: the default)."""
    if recipe_tag in (None, DEFAULT_RECIPE_TAG):
        return f"{fmt}_int8"
    if recipe_tag not in RECIPE_TAGS:
        raise CardError(f"unknown INT8 recipe '{recipe_tag}' (one of {', '.join(RECIPE_TAGS)})")
    return f"{fmt}_int8_{recipe_tag}"


def int8_filename(stem: str, fmt: str, recipe_tag: str | None = None) -> str:
    """`x` -> `x.int8.onnx` (default recipe) or `x.u8s8.int8.onnx`: artifact_key's inverse."""
    tag = "" if recipe_tag in (None, DEFAULT_RECIPE_TAG) else f".{recipe_tag}"
    return f"{stem}{tag}.int8{FORMAT_EXTENSIONS[fmt]}"


def key_format(key: str) -> str:
    """`onnx_int8_u8s8` -> `onnx`: the model format (runtime family) of a card key."""
    return key.partition("_")[0]


def key_is_int8(key: str) -> bool:
    return "int8" in key.split("_")[1:]


def key_recipe(key: str) -> str | None:
    """The INT8 recipe tag of a key (`onnx_int8` -> s8s8 for ONNX); None for a float key or a
    format the recipes do not apply to (TFLite full-integer is int8/int8 only)."""
    if not key_is_int8(key):
        return None
    parts = key.split("_")
    if parts[-1] in RECIPE_TAGS:
        return parts[-1]
    return DEFAULT_RECIPE_TAG if key_format(key) == "onnx" else None


def ordered_keys(keys) -> list[str]:
    """Card keys in the order every stage lists them: grouped by format (ARTIFACT_KEYS' order,
    then formats it does not name), float before INT8, the default recipe before others."""
    keys = list(dict.fromkeys(keys))
    fmts = list(dict.fromkeys(key_format(k) for k in (*ARTIFACT_KEYS, *sorted(keys))))
    known = {k: i for i, k in enumerate(ARTIFACT_KEYS)}
    return sorted(keys, key=lambda k: (fmts.index(key_format(k)), key_is_int8(k),
                                       known.get(k, len(known)), k))


class CardError(ArmqError):
    pass


# ---- the card's values are data: checked once, here, before any stage works with them --------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# The resize before the centre crop is larger than the input (224 -> 256: size / 0.875).
SIZE_BOUNDS = {"input_size": (MIN_INPUT_SIZE, MAX_INPUT_SIZE),
               "resize": (MIN_INPUT_SIZE, 2 * MAX_INPUT_SIZE)}


# Normalisation works on the 0..1 pixel scale: (pixel / 255 - mean) / std. A 0..255-scale
# mean (128) or std (64) passes every other check and silently feeds the model values near
# -2 whatever the image: refused where a value enters (the --mean/--std flags, the card).
# std down to 1/255 allows a model trained on raw 0..255 pixels (mean 0, std 1/255).
NORM_BOUNDS = {"mean": (0.0, 1.0), "std": (0.001, 1.0)}


def norm_problem(kind: str, values: Any) -> str | None:
    """Why a mean or std (kind) is not a usable normalisation, or None: the one rule."""
    lo, hi = NORM_BOUNDS[kind]
    if not isinstance(values, (list, tuple)) or not values or not all(_is_number(x) for x in values):
        return "must be a list of finite numbers"
    if kind == "std" and any(x <= 0 for x in values):
        return "values must be positive (it divides the pixels)"
    if any(not lo <= x <= hi for x in values):
        hint = "; for 0..255 values divide by 255" if any(x > hi for x in values) else ""
        return f"values must be in {lo:g}..{hi:g} (the 0..1 pixel scale{hint})"
    return None


def _is_size(v: Any, field_name: str = "input_size") -> bool:
    lo, hi = SIZE_BOUNDS[field_name]
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def variant_problem(v: dict) -> str | None:
    """Why a zoo variant dict that came in a file (a checkpoint's `variant`) is unusable,
    or None: one line naming the field, before any stage builds a model from it."""
    def bad(k: str) -> str:
        return f"'{k}' is {shown(repr(v[k])[:40])}"
    if not isinstance(v.get("model"), str):
        return bad("model") + ", not a model name"
    if "dataset" in v and not isinstance(v["dataset"], str):
        return bad("dataset") + ", not a data set name"
    if v.get("input_size") is not None and not _is_size(v["input_size"]):
        return bad("input_size") + f", not a whole number of pixels in {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"
    n = v.get("num_classes")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        return bad("num_classes") + ", not a whole number >= 1"
    if not isinstance(v.get("params", {}), dict):
        return bad("params") + ", not a table of variant knobs"
    return None


def plain_name(name: Any) -> bool:
    """A name usable as a file stem in one folder: no separators, no '..', no control
    characters, not absolute -- so a card cannot steer where a stage writes."""
    return (isinstance(name, str) and name not in ("", ".", "..") and shown(name) == name
            and "/" not in name and "\\" not in name and ".." not in name
            and Path(name).name == name)


def _dims(v: Any) -> list[int | str] | None:
    """A shape: positive whole numbers, or names for symbolic dims ("N", a dynamic batch)."""
    ok = isinstance(v, list) and all(
        (isinstance(x, int) and not isinstance(x, bool) and x > 0) or (isinstance(x, str) and x)
        for x in v)
    return v if ok else None


def _channels(inp: dict) -> int | None:
    """Input channels from the card's input shape (NCHW, or NHWC when the card says so)."""
    shape = _dims(inp.get("shape"))
    if shape is None or len(shape) != 4:
        return None
    c = shape[3] if inp.get("layout") == "NHWC" else shape[1]
    return c if isinstance(c, int) else None


def validate_card(d: dict, where: str = "card") -> None:
    """Every value a stage takes from a card, checked before any work: one CardError line
    naming the field. The one validator; ModelCard.from_dict (so every loader) calls it."""
    def bad(field_name: str, why: str, value: Any) -> CardError:
        return CardError(f"{where}: '{field_name}' {why}, not {shown(repr(value)[:60])}")

    if not plain_name(d["name"]):
        raise bad("name", "must be a plain file stem (no '/', '\\', '..' or control characters)",
                  d["name"])
    pre = d["preprocessing"]
    if not isinstance(pre, dict):
        raise bad("preprocessing", "must be an object", pre)
    inp = d.get("input", {})
    channels = _channels(inp) if isinstance(inp, dict) else None
    for k in ("mean", "std"):
        v = pre.get(k)
        if not isinstance(v, list) or (why := norm_problem(k, v)) is not None:
            raise bad(f"preprocessing.{k}", why if isinstance(v, list) else
                      "must be a list of finite numbers", v)
        if channels is not None and len(v) != channels:
            raise bad(f"preprocessing.{k}", f"must have {channels} values (one per input channel)", v)
    if len(pre["mean"]) != len(pre["std"]):
        raise bad("preprocessing.std", f"must have as many values as mean ({len(pre['mean'])})",
                  pre["std"])
    for k, (lo, hi) in SIZE_BOUNDS.items():
        if not _is_size(pre.get(k), k):
            raise bad(f"preprocessing.{k}", f"must be a whole number of pixels in {lo}..{hi}",
                      pre.get(k))
    variant = d.get("variant", {})
    if isinstance(variant, dict) and variant.get("input_size") is not None \
            and not _is_size(variant["input_size"]):
        raise bad("variant.input_size", f"must be a whole number of pixels in "
                                        f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}", variant["input_size"])
    if isinstance(inp, dict) and "shape" in inp and _dims(inp["shape"]) is None:
        raise bad("input.shape", "must be a list of positive whole numbers or dim names",
                  inp["shape"])
    names = d["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(c, (str, int)) for c in names):
        raise bad("class_names", "must be a non-empty list of names", names)
    out = d.get("output", {})
    shape = _dims(out.get("shape")) if isinstance(out, dict) else None
    if isinstance(out, dict) and "shape" in out and shape is None:
        raise bad("output.shape", "must be a list of positive whole numbers or dim names",
                  out["shape"])
    if shape and isinstance(shape[-1], int) and shape[-1] != len(names):
        raise bad("class_names", f"has {len(names)} names but the model has {shape[-1]} outputs",
                  names[:3])
    n = pre.get("num_classes")
    if n is not None and n != len(names):
        raise bad("preprocessing.num_classes", f"must equal the {len(names)} class_names", n)
    for key, art in (d.get("artifacts") or {}).items():
        path = art.get("path") if isinstance(art, dict) else None
        if path is None:
            continue
        if not isinstance(path, str) or not path or shown(path) != path or "\\" in path \
                or Path(path).is_absolute() or ".." in Path(path).parts:
            raise bad(f"artifacts.{shown(key)}.path", "must be a file name inside the card's folder",
                      path)


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
        validate_card(d, where)
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
        folder = Path(card_path).parent
        path = folder / self.artifacts[key]["path"]
        # validate_card refused absolute and '..' paths; a symlink may still point away,
        # and a card must not steer a stage to a file outside its own folder.
        if not path.resolve().is_relative_to(folder.resolve()):
            raise CardError(f"card {shown(card_path)}: artifacts.{key}.path "
                            f"{shown(self.artifacts[key]['path'])} leads outside the card's folder "
                            f"(a symlink?); keep the model files beside their card")
        return path

    def record_artifact(self, card_path: str | Path, key: str, model_path: str | Path,
                        installed_as: str | Path | None = None, **details: Any) -> None:
        """Record `model_path`'s hash and size under `key`; the path recorded is
        `installed_as` when the bytes are still in a temp file (a transaction)."""
        model_path = Path(model_path)
        shown = Path(installed_as) if installed_as is not None else model_path
        # A card names only files beside it (validate_card refuses anything else on load).
        if shown.resolve().parent != Path(card_path).resolve().parent:
            raise CardError(f"{shown.name} must be written beside its card {Path(card_path).name}")
        self.artifacts[key] = {"path": shown.name, "sha256": sha256_of(model_path),
                               "size_bytes": model_path.stat().st_size, **details}


MODEL_FILE_SUFFIXES = tuple(int8_filename("", f, t) for t in RECIPE_TAGS if t != DEFAULT_RECIPE_TAG
                            for f in FORMAT_EXTENSIONS) \
    + tuple(f".int8{e}" for e in FORMAT_EXTENSIONS.values()) + tuple(FORMAT_EXTENSIONS.values()) \
    + (".json",)


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
    card = ModelCard.from_dict(d, str(p))
    # Stages find a card from the model file the command line named (x.onnx -> x.json) and
    # derive output names from card.name: both must be the same stem.
    if card.name != model_stem(p.name):
        raise CardError(f"model card {shown(p)} names the model '{card.name}', not "
                        f"'{shown(model_stem(p.name))}' (a card belongs to the model files of its "
                        f"own name; re-export or rename it back)")
    return card


@contextlib.contextmanager
def card_lock(card_path: str | Path) -> Iterator[None]:
    """Hold while a card is read, changed and written back: deploy runs one model's export
    and PTQ stages side by side, and each stage's update must keep the entries another
    stage wrote meanwhile. An exclusive flock on the card's folder (no lock file among the
    models; closing the descriptor releases it); where there is no flock, no lock."""
    try:
        import fcntl
    except ImportError:     # not POSIX: stages of one model then run one at a time
        yield
        return
    fd = os.open(Path(card_path).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_card(card: ModelCard, path: str | Path) -> Path:
    with atomic_output(path, "w") as f:
        json.dump(card.to_dict(), f, indent=2)
        f.write("\n")
    return Path(path)


def data_config(card: ModelCard) -> DataConfig:
    """The model's preprocessing, from its card only (never re-typed). Its home is the
    card's module: export's MNN parity and every quant stage read the same values."""
    pre = card.preprocessing
    try:
        return DataConfig(
            dataset=str(pre.get("dataset", "custom")),
            input_size=int(pre["input_size"]),
            num_classes=int(pre.get("num_classes", len(card.class_names))),
            mean=tuple(float(v) for v in pre["mean"]),
            std=tuple(float(v) for v in pre["std"]),
            resize=int(pre["resize"]),
            interpolation=str(pre.get("interpolation", "bilinear")),
            class_names=tuple(card.class_names),
        )
    except (TypeError, ValueError, KeyError) as e:
        raise CardError(f"model card {card.name}: unusable preprocessing ({e})") from None
