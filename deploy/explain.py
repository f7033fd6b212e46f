"""Sentences derived from results.json: the report's headline (the configuration to ship per
target first, deploy.verdict) and the rule-based explanation of every model (the numbers
come from deploy/analysis.py).

Wording keeps apart what the numbers keep apart: a QEMU speed-up is an
instruction ratio (its emulated milliseconds are never called a speed-up), the
MAC-ratio theory (models vs the baseline, ShuffleNet's ~2.6x per 4x fewer MACs)
is not INT8's bit-width bound (4x: 32/8-bit operands on the same MACs).
"""
from __future__ import annotations

from android_bench.compare import INT8_THEORETICAL, ratio

from . import paper
from .analysis import (FORMATS, MAX_INT8_DROP, SLOW_INT8, baseline_pairs, best_per_target,
                       bench, g, int8_key_for, int8_speedups, models, runtime_name, runtime_of,
                       short_name)
from .verdict import ship_choice, unmeasured_targets


# ---- the headline -------------------------------------------------------------------------

def _basis(s: dict) -> str:
    return "instructions, EMULATED" if s["emulated"] else "latency"


def _per_target(items: list[dict]) -> str:
    return ", ".join(f"{s['speedup']:.2f}x on {s['target']} ({_basis(s)})" for s in items)


def headline(doc: dict) -> list[str]:
    """Four lines: the configuration to ship per target, what got faster, by how much,
    what it cost in accuracy."""
    return [ship_line(doc)] + _faster_lines(doc)


def ship_line(doc: dict) -> str:
    """The decision first: per target (and model, when there are several) the file to ship
    (deploy.verdict.ship_choice); the report links it to its table."""
    choices = ship_choice(doc)
    several = len({c["model"] for c in choices}) > 1
    per: dict[str, list[str]] = {}
    for c in choices:
        if c["ship_int8"]:
            why = f"{c['speedup']:.2f}x the best FP32" + (
                f", {0.0 - c['drop']:+.2f} pt top-1" if c["drop"] is not None else "")
        else:
            why = (f"INT8 only {c['speedup']:.2f}x" if isinstance(c["speedup"], (int, float))
                   and c["speedup"] < SLOW_INT8 else
                   f"INT8 loses {c['drop']:.2f} pt top-1" if c["drop"] is not None else
                   "INT8 unmeasured")
        per.setdefault(c["target"], []).append(
            f"{c['label'] + ' ' if several else ''}{c['ship']} ({why}"
            + (", instructions, EMULATED" if c["emulated"] else "") + ")")
    parts = [f"on {t} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
             for t, items in per.items()]
    none = unmeasured_targets(doc)
    if none:
        parts.append(f"nothing measured on {', '.join(none)}")
    if not per:
        return "Ship: no choice yet (no model has an FP32 and an INT8 file measured on one " \
               "target)" + (f"; {parts[-1]}" if none else "")
    return "Ship: " + "; ".join(parts)


