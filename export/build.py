"""The model an export starts from: the zoo variant (or the user's --model-py
builder) and its weights: given, shipped for the variant, or random-init."""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.cli import VARIANT_FLAGS
from zoo.config import DataConfig, default_data_config
from zoo.util import ArmqError

from .common import RANDOM_SEED, RANDOM_SOURCE, REPO, randomize_norms, warn
from .weights import GRAPH_ONLY_PARAMS, LoadedCheckpoint, WeightsError, find_shipped, \
    load_pinned, matches


@dataclass
class Prepared:
    """A model ready to export, with everything the card says about it."""

    model: Any                 # torch.nn.Module in eval mode
    variant: Any               # zoo Variant
    data: DataConfig
    source: dict
    notes: list[str] = field(default_factory=list)

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


def prepare(args: argparse.Namespace, prog: str) -> Prepared:
    """Resolve the variant and its weights (given, shipped or random) and build the model."""
    import torch

    import zoo
    from zoo._registry import create_model, data_config_for, get_entry, resolve_variant
    from zoo.checkpoint import load_weights

    zoo._load_families()
    flags = _user_flags(args)
    ck = load_pinned(args.weights) if args.weights is not None else None
    if args.model_py:
        return _prepare_model_py(args, prog, flags, ck)
    ckv = ck.variant if ck else None
    name = args.model or (ckv or {}).get("model")
    if not name:
        raise WeightsError(f"checkpoint {args.weights} has no model variant: pass --model")
    get_entry(name)  # unknown model -> one-line ZooError
    if ckv and ckv["model"] != name:
        raise WeightsError(f"checkpoint {args.weights} holds {ckv['model']} weights, not {name}")
    params = dict(flags)
    dataset, input_size, num_classes = args.dataset, args.input_size, args.num_classes
    shipped = False
    if ck is None and not args.random_weights:
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
        if not args.random_weights:
            notes.append(f"no shipped or given weights for {variant.tag}: exporting random-init "
                         "weights (accuracy is meaningless; pass --weights)")
    print(weights_line(source, variant.tag, data, args.random_weights), flush=True)
    for n in notes:
        warn(prog, n)
    model.eval()
    return Prepared(model, variant, data, source, notes)


def weights_line(source: dict, tag: str, data: DataConfig, asked_random: bool = False) -> str:
    """The first line an export prints: which weights and which config, so that a run
    where no checkpoint was found (e.g. outside the repository) cannot pass for a trained one."""
    if source.get("weights") == "random":
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


def load_builder(spec: str):
    """`path/file.py:fn` or `package.module:fn` -> the callable."""
    target, sep, fn_name = spec.rpartition(":")
    if not sep or not target or not fn_name:
        raise ArmqError(f"--model-py {spec}: expected path/file.py:function or module:function")
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target)
            if not path.is_file():
                raise ArmqError(f"--model-py {spec}: {path} does not exist")
            mod_name = "armq_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            if mspec is None or mspec.loader is None:
                raise ArmqError(f"--model-py {spec}: cannot import {path}")
            mod = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = mod
            mspec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(target)
    except ArmqError:
        raise
    except Exception as e:  # noqa: BLE001 - user code: any failure is the user's to fix
        raise ArmqError(f"--model-py {spec}: importing failed: {type(e).__name__}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ArmqError(f"--model-py {spec}: no function '{fn_name}' in {target}")
    return fn


def _prepare_model_py(args, prog: str, flags: dict, ck: LoadedCheckpoint | None) -> Prepared:
    import torch

    from zoo._registry import Variant
    from zoo.checkpoint import load_weights

    fn = load_builder(args.model_py)
    ckv = ck.variant if ck else None
    dataset = args.dataset or (ckv or {}).get("dataset") or "imagenet"
    try:
        data = default_data_config(dataset, args.input_size, args.num_classes)
    except ValueError as e:
        raise ArmqError(str(e)) from None
    sig = inspect.signature(fn)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    kwargs: dict[str, Any] = {}
    if "data" in sig.parameters or takes_any:
        kwargs["data"] = data
    if "num_classes" in sig.parameters:
        kwargs["num_classes"] = data.num_classes
    for k, v in flags.items():
        if k not in sig.parameters and not takes_any:
            raise ArmqError(f"--model-py {args.model_py}: {fn.__name__}() does not take --{k}")
        kwargs[k] = v
    torch.manual_seed(RANDOM_SEED)
    try:
        model = fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - user code
        raise ArmqError(f"--model-py {args.model_py}: {fn.__name__}() failed: "
                        f"{type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise ArmqError(f"--model-py {args.model_py}: {fn.__name__}() returned "
                        f"{type(model).__name__}, not a torch.nn.Module")
    name = args.model or fn.__name__
    variant = Variant(name, data.dataset, args.input_size, args.num_classes, dict(flags))
    builder = {"model_py": args.model_py}
    path = Path(args.model_py.rpartition(":")[0])
    if path.is_file():
        builder["model_py_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    notes = []
    if ck is not None:
        load_weights(model, ck.data["state_dict"], f"checkpoint {ck.path}")
        source = {**_source_of(ck, False), **builder}
    else:
        randomize_norms(model)
        source = {**RANDOM_SOURCE, **builder}
        if not args.random_weights:
            notes.append(f"no --weights for {name}: exporting random-init weights")
    print(weights_line(source, variant.tag, data, args.random_weights), flush=True)
    for n in notes:
        warn(prog, n)
    model.eval()
    return Prepared(model, variant, data, source, notes)
