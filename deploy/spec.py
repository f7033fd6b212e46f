"""What a deploy run is asked to do: model specs, targets and the sweep file.

Torch-free: every syntax error in the command line or the sweep file is found
here, before anything heavy is imported, and reported as one line.

Model spec:  ``name[:key=value[:key=value ...]]``, e.g. ``shufflenet_v1:width=0.5``.
Keys are the zoo variant knobs (zoo._registry.KNOBS: width, groups, ... or their
short tags w, g, ... or flag names like shuffle-impl) plus
``dataset``, ``input_size`` (or ``r``), ``num_classes`` and ``weights`` (a
checkpoint path; default: the shipped one of the variant, else random init).

Your own model (export/source.py):  ``SOURCE[:key=value ...]`` where SOURCE is
``file.py:fn``, ``package.module:fn``, ``model.pt2``, a TorchScript file, ``model.onnx``
or ``torchvision:NAME``; keys ``name`` (the file tag; default the file stem),
``dataset`` (its size and normalisation preset), ``input_size``, ``num_classes``
and ``weights`` (a state dict for a factory), e.g. ``mycnn.py:build:weights=mycnn.pt``.

Target:  ``local`` | ``qemu:<cpu>`` (cortex-a53, cortex-a72, cortex-a76, neoverse-n1, max)
| ``ssh:<device>`` | ``adb:<device>`` (a board or phone of the --devices inventory, which says
how to reach it) | ``ssh`` | ``adb`` (every device of that kind in the inventory, each its own
target: boards are not interchangeable, so each keeps its own figures and INT8 recipe).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from android_bench.targets import spec as _targets
from android_bench.targets.spec import KINDS as TARGET_KINDS  # noqa: F401
from android_bench.targets.spec import DEVICE_NAME, QEMU_CPUS, REMOTE_KINDS  # noqa: F401
from zoo._registry import KNOBS
from zoo.util import ArmqError

if TYPE_CHECKING:
    from quant.config import Recipe


class SpecError(ArmqError):
    """A malformed --models / --targets / --sweep entry (printed as one line)."""


# zoo knobs and how their values are typed; a knob the model does not take is
# reported by zoo.resolve_variant with the list of the ones it does.
VARIANT_KEYS = {k: p.type for k, p in KNOBS.items()}
OTHER_KEYS = {"dataset": str, "input_size": int, "num_classes": int, "weights": str}
SOURCE_KEYS = {**OTHER_KEYS, "name": str}   # the keys of a foreign model's spec
_TORCH_FILES = (".pt2", ".pt", ".pth", ".ts", ".jit", ".torchscript", ".onnx")
KEY_ALIASES = {"r": "input_size", "input-size": "input_size", "num-classes": "num_classes",
               **{a: k for k, p in KNOBS.items() for a in p.spec_keys if a != k}}
DATASETS = ("cifar10", "imagenet")
# Target kinds, QEMU cores and device names: android_bench/targets/spec.py, the one home of
# the target syntax. ssh/adb targets are reached through a device of the inventory
# (deploy/devices.py); their benchmarks run on the device, not on this machine.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the run, as the user wrote it plus the typed knobs."""

    text: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    input_size: int | None = None
    num_classes: int | None = None
    weights: str | None = None
    source: str | None = None     # export/source.py spec of the user's own model

    def __hash__(self) -> int:  # params is a dict: hash the text
        return hash(self.text)


def _typed(key: str, raw: str, kind: type, where: str) -> Any:
    if raw == "":
        raise SpecError(f"{where}: '{key}=' needs a value")
    if kind is str:
        return raw
    try:
        v = float(raw) if kind is float else int(raw)
    except ValueError:
        raise SpecError(f"{where}: {key}={raw} is not {'a number' if kind is float else 'an integer'}") \
            from None
    return v


def split_source(text: str) -> tuple[str, list[str]] | None:
    """(source spec, key=value parts) when `text` names the user's own model, else None."""
    head, *rest = text.split(":")
    low = head.lower()
    if low.endswith(_TORCH_FILES):
        return head, rest
    if rest and "=" not in rest[0] and (low.endswith(".py") or head == "torchvision"
                                        or "." in head or "/" in head):
        return f"{head}:{rest[0]}", rest[1:]
    return None


