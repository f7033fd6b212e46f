"""The quant stage as a library: `quantize` (post-training INT8) and `evaluate` (accuracy
of a model file against its float reference), with dataclass options and typed results.

`python -m quant.ptq` and `python -m quant.evaluate` parse their flags into these options
and make one call here; everything they print and every error they raise comes from here.
Errors are `QuantError` (an `ArmqError`): one line naming the problem.

    from quant.api import EvalOptions, PtqOptions, evaluate, quantize
    (res,) = quantize("artifacts/shufflenet_v1_g3_cifar10.onnx", "calib.tar.gz",
                      PtqOptions(num_calib=64))
    res.path()          # artifacts/shufflenet_v1_g3_cifar10.int8.onnx
    evaluate(res.path(), "test.tar", EvalOptions(limit=200)).agreement
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from export.card import card_lock, int8_filename, int8_key, load_card, save_card
from zoo.util import atomic_paths, check_writable_dir, declare_inputs, shown

from .common import Backend, Method, ModelRef, QuantError, resolve_models
from .config import QuantConfig, Recipe, RecipeError, recipe_for_target
from .evaluate import EvalOptions, EvalResult, evaluate
from .policy import Holdout
from .ptq_steps import (audit, backends_for, evaluate_all, print_audit, quantize_backend,
                        recipe_record)

__all__ = ["Backend", "EvalOptions", "EvalResult", "Method", "PtqOptions", "QuantError",
           "QuantResult", "QuantizedFile", "evaluate", "quantize"]

PROG = "quant.ptq"


@dataclass(frozen=True)
class PtqOptions:
    """How to quantize: `python -m quant.ptq`'s flags (same names, same defaults)."""

    backend: Backend | None = None        # None: the model file's format, else every usable one
    method: Method | None = None          # None: minmax (mnn: entropy, MNN's KL)
    num_calib: int = 500
    holdout: int = 500                    # extra calibration images held out (auto/fallback)
    per_tensor: bool = False
    activations: str | None = None        # ONNX: "int8" (S8S8) or "uint8" (U8S8)
    reduce_range: bool = False            # with uint8: 7-bit weights (x86 without VNNI)
    target: str | None = None             # --for: the INT8 recipe of a target
    tflite_layout: str = "nhwc"
    litert_rewrites: frozenset | None = None
    pt2e_annotations: str = "armq"
    source: str | None = None             # the --source of a model that is not the zoo's
    eval: str | os.PathLike | None = None  # labelled images: float vs INT8 accuracy
    eval_limit: int | None = None
    fallback: int = 0
    max_drop: float = 0.5

    @classmethod
    def from_args(cls, args: Any) -> "PtqOptions":
        from dataclasses import fields
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class QuantizedFile:
    """One INT8 model written: its backend, card key, path and the card's record of it."""

    backend: Backend
    key: str
    path: Path
    record: dict = field(repr=False)


@dataclass(frozen=True)
class QuantResult:
    """One model's quantization: its INT8 files, card, and (with `eval`) accuracy rows."""

    model: str
    card: Path
    files: tuple[QuantizedFile, ...]
    accuracy: tuple[dict, ...] = ()
    seconds: float = 0.0

    def path(self, backend: Backend | str = Backend.ORT) -> Path:
        """The INT8 file of `backend` (QuantError when this run did not make one)."""
        b = Backend(backend)
        for f in self.files:
            if f.backend is b:
                return f.path
        raise QuantError(f"{self.model}: no {b.value} INT8 model in this result")


def _checked(opts: PtqOptions) -> tuple[PtqOptions, Recipe | None]:
    """Refuse inconsistent options (in the CLI's words); the recipe --for picks."""
    for name in ("num_calib", "holdout", "fallback"):
        v = getattr(opts, name)
        if v < (1 if name == "num_calib" else 0):
            raise QuantError(f"--{name.replace('_', '-')} must be {'at least 1' if name == 'num_calib' else '>= 0'}")
    if opts.max_drop < 0:
        raise QuantError("--max-drop must be >= 0")
    if opts.eval_limit is not None and opts.eval_limit < 1:
        raise QuantError("--eval-limit must be at least 1")
    if opts.target is not None and (opts.activations is not None or opts.reduce_range):
        raise QuantError("--for picks the integer format: give --for or --activations/"
                         "--reduce-range, not both")
    if opts.reduce_range and opts.activations != "uint8":
        raise QuantError("--reduce-range goes with --activations uint8 (int16 saturation is an "
                         "x86 uint8 kernel's problem)")
    recipe = None
    if opts.target is not None:
        try:
            recipe = recipe_for_target(opts.target)
        except RecipeError as e:
            raise QuantError(str(e)) from None
    return replace(opts, activations=opts.activations or "int8"), recipe


@dataclass
class _Plan:
    """What one quantize call works on, every input checked."""

    plans: list[tuple[ModelRef, list[Backend]]]
    calib: Path
    eval: Path | None
    source: Any
    torch_models: dict


