"""The model-selection flags every armq CLI shares (`--model --width --groups ...`).

The variant flags are generated from the registry's knobs (zoo._registry.KNOBS),
so the flags, `variant_from_args` and `variant_argv` cannot drift apart.
"""
from __future__ import annotations

import argparse
from typing import Any

from ._registry import KNOBS, Variant, ZooError, check_size_and_classes, knob
from .config import Dataset

# argparse dests of the variant flags (= Variant.params keys).
VARIANT_FLAGS = tuple(KNOBS)


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("model variant (see `python -m zoo.list`)")
    g.add_argument("--model", required=required, help="zoo model name, e.g. shufflenet_v1")
    for k in KNOBS.values():
        g.add_argument(k.cli_flag, dest=k.name, type=k.type, choices=k.choices, help=k.help)
    g.add_argument("--dataset", default=Dataset.IMAGENET.value,
                   choices=[d.value for d in Dataset], help="config: imagenet (224px, 1000 "
                   "classes) or cifar10 (32px, 10 classes, CIFAR stem)")
    g.add_argument("--input-size", type=_bounded("input_size"),
                   help="input resolution (default: dataset's)")
    g.add_argument("--num-classes", type=_bounded("num_classes"),
                   help="classifier size (default: dataset's)")


def _bounded(what: str):
    """An argparse type: a whole number within check_size_and_classes' bounds, checked where
    the value enters (a --source model never reaches resolve_variant)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        try:
            check_size_and_classes(**{"input_size": None, "num_classes": None, what: v})
        except ZooError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return v
    return parse


def variant_from_args(args: argparse.Namespace):
    from ._registry import resolve_variant
    import zoo  # noqa: F401 - registers the families

    zoo._load_families()
    params = {k: getattr(args, k, None) for k in VARIANT_FLAGS}
    return resolve_variant(args.model, args.dataset, args.input_size, args.num_classes, **params)


def _flag_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def variant_argv(v: Variant) -> list[str]:
    """The add_model_args flags that select `v` again (the inverse of variant_from_args)."""
    args = ["--model", v.model, "--dataset", v.dataset]
    for k, val in sorted(v.params.items()):
        if val is not None:
            args += [knob(k).cli_flag, _flag_value(val)]
    if v.input_size:
        args += ["--input-size", str(v.input_size)]
    if v.num_classes:
        args += ["--num-classes", str(v.num_classes)]
    return args