def _parse_source_spec(text: str, source: str, parts: list[str], where: str) -> ModelSpec:
    from export.source import parse_source  # torch-free: reads at most a zip's member list

    try:
        src = parse_source(source)
    except ArmqError as e:
        raise SpecError(f"{where}: '{text}': {e}") from None
    other: dict[str, Any] = {}
    for part in parts:
        key, eq, raw = part.partition("=")
        key = KEY_ALIASES.get(key.strip().lower(), key.strip().lower())
        if not eq or key not in SOURCE_KEYS:
            raise SpecError(f"{where}: '{text}': '{part}' is not one of "
                            f"{', '.join(k + '=' for k in SOURCE_KEYS)}")
        if key in other:
            raise SpecError(f"{where}: '{text}': '{key}' given twice")
        other[key] = _typed(key, raw.strip(), SOURCE_KEYS[key], f"{where}: '{text}'")
    name = other.get("name") or src.default_name
    if not _NAME.match(name):
        raise SpecError(f"{where}: '{text}': '{name}' is not a usable model name: add name=NAME")
    ds = other.get("dataset")
    if ds is not None and ds not in DATASETS:
        raise SpecError(f"{where}: '{text}': dataset={ds} is not one of {', '.join(DATASETS)}")
    return ModelSpec(text, name, {}, ds, other.get("input_size"), other.get("num_classes"),
                     other.get("weights"), source=source)


def parse_model_spec(text: str, where: str = "--models") -> ModelSpec:
    """``shufflenet_v1:width=0.5:groups=3`` -> ModelSpec; SpecError on any syntax problem."""
    text = text.strip()
    if not text:
        raise SpecError(f"{where}: empty model spec")
    foreign = split_source(text)
    if foreign is not None:
        return _parse_source_spec(text, foreign[0], foreign[1], where)
    name, *parts = text.split(":")
    name = name.strip()
    if not _NAME.match(name):
        raise SpecError(f"{where}: '{text}': '{name}' is not a model name (expected "
                        "name[:key=value...], e.g. shufflenet_v1:width=0.5)")
    params: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for part in parts:
        key, eq, raw = part.partition("=")
        key = key.strip().lower()
        key = KEY_ALIASES.get(key, key)
        if not eq:
            raise SpecError(f"{where}: '{text}': '{part}' is not key=value")
        if key in VARIANT_KEYS:
            dest, kind = params, VARIANT_KEYS[key]
        elif key in OTHER_KEYS:
            dest, kind = other, OTHER_KEYS[key]
        else:
            known = ", ".join([*VARIANT_KEYS, *OTHER_KEYS])
            raise SpecError(f"{where}: '{text}': unknown key '{key}' (known: {known})")
        if key in dest:
            raise SpecError(f"{where}: '{text}': '{key}' given twice")
        dest[key] = _typed(key, raw.strip(), kind, f"{where}: '{text}'")
    ds = other.get("dataset")
    if ds is not None and ds not in DATASETS:
        raise SpecError(f"{where}: '{text}': dataset={ds} is not one of {', '.join(DATASETS)}")
    return ModelSpec(text, name, params, ds, other.get("input_size"), other.get("num_classes"),
                     other.get("weights"))


def parse_data_arg(text: str | None, where: str) -> dict[str | None, Path]:
    """`--eval-data` / `--calib-data`: `PATH` (every model) or `DATASET=PATH[,DATASET=PATH]`
    (the models of that dataset; the others keep their default), so one run can mix CIFAR-10
    and ImageNet models, each measured on its own images. Key None: every dataset."""
    if text is None or not str(text).strip():
        return {}
    text = str(text).strip()
    head = text.split("=", 1)[0]
    if "=" not in text or head not in DATASETS:
        return {None: Path(text)}
    out: dict[str | None, Path] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        ds, eq, path = item.partition("=")
        if not eq or ds not in DATASETS or not path:
            raise SpecError(f"{where}: '{item}' is not DATASET=PATH (DATASET one of "
                            f"{', '.join(DATASETS)})")
        if ds in out:
            raise SpecError(f"{where}: {ds} given twice")
        out[ds] = Path(path)
    return out


