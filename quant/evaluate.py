"""Evaluate an exported model on a labelled ImageFolder: top-1/top-5, top-1
agreement with the float model and output SQNR.

    python -m quant.evaluate --model artifacts/x.int8.onnx --data ../shared/data/cifar10/test.tar
    python -m quant.evaluate --model artifacts/x.int8.tflite --ref artifacts/x.tflite \
        --data DIR --limit 1000 --json
    python -m quant.evaluate --card artifacts/x.json --data DIR [--limit N] [--json]

The model card beside the model gives the preprocessing and the class names;
the data's class folders must be classes of the model. Without --ref, a model is
compared with the float model `ref_keys` names (the one rule, also used by
--card): an INT8 file with the float model of its own format, else the FP32
ONNX; an FP32 TFLite file with the FP32 ONNX (converter agreement). --card
evaluates every model file of one card, decoding the images once
(quant.card_eval).

    python -m quant.evaluate --model artifacts/x.u8s8.int8.onnx --on qemu:cortex-a72 \
        --data DIR --limit 200

--on runs the model on a benchmark target (quant.on_target: android_bench under QEMU
aarch64 emulation) so an INT8 file made for an Arm core is scored with that core's
kernels; the float reference still runs here (FP32 differs between the two by rounding
only), and the same file on this host, same images, is reported beside it ("host").
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export.card import artifact_key
from zoo.clikit import make_parser, progress_disabled
from zoo.util import cli_entry

from .common import (Backend, ModelRef, QuantError, backend_for_path, is_int8_file,
                     one_line_warnings, resolve_models)

PROG = "quant.evaluate"


def run_model(path: Path, x: np.ndarray, desc: str | None = None, arm: bool = True) -> np.ndarray:
    """Logits of `path` on preprocessed images, with a progress bar."""
    from tqdm import tqdm

    from .runners import open_runner

    runner = open_runner(path, arm=arm)
    step = max(runner.batch or 0, 64 if runner.batch is None else runner.batch * 32)
    outs = []
    with tqdm(total=len(x), desc=desc or path.name, unit="img", leave=False,
              disable=progress_disabled() or (not sys.stderr.isatty() and desc is None)) as bar:
        for i in range(0, len(x), step):
            outs.append(runner(x[i:i + step]))
            bar.update(len(outs[-1]))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def ref_keys(key: str) -> tuple[str, ...]:
    """The float models the card artifact `key` is compared with, first present wins.

    The one rule (quant.evaluate without --ref, and quant.card_eval): an INT8 file
    against the float model of its own format (what quantization alone changed), else
    the FP32 ONNX, the export every other file derives from; an FP32 TFLite file
    against the FP32 ONNX (converter agreement); the FP32 ONNX against nothing."""
    from export.card import key_format, key_is_int8

    fmt = key_format(key)
    if key_is_int8(key):
        return tuple(dict.fromkeys((fmt, "onnx")))
    return () if fmt == "onnx" else ("onnx",)


def default_ref(ref: ModelRef, model: Path) -> Path | None:
    """The float model `model` is compared with when no --ref is given (`ref_keys`)."""
    for key in ref_keys(artifact_key(model.name) or ""):
        p = ref.artifact(key)
        if p is not None:
            return p
    return None


def format_table(rows: list[dict]) -> str:
    """One fixed-width table: model, backend, precision, method, top1, top5, agree, SQNR, n."""
    cols = [("model", "model", "{}"), ("backend", "backend", "{}"), ("precision", "precision", "{}"),
            ("method", "method", "{}"), ("top1", "top1 %", "{:.2f}"), ("top5", "top5 %", "{:.2f}"),
            ("agreement", "agree %", "{:.2f}"), ("sqnr_db", "SQNR dB", "{:.1f}"),
            ("drop", "drop pt", "{:+.2f}"), ("n", "n", "{}")]
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        line = []
        for k, _, f in cols:
            v = r.get(k)
            line.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) if i < 4 else c[i].rjust(widths[i])
                               for i in range(len(cols))) for c in cells)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate one model file (`python -m quant.evaluate --model`'s flags)."""

    ref: str | os.PathLike | None = None   # float reference (default: `default_ref`)
    limit: int | None = None               # at most N images, spread over the classes
    host_graph: bool = False               # ONNX: this host's x86 graph, not the ARM64 one
    on: str | None = None                  # a benchmark target (quant.on_target.parse_on)
    device: Any = None                     # android_bench TargetOptions of an ssh/adb --on
    quiet: bool = False


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of one model file: top-1/top-5 on the labels, top-1 agreement with and
    SQNR against its float reference (None where there is nothing to compare)."""

    name: str                              # the model's name in its card
    model: Path
    ref: Path | None
    metrics: dict = field(repr=False)      # the --json document

    @property
    def n(self) -> int:
        return int(self.metrics["n"])

    @property
    def top1(self) -> float | None:
        return self.metrics.get("top1")

    @property
    def top5(self) -> float | None:
        return self.metrics.get("top5")

    @property
    def agreement(self) -> float | None:
        return self.metrics.get("agreement")

    @property
    def sqnr_db(self) -> float | None:
        return self.metrics.get("sqnr_db")


def _check_on(host_graph: bool) -> None:
    if host_graph:
        raise QuantError("--host-graph is about this host's ONNX Runtime graph, not --on's")


def _reference(model: Path, ref: str | os.PathLike | None) -> tuple[ModelRef, Path | None]:
    """The model's card (checked against its graph) and the float model to compare with."""
    if backend_for_path(model) is None:
        raise QuantError(f"--model {model}: expected a .onnx, .tflite or .mnn file")
    ref_model = resolve_models(str(model), model.parent)[0]
    from export.graph_io import check_card_graph

    check_card_graph(ref_model.card, model)
    ref_path = Path(ref) if ref else default_ref(ref_model, model)
    if ref_path is not None and not ref_path.is_file():
        raise QuantError(f"--ref {ref_path} does not exist")
    if ref_path is not None and backend_for_path(ref_path) is None:
        raise QuantError(f"--ref {ref_path}: expected a .onnx, .tflite or .mnn file")
    return ref_model, ref_path


