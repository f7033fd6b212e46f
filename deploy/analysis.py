"""Numbers derived from results.json: the report's table rows, INT8-vs-FP32 and
vs-baseline speed-ups and the Table 8 comparison (deploy/explain.py turns them
into sentences).

Pure functions of the results document; every key may be missing (a failed
stage leaves holes) and then the derived value is None, never an exception.

The speed-up arithmetic is android_bench.compare's, not a copy: every pair here
is a `compare.make_pair` of two `compare.Entry` built from the bench summaries
results.json keeps, so the report and `python -m android_bench.compare` (the
compare stage's bench/<target>/compare.json) give the same figures.
"""
from __future__ import annotations

from typing import Any, Iterable

from android_bench.compare import Entry, make_pair, ratio
from export.card import MODEL_FORMATS, artifact_key, key_format, \
    key_is_int8, key_recipe, ordered_keys
from export.formats import runtime_label

from . import paper
from .collect import fmt_prec

DEFINITIONS = ("speed-up = the measured figure: baseline / model median latency on real CPUs; on "
               "QEMU targets (EMULATED) baseline / model guest instructions per inference - "
               "emulated milliseconds are emulation time, so their ratio is never a speed-up. "
               "Two theories, never mixed: the MAC-ratio theory (baseline MACs / model MACs; "
               "ShuffleNet's Table 8: ~2.6x actual per 4x fewer MACs) for models against the "
               "baseline, and INT8's bit-width bound (4x: 32/8-bit operands, same MACs) for INT8 "
               "against FP32 of one model. efficiency = speed-up / theoretical. Latency CIs are "
               "distribution-free 95% intervals of the median (android_bench runner). "
               "Arithmetic: android_bench.compare.")
SLOW_INT8 = 1.1          # "INT8 not faster" below this speed-up
# Top-1 points INT8 may lose against the best FP32 file (same images) and still ship.
MAX_INT8_DROP = 1.0
# Best INT8 vs best FP32 below this: the report shows which op classes hold INT8 back.
# ShuffleNet's Sec. 4.5 rule, ~2.6x actual per 4x theoretical (deploy/paper.py).
INT8_GOAL = paper.ACTUAL_PER_4X
FORMATS = MODEL_FORMATS


def runtime_name(fmt: str) -> str:
    """'ONNX Runtime' for `onnx` (export.formats, the one home of the labels)."""
    return runtime_label(fmt)


def runtime_of(key: str) -> str:
    """`onnx_int8_u8s8` -> 'ONNX Runtime INT8 U8S8', `tflite` -> 'TFLite FP32': from the key
    alone, so runtimes added later (mnn, pte keys) need no entry here."""
    return f"{runtime_name(key_format(key))} {fmt_prec(key)[1]}"


def g(d: Any, *path, default=None):
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        else:
            return default
    return d


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
    if "part" in p:
        bits.append(f"P={p['part']}")
    if "depth" in p:
        bits.append(f"depth {p['depth']}")
    return " ".join(bits)


def artifact_keys(m: dict) -> list[str]:
    keys = set((m.get("artifacts") or {}).keys())
    for b in (m.get("bench") or {}).values():
        if isinstance(b, dict):
            keys.update(b.keys())
    return ordered_keys(keys)


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


# ---- speed-ups (android_bench.compare's arithmetic) ----------------------------------------

def bench(m: dict, target: str, key: str) -> dict | None:
    b = g(m, "bench", target, key)
    return b if isinstance(b, dict) else None


def speed(b: dict | None, emulated: bool) -> float | None:
    """The per-inference cost compared across models: ms, or instructions when emulated."""
    if b is None:
        return None
    return b.get("instructions") if emulated else b.get("median_ms")


def entry(tag: str, m: dict, t: dict, key: str) -> Entry | None:
    """A results.json bench summary as android_bench.compare's Entry."""
    b = bench(m, t["id"], key)
    if b is None:
        return None
    ci = b.get("ci95_ms")
    macs = g(m, "cost", "macs")
    return Entry(name=tag, file=str(b.get("file") or key), int8=key_is_int8(key),
                 setting=t["id"], latency_ms=b.get("median_ms"),
                 latency_ci=list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None,
                 instructions=b.get("instructions"),
                 macs=float(macs) if isinstance(macs, (int, float)) else None,
                 emulated=bool(t.get("emulated")))