def _faster_lines(doc: dict) -> list[str]:
    """What got faster, by how much, what it cost in accuracy."""
    ms = models(doc)
    sp = [s for s in int8_speedups(doc) if s["speedup"] is not None]
    base = doc.get("baseline")
    bp = [p for p in baseline_pairs(doc) if p["precision"] == "FP32" and p["measured"]]
    groups = list(dict.fromkeys((s["label"], s["format"]) for s in sp))
    what = []
    if groups:
        names = list(dict.fromkeys(lbl for lbl, _ in groups))
        fmts = " and ".join(runtime_name(f) for f in dict.fromkeys(f for _, f in groups))
        of = f"{names[0] if len(names) == 1 else f'{len(names)} models'} ({fmts})"
        won = list(dict.fromkeys(s["target"] for s in sp if s["speedup"] >= SLOW_INT8))
        what.append(f"INT8 over FP32 of {of} on {', '.join(won)}" if won else
                    f"INT8 did not beat FP32 of {of} on any target "
                    f"({', '.join(dict.fromkeys(s['target'] for s in sp))})")
    if bp and base in ms:
        won = list(dict.fromkeys(p["label"] for p in bp if p["measured"] >= SLOW_INT8))
        what.append(f"{', '.join(won[:3])}{' ...' if len(won) > 3 else ''} over "
                    f"{short_name(base, ms[base])} (FP32)" if won else
                    f"no model beat {short_name(base, ms[base])} (FP32)")
    what_line = "What got faster: " + ("; ".join(what) if what else
                                       "nothing measured yet (no model ran on two precisions)")
    much = []
    one_model = len({lbl for lbl, _ in groups}) == 1
    if groups and len(groups) <= 2:
        for lbl, f in groups:
            mine = [s for s in sp if (s["label"], s["format"]) == (lbl, f)]
            much.append(f"{'' if one_model else lbl + ' '}{runtime_name(f)} INT8 {_per_target(mine)}")
    elif groups:
        for t in dict.fromkeys(s["target"] for s in sp):
            mine = sorted((s for s in sp if s["target"] == t), key=lambda s: s["speedup"])
            much.append(f"INT8 on {t}: {mine[0]['speedup']:.2f}x-{mine[-1]['speedup']:.2f}x "
                        f"({_basis(mine[0])}; best {mine[-1]['label']} {runtime_name(mine[-1]['format'])})")
    if bp:
        best = max(bp, key=lambda p: (not p["emulated"], p["measured"]))
        much.append(f"{best['label']} {best['measured']:.1f}x faster than the baseline on "
                    f"{best['target']} ({_basis(best)}) for "
                    + (f"{best['mac_ratio']:.1f}x fewer MACs" if best["mac_ratio"] else "? MACs"))
    best = [b for b in best_per_target(doc) if b["speedup"] is not None]
    if best:
        # A same-runtime ratio flatters a runtime with a slow FP32: always say best vs best.
        much.append("best INT8 vs best FP32: " + ", ".join(
            f"{b['speedup']:.2f}x on {b['target']} ({b['int8_runtime']} vs {b['fp32_runtime']})"
            for b in best[:4]) + (" ..." if len(best) > 4 else ""))
    if groups:
        much.append("INT8's bit-width bound is 4x")
    much_line = "By how much: " + ("; ".join(much) if much else "-")
    return [what_line, much_line, "Accuracy cost: " + _accuracy_cost(ms)]


def _accuracy_cost(ms: dict) -> str:
    drops = []
    for tag, m in ms.items():
        acc = g(m, "accuracy", "results", default={}) or {}
        for f in FORMATS:
            fp, q = acc.get(f) or {}, acc.get(int8_key_for(m, f)) or {}
            if isinstance(fp.get("top1"), (int, float)) and isinstance(q.get("top1"), (int, float)):
                drops.append((short_name(tag, m), f, fp["top1"], q["top1"], q.get("agreement")))
    if not drops:
        return ("not measured (random-init weights, no test set, or the accuracy stage did "
                "not run)")
    if len(drops) <= 2:
        one_model = len({d[0] for d in drops}) == 1
        return "; ".join(f"{'' if one_model else lbl + ' '}{runtime_name(f)} INT8 top-1 {q:.2f}% vs "
                         f"FP32 {fp:.2f}% ({q - fp:+.2f} pt"
                         + (f", agrees with FP32 on {a:.1f}% of images" if isinstance(a, (int, float))
                            else "") + ")"
                         for lbl, f, fp, q, a in drops)
    worst = min(drops, key=lambda d: d[3] - d[2])
    return (f"INT8 top-1 within {min(d[3] - d[2] for d in drops):+.2f} to "
            f"{max(d[3] - d[2] for d in drops):+.2f} pt of FP32 over {len(drops)} model files "
            f"(worst: {worst[0]} {runtime_name(worst[1])}, {worst[3]:.2f}% vs {worst[2]:.2f}%)")


# ---- per-model explanations ----------------------------------------------------------------

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
    if (m.get("weights") or {}).get("kind") == "random":
        out.append("Random-init weights (nothing shipped for this variant): accuracy is not "
                   "measured; cost, size and speed are those of the trained network.")
    for part in (_int8_speed, _dotprod, _profile, _accuracy, _on_target, _size, _baseline,
                 _failures):
        out += part(doc, tag, m)
    return out