def _plan(model: str | None, out_dir: Path, calib: str, opts: PtqOptions) -> _Plan:
    from .calib import check_source, list_images

    given = Path(model) if model else None
    refs = resolve_models(model, out_dir)
    for r in refs:
        # Output names come from the card, and the INT8 file is recorded in the card that
        # lives beside it: both stay in --out, whatever the card says.
        if r.card_path.resolve().parent != out_dir.resolve():
            check_writable_dir(out_dir)     # an unusable --out is the first thing to fix
            raise QuantError(f"--model {shown(model)}: its card {shown(r.card_path)} is not in "
                             f"--out {shown(out_dir)}; the INT8 model is written beside its card, so "
                             f"pass --out {shown(r.card_path.parent)}")
    source = None
    if opts.source is not None:
        from export.source import SourceError, source_for_card
        if len(refs) != 1:
            raise QuantError(f"--source {opts.source}: give it with --model naming one card "
                             "exported with --source")
        try:
            source = source_for_card(opts.source, refs[0].card.source)
        except SourceError as e:
            raise QuantError(str(e)) from None
    plans = [(r, backends_for(r, opts.backend, given, source is not None)) for r in refs]
    if opts.litert_rewrites is not None and not any(Backend.TFLITE in bs for _, bs in plans):
        raise QuantError("--litert-rewrites is for the TFLite backend, which this run does not "
                         "use (--backend tflite)")
    calib_src = check_source(calib, "--calib")
    eval_src = check_source(opts.eval, "--eval") if opts.eval else None
    # The card is updated in place on purpose (also when --model names it: the documented
    # `--model <name>.json`); the model named and the data sets are not.
    named_model = given if given is not None and given.suffix.lower() != ".json" else None
    declare_inputs(named_model, calib_src, eval_src, source.path if source is not None else None,
                   outputs=[out_dir])
    if eval_src is not None:
        from .common import check_labels
        folders = sorted({r.label for r in list_images(eval_src) if r.label is not None})
        if not folders:
            raise QuantError(f"--eval {eval_src} is not a labelled ImageFolder tree")
        for r, _ in plans:
            check_labels(folders, r.card, f"--eval {eval_src}")
    from export.graph_io import check_card_graph

    for r, backends in plans:
        check_writable_dir(r.card_path.parent)
        for b in backends:  # the float file each backend starts from must be the card's
            if r.artifact(b.float_key) is not None:
                check_card_graph(r.card, r.artifact(b.float_key))
    check_writable_dir(out_dir)
    return _Plan(plans, calib_src, eval_src, source, {})


def _calib_split(data, opts: PtqOptions, needs_holdout: bool):
    """(calibration images, held-out set or None) of the images loaded from --calib."""
    from .calib import split_holdout

    n_hold = opts.holdout if needs_holdout else 0
    if not n_hold:
        return data.x, None
    if len(data) >= opts.num_calib + n_hold:
        idx_c, idx_h = split_holdout(len(data), n_hold / len(data), minimum=1)
    else:
        idx_c, idx_h = split_holdout(len(data), 0.2)
    hold_set = data.subset(idx_h)
    labels = hold_set.labels if hold_set.labelled else None
    hold = Holdout(hold_set.x, labels) if len(hold_set) else None
    if hold is None:
        print(f"{PROG}: warning: only {len(data)} calibration images: nothing to hold out, "
              "so no method selection or accuracy check", file=sys.stderr)
    return data.x[idx_c], hold


def _one_backend(ref: ModelRef, b: Backend, run: "_Run", work: Path) -> QuantizedFile:
    """Quantize `ref` for backend `b`; write the INT8 file and its card record together."""

    t0 = time.perf_counter()
    cfg_b = run.config.for_mnn(run.opts.method is not None) if b is Backend.MNN else run.config
    tmp_model, det = quantize_backend(ref, b, run.calib, run.hold, cfg_b, work,
                                      run.torch_model)
    tag = run.config.recipe_tag if b is Backend.ORT else None
    dest = run.out_dir / int8_filename(ref.name, b.float_key, tag)
    key = int8_key(b.float_key, tag)
    hold = run.hold
    calib_info = {"method": det.pop("method"), "requested": cfg_b.method.value,
                  "num_images": int(len(run.calib)), "source": str(run.calib_src),
                  "skipped_files": run.skipped,
                  "holdout_images": int(len(hold.x)) if hold else 0,
                  "holdout_metric": hold.metric if hold else None,
                  "per_channel": cfg_b.per_channel}
    tried = det.pop("tried", None)
    if tried:
        calib_info["tried"] = tried
    rec = {"calibration": calib_info, "audit": audit(tmp_model, b),
           "recipe": recipe_record(b, run.config, run.recipe, run.opts.target),
           "seconds": round(time.perf_counter() - t0, 1), **det}
    # The INT8 file and the card that records its hash are one transaction:
    # both are written in full before either is renamed into place, so a full
    # disk or a kill leaves the old pair, never a file its card does not describe.
    with card_lock(ref.card_path), \
            atomic_paths(dest, ref.card_path) as (tmp_dest, tmp_card):
        shutil.copyfile(tmp_model, tmp_dest)
        card = load_card(ref.card_path)
        card.record_artifact(ref.card_path, key, tmp_dest, installed_as=dest, **rec)
        card.accuracy.pop(key, None)  # a new model: old numbers are stale
        save_card(card, tmp_card)
    print_audit(ref.name, b, dest, rec)
    return QuantizedFile(b, key, dest, rec)


