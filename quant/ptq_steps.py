"""The steps of post-training INT8 that quant.api.quantize runs for each model: which
backends a model can use, one backend through the policy, the card's recipe and audit
records, the optional evaluation table. Library code, apart from the CLI (quant/ptq.py:
flags -> quant.api); its messages name `python -m quant.ptq`, whose work this is."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from export.card import RECIPE_TAGS, int8_key, load_card
from zoo.util import ArmqError

from .common import CONCRETE_BACKENDS, Backend, ModelRef, QuantError, backend_for_path
from .config import QuantConfig, Recipe
from .policy import Holdout, Policy

PROG = "quant.ptq"


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


def audit(path: Path, backend: Backend) -> dict:
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


def backends_for(ref: ModelRef, requested: Backend | None, given: Path | None,
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
    if ref.artifact("mnn") is not None and mnn_available():
        out.append(Backend.MNN)
    if not out:
        raise QuantError(f"{ref.name}: nothing to quantize (no float ONNX model, and no torch "
                         "source for the TFLite backend)")
    return out


def mnn_available() -> bool:
    from export.runtime import RuntimeMissing, mnn_tools
    try:
        mnn_tools()
    except RuntimeMissing:
        return False
    return True


def evaluate_all(ref: ModelRef, eval_images, produced: dict[Backend, Path],
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


def print_audit(name: str, b: Backend, dest: Path, rec: dict) -> None:
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
