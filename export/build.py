"""The model an export starts from: the zoo variant (or the user's own model, see
export/foreign.py) and its weights: given, shipped for the variant, or random-init."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.cli import VARIANT_FLAGS
from zoo.config import DataConfig, default_data_config

from .common import RANDOM_SEED, RANDOM_SOURCE, REPO, randomize_norms, warn
from .weights import GRAPH_ONLY_PARAMS, LoadedCheckpoint, WeightsError, find_shipped, \
    load_pinned, matches


@dataclass(frozen=True)
class ModelConfig:
    """Which model an export starts from and with which weights (the exporters' model and
    weight flags, same names): a zoo variant (`model` + `params`, e.g. {"groups": 3}) or
    the user's own model (`model_py`: FILE.py:FN, MODULE:FN, .pt2, TorchScript, .onnx,
    torchvision:NAME; see export/source.py; or `module`, a torch module in this process,
    whose size and normalisation come from input_size + mean/std or dataset)."""

    model: str | None = None
    params: dict = field(default_factory=dict)   # variant knobs (zoo.cli.VARIANT_FLAGS)
    dataset: str | None = None
    input_size: int | None = None
    num_classes: int | None = None
    weights: Path | None = None
    random_weights: bool = False
    model_py: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    images: Path | None = None   # parity images (also the class names of a foreign model)
    module: Any = None           # a torch.nn.Module built in this process (export.api only)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ModelConfig":
        return cls(args.model, _user_flags(args), args.dataset, args.input_size,
                   args.num_classes, args.weights, args.random_weights, args.model_py,
                   args.mean, args.std, args.images)


@dataclass
class Prepared:
    """A model ready to export, with everything the card says about it."""

    model: Any                 # torch.nn.Module in eval mode
    variant: Any               # zoo Variant
    data: DataConfig
    source: dict
    notes: list[str] = field(default_factory=list)
    origin: Any = None         # export.source.ModelSource of a --source model, else None

    @property
    def name(self) -> str:
        return self.variant.tag

    @property
    def input_size(self) -> int:
        return self.data.input_size


def _source_of(ck: LoadedCheckpoint, shipped: bool) -> dict:
    try:
        shown = str(ck.path.resolve().relative_to(REPO))
    except ValueError:
        shown = str(ck.path)
    src: dict[str, Any] = {"checkpoint": shown, "sha256": ck.sha256, "shipped": shipped}
    for k in ("metrics", "epochs_done", "pretrained", "recipe", "transport"):
        if k in ck.data:
            src[k] = ck.data[k]
    return src


def _user_flags(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in VARIANT_FLAGS if getattr(args, k, None) is not None}


def _effective_size(dataset: str, input_size: int | None) -> int | None:
    try:
        return default_data_config(dataset, input_size, 1).input_size
    except ValueError:
        return None


def prepare(cfg: ModelConfig, prog: str) -> Prepared:
    """Resolve the variant and its weights (given, shipped or random) and build the model."""
    import torch

    import zoo
    from zoo._registry import create_model, data_config_for, get_entry, resolve_variant
    from zoo.checkpoint import load_weights

    zoo._load_families()
    flags = {k: v for k, v in cfg.params.items() if v is not None}
    ck = load_pinned(cfg.weights) if cfg.weights is not None else None
    if cfg.model_py:
        from .foreign import prepare_source
        return prepare_source(cfg, prog, flags, ck)
    ckv = ck.variant if ck else None
    name = cfg.model or (ckv or {}).get("model")
    if not name:
        raise WeightsError(f"checkpoint {cfg.weights} has no model variant: pass --model")
    get_entry(name)  # unknown model -> one-line ZooError
    if ckv and ckv["model"] != name:
        raise WeightsError(f"checkpoint {cfg.weights} holds {ckv['model']} weights, not {name}")
    params = dict(flags)
    dataset, input_size, num_classes = cfg.dataset, cfg.input_size, cfg.num_classes
    shipped = False
    if ck is None and not cfg.random_weights:
        probe = resolve_variant(name, dataset or "imagenet", input_size, num_classes, **params)
        hit = find_shipped(name, probe.params, dataset, num_classes)
        if hit is not None:
            ck = load_pinned(hit.path)
            # The file may have been rewritten since it was listed: check what was loaded.
            if ck.variant and matches(ck.variant, name, probe.params, dataset, num_classes):
                ckv, shipped = ck.variant, True
            else:
                ck = None
    if ckv:
        # Unnamed knobs come from the weights' own variant (graph-only ones excepted).
        for k, v in dict(ckv.get("params", {})).items():
            if k not in GRAPH_ONLY_PARAMS:
                params.setdefault(k, v)
        dataset = dataset or ckv.get("dataset")
        input_size = input_size or ckv.get("input_size")
        num_classes = num_classes or ckv.get("num_classes")
    variant = resolve_variant(name, dataset or "imagenet", input_size, num_classes, **params)
    torch.manual_seed(RANDOM_SEED)
    model = create_model(variant)
    data = data_config_for(variant)
    notes: list[str] = []
    if ck is not None:
        load_weights(model, ck.data["state_dict"], f"checkpoint {ck.path}")
        source = _source_of(ck, shipped)
        if ckv:
            trained = _effective_size(str(ckv.get("dataset", "imagenet")), ckv.get("input_size"))
            if trained and trained != data.input_size:
                notes.append(f"weights were trained at {trained} px, exported at {data.input_size} px")
                source["trained_input_size"] = trained
    else:
        randomize_norms(model)
        source = dict(RANDOM_SOURCE)
        if not cfg.random_weights:
            notes.append(f"no shipped or given weights for {variant.tag}: exporting random-init "
                         "weights (accuracy is meaningless; pass --weights)")
    print(weights_line(source, variant.tag, data, cfg.random_weights), flush=True)
    for n in notes:
        warn(prog, n)
    model.eval()
    return Prepared(model, variant, data, source, notes)


def weights_line(source: dict, tag: str, data: DataConfig, asked_random: bool = False) -> str:
    """The first line an export prints: which weights and which config, so that a run
    where no checkpoint was found (e.g. outside the repository) cannot pass for a trained one."""
    if source.get("weights") == "embedded":
        w = (f"inside {(source.get('model_source') or {}).get('spec')} "
             f"(sha256 {str(source.get('sha256'))[:12]})")
    elif source.get("weights") == "random":
        why = "--random-weights" if asked_random else \
            "no shipped checkpoint for this variant; pass --weights"
        w = f"random init (seed {source.get('seed')}; {why})"
    else:
        kind = "shipped checkpoint" if source.get("shipped") else "checkpoint"
        top1 = (source.get("metrics") or {}).get("test_top1")
        acc = f", test top-1 {100 * top1:.2f} %" if isinstance(top1, (int, float)) else ""
        w = f"{source.get('checkpoint')} ({kind}{acc}, sha256 {str(source.get('sha256'))[:12]})"
    return (f"weights: {w}; config: {tag} ({data.dataset}, {data.input_size} px, "
            f"{data.num_classes} classes)")


