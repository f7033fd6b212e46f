"""Read what the stages wrote (model cards, bench JSON, accuracy/profile JSON) into
the compact records results.json keeps. Torch-free; every key is optional, since
the stages' formats evolve: a missing key gives a missing value, never a crash."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.util import ArmqError, load_json

from export.card import PARITY_REFERENCE, artifact_key as artifact_key_of, key_format, \
    key_is_int8, key_recipe, ordered_keys
from export.formats import Precision, format_label

def format_name(key: str) -> str:
    """The format label of an artifact key (export.formats; a newer format upper-cased)."""
    return format_label(key_format(key))


def fmt_prec(key: str) -> tuple[str, str]:
    """("ONNX", "INT8 U8S8") for onnx_int8_u8s8: derived from the key, for any format."""
    if not key_is_int8(key):
        return format_name(key), Precision.FP32.label
    tag = key_recipe(key)
    return format_name(key), Precision.INT8.label + (f" {tag.upper()}" if tag else "")


def _get(d: Any, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def read_json(path: Path) -> Any | None:
    """A stage's output file, or None when it is missing or unusable (bounded like any JSON)."""
    try:
        return load_json(path)
    except ArmqError:
        return None


# ---- model cards ---------------------------------------------------------------------------

def audit_notes(key: str, det: dict, onnx_transposes: int | None) -> tuple[list[str], list[str]]:
    """(warnings, notes) a person should see about one model file, from its card entry."""
    warns: list[str] = []
    notes: list[str] = []
    audit = det.get("audit") or {}
    graph = audit.get("graph") if isinstance(audit.get("graph"), dict) else audit
    runtime = audit.get("runtime") if isinstance(audit.get("runtime"), dict) else {}
    tr = graph.get("transpose_count")
    if isinstance(tr, int) and tr:
        if key.startswith("tflite") and isinstance(onnx_transposes, int) and tr > onnx_transposes:
            warns.append(f"{tr} TRANSPOSE op{'s' if tr != 1 else ''} ({tr - onnx_transposes} more "
                         "than the ONNX graph: added by the NHWC conversion)")
        else:
            notes.append(f"{tr} Transpose op{'s' if tr != 1 else ''}")
    dw = graph.get("depthwise") or {}
    if isinstance(dw, dict):
        n_as_conv = dw.get("depthwise_as_conv2d")
        if isinstance(n_as_conv, int) and n_as_conv:
            warns.append(f"{n_as_conv} depthwise conv(s) became CONV_2D (slow path)")
    if det.get("depthwise_preserved") is False and not any("CONV_2D" in w for w in warns):
        warns.append("depthwise convolutions not preserved")
    fco = graph.get("float_compute_ops")
    n_fco = len(fco) if isinstance(fco, list) else fco if isinstance(fco, int) else 0
    if key_is_int8(key) and n_fco:
        hist = graph.get("float_op_histogram") or {}
        what = ", ".join(f"{k} x{v}" for k, v in list(hist.items())[:4]) if isinstance(hist, dict) else ""
        warns.append(f"{n_fco} op(s) compute in float in the graph" + (f" ({what})" if what else ""))
    rt_float = runtime.get("float_compute")
    if key_is_int8(key) and isinstance(rt_float, int) and rt_float:
        isl = runtime.get("float_islands")
        warns.append(f"{rt_float} op(s) run in float in the runtime graph"
                     + (f": {str(isl)[:80]}" if isl else ""))
    rt_tr = runtime.get("transposes")
    if key_is_int8(key) and isinstance(rt_tr, int) and isinstance(onnx_transposes, int) \
            and key.startswith("onnx") and rt_tr > onnx_transposes:
        warns.append(f"{rt_tr} Transposes in the ARM64 runtime graph ({onnx_transposes} in FP32): "
                     "NHWC layout changes of the int8 kernels")
    dwf = runtime.get("depthwise_float")
    if key_is_int8(key) and isinstance(dwf, int) and dwf:
        warns.append(f"{dwf} depthwise conv(s) run in float")
    excl = det.get("excluded_nodes") or det.get("excluded_modules")
    if excl:
        notes.append(f"{len(excl)} layer(s) kept in float by the fallback")
    par = det.get("parity") or {}
    if isinstance(par.get("max_abs_diff"), (int, float)):
        ref = PARITY_REFERENCE.get(key.partition("_")[0], "torch")
        notes.append(f"parity vs {ref} max|diff| {par['max_abs_diff']:.1e}")
    cal = det.get("calibration") or {}
    if cal.get("method"):
        notes.append(f"calibration {cal.get('method')} on {cal.get('num_images', '?')} images")
    return warns, notes