def evaluate(model: str | os.PathLike, data: str | os.PathLike,
             options: EvalOptions = EvalOptions()) -> EvalResult:
    """Score `model` (an exported .onnx/.tflite/.mnn file with its card beside it) on the
    labelled images `data` (folder, .tar or .zip), against its float reference."""
    one_line_warnings(PROG)
    opts = options
    if opts.limit is not None and opts.limit < 1:
        raise QuantError("--limit must be at least 1")
    on = None
    if opts.on is not None:
        from .on_target import parse_on
        on = parse_on(opts.on)
        _check_on(opts.host_graph)
    model = Path(model)
    ref_model, ref_path = _reference(model, opts.ref)
    from .calib import check_source, load_set

    check_source(str(data), "--data")
    images = load_set(str(data), ref_model.card, limit=opts.limit, require_labels=True,
                      what="--data")
    from .metrics import summarize

    t0 = time.perf_counter()
    if on is None:
        logits = run_model(model, images.x, model.name, arm=not opts.host_graph)
    else:
        from .on_target import logits_on
        say = None if opts.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        (logits,) = logits_on(on, [model], images.x, say, opts.device)
    seconds = time.perf_counter() - t0
    ref_logits = run_model(ref_path, images.x, ref_path.name) if ref_path else None
    n_classes = len(ref_model.card.class_names)
    res = summarize(logits, images.labels, ref_logits, num_classes=n_classes, what=str(model))
    res.update(model=str(model), ref=str(ref_path) if ref_path else None, data=str(data),
               skipped=images.skipped, seconds=round(seconds, 2))
    if on is not None:
        # the same file and images with this host's kernels, for the comparison
        host = summarize(run_model(model, images.x, model.name), images.labels, ref_logits,
                         num_classes=n_classes, what=str(model))
        res.update(on=on.id, ref_on="host", host={k: host.get(k) for k in
                                                  ("top1", "top5", "agreement", "sqnr_db", "n")})
    return EvalResult(ref_model.name, model, ref_path, res)


def result_table(result: EvalResult) -> str:
    """The one-row table (two with --on: the target's and this host's) the CLI prints."""
    res, model, name = result.metrics, result.model, result.name
    b = backend_for_path(model)
    row = dict(res, model=name, backend=b.value if b else "?",
               precision="int8" if is_int8_file(model) else "fp32", method=None)
    if "on" not in res:
        return format_table([row])
    row["model"] = f"{name} on {res['on']}"
    return format_table([row, dict(res["host"], model=f"{name} on this host",
                                   backend=row["backend"], precision=row["precision"], method=None)])


def parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The flags of `python -m quant.evaluate` and the dests of its device flags."""
    p = make_parser(PROG, __doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="x.onnx, x.int8.onnx, x.tflite, x.int8.tflite, x.mnn or "
                      "x.int8.mnn")
    what.add_argument("--card", help="model card x.json: every model file it names, the "
                      "images decoded once")
    p.add_argument("--ref", help="float model to compare with (default: the card's float model)")
    p.add_argument("--data", required=True, help="labelled ImageFolder: folder, .tar or .zip")
    p.add_argument("--limit", type=int, help="use at most N images, spread over the classes")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--host-graph", action="store_true",
                   help="ONNX: let onnxruntime build its x86 graph instead of the ARM64 one")
    p.add_argument("--on", metavar="TARGET",
                   help="run --model on a benchmark target: qemu:<cpu> (aarch64 emulation, "
                   "e.g. qemu:cortex-a72: that core's INT8 kernels; slow, use --limit), ssh or "
                   "adb (a board or phone: the device flags below, as android_bench takes them) "
                   "or local (the harness here); the float reference runs on this host")
    from android_bench.cli import add_device_args
    return p, add_device_args(p)


def _options(p: argparse.ArgumentParser, args: argparse.Namespace, dests: set[str]) -> EvalOptions:
    """EvalOptions of the parsed flags; the flag combinations only the CLI can get wrong."""
    from android_bench.cli import device_options

    if args.limit is not None and args.limit < 1:
        raise QuantError("--limit must be at least 1")
    kind = None
    if args.on is not None:
        from .on_target import parse_on
        kind = parse_on(args.on).kind
        if args.card:
            raise QuantError("--on runs one --model (give --model FILE instead of --card)")
        _check_on(args.host_graph)
    given = sorted(d for d in dests if getattr(args, d, None) not in (None, False)
                   and p.get_default(d) != getattr(args, d))
    if given and kind not in ("ssh", "adb"):
        raise QuantError(f"--{given[0].replace('_', '-')} says how to reach a board or phone: "
                         "give it with --on ssh or --on adb")
    if args.card and args.ref:
        raise QuantError("--ref applies to --model only (--card compares by ref_keys)")
    return EvalOptions(args.ref, args.limit, args.host_graph, args.on,
                       device_options(args, dests), args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    p, dests = parser()
    args = p.parse_args(argv)
    one_line_warnings(PROG)
    opts = _options(p, args, dests)
    if args.card:
        from .card_eval import main_card
        return main_card(Path(args.card), Path(args.data), args.limit, args.json,
                         arm=not args.host_graph)
    res = evaluate(args.model, args.data, opts)
    if args.json:
        print(json.dumps(res.metrics, indent=2))
    else:
        print(result_table(res))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
