"""Registry of model builder functions (timm's `_registry.py` is the model).

A builder is registered with the variant parameters it accepts; `create_model`
validates a user's variant against them so every CLI gives the same one-line
error for a bad width/groups/part, and attaches the default data config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from .config import DataConfig, Dataset, default_data_config
from .util import ArmqError


class ZooError(ArmqError, ValueError):
    """A user error in naming or configuring a model (printed as one line)."""


@dataclass(frozen=True)
class Param:
    """One variant knob of a model family (width, groups, part, ...)."""

    default: Any
    choices: tuple | None = None            # discrete values, e.g. groups
    bounds: tuple[float, float] | None = None  # inclusive range, e.g. width
    help: str = ""

    def check(self, model: str, name: str, value: Any) -> Any:
        if self.choices is not None:
            # Accept 1 for 1.0 etc. but keep the declared type.
            for c in self.choices:
                if value == c:
                    return c
            raise ZooError(f"{model}: --{name} {value} is not one of "
                           f"{', '.join(str(c) for c in self.choices)}")
        if self.bounds is not None:
            lo, hi = self.bounds
            if not lo <= float(value) <= hi:
                raise ZooError(f"{model}: --{name} {value} is outside [{lo}, {hi}]")
            return float(value)
        return value


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., Any]
    family: str
    params: dict[str, Param]
    summary: str
    paper: str = ""
    # Per-dataset DataConfig fields that differ from the dataset default, e.g. the
    # preprocessing pretrained weights expect: {"imagenet": {"mean": ..., "std": ...}}.
    data_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """Everything that picks one concrete network: travels in checkpoints and cards."""

    model: str
    dataset: str = Dataset.IMAGENET.value
    input_size: int | None = None
    num_classes: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Variant":
        return cls(model=str(d["model"]), dataset=str(d.get("dataset", "imagenet")),
                   input_size=d.get("input_size"), num_classes=d.get("num_classes"),
                   params=dict(d.get("params", {})))

    @property
    def tag(self) -> str:
        """A file-name friendly id, e.g. shufflenet_v1_g3_w1.0_cifar10."""
        short = {"width": "w", "groups": "g", "part": "p", "multiplier": "m", "shuffle": "s"}
        bits = [self.model]
        for k in sorted(self.params):
            if k == "shuffle" and self.params[k] == "transpose":
                continue  # the default graph form; weights are the same either way
            v = self.params[k]
            bits.append(f"{short.get(k, k)}{v:g}" if isinstance(v, float) else f"{short.get(k, k)}{v}")
        bits.append(self.dataset)
        if self.input_size:
            bits.append(f"r{self.input_size}")
        return "_".join(bits)


_MODELS: dict[str, ModelEntry] = {}


def register_model(family: str, summary: str, paper: str = "",
                   data_overrides: dict[str, dict[str, Any]] | None = None, **params: Param):
    def deco(fn):
        _MODELS[fn.__name__] = ModelEntry(fn.__name__, fn, family, params, summary, paper,
                                          dict(data_overrides or {}))
        return fn
    return deco


def _ensure_families() -> None:
    """Import every family module (registration happens at import)."""
    from . import _load_families

    _load_families()


def list_models() -> list[str]:
    _ensure_families()
    return sorted(_MODELS)


def get_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        _ensure_families()
    try:
        return _MODELS[name]
    except KeyError:
        raise ZooError(f"unknown model '{name}' (see `python -m zoo.list`)") from None


MAX_INPUT_SIZE = 4096        # px; ImageNet models run at 224, detection-scale at <= 1536
MAX_NUM_CLASSES = 100_000    # ImageNet-21k has 21841


def resolve_variant(name: str, dataset: str = "imagenet", input_size: int | None = None,
                    num_classes: int | None = None, **params: Any) -> Variant:
    """Validate a user's choice and fill in defaults."""
    entry = get_entry(name)
    try:
        ds = Dataset(dataset).value
    except ValueError:
        raise ZooError(f"unknown dataset '{dataset}' (imagenet or cifar10)") from None
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(entry.params))
    if unknown:
        accepted = ", ".join(f"--{p}" for p in entry.params) or "none"
        raise ZooError(f"{name} does not take --{unknown[0]} (it takes: {accepted})")
    resolved = {k: p.check(name, k, given.get(k, p.default)) for k, p in entry.params.items()}
    # Upper bounds too: every CLI resolves here, and 60000 px or 10^9 classes only end in
    # an allocation the machine cannot make, minutes later, as an "internal error".
    if input_size is not None and input_size < 8:
        raise ZooError(f"--input-size {input_size} is too small")
    if input_size is not None and input_size > MAX_INPUT_SIZE:
        raise ZooError(f"--input-size {input_size} is too large (at most {MAX_INPUT_SIZE})")
    if num_classes is not None and num_classes < 1:
        raise ZooError(f"--num-classes {num_classes} must be positive")
    if num_classes is not None and num_classes > MAX_NUM_CLASSES:
        raise ZooError(f"--num-classes {num_classes} is too large (at most {MAX_NUM_CLASSES})")
    return Variant(name, ds, input_size, num_classes, resolved)


def create_model(name: str | Variant, dataset: str = "imagenet", input_size: int | None = None,
                 num_classes: int | None = None, **params: Any):
    """Build a model; `model.default_cfg` (DataConfig) and `model.variant` travel with it."""
    v = name if isinstance(name, Variant) else resolve_variant(
        name, dataset, input_size, num_classes, **params)
    entry = get_entry(v.model)
    data = data_config_for(v)
    model = entry.fn(data=data, **v.params)
    model.default_cfg = data
    model.variant = v
    return model


def data_config_for(v: Variant) -> DataConfig:
    data = default_data_config(v.dataset, v.input_size, v.num_classes)
    overrides = get_entry(v.model).data_overrides.get(v.dataset)
    return replace(data, **overrides) if overrides else data
