"""The report's tables (header row, body rows, row classes) and the number formats
every part of the report shares; built from deploy.analysis, rendered by
deploy.report as Markdown and HTML."""
from __future__ import annotations

import math

from . import analysis as A

EMU = "EMULATED"


# ---- formatting ---------------------------------------------------------------------------

def fms(v) -> str:
    if not isinstance(v, (int, float)) or math.isnan(v):
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fcount(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v / 1e9:.2f} G" if v >= 1e9 else f"{v / 1e6:.1f} M" if v >= 1e5 else str(int(v))


def fbytes(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v / 1e6:.2f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


def fx(v, d: int = 2) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.{d}f}x"


def fpct(v) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.2f}%"


def fnum(v, d: int = 2) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.{d}f}"


# ---- tables -------------------------------------------------------------------------------

def main_table(doc: dict) -> tuple[list[str], list[list[str]], list[str]]:
    head = ["model", "format", "precision", "target", "median latency (ms)", "95% CI (ms)",
            "instr. / inference", "top-1 %", "agreement %", "size", "audit / warnings"]
    body, cls = [], []
    for r in A.rows(doc):
        emu = r.get("emulated")
        if r.get("status") != "ok":
            lat = f"{str(r.get('status', '')).upper()}" + (f": {r.get('reason')}" if r.get("reason") else "")
            ci = ins = "-"
            cls.append("fail" if r.get("status") == "failed" else "missing")
        else:
            lat = fms(r.get("median_ms")) + (f" {EMU}" if emu else "")
            ci = "-" if not r.get("ci95_ms") else f"{fms(r['ci95_ms'][0])}-{fms(r['ci95_ms'][1])}"
            ins = fcount(r.get("instructions"))
            cls.append("emu" if emu else "")
        agree = fnum(r.get("agreement")) + (f" (vs {r['agreement_ref']})" if r.get("agreement_ref")
                                            and r.get("agreement") is not None else "")
        warns = "; ".join(r.get("warnings") or []) or ("; ".join(r.get("notes") or [])[:120] or "-")
        body.append([r["label"], r.get("format", "-"), r.get("precision", "-"), r.get("target", "-"),
                     lat, ci, ins, fnum(r.get("top1")), agree, fbytes(r.get("size_bytes")), warns])
    return head, body, cls


def table8_table(doc: dict) -> tuple[list[str], list[list[str]]] | None:
    t8 = A.table8(doc)
    if not t8:
        return None
    tids = [t["id"] for t in A.targets(doc)]
    head = ["model", "MACs (ours)", "paper MFLOPs", "MAC ratio (ours)", "paper MFLOPs ratio"]
    for tid in tids:
        head.append(f"speed-up {tid}" + (f" [{EMU}: instr. ratio]" if A.is_emulated(doc, tid)
                                         else ""))
        head.append(f"efficiency {tid}")
    head += ["paper actual 224px", "paper efficiency", "paper actual 224 / 480x640 / 720x1280"]
    body = []
    for r in t8:
        p = r.get("paper") or {}
        row = [r["label"] + (" (baseline)" if r["is_baseline"] else ""), fcount(r.get("macs")),
               str(p.get("mflops", "-")), fx(r.get("theoretical"), 1),
               fx(p.get("theoretical"), 1) if p else "-"]
        for tid in tids:
            meas = (r["measured"].get(tid) or {}).get("onnx") or {}
            if r["is_baseline"]:
                row += ["1.0x", "1.00"]
            else:
                row += [fx(meas.get("speedup"), 1), fnum(meas.get("efficiency"))]
        row += [fx(p.get("actual_224"), 1) if p else "-", fnum(p.get("efficiency_224")) if p else "-",
                " / ".join(f"{v:.1f}" for v in p.get("actual") or []) + "x" if p else "-"]
        body.append(row)
    return head, body


def int8_table(doc: dict) -> tuple[list[str], list[list[str]]] | None:
    """One speed-up per row: the latency ratio on real CPUs, the instruction ratio on QEMU
    (the emulated-ms ratio is not a speed-up and is not shown)."""
    sp = A.int8_speedups(doc)
    if not sp:
        return None
    head = ["model", "runtime", "target", "speed-up FP32/INT8", "measured as", "range (95% CIs)",
            "efficiency vs bit-width 4x", "CPU features"]
    body = []
    for s in sp:
        rng = s.get("latency_range")
        body.append([s["label"], A.runtime_of(s["key"]),
                     s["target"] + (f" [{EMU}]" if s["emulated"] else ""),
                     fx(s["speedup"]),
                     f"guest instructions ({EMU})" if s["emulated"] else "median latency",
                     "-" if not rng else f"{rng[0]:.2f}-{rng[1]:.2f}x",
                     fnum(s["efficiency"]),
                     ", ".join(k for k in s["features"] if k in ("asimd", "dotprod", "i8mm", "sve",
                                                                 "avx2", "avx512f", "avx512_vnni"))
                     or "-"])
    return head, body


BEST_NOTE = ("Per model and target: the fastest FP32 file and the fastest INT8 file over every "
             "runtime that ran there, and INT8's speed-up over that best FP32 (android_bench."
             "compare: median latency on real CPUs, guest instructions on QEMU, EMULATED). "
             "A same-runtime ratio (INT8 vs FP32 above) flatters a runtime whose FP32 is slow; "
             "this one does not. The recipe is the INT8 file's integer format (quant.config."
             "recipe_for; TFLite full-integer is always int8 activations).")


def best_table(doc: dict) -> tuple[list[str], list[list[str]]] | None:
    """Best FP32 vs best INT8 per model x target, over the runtimes in results.json."""
    best = A.best_per_target(doc)
    if not best:
        return None
    head = ["model", "target", "best FP32", "FP32 cost", "best INT8", "INT8 cost",
            "best INT8 / best FP32", "measured as", "runtimes compared"]
    body = []
    for b in best:
        cost = fcount if b["emulated"] else (lambda v: f"{fms(v)} ms")
        body.append([b["label"], b["target"] + (f" [{EMU}]" if b["emulated"] else ""),
                     b["fp32_runtime"].removesuffix(" FP32"), cost(b["fp32_cost"]),
                     b["int8_runtime"], cost(b["int8_cost"]), fx(b["speedup"]),
                     f"guest instructions ({EMU})" if b["emulated"] else "median latency",
                     str(b["runtimes"])])
    return head, body


def stage_table(doc: dict) -> tuple[list[str], list[list[str]], list[str]]:
    head = ["stage", "model", "target", "status", "wall s", "cpu s", "reason / log"]
    body, cls = [], []
    for s in doc.get("stages") or []:
        st = s.get("status", "?")
        body.append([s.get("kind", "?"), s.get("model") or "-", s.get("target") or "-", st,
                     fnum(s.get("seconds"), 1), fnum(s.get("cpu_seconds"), 1),
                     (s.get("reason") or "") + (f" [{s['log']}]" if s.get("log") else "")])
        cls.append({"failed": "fail", "interrupted": "fail", "skipped": "missing"}.get(st, ""))
    return head, body, cls
