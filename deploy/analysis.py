"""Numbers and sentences derived from results.json: the report's table rows,
INT8-vs-FP32 and vs-baseline speed-ups (android_bench.compare's definitions),
the Table 8 comparison and the rule-based explanation of every model.

Pure functions of the results document; every key may be missing (a failed
stage leaves holes) and then the derived value is None, never an exception.

Speed-up definitions (as android_bench.compare):
    measured   = baseline median latency / model median latency
    instr.     = baseline / model guest instructions per inference (QEMU)
    theoretical= MAC ratio (x 4 for INT8 vs an FP32 baseline; 4 for INT8 vs FP32)
    efficiency = measured / theoretical, from the instruction ratio on emulated
                 targets: their milliseconds are emulation time, not board latency.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from . import paper
from .collect import ARTIFACT_KEYS, fmt_prec

DEFINITIONS = ("measured speed-up = baseline median latency / model median latency; instr. = "
               "baseline / model guest instructions per inference (QEMU); theoretical = MAC ratio "
               "(x4 for INT8 vs an FP32 baseline; 4x for INT8 vs FP32: 32/8-bit operands); "
               "efficiency = measured / theoretical, computed from instruction counts on emulated "
               "targets, whose milliseconds are emulation time, not board latency. Latency CIs are "
               "distribution-free 95% intervals of the median (android_bench runner).")
INT8_THEORETICAL = 4.0
SLOW_INT8 = 1.1          # "INT8 not faster" below this speed-up


def g(d: Any, *path, default=None):
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        else:
            return default
    return d


def ratio(a, b) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not (a > 0 and b > 0) or math.isinf(a) or math.isinf(b):
        return None
    return a / b


def targets(doc: dict) -> list[dict]:
    ts = doc.get("targets")
    if isinstance(ts, list) and ts:
        return [t for t in ts if isinstance(t, dict) and "id" in t]
    return [{"id": t, "kind": t.split(":")[0], "emulated": t.startswith("qemu")}
            for t in g(doc, "config", "targets", default=[]) or []]


def is_emulated(doc: dict, target: str) -> bool:
    for t in targets(doc):
        if t["id"] == target:
            return bool(t.get("emulated"))
    return target.startswith("qemu")


def models(doc: dict) -> dict[str, dict]:
    m = doc.get("models")
    return m if isinstance(m, dict) else {}


def short_name(tag: str, m: dict) -> str:
    """shufflenet_v1_g3_w0.5_imagenet -> 'shufflenet_v1 0.5x g3' style labels for plots."""
    v = m.get("variant") or {}
    name = v.get("model") or m.get("name") or tag
    p = v.get("params") or {}
    bits = [name]
    if "width" in p:
        bits.append(f"{p['width']:g}x")
    if "groups" in p:
        bits.append(f"g{p['groups']}")
    return " ".join(bits)


def artifact_keys(m: dict) -> list[str]:
    keys = set((m.get("artifacts") or {}).keys())
    for b in (m.get("bench") or {}).values():
        if isinstance(b, dict):
            keys.update(b.keys())
    return [k for k in ARTIFACT_KEYS if k in keys]


def failed_stage(doc: dict, tag: str | None, kinds: Iterable[str], target: str | None = None) -> dict | None:
    for s in doc.get("stages") or []:
        if s.get("model") == tag and s.get("kind") in kinds and \
                (target is None or s.get("target") == target) and s.get("status") not in ("ok",):
            return s
    return None


# ---- the big table ------------------------------------------------------------------------

def rows(doc: dict) -> list[dict]:
    """One row per model x format x precision x target."""
    out = []
    for tag, m in models(doc).items():
        acc = g(m, "accuracy", "results", default={}) or {}
        keys = artifact_keys(m)
        if not keys:
            st = failed_stage(doc, tag, ("export_onnx", "export_tflite", "weights", "cost"))
            out.append({"model": tag, "label": short_name(tag, m), "key": None, "format": "-",
                        "precision": "-", "target": "-", "status": st.get("status") if st else "not run",
                        "reason": (st or {}).get("reason")})
            continue
        for key in keys:
            fmt, prec = fmt_prec(key)
            art = g(m, "artifacts", key, default={}) or {}
            a = acc.get(key) or {}
            for t in targets(doc):
                b = g(m, "bench", t["id"], key)
                row = {"model": tag, "label": short_name(tag, m), "key": key, "format": fmt,
                       "precision": prec, "target": t["id"], "emulated": bool(t.get("emulated")),
                       "size_bytes": art.get("size_bytes") or (b or {}).get("size_bytes"),
                       "top1": a.get("top1"), "top5": a.get("top5"), "agreement": a.get("agreement"),
                       "agreement_ref": a.get("ref"), "sqnr_db": a.get("sqnr_db"),
                       "warnings": list(art.get("warnings") or []), "notes": list(art.get("notes") or [])}
                if isinstance(b, dict):
                    row.update(status="ok", median_ms=b.get("median_ms"), ci95_ms=b.get("ci95_ms"),
                               instructions=b.get("instructions"), runtime=b.get("runtime"),
                               clock=b.get("clock"), features=b.get("features") or {},
                               cpu=b.get("cpu"))
                    row["emulated"] = bool(b.get("emulated", row["emulated"]))
                    for w in b.get("warnings") or []:
                        if w.startswith("emulated"):
                            continue
                        short = "no dot-product instructions (INT8 falls back to widening multiplies)" \
                            if "dot-product" in w else w
                        if short not in row["warnings"]:
                            row["warnings"].append(short)
                else:
                    fail = next((f for f in g(m, "bench_failures", t["id"], default=[]) or []
                                 if f.get("key") == key), None)
                    st = failed_stage(doc, tag, ("bench",), t["id"])
                    row["status"] = "failed" if fail or (st and st.get("status") == "failed") else \
                        (st.get("status") if st else "not run")
                    row["reason"] = (fail or {}).get("error") or (st or {}).get("reason")
                out.append(row)
    return out


# ---- speed-ups ----------------------------------------------------------------------------

def bench(m: dict, target: str, key: str) -> dict | None:
    b = g(m, "bench", target, key)
    return b if isinstance(b, dict) else None


def speed(b: dict | None, emulated: bool) -> float | None:
    """The per-inference cost compared across models: ms, or instructions when emulated."""
    if b is None:
        return None
    return b.get("instructions") if emulated else b.get("median_ms")


def int8_speedups(doc: dict) -> list[dict]:
    """FP32 / INT8 per model x format x target."""
    out = []
    for tag, m in models(doc).items():
        for fmt in ("onnx", "tflite"):
            for t in targets(doc):
                fp, q = bench(m, t["id"], fmt), bench(m, t["id"], f"{fmt}_int8")
                if fp is None or q is None:
                    continue
                emu = bool(t.get("emulated"))
                lat = ratio(fp.get("median_ms"), q.get("median_ms"))
                ins = ratio(fp.get("instructions"), q.get("instructions"))
                lo = hi = None
                if fp.get("ci95_ms") and q.get("ci95_ms"):
                    lo = ratio(fp["ci95_ms"][0], q["ci95_ms"][1])
                    hi = ratio(fp["ci95_ms"][1], q["ci95_ms"][0])
                main = ins if emu else lat
                out.append({"model": tag, "label": short_name(tag, m), "format": fmt,
                            "target": t["id"], "emulated": emu, "latency_ratio": lat,
                            "latency_range": [lo, hi] if lo and hi else None,
                            "instr_ratio": ins, "speedup": main,
                            "efficiency": ratio(main, INT8_THEORETICAL),
                            "features": q.get("features") or {}})
    return out


def baseline_pairs(doc: dict) -> list[dict]:
    """Every model vs the baseline, per target and format (FP32 and INT8 vs FP32 baseline)."""
    base = doc.get("baseline")
    ms = models(doc)
    if not base or base not in ms:
        return []
    bm = ms[base]
    bmacs = g(bm, "cost", "macs")
    out = []
    for tag, m in ms.items():
        if tag == base:
            continue
        macs = g(m, "cost", "macs")
        theo = ratio(bmacs, macs)
        for t in targets(doc):
            emu = bool(t.get("emulated"))
            for fmt in ("onnx", "tflite"):
                bfp = bench(bm, t["id"], fmt)
                if bfp is None:
                    continue
                for key in (fmt, f"{fmt}_int8"):
                    b = bench(m, t["id"], key)
                    if b is None:
                        continue
                    int8 = key.endswith("int8")
                    th = None if theo is None else theo * (INT8_THEORETICAL if int8 else 1.0)
                    lat = ratio(bfp.get("median_ms"), b.get("median_ms"))
                    ins = ratio(bfp.get("instructions"), b.get("instructions"))
                    main = ins if emu else lat
                    out.append({"model": tag, "label": short_name(tag, m), "key": key,
                                "format": fmt, "precision": "INT8" if int8 else "FP32",
                                "target": t["id"], "emulated": emu, "macs": macs,
                                "base_macs": bmacs, "theoretical": th, "latency_ratio": lat,
                                "instr_ratio": ins, "measured": main,
                                "efficiency": ratio(main, th)})
    return out


def table8(doc: dict) -> list[dict]:
    """Our FP32 vs-baseline numbers beside the paper's, for models Table 8 lists."""
    ms = models(doc)
    base = doc.get("baseline")
    if not base or base not in ms:
        return []
    pairs = [p for p in baseline_pairs(doc) if p["precision"] == "FP32"]
    out = []
    for tag, m in list(ms.items()):
        v = m.get("variant") or {}
        row = paper.match(str(v.get("model")), v.get("params") or {})
        rec = {"model": tag, "label": short_name(tag, m), "macs": g(m, "cost", "macs"),
               "dataset": v.get("dataset"), "input_size": g(m, "cost", "input_size"),
               "is_baseline": tag == base, "paper": None, "measured": {}}
        if row is not None:
            ps = paper.paper_speedups(row)
            rec["paper"] = {"label": row["label"], "mflops": row["mflops"], "err": row["err"],
                            "ms224": row["ms"][0], "theoretical": ps["theoretical"],
                            "actual_224": ps["actual_224"], "actual": ps["actual"],
                            "efficiency_224": ps["efficiency_224"], "verified": row["verified"]}
        rec["theoretical"] = ratio(g(ms[base], "cost", "macs"), rec["macs"]) if tag != base else 1.0
        for p in pairs:
            if p["model"] == tag:
                rec["measured"].setdefault(p["target"], {})[p["format"]] = {
                    "speedup": p["measured"], "efficiency": p["efficiency"],
                    "emulated": p["emulated"], "latency_ratio": p["latency_ratio"],
                    "instr_ratio": p["instr_ratio"]}
        out.append(rec)
    out.sort(key=lambda r: (r["macs"] is None, r["macs"] or 0))
    return out