def _pair_record(p) -> dict:
    rng = p.measured_range
    return {"emulated": p.emulated, "basis": p.basis, "speedup": p.speedup,
            "latency_ratio": p.measured, "instr_ratio": p.instr_ratio,
            "latency_range": list(rng) if rng and not p.emulated else None,
            "theoretical": p.theoretical, "mac_ratio": p.mac_ratio, "bit_width": p.bit_width,
            "efficiency": p.efficiency}


def bench_keys(m: dict, target: str) -> list[str]:
    """The artifact keys benchmarked on `target`, in card order."""
    b = g(m, "bench", target)
    return ordered_keys(k for k, v in b.items() if isinstance(v, dict)) if isinstance(b, dict) else []


def int8_key_for(m: dict, fmt: str, target: str | None = None) -> str:
    """The key of `fmt`'s INT8 file: the one benchmarked on `target`, else the first the
    model has (the default recipe first); `<fmt>_int8` when there is none (a lookup of it
    then finds nothing)."""
    if target is not None:
        keys = bench_keys(m, target)
    else:
        keys = ordered_keys([*(m.get("artifacts") or {}), *(g(m, "accuracy", "results") or {})])
    return next((k for k in keys if key_format(k) == fmt and key_is_int8(k)), f"{fmt}_int8")


def int8_speedups(doc: dict) -> list[dict]:
    """FP32 / INT8 per model x INT8 file x target, each INT8 file against the FP32 file of
    its own format (every recipe that ran); `speedup` is the measured figure (latency
    ratio, or instruction ratio when emulated); efficiency is against the bit-width 4x."""
    out = []
    for tag, m in models(doc).items():
        for t in targets(doc):
            for key in (k for k in bench_keys(m, t["id"]) if key_is_int8(k)):
                fmt = key_format(key)
                fp, q = entry(tag, m, t, fmt), entry(tag, m, t, key)
                if fp is None or q is None:
                    continue
                rec = {"model": tag, "label": short_name(tag, m), "format": fmt, "key": key,
                       "recipe": key_recipe(key), "target": t["id"],
                       "features": (bench(m, t["id"], key) or {}).get("features") or {}}
                rec.update(_pair_record(make_pair(q, fp, "int8 vs fp32")))
                out.append(rec)
    return out


def best_per_target(doc: dict) -> list[dict]:
    """Per model x target: the fastest FP32 file and the fastest INT8 file over every
    runtime that ran there, and the honest ratio between them (android_bench.compare's
    make_pair: latency on real CPUs, guest instructions on QEMU). A same-runtime ratio
    flatters a runtime whose FP32 is slow (ORT FP32 runs 1.2-2.1x LiteRT FP32's
    instructions on aarch64); this one does not."""
    out = []
    for tag, m in models(doc).items():
        for t in targets(doc):
            emu = bool(t.get("emulated"))
            cands = [(k, e) for k in bench_keys(m, t["id"])
                     if (e := entry(tag, m, t, k)) is not None
                     and speed(bench(m, t["id"], k), emu) is not None]
            fps = sorted((c for c in cands if not c[1].int8),
                         key=lambda c: speed(bench(m, t["id"], c[0]), emu))
            q8s = sorted((c for c in cands if c[1].int8),
                         key=lambda c: speed(bench(m, t["id"], c[0]), emu))
            if not fps or not q8s:
                continue
            (fk, fe), (qk, qe) = fps[0], q8s[0]
            rec = {"model": tag, "label": short_name(tag, m), "target": t["id"],
                   "fp32_key": fk, "fp32_runtime": runtime_of(fk),
                   "fp32_cost": speed(bench(m, t["id"], fk), emu),
                   "int8_key": qk, "int8_runtime": runtime_of(qk), "recipe": key_recipe(qk),
                   "int8_cost": speed(bench(m, t["id"], qk), emu),
                   "runtimes": len({key_format(k) for k, _ in cands})}
            rec.update(_pair_record(make_pair(qe, fe, "int8 vs fp32")))
            out.append(rec)
    return out