def parse_model_list(text: str, where: str = "--models") -> list[ModelSpec]:
    items = [t for t in (s.strip() for s in text.split(",")) if t]
    if not items:
        raise SpecError(f"{where}: no model given")
    specs = [parse_model_spec(t, where) for t in items]
    return specs


@dataclass(frozen=True)
class TargetSpec(_targets.TargetSpec):
    """android_bench's target (its one syntax: parse/format/id there) with the INT8 recipe
    deploy quantizes for it (quant sits between the two packages)."""

    def recipe(self) -> "Recipe":
        """The ONNX INT8 recipe for this target (quant.config, the one home of the rule)."""
        from quant.config import recipe_for_target
        try:
            return recipe_for_target(self.recipe_target)
        except _targets.TargetSpecError as e:
            raise SpecError(str(e)) from None


def parse_target(text: str, where: str = "--targets") -> TargetSpec:
    try:
        return TargetSpec.parse(text, where)
    except _targets.TargetSpecError as e:
        raise SpecError(str(e)) from None


def parse_target_list(text: str, where: str = "--targets") -> list[TargetSpec]:
    try:
        return _targets.parse_target_list(text, where, cls=TargetSpec)
    except _targets.TargetSpecError as e:
        raise SpecError(str(e)) from None


# ---- sweep files --------------------------------------------------------------------------

SWEEP_KEYS = {"models", "targets", "dataset", "runs", "warmup", "limit_eval", "target_eval",
              "skip_tflite",
              "runtimes", "baseline", "num_calib", "num_calib_tflite", "title", "eval_data", "calib_data", "jobs"}


def load_sweep(path: str | Path) -> dict:
    """Read a sweep TOML file into the same settings the flags give.

    Layout (every key optional except the models)::

        title = "ShuffleNet Table 8"
        dataset = "imagenet"
        targets = ["local", "qemu:cortex-a72"]
        runs = 10
        warmup = 2
        baseline = "alexnet"
        models = ["shufflenet_v1:width=0.5", "alexnet"]   # and/or:
        [[model]]
        name = "mobilenet_v1"
        width = 1.0
        [[model]]                       # your own model (export/source.py)
        source = "mycnn.py:build"
        weights = "mycnn.pt"
    """
    p = Path(path)
    shipped = Path(__file__).resolve().parent / p.name
    if not p.is_file() and p.parent.name in ("deploy", "") and p.suffix == ".toml" \
            and shipped.is_file():
        p = shipped  # `--sweep deploy/table8.toml` outside the checkout: the installed copy
    where = f"--sweep {p}"
    doc = read_toml(p, where)
    if "deploy" in doc and not isinstance(doc["deploy"], dict):
        raise SpecError(f"{where}: 'deploy' must be a table ([deploy])")
    body = dict(doc.get("deploy", {}))
    body.update({k: v for k, v in doc.items() if k not in ("deploy", "model")})
    unknown = sorted(set(body) - SWEEP_KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(SWEEP_KEYS))})")
    specs: list[ModelSpec] = []
    models = body.pop("models", [])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise SpecError(f"{where}: 'models' must be a list of model specs")
    specs += [parse_model_spec(m, where) for m in models]
    tables = doc.get("model", [])
    if not isinstance(tables, list):
        raise SpecError(f"{where}: [[model]] entries must be tables")
    for i, t in enumerate(tables):
        specs.append(parse_model_spec(_model_table_text(t, f"{where}: [[model]] #{i + 1}"), where))
    if not specs:
        raise SpecError(f"{where}: no models (give models = [...] or [[model]] tables)")
    if "targets" in body:
        tg = body["targets"]
        if isinstance(tg, list) and all(isinstance(x, str) for x in tg):
            body["targets"] = parse_target_list(",".join(tg), where)
        elif isinstance(tg, str):
            body["targets"] = parse_target_list(tg, where)
        else:
            raise SpecError(f"{where}: 'targets' must be a list of strings")
    _check_sweep_values(body, where)
    body["models"] = specs
    return body


