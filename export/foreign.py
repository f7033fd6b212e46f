"""The user's own model (`--source`, see export/source.py) made ready to export.

No silent defaults: the input size and the normalisation come from the user (--input-size,
--mean/--std or a --dataset preset) or, for an ONNX file, the graph's static input; the
number of classes comes from the graph's output, checked against --num-classes and
against the class folders of a labelled --images set (whose names become the labels).
"""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from zoo.config import DataConfig, default_data_config
from zoo.util import ArmqError

from .build import Prepared, _source_of, weights_line
from .common import RANDOM_SEED, RANDOM_SOURCE, randomize_norms, warn
from .source import ModelSource, SourceError, SourceKind, eval_mode, load_builder, \
    load_torch_model, parse_source, record
from .weights import LoadedCheckpoint

CUSTOM = "custom"   # DataConfig.dataset of a model normalised with --mean/--std


def _labels(images: Path | None) -> tuple[str, ...]:
    """Class folder names of a labelled --images set (ImageFolder tree or archive), else ()."""
    if images is None:
        return ()
    from zoo.data import list_images

    try:
        recs = list_images(images)
    except (ArmqError, OSError):
        return ()  # parity_inputs reports an unreadable --images in its own words
    return tuple(sorted({r.label for r in recs if r.label is not None}))


def base_config(args: argparse.Namespace, dataset: str | None, graph_size: int | None) -> DataConfig:
    """Size and normalisation of a foreign model (num_classes filled in later)."""
    mean, std = getattr(args, "mean", None), getattr(args, "std", None)
    if (mean is None) != (std is None):
        raise ArmqError("--mean and --std go together (three values each)")
    if dataset is None and mean is None:
        raise ArmqError("your own model needs its normalisation: pass --mean R G B --std R G B "
                        "(or --dataset cifar10|imagenet for that preset)")
    size = args.input_size
    if size is not None and graph_size is not None and size != graph_size:
        raise ArmqError(f"--input-size {size} but the model's graph takes {graph_size} px; "
                        f"pass --input-size {graph_size}")
    size = size or graph_size
    if dataset is None and size is None:
        raise ArmqError("your own model needs its input size: pass --input-size N "
                        "(or --dataset cifar10|imagenet for that preset)")
    if dataset is not None:
        try:
            pre = default_data_config(dataset, size, None)
        except ValueError as e:
            raise ArmqError(str(e)) from None
        if mean is None:
            return pre
        return DataConfig(pre.dataset, pre.input_size, pre.num_classes, tuple(mean), tuple(std),
                          pre.resize, pre.interpolation, pre.class_names)
    assert size is not None
    return DataConfig(CUSTOM, size, 0, tuple(mean), tuple(std), resize=size)


def with_classes(base: DataConfig, n_out: int, labels: tuple[str, ...], given: int | None,
                 images: Path | None) -> DataConfig:
    """The config with the graph's class count, refusing a disagreeing flag or data set."""
    if given is not None and given != n_out:
        raise ArmqError(f"--num-classes {given} but the model outputs {n_out} classes; "
                        f"pass --num-classes {n_out} or fix the model")
    if labels and len(labels) != n_out:
        raise ArmqError(f"--images {images} has {len(labels)} class folders but the model "
                        f"outputs {n_out} classes; give data with {n_out} classes or a model "
                        f"with {len(labels)} outputs")
    names = labels or (base.class_names if len(base.class_names) == n_out else
                       tuple(str(i) for i in range(n_out)))
    return DataConfig(base.dataset, base.input_size, n_out, base.mean, base.std, base.resize,
                      base.interpolation, tuple(names))


def output_classes(model, size: int, spec: str) -> int:
    """The class count of a torch model's [1, N] output on one [1, 3, size, size] input."""
    import torch

    try:
        with torch.no_grad():
            y = model(torch.zeros(1, 3, size, size))
    except Exception as e:  # noqa: BLE001 - user model: its own words, one line
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ArmqError(f"{spec}: the model fails on a [1, 3, {size}, {size}] input "
                        f"({type(e).__name__}: {first}); check --input-size") from None
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != 1:
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ArmqError(f"{spec}: the model returns {shape}, not [1, num_classes] logits")
    return int(y.shape[1])


