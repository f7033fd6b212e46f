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

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from export.card import RECIPE_TAGS, int8_key, load_card
from export.litert_layout import add_flag, to_argv
from zoo.clikit import make_parser
from zoo.util import ArmqError, cli_entry

from .common import (CONCRETE_BACKENDS, Backend, Method, ModelRef, QuantError,
                     backend_for_path)
from .config import QuantConfig, Recipe
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


def parser() -> argparse.ArgumentParser:
    """The flags of `python -m quant.ptq` (each one a field of quant.api.PtqOptions)."""
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .api import PtqOptions, quantize

    quantize(args.model, args.calib, PtqOptions.from_args(args), args.out)
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