def _int8_speed(doc: dict, tag: str, m: dict) -> list[str]:
    """INT8 vs FP32 of the same runtime, per target; why not faster, where it is not."""
    out = []
    for s in int8_speedups(doc):
        v = s["speedup"]
        if s["model"] != tag or v is None:
            continue
        fmt = runtime_of(s["key"])
        unit = "guest instructions, EMULATED" if s["emulated"] else "latency"
        if v < SLOW_INT8:
            why = _why_slow(m, s)
            out.append(f"INT8 not faster on {s['target']} ({fmt}: {v:.2f}x FP32 {unit})"
                       + (f": {'; '.join(why)}." if why else "."))
        else:
            out.append(f"INT8 {v:.1f}x faster than FP32 on {s['target']} ({fmt}, {unit}; "
                       f"{v / INT8_THEORETICAL:.0%} of INT8's 4x bit-width bound"
                       + ("; no dotprod on this CPU" if _no_dotprod(s["features"], s["target"])
                          else "") + ").")
    return out


def _why_slow(m: dict, s: dict) -> list[str]:
    """The reasons the data shows for an INT8 file that is not faster than FP32."""
    why = []
    if _no_dotprod(s["features"], s["target"]):
        why.append("no dotprod")
    prof = g(m, "profile", s["key"], "categories", "quantize/dequantize", "pct")
    if not s["emulated"] and isinstance(prof, (int, float)) and prof >= 5:
        why.append(f"quantize/dequantize ops take {prof:.0f}% of its time")
    fl = [x for x in g(m, "artifacts", s["key"], "warnings", default=[]) or [] if "float" in x]
    if fl:
        why.append(fl[0])
    rt_tr = g(m, "artifacts", s["key"], "runtime_transposes")
    fp_tr = g(m, "artifacts", s["format"], "transposes")
    if s["target"].startswith("qemu") and isinstance(rt_tr, int) and isinstance(fp_tr, int) \
            and rt_tr > fp_tr:
        why.append(f"its ARM64 graph runs {rt_tr} Transposes ({fp_tr} in FP32: NHWC layout "
                   f"changes around the channel shuffles)" if _is_shufflenet(m) else
                   f"its ARM64 graph runs {rt_tr} Transposes ({fp_tr} in FP32)")
    return why


def _is_shufflenet(m: dict) -> bool:
    return "shufflenet" in str(g(m, "variant", "model", default=""))


def _dotprod(doc: dict, tag: str, m: dict) -> list[str]:
    """a76 vs a72 INT8 instruction counts: what the dot-product extension buys."""
    out = []
    for fmt in ("onnx", "tflite"):
        a72, a76 = (bench(m, t, int8_key_for(m, fmt, t))
                    for t in ("qemu:cortex-a72", "qemu:cortex-a76"))
        r = ratio((a72 or {}).get("instructions"), (a76 or {}).get("instructions"))
        if r and abs(r - 1) > 0.05:
            out.append(f"{runtime_name(fmt)} INT8 needs {r:.2f}x "
                       f"{'more' if r > 1 else 'fewer'} instructions on cortex-a72 than on cortex-a76"
                       f"{' (the a76 has the dot-product extension)' if r > 1 else ''}.")
    return out


def _profile(doc: dict, tag: str, m: dict) -> list[str]:
    """The host profile: shuffle transposes, depthwise time against its MAC share."""
    out = []
    prof = g(m, "profile", "onnx") or {}
    cats = prof.get("categories") or {}
    tr = prof.get("transposes") or {}
    if tr.get("nodes"):
        shuffle_word = "from channel shuffle " if _is_shufflenet(m) else ""
        out.append(f"{tr['nodes']} Transpose{'s' if tr['nodes'] != 1 else ''} {shuffle_word}cost "
                   f"{tr.get('pct', 0):.0f}% of FP32 latency (all data movement - transpose, reshape, "
                   f"layout reorders: {_pct(g(cats, 'shuffle/transpose', 'pct'))}; host profile).")
    macs = g(m, "cost", "macs")
    dw_macs = g(m, "cost", "by_op", "dwconv", "macs")
    dw_pct = g(cats, "depthwise", "pct")
    if macs and dw_macs and isinstance(dw_pct, (int, float)) and dw_pct > 0:
        share = 100.0 * dw_macs / macs
        out.append(f"Depthwise convolutions: {share:.1f}% of the MACs, {dw_pct:.0f}% of FP32 time "
                   f"({dw_pct / share:.1f}x their share: little arithmetic per byte moved).")
    return out


