"""The model-selection flags every armq CLI shares (`--model --width --groups ...`)."""
from __future__ import annotations

import argparse

from .config import Dataset


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("model variant (see `python -m zoo.list`)")
    g.add_argument("--model", required=required, help="zoo model name, e.g. shufflenet_v1")
    g.add_argument("--width", type=float, help="width multiplier / scale factor")
    g.add_argument("--groups", type=int, help="pointwise groups (shufflenet_v1)")
    g.add_argument("--part", type=int, help="HetConv part P (hetconv models)")
    g.add_argument("--multiplier", type=float, help="identity tensor multiplier (mobilenext)")
    g.add_argument("--depth", type=int, help="network depth (shiftnet: ShiftResNet-20/56/110)")
    g.add_argument("--shuffle-impl", dest="shuffle", choices=("transpose", "gather"),
                   help="channel-shuffle graph form (shufflenet models)")
    g.add_argument("--dataset", default=Dataset.IMAGENET.value,
                   choices=[d.value for d in Dataset], help="config: imagenet (224px, 1000 "
                   "classes) or cifar10 (32px, 10 classes, CIFAR stem)")
    g.add_argument("--input-size", type=int, help="input resolution (default: dataset's)")
    g.add_argument("--num-classes", type=int, help="classifier size (default: dataset's)")


VARIANT_FLAGS = ("width", "groups", "part", "multiplier", "shuffle", "depth")


def variant_from_args(args: argparse.Namespace):
    from ._registry import resolve_variant
    import zoo  # noqa: F401 - registers the families

    zoo._load_families()
    params = {k: getattr(args, k, None) for k in VARIANT_FLAGS}
    return resolve_variant(args.model, args.dataset, args.input_size, args.num_classes, **params)
