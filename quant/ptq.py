"""Post-training INT8 quantization of exported models, for ONNX Runtime and TFLite.

    python -m quant.ptq --calib DIR [--model artifacts/<name>.onnx|.tflite|<name>]
        [--backend ort|tflite|all] [--method minmax|entropy|percentile|auto]
        [--num-calib 500] [--per-tensor] [--eval DIR] [--fallback N] [--max-drop 0.5]
        [--out artifacts/]

Without --model, every model card in --out is quantized. Calibration images
(a folder, an ImageFolder tree or a .tar/.zip of one) are preprocessed as the
model card says. Writes `<name>.int8.onnx` (QDQ, int8 activations + per-channel
int8 weights) and/or `<name>.int8.tflite` (full integer, via litert-torch PT2E),
atomically, and records them in the card with the calibration details and an
audit of what the runtime really executes.

--method auto calibrates with each method and keeps the best on held-out images
split off the calibration source (never the --eval set). --fallback N keeps up
to N of the most sensitive layers (worst SQNR between float and INT8
activations) in float until the held-out accuracy drop is within --max-drop.
--eval DIR evaluates float and INT8 of every backend on a labelled set, prints
one table and writes it into the card's `accuracy`.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from export.card import load_card, save_card
from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_path, check_writable_dir, cli_entry

from .common import (CONCRETE_BACKENDS, CONCRETE_METHODS, Backend, Method, ModelRef,
                     QuantError, backend_for_path, one_line_warnings, resolve_models)

PROG = "quant.ptq"
DEBUG_IMAGES = 32        # images for the per-layer SQNR analysis
REPORT_LAYERS = 8        # worst layers listed when INT8 misses the budget


def _bar(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=None)


@dataclass
class Holdout:
    x: np.ndarray
    labels: np.ndarray | None          # None: score by agreement with the float model
    float_logits: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return "top1" if self.labels is not None else "agreement"

    def score(self, logits: np.ndarray, ref: np.ndarray) -> dict:
        from .metrics import agreement, sqnr_db, topk
        s = {"agreement": round(agreement(logits, ref), 3), "sqnr_db": round(sqnr_db(ref, logits), 2)}
        if self.labels is not None:
            s["top1"] = round(topk(logits, self.labels, 1), 3)
        s["metric"] = s[self.metric]
        return s

    def float_metric(self, ref: np.ndarray) -> float:
        from .metrics import topk
        return topk(ref, self.labels, 1) if self.labels is not None else 100.0


def _better(a: dict, b: dict | None) -> bool:
    return b is None or (a["metric"], a["agreement"], a["sqnr_db"]) > \
        (b["metric"], b["agreement"], b["sqnr_db"])


# ---- ONNX Runtime ------------------------------------------------------------------------------


def quantize_ort(ref: ModelRef, calib, hold: Holdout | None, args, work: Path) -> tuple[Path, dict]:
    from . import onnx_ptq as op
    from .evaluate import run_model

    src = ref.artifact("onnx")
    if src is None:
        raise QuantError(f"{ref.name}: the card has no float ONNX model (run `python -m export.onnx`)")
    op.check_float_model(src, calib.shape[1:])
    pre = work / "pre.onnx"
    op.preprocess(src, pre)
    shuffles = op.nhwc_channel_shuffle(pre)
    input_name, batch, _ = op.model_input(pre)
    methods = list(CONCRETE_METHODS) if args.method is Method.AUTO else [args.method]
    ref_hold = None
    if hold is not None:
        ref_hold = run_model(pre, hold.x, "float holdout", arm=False)
        hold.float_logits["onnx"] = ref_hold
    tried, best, ranges_of = {}, None, {}
    for m in methods:
        t0 = time.perf_counter()
        with _bar(len(calib), f"{ref.name} ort calibrate {m.value}") as bar:
            ranges_of[m] = op.calibrate(pre, calib, m, input_name, batch, work, bar.update)
        out = work / f"q_{m.value}.onnx"
        op.quantize(pre, ranges_of[m], m, out, per_channel=not args.per_tensor,
                    activations=args.activations)
        info = {"seconds": round(time.perf_counter() - t0, 1)}
        if hold is not None:
            info.update(hold.score(run_model(out, hold.x, f"holdout {m.value}", arm=False), ref_hold))
        tried[m.value] = info
        if best is None or (hold is not None and _better(info, tried[best.value])):
            best = m
    chosen = work / f"q_{best.value}.onnx"
    details: dict = {"method": best.value, "tried": tried if len(methods) > 1 else None,
                     "nhwc_channel_shuffles": shuffles}
    excluded: list[str] = []
    layer_report: list[dict] = []
    if hold is not None:
        drop = hold.float_metric(ref_hold) - tried[best.value]["metric"]
        details["holdout_drop"] = details["holdout_drop_before_fallback"] = round(drop, 3)
        if drop > args.max_drop or args.fallback > 0:
            dbg_x = calib[:: max(1, len(calib) // DEBUG_IMAGES)][:DEBUG_IMAGES]
            layer_report = op.layer_errors(pre, chosen, dbg_x, input_name, batch, work)
            if drop > args.max_drop:
                print(f"{PROG}: {ref.name} ort: held-out drop {drop:.2f} pt > {args.max_drop}; "
                      "worst layers (SQNR dB): " + ", ".join(
                          f"{r['node']} {r['score']}" for r in layer_report[:5]), file=sys.stderr)
            if drop > args.max_drop and args.fallback > 0:
                chosen, excluded, drop = _ort_fallback(ref, pre, ranges_of[best], best, layer_report,
                                                       hold, ref_hold, drop, args, work)
                details["holdout_drop"] = round(drop, 3)
    details["excluded_nodes"] = excluded
    if layer_report:
        details["worst_layers"] = layer_report[:max(REPORT_LAYERS, args.fallback)]
    return chosen, details


def _ort_fallback(ref, pre, ranges, method, report, hold, ref_hold, drop, args, work):
    """Greedy: try the worst layers in order, keep each one in float if that lowers the
    held-out drop, stop when the drop fits or N layers were tried."""
    from . import onnx_ptq as op
    from .evaluate import run_model

    chosen, excluded = work / f"q_{method.value}.onnx", []
    candidates = [r["node"] for r in report if r["op"] in op.LAYER_OPS]
    for i, node in enumerate(candidates[: args.fallback]):
        out = work / f"q_fallback_{i}.onnx"
        nodes = sorted({n for e in excluded + [node] for n in op.exclusion_for(pre, e)})
        op.quantize(pre, ranges, method, out, per_channel=not args.per_tensor,
                    activations=args.activations, nodes_to_exclude=nodes)
        s = hold.score(run_model(out, hold.x, f"fallback {i + 1}", arm=False), ref_hold)
        new_drop = hold.float_metric(ref_hold) - s["metric"]
        kept = new_drop < drop
        print(f"{PROG}: {ref.name} ort: {node} in float: held-out drop {drop:.2f} -> "
              f"{new_drop:.2f} pt ({'kept' if kept else 'no gain, stays int8'})", file=sys.stderr)
        if kept:
            excluded.append(node)
            chosen, drop = out, new_drop
        if drop <= args.max_drop:
            break
    return chosen, excluded, drop


# ---- TFLite ------------------------------------------------------------------------------------


def quantize_tflite(ref: ModelRef, model, calib, hold: Holdout | None, args, work: Path,
                    ort_details: dict | None) -> tuple[Path, dict]:
    from . import tflite_ptq as tp
    from .evaluate import run_model

    parity = tp.check_parity(model, ref.artifact("onnx"), calib[:4], ref.name)
    layout = str(ref.card.artifacts.get("tflite", {}).get("layout") or args.tflite_layout).lower()
    methods = list(CONCRETE_METHODS) if args.method is Method.AUTO else [args.method]
    ref_hold = None
    if hold is not None:
        ref_hold = tp.run_simulated(model, hold.x)
        hold.float_logits["torch"] = ref_hold
    tried, best, sims = {}, None, {}
    for m in methods:
        t0 = time.perf_counter()
        with _bar(len(calib), f"{ref.name} tflite calibrate {m.value}") as bar:
            sims[m] = tp.calibrate(model, calib, m, not args.per_tensor, progress=bar.update,
                                   layout=layout, annotations=args.pt2e_annotations)
        info = {"seconds": round(time.perf_counter() - t0, 1)}
        if hold is not None:
            info.update(hold.score(tp.run_simulated(sims[m][1], hold.x), ref_hold))
        tried[m.value] = info
        if best is None or (hold is not None and _better(info, tried[best.value])):
            best = m
    details: dict = {"method": best.value, "tried": tried if len(methods) > 1 else None,
                     "selection": "PT2E simulated INT8 model on the held-out images",
                     "torch_vs_onnx_max_abs_diff": parity, "layout": layout.upper(),
                     "pt2e_annotations": args.pt2e_annotations}
    quantizer, converted = sims[best]
    excluded: list[str] = []
    if hold is not None:
        drop = hold.float_metric(ref_hold) - tried[best.value]["metric"]
        details["holdout_drop"] = details["holdout_drop_before_fallback"] = round(drop, 3)
        if drop > args.max_drop and args.fallback > 0:
            ranked = [tp.onnx_node_to_module(r["node"]) for r in (ort_details or {}).get("ranking", [])]
            ranked = [r for r in dict.fromkeys(ranked) if r]
            if not ranked:
                print(f"{PROG}: warning: {ref.name} tflite: no per-layer ranking (needs the ONNX "
                      "backend's analysis); no layer kept in float", file=sys.stderr)
            for i, mod in enumerate(ranked[: args.fallback]):
                with _bar(len(calib), f"fallback {i + 1}") as bar:
                    q, c = tp.calibrate(model, calib, best, not args.per_tensor, excluded + [mod],
                                        bar.update, layout, args.pt2e_annotations)
                s = hold.score(tp.run_simulated(c, hold.x), ref_hold)
                new_drop = hold.float_metric(ref_hold) - s["metric"]
                kept = new_drop < drop
                print(f"{PROG}: {ref.name} tflite: {mod} in float: held-out drop {drop:.2f} -> "
                      f"{new_drop:.2f} pt ({'kept' if kept else 'no gain, stays int8'})",
                      file=sys.stderr)
                if kept:
                    excluded.append(mod)
                    quantizer, converted, drop = q, c, new_drop
                if drop <= args.max_drop:
                    break
            details["holdout_drop"] = round(drop, 3)
    details["excluded_modules"] = excluded
    out = work / "model.int8.tflite"
    tp.to_tflite(converted, quantizer, calib, out)
    if hold is not None:
        s = hold.score(run_model(out, hold.x, "holdout tflite"), ref_hold)
        details["holdout_tflite"] = s
    return out, details


# ---- driver ------------------------------------------------------------------------------------


def _audit(path: Path, backend: Backend) -> dict:
    """export.audit's static view (when present) plus what the runtime executes."""
    res: dict = {}
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