def _accuracy(doc: dict, tag: str, m: dict) -> list[str]:
    """INT8 vs FP32 top-1 per runtime, on this host's kernels."""
    out = []
    acc = g(m, "accuracy", "results", default={}) or {}
    for fmt in FORMATS:
        fp, q = acc.get(fmt) or {}, acc.get(int8_key_for(m, fmt)) or {}
        if fp.get("top1") is None or q.get("top1") is None:
            continue
        d = fp["top1"] - q["top1"]
        delta = "no change" if abs(d) < 0.005 else f"{'-' if d > 0 else '+'}{abs(d):.2f} pt"
        msg = (f"{runtime_name(fmt)} INT8 top-1 {q['top1']:.2f}% vs FP32 {fp['top1']:.2f}% "
               f"({delta}; agrees with FP32 on "
               f"{q.get('agreement', float('nan')):.1f}% of images).")
        if d > MAX_INT8_DROP:
            # what can win it back: quant.ptq's range calibration and float fallback
            msg += (f" More than {MAX_INT8_DROP:g} pt lost: `python -m quant.ptq --method auto` "
                    f"(another range calibration) or `--fallback N` (N layers kept in float) "
                    f"may win it back.")
        out.append(msg)
    return out


def _on_target(doc: dict, tag: str, m: dict) -> list[str]:
    """Each target's INT8 file scored on that target's kernels, against this host's."""
    out = []
    for tid, r in sorted((m.get("accuracy_on_target") or {}).items()):
        h = r.get("host") if isinstance(r, dict) and isinstance(r.get("host"), dict) else {}
        a, b = r.get("agreement") if isinstance(r, dict) else None, h.get("agreement")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            gap = ("the same as" if abs(a - b) < 0.05 else
                   f"{abs(a - b):.1f} pt {'above' if a > b else 'below'}")
            out.append(f"{tid}'s ONNX INT8 file ({r.get('file')}) on that core's own kernels "
                       f"agrees with FP32 on {a:.1f}% of {r.get('n')} images, {gap} the same "
                       f"file on this host ({b:.1f}%).")
    return out


def _size(doc: dict, tag: str, m: dict) -> list[str]:
    """INT8 file sizes, and the TRANSPOSEs the TFLite conversion added."""
    out = []
    arts = m.get("artifacts") or {}
    for fmt in ("onnx", "tflite"):
        size8 = g(arts, int8_key_for(m, fmt), "size_bytes")
        r = ratio(g(arts, fmt, "size_bytes"), size8)
        if r:
            out.append(f"{'ONNX' if fmt == 'onnx' else 'TFLite'} INT8 file is {r:.1f}x smaller "
                       f"({_mb(g(arts, fmt, 'size_bytes'))} -> {_mb(size8)}).")
    out += [f"TFLite FP32: {w}." for w in g(arts, "tflite", "warnings", default=[]) or []
            if "TRANSPOSE" in w]
    return out


def _baseline(doc: dict, tag: str, m: dict) -> list[str]:
    """Against the run's baseline (MAC-ratio theory), and the paper's Table 8 row."""
    out = []
    for p in baseline_pairs(doc):
        if p["model"] == tag and p["precision"] == "FP32" and p["format"] == "onnx" and \
                p["measured"] and p["theoretical"]:
            unit = "guest instructions, EMULATED" if p["emulated"] else "latency"
            bname = short_name(doc["baseline"], models(doc).get(doc["baseline"]) or {})
            out.append(f"vs {bname} on {p['target']}: {p['mac_ratio']:.1f}x fewer MACs (MAC-ratio "
                       f"theory), {p['measured']:.1f}x faster ({unit}), efficiency "
                       f"{p['efficiency']:.2f} (ShuffleNet's rule of thumb: ~0.65).")
    row = paper.match(str(g(m, "variant", "model")), g(m, "variant", "params", default={}) or {})
    if row is not None and doc.get("baseline") and tag != doc.get("baseline"):
        ps = paper.paper_speedups(row)
        out.append(f"Paper (Table 8, Snapdragon 820, FP32): {ps['theoretical']:.1f}x fewer MFLOPs "
                   f"than AlexNet, {ps['actual_224']:.1f}x faster at 224x224, efficiency "
                   f"{ps['efficiency_224']:.2f}.")
    return out


def _failures(doc: dict, tag: str, m: dict) -> list[str]:
    return [f"Stage {s['kind']}{' ' + s['target'] if s.get('target') else ''} failed: "
            f"{s.get('reason')}" for s in doc.get("stages") or []
            if s.get("model") == tag and s.get("status") == "failed"]


def _mb(n) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"
