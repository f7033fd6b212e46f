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
    """One variant knob of a model family (width, groups, part, ...).

    The knob's identity (name, type, flag, tag, graph_only) is declared once in
    KNOBS below; a family's Param only narrows default/choices/bounds/help and
    register_model fills the identity in. Every table of knobs elsewhere (CLI
    flags, deploy's spec keys, file tags, export's variant argv) is derived.
    """

    default: Any = None
    choices: tuple | None = None            # discrete values, e.g. groups
    bounds: tuple[float, float] | None = None  # inclusive range, e.g. width
    help: str = ""
    name: str = ""                          # builder keyword and Variant.params key
    type: Callable[[str], Any] = str        # parses a flag or deploy spec value
    flag: str = ""                          # CLI flag; "" means --<name>
    tag: str = ""                           # short name in Variant.tag; "" means <name>
    graph_only: bool = False                # changes the graph form, never the weights

    @property
    def cli_flag(self) -> str:
        return self.flag or f"--{self.name.replace('_', '-')}"

    @property
    def short(self) -> str:
        return self.tag or self.name

    @property
    def spec_keys(self) -> tuple[str, ...]:
        """Names deploy's model spec accepts for this knob (name, short tag, flag)."""
        flag = self.cli_flag[2:]
        return tuple(dict.fromkeys((self.name, self.short, flag, flag.replace("-", "_"))))

    def check(self, model: str, name: str, value: Any) -> Any:
        shown = self.cli_flag if self.name else f"--{name}"
        if self.choices is not None:
            # Accept 1 for 1.0 etc. but keep the declared type.
            for c in self.choices:
                if value == c:
                    return c
            raise ZooError(f"{model}: {shown} {value} is not one of "
                           f"{', '.join(str(c) for c in self.choices)}")
        if self.bounds is not None:
            lo, hi = self.bounds
            if not lo <= float(value) <= hi:
                raise ZooError(f"{model}: {shown} {value} is outside [{lo}, {hi}]")
            return float(value)
        return value


def _knob(name: str, type: Callable[[str], Any], help: str, **kw: Any) -> Param:
    return Param(name=name, type=type, help=help, **kw)


# Every variant knob any family may take, with its identity. The help is the CLI
# flag's (shared by the families); a family's Param help is shown by `zoo.list`.
# A float flag for width: shiftnet's integer expansions still match (3.0 == 3).
KNOBS: dict[str, Param] = {p.name: p for p in (
    _knob("width", float, "width multiplier / scale factor", tag="w"),
    _knob("groups", int, "pointwise groups (shufflenet_v1)", tag="g"),
    _knob("part", int, "HetConv part P (hetconv models)", tag="p"),
    _knob("multiplier", float, "identity tensor multiplier (mobilenext)", tag="m"),
    _knob("depth", int, "network depth (shiftnet: ShiftResNet-20/56/110)"),
    # graph_only: its default is left out of tags, so the families must share it.
    _knob("shuffle", str, "channel-shuffle graph form (shufflenet models)", default="transpose",
          choices=("transpose", "gather"), flag="--shuffle-impl", tag="s", graph_only=True),
)}


def knob(name: str) -> Param:
    """The declared knob `name`, or a plain one for names no family registers
    (e.g. keyword arguments of a --model-py network)."""
    return KNOBS.get(name) or Param(name=name)


def _bind(model: str, name: str, p: Param) -> Param:
    """A family's Param with the knob's identity filled in (a drift is a TypeError at import)."""
    if name not in KNOBS:
        raise TypeError(f"{model}: variant knob '{name}' is not declared in zoo._registry.KNOBS")
    k = KNOBS[name]
    if k.choices is not None and not set(p.choices or k.choices) <= set(k.choices):
        raise TypeError(f"{model}: {name} choices {p.choices} are not among the knob's {k.choices}")
    if k.graph_only and p.default != k.default:
        raise TypeError(f"{model}: graph-only knob {name} must default to {k.default!r}")
    return replace(k, default=p.default, choices=p.choices if p.choices is not None else k.choices,
                   bounds=p.bounds, help=p.help or k.help)


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
        """A file-name friendly id, e.g. shufflenet_v1_g3_w1_cifar10."""
        bits = [self.model]
        for k in sorted(self.params):
            p, v = knob(k), self.params[k]
            if p.graph_only and v == p.default:
                continue  # the default graph form; weights are the same either way
            bits.append(f"{p.short}{v:g}" if isinstance(v, float) else f"{p.short}{v}")
        bits.append(self.dataset)
        if self.input_size:
            bits.append(f"r{self.input_size}")
        return "_".join(bits)


_MODELS: dict[str, ModelEntry] = {}


def register_model(family: str, summary: str, paper: str = "",
                   data_overrides: dict[str, dict[str, Any]] | None = None, **params: Param):
    def deco(fn):
        bound = {k: _bind(fn.__name__, k, p) for k, p in params.items()}
        _MODELS[fn.__name__] = ModelEntry(fn.__name__, fn, family, bound, summary, paper,
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


MIN_INPUT_SIZE = 8           # px; below it the stride-32 backbones have nothing left
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
        accepted = ", ".join(p.cli_flag for p in entry.params.values()) or "none"
        raise ZooError(f"{name} does not take {knob(unknown[0]).cli_flag} (it takes: {accepted})")
    resolved = {k: p.check(name, k, given.get(k, p.default)) for k, p in entry.params.items()}
    check_size_and_classes(input_size, num_classes)
    return Variant(name, ds, input_size, num_classes, resolved)


def check_size_and_classes(input_size: int | None, num_classes: int | None) -> None:
    """Upper bounds too: 60000 px or 10^9 classes only end in an allocation the machine
    cannot make, minutes later. Checked where the flags are parsed (zoo.cli, so a --source
    model is bounded too) and again by resolve_variant (deploy specs, checkpoints)."""
    if input_size is not None and input_size < MIN_INPUT_SIZE:
        raise ZooError(f"--input-size {input_size} is too small (at least {MIN_INPUT_SIZE})")
    if input_size is not None and input_size > MAX_INPUT_SIZE:
        raise ZooError(f"--input-size {input_size} is too large (at most {MAX_INPUT_SIZE})")
    if num_classes is not None and num_classes < 1:
        raise ZooError(f"--num-classes {num_classes} must be positive")
    if num_classes is not None and num_classes > MAX_NUM_CLASSES:
        raise ZooError(f"--num-classes {num_classes} is too large (at most {MAX_NUM_CLASSES})")


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