def _backends_for(ref: ModelRef, requested: Backend | None, given: Path | None) -> list[Backend]:
    """Explicit backend: that one (or fail). No --backend: the format of the given model
    file, else every backend the model can use. `all`: every usable backend."""
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
        return [requested]
    out = []
    if ref.artifact("onnx") is not None:
        out.append(Backend.ORT)
    src = ref.card.source
    if available() is None and (src.get("checkpoint") or src.get("weights") == "random"):
        out.append(Backend.TFLITE)
    if not out:
        raise QuantError(f"{ref.name}: nothing to quantize (no float ONNX model, and no torch "
                         "source for the TFLite backend)")
    return out


def _install(tmp_model: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(tmp_model, tmp)


def _evaluate_all(ref: ModelRef, eval_images, produced: dict[Backend, Path], method_of: dict,
                  args) -> list[dict]:
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
        rows.append(dict(r, key=b.int8_key, model=ref.name, backend=b.value, precision="int8",
                         method=method_of.get(b), drop=drop))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("--calib", required=True, help="calibration images: folder, ImageFolder tree, .tar/.zip")
    p.add_argument("--model", help="artifacts/<name>.onnx|.tflite|.json or a model name in --out "
                   "(default: every model card in --out)")
    p.add_argument("--backend", type=Backend, choices=list(Backend), default=None,
                   metavar="{ort,tflite,all}", help="default: the format of --model's file, "
                   "else every backend the model can use")
    p.add_argument("--method", type=Method, choices=list(Method), default=Method.MINMAX,
                   metavar="{minmax,entropy,percentile,auto}", help="activation range calibration "
                   "(default minmax)")
    p.add_argument("--num-calib", type=int, default=500, help="calibration images (default 500)")
    p.add_argument("--holdout", type=int, default=500,
                   help="extra images of --calib held out to pick a method / check the drop "
                   "(default 500; used by --method auto, --fallback and --max-drop)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per channel)")
    p.add_argument("--activations", choices=("int8", "uint8"), default="int8",
                   help="ONNX activation type: int8 (ARM64, default) or uint8 (x86 servers)")
    p.add_argument("--tflite-layout", choices=("nhwc", "nchw"), default="nhwc",
                   help="TFLite input layout when the card has no float TFLite model to follow "
                   "(default nhwc)")
    p.add_argument("--pt2e-annotations", choices=("armq", "litert"), default="armq",
                   help="TFLite: armq's quantizer (default) or litert-torch's PT2EQuantizer as "
                   "shipped, which leaves some ops in float (for comparison)")
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

    from .calib import check_source, list_images, load_set, split_holdout

    out_dir = Path(args.out)
    given = Path(args.model) if args.model else None
    refs = resolve_models(args.model, out_dir)
    plans = [(r, _backends_for(r, args.backend, given)) for r in refs]
    calib_src = check_source(args.calib, "--calib")
    eval_src = check_source(args.eval, "--eval") if args.eval else None
    if eval_src is not None:
        from .common import check_labels
        folders = sorted({r.label for r in list_images(eval_src) if r.label is not None})
        if not folders:
            raise QuantError(f"--eval {eval_src} is not a labelled ImageFolder tree")
        for r, _ in plans:
            check_labels(folders, r.card, f"--eval {eval_src}")
    for r, _ in plans:
        check_writable_dir(r.card_path.parent)
    check_writable_dir(out_dir)

    need_holdout = args.method is Method.AUTO or args.fallback > 0
    interactive = sys.stderr.isatty()
    # The TFLite backend starts from torch: rebuild (and check) those models before any work.
    torch_models = {}
    for r, backends in plans:
        if Backend.TFLITE in backends:
            from .tflite_ptq import build_torch_model
            torch_models[r.name] = build_torch_model(r)
    for ref, backends in plans:
        t_model = time.perf_counter()
        n_hold = args.holdout if need_holdout else 0
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
        details_of: dict[Backend, dict] = {}
        with tempfile.TemporaryDirectory(prefix="armq-ptq-") as td:
            work = Path(td)
            for b in backends:
                wb = work / b.value
                wb.mkdir()
                t0 = time.perf_counter()
                if b is Backend.ORT:
                    tmp_model, det = quantize_ort(ref, calib, hold, args, wb)
                else:
                    tmp_model, det = quantize_tflite(ref, torch_models[ref.name], calib, hold, args,
                                                     wb, details_of.get(Backend.ORT))
                dest = out_dir / f"{ref.name}.int8{b.suffix}"
                audit = _audit(tmp_model, b)
                calib_info = {"method": det.pop("method"), "requested": args.method.value,
                              "num_images": int(len(calib)), "source": str(calib_src),
                              "skipped_files": data.skipped,
                              "holdout_images": int(len(hold.x)) if hold else 0,
                              "holdout_metric": hold.metric if hold else None,
                              "per_channel": not args.per_tensor}
                tried = det.pop("tried", None)
                if tried:
                    calib_info["tried"] = tried
                rec = {"calibration": calib_info, "audit": audit,
                       "seconds": round(time.perf_counter() - t0, 1), **det}
                if b is Backend.ORT:
                    import onnxruntime
                    rec.update(format="QDQ", activations=args.activations, weights="int8 symmetric",
                               runtime=f"onnxruntime {onnxruntime.__version__}")
                    rec["ranking"] = rec.pop("worst_layers", [])
                else:
                    from .runners import TfliteRunner
                    rec.update(format="TFLite full integer (PT2E)", io=TfliteRunner(tmp_model).io)
                _install(tmp_model, dest)
                produced[b] = dest
                details_of[b] = rec
                # Record at once: the card always describes the INT8 files on disk.
                card = load_card(ref.card_path)
                card.record_artifact(ref.card_path, b.int8_key, dest, **rec)
                card.accuracy.pop(b.int8_key, None)  # a new model: old numbers are stale
                save_card(card, ref.card_path)
                _print_audit(ref.name, b, dest, rec)
        method_of = {b: d["calibration"]["method"] for b, d in details_of.items()}
        rows = []
        if eval_src is not None:
            ev = load_set(eval_src, ref.card, limit=args.eval_limit, require_labels=True,
                          progress=interactive, what="--eval")
            rows = _evaluate_all(ref, ev, produced, method_of, args)
        if rows:
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
          f"{n_isl} float compute op(s){': ' + str(isl) if n_isl else ''}")


if __name__ == "__main__":
    cli_entry(main, PROG)