# ---- explanations -------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def _no_dotprod(features: dict, target: str) -> bool:
    if target.startswith("qemu"):
        return not features.get("dotprod")
    return False


def explain(doc: dict, tag: str) -> list[str]:
    """Short sentences about one model, each a rule over the data."""
    m = models(doc).get(tag) or {}
    out: list[str] = []
    w = m.get("weights") or {}
    if w.get("kind") == "random":
        out.append("Random-init weights (nothing shipped for this variant): accuracy is not "
                   "measured; cost, size and speed are those of the trained network.")
    # INT8 vs FP32 per target
    sp = [s for s in int8_speedups(doc) if s["model"] == tag]
    for s in sp:
        fmt = "ONNX Runtime" if s["format"] == "onnx" else "TFLite"
        unit = "instructions, emulated" if s["emulated"] else "latency"
        v = s["speedup"]
        if v is None:
            continue
        if v < SLOW_INT8:
            why = []
            if _no_dotprod(s["features"], s["target"]):
                why.append("no dotprod")
            prof = g(m, "profile", f"{s['format']}_int8", "categories", "quantize/dequantize", "pct")
            if not s["emulated"] and isinstance(prof, (int, float)) and prof >= 5:
                why.append(f"quantize/dequantize ops take {prof:.0f}% of its time")
            warns8 = g(m, "artifacts", f"{s['format']}_int8", "warnings", default=[]) or []
            fl = [x for x in warns8 if "float" in x]
            if fl:
                why.append(fl[0])
            rt_tr = g(m, "artifacts", f"{s['format']}_int8", "runtime_transposes")
            fp_tr = g(m, "artifacts", s["format"], "transposes")
            if s["target"].startswith("qemu") and isinstance(rt_tr, int) and isinstance(fp_tr, int) \
                    and rt_tr > fp_tr:
                why.append(f"its ARM64 graph runs {rt_tr} Transposes ({fp_tr} in FP32: NHWC layout "
                           f"changes around the channel shuffles)" if "shufflenet" in
                           str(g(m, "variant", "model", default="")) else
                           f"its ARM64 graph runs {rt_tr} Transposes ({fp_tr} in FP32)")
            out.append(f"INT8 not faster on {s['target']} ({fmt}: {v:.2f}x FP32 {unit})"
                       + (f": {'; '.join(why)}." if why else "."))
        else:
            out.append(f"INT8 {v:.1f}x faster than FP32 on {s['target']} ({fmt}, {unit}; "
                       f"{v / INT8_THEORETICAL:.0%} of the 4x that 8-bit operands promise"
                       + ("; no dotprod on this CPU" if _no_dotprod(s["features"], s["target"])
                          else "") + ").")
    # dotprod: a76 vs a72 INT8 instruction counts
    for fmt in ("onnx", "tflite"):
        a72, a76 = bench(m, "qemu:cortex-a72", f"{fmt}_int8"), bench(m, "qemu:cortex-a76", f"{fmt}_int8")
        r = ratio((a72 or {}).get("instructions"), (a76 or {}).get("instructions"))
        if r and abs(r - 1) > 0.05:
            out.append(f"{'ONNX Runtime' if fmt == 'onnx' else 'TFLite'} INT8 needs {r:.2f}x "
                       f"{'more' if r > 1 else 'fewer'} instructions on cortex-a72 than on cortex-a76"
                       f"{' (the a76 has the dot-product extension)' if r > 1 else ''}.")
    # profile: shuffle / transposes, depthwise vs MACs
    prof = g(m, "profile", "onnx") or {}
    cats = prof.get("categories") or {}
    tr = prof.get("transposes") or {}
    if tr.get("nodes"):
        shuffle_word = "from channel shuffle " if "shufflenet" in str(g(m, "variant", "model", default="")) else ""
        out.append(f"{tr['nodes']} Transpose{'s' if tr['nodes'] != 1 else ''} {shuffle_word}cost "
                   f"{tr.get('pct', 0):.0f}% of FP32 latency (all data movement - transpose, reshape, "
                   f"layout reorders: {_pct(g(cats, 'shuffle/transpose', 'pct'))}; host profile).")
    by_op = g(m, "cost", "by_op") or {}
    macs = g(m, "cost", "macs")
    dw_macs = g(by_op, "dwconv", "macs")
    dw_pct = g(cats, "depthwise", "pct")
    if macs and dw_macs and isinstance(dw_pct, (int, float)) and dw_pct > 0:
        share = 100.0 * dw_macs / macs
        out.append(f"Depthwise convolutions: {share:.1f}% of the MACs, {dw_pct:.0f}% of FP32 time "
                   f"({dw_pct / share:.1f}x their share: little arithmetic per byte moved).")
    # accuracy
    acc = g(m, "accuracy", "results", default={}) or {}
    for fmt in ("onnx", "tflite"):
        fp, q = acc.get(fmt) or {}, acc.get(f"{fmt}_int8") or {}
        if fp.get("top1") is not None and q.get("top1") is not None:
            d = fp["top1"] - q["top1"]
            tag_ = "ONNX Runtime" if fmt == "onnx" else "TFLite"
            delta = "no change" if abs(d) < 0.005 else f"{'-' if d > 0 else '+'}{abs(d):.2f} pt"
            msg = (f"{tag_} INT8 top-1 {q['top1']:.2f}% vs FP32 {fp['top1']:.2f}% "
                   f"({delta}; agrees with FP32 on "
                   f"{q.get('agreement', float('nan')):.1f}% of images).")
            if d > 1.0:
                msg += " More than 1 pt lost: see the calibration notes."
            out.append(msg)
    # size
    arts = m.get("artifacts") or {}
    for fmt in ("onnx", "tflite"):
        r = ratio(g(arts, fmt, "size_bytes"), g(arts, f"{fmt}_int8", "size_bytes"))
        if r:
            out.append(f"{'ONNX' if fmt == 'onnx' else 'TFLite'} INT8 file is {r:.1f}x smaller "
                       f"({_mb(g(arts, fmt, 'size_bytes'))} -> {_mb(g(arts, f'{fmt}_int8', 'size_bytes'))}).")
    # TFLite conversion transposes
    for w_ in g(arts, "tflite", "warnings", default=[]) or []:
        if "TRANSPOSE" in w_:
            out.append(f"TFLite FP32: {w_}.")
    # baseline
    for p in baseline_pairs(doc):
        if p["model"] == tag and p["precision"] == "FP32" and p["format"] == "onnx" and \
                p["measured"] and p["theoretical"]:
            unit = "instruction count, emulated" if p["emulated"] else "latency"
            bname = short_name(doc["baseline"], models(doc).get(doc["baseline"]) or {})
            out.append(f"vs {bname} on {p['target']}: {p['theoretical']:.1f}x fewer MACs, "
                       f"{p['measured']:.1f}x faster ({unit}), efficiency {p['efficiency']:.2f}.")
    row = paper.match(str(g(m, "variant", "model")), g(m, "variant", "params", default={}) or {})
    if row is not None and doc.get("baseline") and tag != doc.get("baseline"):
        ps = paper.paper_speedups(row)
        out.append(f"Paper (Table 8, Snapdragon 820): {ps['theoretical']:.1f}x fewer MFLOPs than "
                   f"AlexNet, {ps['actual_224']:.1f}x faster at 224x224, efficiency "
                   f"{ps['efficiency_224']:.2f}.")
    # failures
    for s in doc.get("stages") or []:
        if s.get("model") == tag and s.get("status") == "failed":
            out.append(f"Stage {s['kind']}{' ' + s['target'] if s.get('target') else ''} failed: "
                       f"{s.get('reason')}")
    return out


def _mb(n) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"