@dataclass
class _Run:
    """The state one model's backends share."""

    opts: PtqOptions
    config: QuantConfig
    recipe: Recipe | None
    out_dir: Path
    calib_src: Path
    calib: Any = None
    hold: Holdout | None = None
    skipped: Any = None
    torch_model: Any = None


def _evaluate(ref: ModelRef, files: list[QuantizedFile], eval_src: Path,
              opts: PtqOptions) -> list[dict]:
    """Float vs INT8 accuracy of every backend, printed and written into the card."""
    from .calib import load_set
    from .evaluate import format_table

    ev = load_set(eval_src, ref.card, limit=opts.eval_limit, require_labels=True,
                  progress=sys.stderr.isatty(), what="--eval")
    rows = evaluate_all(ref, ev, {f.backend: f.path for f in files},
                         {f.backend: f.key for f in files},
                         {f.backend: f.record["calibration"]["method"] for f in files})
    if rows:
        with card_lock(ref.card_path):
            card = load_card(ref.card_path)  # re-read: another stage may have added to it
            for r in rows:
                card.accuracy[r["key"]] = {k: r.get(k) for k in ("top1", "top5", "agreement",
                                                                 "sqnr_db", "n", "method")
                                           if r.get(k) is not None} | {"data": str(eval_src)}
            save_card(card, ref.card_path)
        print(format_table(rows))
    return rows


def _quantize_model(ref: ModelRef, backends: list[Backend], run: _Run, plan: _Plan) -> QuantResult:
    from .calib import load_set

    t_model = time.perf_counter()
    n_hold = run.opts.holdout if run.config.needs_holdout else 0
    data = load_set(plan.calib, ref.card, limit=run.opts.num_calib + n_hold,
                    progress=sys.stderr.isatty(), what="--calib")
    run.calib, run.hold = _calib_split(data, run.opts, run.config.needs_holdout)
    run.skipped, run.torch_model = data.skipped, plan.torch_models.get(ref.name)
    files = []
    with tempfile.TemporaryDirectory(prefix="armq-ptq-") as td:
        for b in backends:
            wb = Path(td) / b.value
            wb.mkdir()
            files.append(_one_backend(ref, b, run, wb))
    rows = _evaluate(ref, files, plan.eval, run.opts) if plan.eval is not None else []
    seconds = time.perf_counter() - t_model
    print(f"{PROG}: {ref.name}: done in {seconds:.0f} s; card {ref.card_path}")
    return QuantResult(ref.name, ref.card_path, tuple(files), tuple(rows), round(seconds, 1))


def quantize(model: str | os.PathLike | Any | None, calib: str | os.PathLike,
             options: PtqOptions = PtqOptions(),
             out: str | os.PathLike | None = None) -> list[QuantResult]:
    """Post-training INT8 quantization of exported models, one QuantResult per model.

    model: an exported file (`.onnx`/`.tflite`/`.mnn`), its card (`.json`), a model name
    in `out`, an `export.api.ExportResult`, or None for every card in `out`.
    calib: calibration images (folder, ImageFolder tree, .tar/.zip).
    out: the folder of the models and cards (default: the folder of `model` when it is a
    file, else artifacts/); the INT8 files are written there, beside their cards.
    """
    from .common import one_line_warnings

    model = getattr(model, "path", model)   # an ExportResult
    model = None if model is None else str(model)
    if out is None:
        out = Path(model).parent if model and Path(model).suffix else Path("artifacts")
    one_line_warnings(PROG)
    opts, recipe = _checked(options)
    out_dir = Path(out)
    plan = _plan(model, out_dir, str(calib), opts)
    config = QuantConfig.from_args(opts, recipe)
    if any(Backend.MNN in bs for _, bs in plan.plans):
        from .mnn_ptq import check_config
        check_config(config.for_mnn(opts.method is not None))
    # The TFLite backend starts from torch: rebuild (and check) those models before any work.
    for r, backends in plan.plans:
        if Backend.TFLITE in backends:
            from .tflite_ptq import build_torch_model
            plan.torch_models[r.name] = build_torch_model(r, plan.source)
    return [_quantize_model(ref, backends, _Run(opts, config, recipe, out_dir, plan.calib), plan)
            for ref, backends in plan.plans]