# The least value of each integer key of a sweep: 0 is not "the default" (it was silently
# replaced by it); warmup and target_eval may be 0 (none, off).
SWEEP_INT_MIN = {"runs": 1, "warmup": 0, "limit_eval": 1, "target_eval": 0, "num_calib": 1,
                 "num_calib_tflite": 1, "jobs": 1}
SWEEP_TEXT = ("dataset", "title", "baseline", "eval_data", "calib_data")
MAX_TOML_BYTES = 1 << 20     # a sweep or device file is a page of text, not a data set


def read_toml(p: Path, where: str) -> dict:
    """A TOML file the user gave, bounded: its size, and nesting too deep for the parser
    (a RecursionError) is one line, like every other syntax problem."""
    import tomllib

    if not p.is_file():
        raise SpecError(f"{where}: no such file")
    if p.stat().st_size > MAX_TOML_BYTES:
        raise SpecError(f"{where}: {p.stat().st_size} bytes, more than the "
                        f"{MAX_TOML_BYTES >> 20} MiB a TOML file here may have")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{where}: not valid TOML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise SpecError(f"{where}: not valid TOML (arrays or tables nested too deeply)") from None


def _a(v: Any) -> str:
    """What a TOML value is, in words (never its Python repr)."""
    kinds = {bool: "true/false", int: "a number", float: "a number", list: "a list",
             dict: "a table", str: "a string"}
    return next((w for t, w in kinds.items() if isinstance(v, t)), "a date or time")


def _model_table_text(t: Any, where: str) -> str:
    """A [[model]] table as the spec text `name[:key=value...]` (or `source[:...]`). Values
    are plain strings or numbers without ':' (the separator: a value must not add a key)."""
    if not isinstance(t, dict) or ("name" not in t and "source" not in t):
        raise SpecError(f"{where} has no name")
    head = "source" if "source" in t else "name"
    parts = []
    for k, v in t.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise SpecError(f"{where}: '{k}' must be a string or a number, not {_a(v)}")
        text = str(v)
        if k == "source":
            src = split_source(text)
            if src is None or src[1] or not text.strip():
                raise SpecError(f"{where}: 'source' must be one model source (FILE.py:FN, "
                                f"MODULE:FN, a .pt2/.pt/.onnx file or torchvision:NAME) with "
                                f"no ':key=value' after it; give other keys as keys")
        elif ":" in text or not _NAME.match(str(k)):
            raise SpecError(f"{where}: '{k}' " + ("must not contain ':' (it separates the "
                            "spec's keys)" if ":" in text else "is not a key name"))
        if k != head:
            parts.append(f"{k}={text}")
    return ":".join([str(t[head]), *parts])


def _check_sweep_values(body: dict, where: str) -> None:
    """Types and ranges of a sweep's settings, each error naming its key."""
    for k, least in SWEEP_INT_MIN.items():
        v = body.get(k)
        if k in ("runs", "warmup") and isinstance(v, dict):
            bad = [t for t in v if t not in TARGET_KINDS]
            if bad or not all(isinstance(x, int) and not isinstance(x, bool) and x >= least
                              for x in v.values()):
                raise SpecError(f"{where}: '{k}' must be an integer >= {least} or a table of "
                                f"them keyed by target kind ({', '.join(TARGET_KINDS)})")
        elif k in body and (not isinstance(v, int) or isinstance(v, bool) or v < least):
            raise SpecError(f"{where}: '{k}' must be an integer >= {least}")
    for k in SWEEP_TEXT:
        if k in body and not isinstance(body[k], str):
            raise SpecError(f"{where}: '{k}' must be a string, not {_a(body[k])}")
    if "skip_tflite" in body and not isinstance(body["skip_tflite"], bool):
        raise SpecError(f"{where}: 'skip_tflite' must be true or false")
    rt = body.get("runtimes")
    if rt is not None and not (isinstance(rt, str) or isinstance(rt, list)
                               and all(isinstance(x, str) for x in rt)):
        raise SpecError(f"{where}: 'runtimes' must be a string or a list of strings")
    if "dataset" in body and body["dataset"] not in DATASETS:
        raise SpecError(f"{where}: dataset '{body['dataset']}' is not one of {', '.join(DATASETS)}")