def summarize_card(card_path: Path, run_dir: Path) -> dict:
    """The card's artifacts and accuracy entries as results.json keeps them."""
    card = read_json(card_path)
    if not isinstance(card, dict):
        return {}
    arts = card.get("artifacts") or {}
    onnx_tr = _get(arts, "onnx", "audit", "transpose_count")
    out: dict[str, Any] = {"card": _rel(card_path, run_dir), "artifacts": {}}
    for key in ordered_keys(arts):
        det = arts.get(key)
        if not isinstance(det, dict):
            continue
        path = card_path.parent / str(det.get("path", ""))
        warns, notes = audit_notes(key, det, onnx_tr)
        fmt, prec = fmt_prec(key)
        graph = _get(det, "audit", "graph") or det.get("audit") or {}
        out["artifacts"][key] = {
            "file": path.name, "path": _rel(path, run_dir), "format": fmt, "precision": prec,
            "size_bytes": det.get("size_bytes") if det.get("size_bytes") is not None
            else (path.stat().st_size if path.is_file() else None),
            "sha256": det.get("sha256"), "ops": det.get("ops") or {},
            "num_ops": graph.get("num_ops"), "transposes": graph.get("transpose_count"),
            "warnings": warns, "notes": notes,
            "layout": det.get("layout"), "seconds": det.get("seconds"),
            "runtime_transposes": _get(det, "audit", "runtime", "transposes"),
            "runtime_ops": _get(det, "audit", "runtime", "ops"),
        }
    for k in ("cost", "source", "variant"):
        if isinstance(card.get(k), dict):
            out[k] = card[k]
    return out


def _rel(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)


# ---- android_bench results -------------------------------------------------------------

def summarize_bench(doc: Any) -> tuple[dict[str, dict], list[dict]]:
    """{artifact key: summary} and failures from an `android_bench --json` document."""
    out: dict[str, dict] = {}
    fails: list[dict] = []
    if not isinstance(doc, dict):
        return out, fails
    for r in doc.get("results") or []:
        if not isinstance(r, dict):
            continue
        m = r.get("model") or {}
        fname = str(m.get("file") or Path(str(m.get("host_path", "?"))).name)
        key = artifact_key_of(fname)
        if key is None:
            continue
        tm = r.get("timing_ms") or {}
        tgt = r.get("target") or {}
        ins = r.get("instructions")
        per_inf = None
        spread = None
        if isinstance(ins, dict):
            per_inf = ins.get("per_inference")
            spread = ins.get("spread_pct")
        elif isinstance(ins, (int, float)):
            per_inf = ins
        cpu = _get(r, "system", "cpu") or {}
        feats = cpu.get("features") or {}
        rt = r.get("runtime") or {}
        ci = tm.get("median_ci95")
        out[key] = {
            "file": fname, "runtime": f"{rt.get('name', '?')} {rt.get('version', '')}".strip(),
            "threads": rt.get("threads"),
            "median_ms": tm.get("median") if tm.get("median") is not None else tm.get("mean"),
            "ci95_ms": list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None,
            "ci_coverage": tm.get("median_ci_coverage"),
            "p90_ms": tm.get("p90"), "mean_ms": tm.get("mean"), "std_ms": tm.get("std"),
            "runs": tm.get("runs"), "init_ms": tm.get("init"), "clock": tm.get("clock"),
            "emulated": bool(tgt.get("emulated")),
            "instructions": per_inf, "instructions_spread_pct": spread,
            "cpu": cpu.get("model"), "features": {k: v for k, v in feats.items() if v},
            "feature_source": cpu.get("feature_source"),
            "int8": bool(m.get("int8")), "warnings": [w for w in (r.get("warnings") or [])
                                                      if isinstance(w, str)],
            "size_bytes": m.get("size_bytes"),
        }
    for f in doc.get("failures") or []:
        if isinstance(f, dict):
            fails.append({"key": artifact_key_of(Path(str(f.get("model", ""))).name),
                          "file": Path(str(f.get("model", ""))).name, "error": f.get("error")})
    return out, fails


def summarize_profile(doc: Any, keep_nodes: int = 12) -> dict[str, dict]:
    """{artifact key: profile summary} from an android_bench.profile document."""
    out: dict[str, dict] = {}
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        return out
    for fname, p in models.items():
        key = artifact_key_of(fname)
        if key is None or not isinstance(p, dict):
            continue
        q = {k: v for k, v in p.items() if k != "nodes"}
        nodes = p.get("nodes") or []
        q["top_nodes"] = nodes[:keep_nodes] if isinstance(nodes, list) else []
        out[key] = q
    return out


def summarize_breakdown(doc: Any) -> dict | None:
    """The one target's record of a `python -m android_bench.latency_model --breakdown`
    output: the two files (name and artifact key) and the per-op-class rows, or its note."""
    ts = doc.get("targets") if isinstance(doc, dict) else None
    if not isinstance(ts, list) or not ts or not isinstance(ts[0], dict):
        return None
    out = {"fp32": {"file": doc.get("fp32"), "key": artifact_key_of(str(doc.get("fp32")))},
           "int8": {"file": doc.get("int8"), "key": artifact_key_of(str(doc.get("int8")))}}
    out.update({k: v for k, v in ts[0].items() if k != "target"})
    return out