def held_back(best: dict) -> bool:
    """Does this best_per_target record fall short of INT8_GOAL?"""
    return isinstance(best.get("speedup"), (int, float)) and best["speedup"] < INT8_GOAL


def int8_shortfalls(doc: dict) -> list[dict]:
    """The best_per_target records below INT8_GOAL, each with the latency model's per-op-
    class breakdown of its model's ONNX FP32/INT8 pair on that target (results.json
    models[tag].int8_why[target], the why_int8 stage) or, where there is none, why."""
    out = []
    for b in best_per_target(doc):
        if not held_back(b):
            continue
        rec = g(models(doc), b["model"], "int8_why", b["target"])
        why = rec if isinstance(rec, dict) and rec.get("classes") else None
        st = failed_stage(doc, b["model"], ("why_int8",), b["target"])
        note = None if why else (rec.get("note") if isinstance(rec, dict) else None) or \
            (st or {}).get("reason") or "the why_int8 stage did not run"
        out.append({**b, "why": why, "note": note})
    return out


def holding_back(why: dict, n: int = 3) -> list[dict]:
    """The op classes below INT8_GOAL with the largest shares of the INT8 cost, largest
    first (at most n): the ones a reader should look at."""
    rows = [r for r in why.get("classes") or [] if isinstance(r, dict) and r.get("int8_share")
            and (r.get("speedup") is None or r["speedup"] < INT8_GOAL)]
    return sorted(rows, key=lambda r: -r["int8_share"])[:n]


def baseline_pairs(doc: dict) -> list[dict]:
    """Every model vs the baseline's FP32 model of the same format, per target: theoretical
    = MAC ratio, times the bit-width 4x for an INT8 model (`mac_ratio`, `bit_width` apart)."""
    base = doc.get("baseline")
    ms = models(doc)
    if not base or base not in ms:
        return []
    bm = ms[base]
    out = []
    for tag, m in ms.items():
        if tag == base:
            continue
        for t in targets(doc):
            for fmt in FORMATS:
                b_fp = entry(base, bm, t, fmt)
                if b_fp is None:
                    continue
                for key in (fmt, f"{fmt}_int8"):
                    e = entry(tag, m, t, key)
                    if e is None:
                        continue
                    rec = {"model": tag, "label": short_name(tag, m), "key": key, "format": fmt,
                           "precision": "INT8" if e.int8 else "FP32", "target": t["id"],
                           "macs": g(m, "cost", "macs"), "base_macs": g(bm, "cost", "macs")}
                    rec.update(_pair_record(make_pair(e, b_fp, "vs baseline")))
                    rec["measured"] = rec["speedup"]
                    out.append(rec)
    return out


def compare_check(doc: dict) -> tuple[int, list[str]]:
    """The compare stage's stored output (results.json "compare": `python -m
    android_bench.compare` on each target's bench files) against int8_speedups: (pairs that
    agree, one line per pair that does not). Same arithmetic, so a mismatch means the
    bench files and results.json disagree."""
    mine = {(s["model"], s["format"], s["target"]): s["speedup"] for s in int8_speedups(doc)}
    n, bad = 0, []
    for target, cdoc in (doc.get("compare") or {}).items():
        for p in (cdoc.get("pairs") if isinstance(cdoc, dict) else None) or []:
            key = artifact_key(str(g(p, "model", "file", default="")))
            if not isinstance(p, dict) or p.get("kind") != "int8 vs fp32" or not key:
                continue
            theirs = p.get("instr_ratio") if p.get("emulated") else p.get("measured")
            ours = mine.get((g(p, "model", "name"), key.split("_")[0], target))
            if ours is None or theirs is None:
                continue
            if abs(ours - theirs) <= 1e-6 * abs(ours):
                n += 1
            else:
                bad.append(f"{g(p, 'model', 'name')} {key} on {target}: compare.json "
                           f"{theirs:.3f}x, results.json {ours:.3f}x")
    return n, bad


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
                    "speedup": p["speedup"], "efficiency": p["efficiency"],
                    "emulated": p["emulated"], "latency_ratio": p["latency_ratio"],
                    "instr_ratio": p["instr_ratio"]}
        out.append(rec)
    out.sort(key=lambda r: (r["macs"] is None, r["macs"] or 0))
    return out