def onnx_io(path: Path) -> tuple[int | None, int]:
    """(static square input size or None, class count) of an ONNX classifier graph."""
    from .graph_io import onnx_io as read_io

    io = read_io(path)
    if io.channels != 3:
        raise SourceError(f"{path}: the input is not NCHW [N, 3, H, W] (armq feeds RGB images)")
    if not io.classes:
        raise SourceError(f"{path}: the output has no static class dimension [N, num_classes]")
    size = io.size[0] if io.size and io.size[0] == io.size[1] else None
    return size, int(io.classes)


def _factory_wants_classes(src: ModelSource) -> bool:
    params = inspect.signature(load_builder(src.spec)).parameters
    return "num_classes" in params or "data" in params or \
        any(p.kind is p.VAR_KEYWORD for p in params.values())


def prepare_source(args: argparse.Namespace, prog: str, flags: dict,
                   ck: LoadedCheckpoint | None) -> Prepared:
    """A Prepared for --source (the torch module is None for an ONNX file)."""
    import torch

    from zoo._registry import Variant
    from zoo.checkpoint import load_weights

    src = parse_source(args.model_py)
    embedded = src.kind in (SourceKind.ONNX, SourceKind.EXPORTED_PROGRAM, SourceKind.TORCHSCRIPT)
    if embedded and ck is not None:
        raise ArmqError(f"--source {src.spec}: the file holds its own weights; drop --weights")
    if embedded and flags:
        raise ArmqError(f"--source {src.spec}: variant flags (--{next(iter(flags))}) only go "
                        "to a factory file.py:fn")
    dataset = args.dataset or ((ck.variant or {}).get("dataset") if ck is not None else None)
    labels = _labels(args.images)
    graph_size, n_graph = onnx_io(src.path) if src.kind is SourceKind.ONNX else (None, None)
    base = base_config(args, dataset, graph_size)
    model = None
    if src.kind is SourceKind.ONNX:
        n_out = int(n_graph)
    else:
        hint = args.num_classes or len(labels) or base.num_classes or None
        if src.kind is SourceKind.FACTORY and hint is None and _factory_wants_classes(src):
            raise ArmqError(f"--source {src.spec} takes the class count: pass --num-classes N "
                            "(or a labelled --images folder, or --dataset)")
        probe = with_classes(base, hint, (), None, None) if hint else base
        torch.manual_seed(RANDOM_SEED)
        # eval first: a training-mode forward would move BatchNorm statistics
        model = eval_mode(load_torch_model(src, probe, flags))
        # The graph's output is the class count; a flag or data set that disagrees is refused
        # by with_classes, a preset's count that the factory did not take is not.
        n_out = output_classes(model, base.input_size, src.spec)
    data = with_classes(base, n_out, labels, args.num_classes, args.images)
    name = args.model or src.default_name
    variant = Variant(name, data.dataset, args.input_size, args.num_classes, dict(flags))
    rec = record(src)
    notes: list[str] = []
    if embedded:
        source: dict[str, Any] = {"weights": "embedded", "sha256": rec.get("sha256"),
                                  "model_source": rec}
    elif ck is not None:
        load_weights(model, ck.data["state_dict"], f"checkpoint {ck.path}")
        source = {**_source_of(ck, False), "model_source": rec}
    else:
        randomize_norms(model)
        source = {**RANDOM_SOURCE, "model_source": rec}
        if not args.random_weights:
            notes.append(f"no --weights for {name}: exporting random-init weights")
    print(weights_line(source, variant.tag, data, args.random_weights), flush=True)
    for n in notes:
        warn(prog, n)
    if model is not None:
        model = eval_mode(model)
    return Prepared(model, variant, data, source, notes, origin=src)
