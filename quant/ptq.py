"""Post-training INT8 quantization of exported models, for ONNX Runtime and TFLite.

    python -m quant.ptq --calib DIR [--model artifacts/<name>.onnx|.tflite|.mnn|<name>]
        [--backend ort|tflite|mnn|all] [--method minmax|entropy|percentile|auto]
        [--num-calib 500] [--per-tensor] [--eval DIR] [--fallback N] [--max-drop 0.5]
        [--out artifacts/]

Without --model, every model card in --out is quantized. Calibration images
(a folder, an ImageFolder tree or a .tar/.zip of one) are preprocessed as the
model card says. Writes `<name>.int8.onnx` (QDQ, int8 activations + per-channel
int8 weights) and/or `<name>.int8.tflite` (full integer, via litert-torch PT2E)
and/or `<name>.int8.mnn` (MNN's offline quantizer on the FP32 `.mnn` of
`python -m export.mnn`; method entropy = MNN's KL unless --method says minmax),
atomically, and records them in the card with the calibration details and an
audit of what the runtime really executes.

--method auto calibrates with each method and keeps the best on held-out images
split off the calibration source (never the --eval set). --fallback N keeps up
to N of the most sensitive layers (worst SQNR between float and INT8
activations) in float until the held-out accuracy drop is within --max-drop.
Both are decided once for both backends by quant.policy, from one
quant.config.QuantConfig. The layer ranking is measured on the ONNX model and
recorded in the card (`artifacts.onnx_int8.ranking`); the TFLite backend walks
it, whether ORT ran in this process or an earlier one (deploy runs each backend
in its own process).
--eval DIR evaluates float and INT8 of every backend on a labelled set, prints
one table and writes it into the card's `accuracy`.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from export.card import RECIPE_TAGS, card_lock, int8_filename, int8_key, load_card, save_card
from export.litert_layout import add_flag, to_argv
from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_paths, check_writable_dir, cli_entry, declare_inputs, shown

from .common import (CONCRETE_BACKENDS, Backend, Method, ModelRef, QuantError,
                     backend_for_path, one_line_warnings, resolve_models)
from .config import QuantConfig, Recipe, RecipeError, recipe_for_target
from .policy import Holdout, Policy

PROG = "quant.ptq"


def command(model: str, calib: Path, backend: str, num_calib: int, out: Path,
            python: str = sys.executable, target: str | None = None,
            source: str | None = None, litert_rewrites: frozenset | None = None) -> list[str]:
    """The command line of one backend's quantization of the model `model` in `out`
    (`target`: --for, the INT8 recipe of that target; `source`: the --source of a model
    that is not the zoo's, which the TFLite backend rebuilds it from; `litert_rewrites`:
    the TFLite backend's --litert-rewrites, None: its default)."""
    return [python, "-m", PROG, "--calib", str(calib), "--model", model, "--backend", backend,
            "--num-calib", str(num_calib), "--out", str(out)] \
        + (["--for", target] if target else []) + (["--source", source] if source else []) \
        + (to_argv(litert_rewrites) if backend == Backend.TFLITE.value else [])


def recipe_record(backend: Backend, config: QuantConfig, recipe: Recipe | None,
                  target: str | None) -> dict:
    """The card's `recipe` field of one INT8 artifact: which integer format, for which
    target, and why."""
    if backend is not Backend.ORT:
        return {"name": "s8s8", "activations": "int8", "target": target,
                "reason": "TFLite full-integer: int8 activations on every target (no recipe choice)"}
    if recipe is not None:
        return {**recipe.to_dict(), "target": target}
    return {"name": config.recipe_tag, "activations": config.activations.value, "target": None,
            "reason": "--activations " + config.activations.value
            + (" --reduce-range" if config.reduce_range else "")}


def quantize_backend(ref: ModelRef, backend: Backend, calib: np.ndarray, hold: Holdout | None,
                     config: QuantConfig, work: Path, torch_model=None) -> tuple[Path, dict]:
    """One backend through the policy: (the INT8 file in `work`, its card fields)."""
    saved = None  # the ONNX backend ranks the layers itself, on this run's calibration
    if backend is Backend.ORT:
        from .onnx_ptq import OrtBackend
        impl = OrtBackend(ref, calib, config, work)
    elif backend is Backend.MNN:
        from .mnn_ptq import MnnBackend
        impl = MnnBackend(ref, calib, config, work)
    else:
        from .tflite_ptq import TfliteBackend
        impl = TfliteBackend(ref, torch_model, calib, config, work)
        # The ONNX backend's ranking, recorded in the card by this run or an earlier one
        # (deploy quantizes each backend in its own process).
        card = load_card(ref.card_path)
        saved = next((card.artifacts[k].get("ranking") for k in
                      [int8_key("onnx", t) for t in RECIPE_TAGS]
                      if card.artifacts.get(k, {}).get("ranking")), None)
    outcome = Policy(config, PROG, ref.name).run(impl, hold, saved)
    path, extra = impl.finish(outcome, hold)
    details = {"method": outcome.method.value,
               "tried": outcome.tried if len(config.methods) > 1 else None,
               **outcome.details(impl.exclusion_key), **extra}
    if backend is Backend.ORT:
        details["ranking"] = outcome.ranking or []
    return path, details


# ---- driver ------------------------------------------------------------------------------------


def _audit(path: Path, backend: Backend) -> dict:
    """export.audit's static view (when present) plus what the runtime executes."""
    res: dict = {}
    if backend is Backend.MNN:   # export.audit reads ONNX/TFLite only; MNN's own view
        from .mnn_ptq import runtime_audit as mnn_audit
        res["runtime"] = mnn_audit(path)
        return res
    try:
        from export.audit import audit
        a = audit(path)
        res["graph"] = {k: a[k] for k in ("num_ops", "transpose_count", "quantized",
                                          "float_op_histogram", "depthwise") if k in a}
        res["graph"]["float_compute_ops"] = len(a.get("float_compute_ops", []))
    except ImportError:
        pass
    except ArmqError as e:
        res["graph"] = {"error": str(e)}
    if backend is Backend.ORT:
        from .onnx_ptq import runtime_audit
    else:
        from .tflite_ptq import runtime_audit
    res["runtime"] = runtime_audit(path)
    return res


def _backends_for(ref: ModelRef, requested: Backend | None, given: Path | None,
                  have_source: bool = False) -> list[Backend]:
    """Explicit backend: that one (or fail). No --backend: the format of the given model
    file, else every backend the model can use. `all`: every usable backend (TFLite for a
    model that is not the zoo's only with --source: armq rebuilds it from that, not from
    the file the card names)."""
    from .tflite_ptq import available

    if requested is None and given is not None and backend_for_path(given) is not None:
        requested = backend_for_path(given)
    if requested not in (None, Backend.ALL):
        if requested is Backend.ORT and ref.artifact("onnx") is None:
            raise QuantError(f"{ref.name}: no float ONNX model in the card (run `python -m export.onnx`)")
        if requested is Backend.TFLITE:
            why = available()
            if why:
                raise QuantError(why)
        if requested is Backend.MNN:
            from export.runtime import mnn_tools
            mnn_tools()   # installed, else one line
            if ref.artifact("mnn") is None:
                raise QuantError(f"{ref.name}: no FP32 MNN model in the card (run `python -m "
                                 f"export.mnn --card {ref.card_path}`)")
        return [requested]
    out = []
    if ref.artifact("onnx") is not None:
        out.append(Backend.ORT)
    from export.source import torch_rebuildable

    if available() is None and torch_rebuildable(ref.card.source):
        rec = ref.card.source.get("model_source")
        if rec is None or have_source:
            out.append(Backend.TFLITE)
        else:
            print(f"{PROG}: {ref.name}: TFLite skipped: its model came from --source "
                  f"{rec.get('spec') if isinstance(rec, dict) else '?'}; pass --source again "
                  "to rebuild it for the TFLite backend", file=sys.stderr)
    if ref.artifact("mnn") is not None and _mnn_available():
        out.append(Backend.MNN)
    if not out:
        raise QuantError(f"{ref.name}: nothing to quantize (no float ONNX model, and no torch "
                         "source for the TFLite backend)")
    return out


def _mnn_available() -> bool:
    from export.runtime import RuntimeMissing, mnn_tools
    try:
        mnn_tools()
    except RuntimeMissing:
        return False
    return True


def _evaluate_all(ref: ModelRef, eval_images, produced: dict[Backend, Path],
                  key_of: dict[Backend, str], method_of: dict) -> list[dict]:
    from .evaluate import run_model
    from .metrics import summarize

    rows = []
    onnx_fp = ref.artifact("onnx")
    fp_logits = {}
    for b in CONCRETE_BACKENDS:
        fp = ref.artifact(b.float_key)
        if fp is not None and (b in produced or b.float_key == "onnx"):
            fp_logits[b] = run_model(fp, eval_images.x, f"eval {fp.name}")
            r = summarize(fp_logits[b], eval_images.labels, None)
            rows.append(dict(r, key=b.float_key, model=ref.name, backend=b.value, precision="fp32"))
    for b, path in produced.items():
        base = fp_logits.get(b)
        if base is None and onnx_fp is not None:
            base = fp_logits.get(Backend.ORT)
        q = run_model(path, eval_images.x, f"eval {path.name}")
        r = summarize(q, eval_images.labels, base)
        fp_top1 = next((x.get("top1") for x in rows if x["key"] == b.float_key), None)
        if fp_top1 is None and base is not None:
            fp_top1 = next((x.get("top1") for x in rows if x["key"] == "onnx"), None)
        drop = round(fp_top1 - r["top1"], 3) if fp_top1 is not None and "top1" in r else None
        rows.append(dict(r, key=key_of[b], model=ref.name, backend=b.value, precision="int8",
                         method=method_of.get(b), drop=drop))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("--calib", required=True, help="calibration images: folder, ImageFolder tree, .tar/.zip")
    p.add_argument("--model", help="artifacts/<name>.onnx|.tflite|.json or a model name in --out "
                   "(default: every model card in --out)")
    p.add_argument("--backend", type=Backend, choices=list(Backend), default=None,
                   metavar="{ort,tflite,mnn,all}", help="default: the format of --model's file, "
                   "else every backend the model can use (mnn: when the card has an FP32 .mnn)")
    p.add_argument("--method", type=Method, choices=list(Method), default=None,
                   metavar="{minmax,entropy,percentile,auto}", help="activation range calibration "
                   "(default minmax; mnn: entropy, MNN's KL)")
    p.add_argument("--num-calib", type=int, default=500, help="calibration images (default 500)")
    p.add_argument("--holdout", type=int, default=500,
                   help="extra images of --calib held out to pick a method / check the drop "
                   "(default 500; used by --method auto, --fallback and --max-drop)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per channel)")
    p.add_argument("--activations", choices=("int8", "uint8"), default=None,
                   help="ONNX activation type: int8 (S8S8, default) or uint8 (U8S8); "
                   "--for picks it from the target instead")
    p.add_argument("--reduce-range", action="store_true",
                   help="with --activations uint8: 7-bit weights, for x86 without VNNI whose "
                   "int16 pair sums saturate (--for local picks it on such a host)")
    p.add_argument("--for", dest="target", metavar="TARGET",
                   help="pick the ONNX INT8 recipe for a target: local (this CPU), "
                   "qemu:cortex-a76, cortex-a72, or a board's flags such as "
                   "aarch64:asimd+asimddp / x86_64:avx512_vnni. U8S8 files are named "
                   "<model>.u8s8.int8.onnx (<model>.u8s8r.int8.onnx with 7-bit weights: x86 "
                   "without VNNI); TFLite full-integer is int8 only")
    p.add_argument("--tflite-layout", choices=("nhwc", "nchw"), default="nhwc",
                   help="TFLite input layout when the card has no float TFLite model to follow "
                   "(default nhwc)")
    add_flag(p)
    p.add_argument("--pt2e-annotations", choices=("armq", "litert"), default="armq",
                   help="TFLite: armq's quantizer (default) or litert-torch's PT2EQuantizer as "
                   "shipped, which leaves some ops in float (for comparison)")
    p.add_argument("--source", metavar="SPEC",
                   help="for a model exported with --source (file.py:fn, module:fn, model.pt2): "
                   "the same source again, so the TFLite backend can rebuild the torch model; "
                   "checked against the card's record (armq never runs a file a card names)")
    p.add_argument("--eval", help="labelled ImageFolder to report float vs INT8 accuracy on")
    p.add_argument("--eval-limit", type=int, help="use at most N --eval images")
    p.add_argument("--fallback", type=int, default=0,
                   help="keep up to N most sensitive layers in float to meet --max-drop")
    p.add_argument("--max-drop", type=float, default=0.5,
                   help="accuracy budget in points on the held-out images (default 0.5)")
    p.add_argument("--out", default="artifacts", help="folder of the models and cards (default artifacts/)")
    args = p.parse_args(argv)
    one_line_warnings(PROG)
    for name in ("num_calib", "holdout", "fallback"):
        v = getattr(args, name)
        if v < (1 if name == "num_calib" else 0):
            raise QuantError(f"--{name.replace('_', '-')} must be {'at least 1' if name == 'num_calib' else '>= 0'}")
    if args.max_drop < 0:
        raise QuantError("--max-drop must be >= 0")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise QuantError("--eval-limit must be at least 1")
    if args.target is not None and (args.activations is not None or args.reduce_range):
        raise QuantError("--for picks the integer format: give --for or --activations/"
                         "--reduce-range, not both")
    if args.reduce_range and args.activations != "uint8":
        raise QuantError("--reduce-range goes with --activations uint8 (int16 saturation is an "
                         "x86 uint8 kernel's problem)")
    recipe = None
    if args.target is not None:
        try:
            recipe = recipe_for_target(args.target)
        except RecipeError as e:
            raise QuantError(str(e)) from None
    args.activations = args.activations or "int8"

    from .calib import check_source, list_images, load_set, split_holdout

    out_dir = Path(args.out)
    given = Path(args.model) if args.model else None
    refs = resolve_models(args.model, out_dir)
    for r in refs:
        # Output names come from the card, and the INT8 file is recorded in the card that
        # lives beside it: both stay in --out, whatever the card says.
        if r.card_path.resolve().parent != out_dir.resolve():
            check_writable_dir(out_dir)     # an unusable --out is the first thing to fix
            raise QuantError(f"--model {shown(args.model)}: its card {shown(r.card_path)} is not in "
                             f"--out {shown(out_dir)}; the INT8 model is written beside its card, so "
                             f"pass --out {shown(r.card_path.parent)}")
    source = None
    if args.source is not None:
        from export.source import SourceError, source_for_card
        if len(refs) != 1:
            raise QuantError(f"--source {args.source}: give it with --model naming one card "
                             "exported with --source")
        try:
            source = source_for_card(args.source, refs[0].card.source)
        except SourceError as e:
            raise QuantError(str(e)) from None
    plans = [(r, _backends_for(r, args.backend, given, source is not None)) for r in refs]
    if args.litert_rewrites is not None and not any(Backend.TFLITE in bs for _, bs in plans):
        raise QuantError("--litert-rewrites is for the TFLite backend, which this run does not "
                         "use (--backend tflite)")
    calib_src = check_source(args.calib, "--calib")
    eval_src = check_source(args.eval, "--eval") if args.eval else None
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

    config = QuantConfig.from_args(args, recipe)
    if any(Backend.MNN in bs for _, bs in plans):
        from .mnn_ptq import check_config
        check_config(config.for_mnn(args.method is not None))
    interactive = sys.stderr.isatty()
    # The TFLite backend starts from torch: rebuild (and check) those models before any work.
    torch_models = {}
    for r, backends in plans:
        if Backend.TFLITE in backends:
            from .tflite_ptq import build_torch_model
            torch_models[r.name] = build_torch_model(r, source)
    for ref, backends in plans:
        t_model = time.perf_counter()
        n_hold = args.holdout if config.needs_holdout else 0
        data = load_set(calib_src, ref.card, limit=args.num_calib + n_hold, progress=interactive,
                        what="--calib")
        if n_hold:
            if len(data) >= args.num_calib + n_hold:
                idx_c, idx_h = split_holdout(len(data), n_hold / len(data), minimum=1)
            else:
                idx_c, idx_h = split_holdout(len(data), 0.2)
            calib, hold_set = data.x[idx_c], data.subset(idx_h)
            labels = hold_set.labels if hold_set.labelled else None
            hold = Holdout(hold_set.x, labels) if len(hold_set) else None
            if hold is None:
                print(f"{PROG}: warning: only {len(data)} calibration images: nothing to hold out, "
                      "so no method selection or accuracy check", file=sys.stderr)
        else:
            calib, hold = data.x, None
        produced: dict[Backend, Path] = {}
        key_of: dict[Backend, str] = {}
        details_of: dict[Backend, dict] = {}
        with tempfile.TemporaryDirectory(prefix="armq-ptq-") as td:
            work = Path(td)
            for b in backends:
                wb = work / b.value
                wb.mkdir()
                t0 = time.perf_counter()
                cfg_b = config.for_mnn(args.method is not None) if b is Backend.MNN else config
                tmp_model, det = quantize_backend(ref, b, calib, hold, cfg_b, wb,
                                                  torch_models.get(ref.name))
                tag = config.recipe_tag if b is Backend.ORT else None
                dest = out_dir / int8_filename(ref.name, b.float_key, tag)
                key = int8_key(b.float_key, tag)
                audit = _audit(tmp_model, b)
                calib_info = {"method": det.pop("method"), "requested": cfg_b.method.value,
                              "num_images": int(len(calib)), "source": str(calib_src),
                              "skipped_files": data.skipped,
                              "holdout_images": int(len(hold.x)) if hold else 0,
                              "holdout_metric": hold.metric if hold else None,
                              "per_channel": cfg_b.per_channel}
                tried = det.pop("tried", None)
                if tried:
                    calib_info["tried"] = tried
                rec = {"calibration": calib_info, "audit": audit,
                       "recipe": recipe_record(b, config, recipe, args.target),
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
                produced[b] = dest
                key_of[b] = key
                details_of[b] = rec
                _print_audit(ref.name, b, dest, rec)
        method_of = {b: d["calibration"]["method"] for b, d in details_of.items()}
        rows = []
        if eval_src is not None:
            ev = load_set(eval_src, ref.card, limit=args.eval_limit, require_labels=True,
                          progress=interactive, what="--eval")
            rows = _evaluate_all(ref, ev, produced, key_of, method_of)
        if rows:
            with card_lock(ref.card_path):
                card = load_card(ref.card_path)  # re-read: another stage may have added to it
                for r in rows:
                    card.accuracy[r["key"]] = {k: r.get(k) for k in ("top1", "top5", "agreement",
                                                                     "sqnr_db", "n", "method")
                                               if r.get(k) is not None} | {"data": str(eval_src)}
                save_card(card, ref.card_path)
        if rows:
            from .evaluate import format_table
            print(format_table(rows))
        print(f"{PROG}: {ref.name}: done in {time.perf_counter() - t_model:.0f} s; card {ref.card_path}")
    return 0


def _print_audit(name: str, b: Backend, dest: Path, rec: dict) -> None:
    rt = rec["audit"]["runtime"]
    cal = rec["calibration"]
    isl = rt.get("float_islands")
    n_isl = rt.get("float_compute", 0)
    extra = f", excluded {len(rec.get('excluded_nodes') or rec.get('excluded_modules') or [])} layers" \
        if (rec.get("excluded_nodes") or rec.get("excluded_modules")) else ""
    print(f"{PROG}: {name} {b.value}: {dest} ({cal['method']}, {cal['num_images']} images"
          f"{', per-channel' if cal['per_channel'] else ', per-tensor'}{extra}); runtime graph: "
          f"{rt.get('depthwise_int8', 0)} depthwise int8 / {rt.get('depthwise_float', 0)} float, "
          f"{n_isl} float compute op(s){': ' + str(isl) if n_isl else ''}"
          + (f" (MNN: {rt['int8_ops']} ops int8, {rt['float_ops']} float, "
             f"{rt['untyped_entries']} of unknown type)" if rt.get("untyped_entries") else ""))


if __name__ == "__main__":
    cli_entry(main, PROG)
