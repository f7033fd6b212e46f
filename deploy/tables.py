"""The report's tables (header row, body rows, row classes) and the number formats
every part of the report shares; built from deploy.analysis, rendered by
deploy.report as Markdown and HTML."""
from __future__ import annotations

import math

from export.card import key_format

from . import analysis as A
from . import paper
from .verdict import ship_choice

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


ON_TARGET_TITLE = "INT8 accuracy with the target's own kernels"
ON_TARGET_NOTE = ("The accuracy columns above run every file with this host's kernels. Here "
                  "the ONNX INT8 file each QEMU, board or phone target runs is scored again on "
                  "that target (quant.evaluate --on: android_bench runs it on a sample of the "
                  "test set; the FP32 reference runs on this host), beside the same file on "
                  "this host, same images. They differ where the kernels do: x86 without VNNI saturates "
                  "U8S8's int16 pair sums, and keeps S8S8 convs in float.")


def on_target_table(doc: dict) -> tuple[list[str], list[list[str]]] | None:
    """The target's ONNX INT8 file scored on the target vs on this host (same images)."""
    head = ["model", "target", "INT8 file", "images", "top-1 % on target / host",
            "agreement % on target / host", "SQNR dB on target / host"]
    body = []
    for tag, m in (doc.get("models") or {}).items():
        for tid, r in sorted((m.get("accuracy_on_target") or {}).items()):
            if not isinstance(r, dict):
                continue
            h = r.get("host") if isinstance(r.get("host"), dict) else {}

            def pair(k: str, d: int = 2) -> str:
                return f"{fnum(r.get(k), d)} / {fnum(h.get(k), d)}"
            body.append([A.short_name(tag, m),
                         f"{tid} [{EMU}]" if A.is_emulated(doc, tid) else tid,
                         str(r.get("file") or "-"), str(r.get("n") or "-"), pair("top1"),
                         pair("agreement"), pair("sqnr_db", 1)])
    return (head, body) if body else None


SHIP_TITLE = "Which configuration to ship"
# The section's anchor: its id in the HTML and the heading's slug in the Markdown (GitHub's
# rule: lower case, spaces to hyphens), so the headline's link works in both.
SHIP_ANCHOR = "which-configuration-to-ship"
BEST_NOTE = ("Per model and target: the fastest FP32 file and the fastest INT8 file over every "
             "runtime that ran there, INT8's speed-up over that best FP32 (android_bench."
             "compare: median latency on real CPUs, guest instructions on QEMU, EMULATED), and "
             f"the one to ship: the INT8 file when it is at least {A.SLOW_INT8}x the best FP32 "
             f"file and loses at most {A.MAX_INT8_DROP:g} pt top-1 against it on the same test "
             "images (this host's kernels), else the FP32 file. "
             "A same-runtime ratio (INT8 vs FP32 below) flatters a runtime whose FP32 is slow; "
             "this one does not. The recipe is the INT8 file's integer format (quant.config."
             "recipe_for; TFLite full-integer is always int8 activations).")


def best_table(doc: dict) -> tuple[list[str], list[list[str]]] | None:
    """The configuration to ship per model x target, beside the best FP32 and best INT8
    files over the runtimes in results.json (deploy.verdict.ship_choice)."""
    best = ship_choice(doc)
    if not best:
        return None
    head = ["model", "target", "ship", "why", "best FP32", "FP32 cost", "best INT8", "INT8 cost",
            "best INT8 / best FP32", "measured as", "runtimes compared"]
    body = []
    for b in best:
        cost = fcount if b["emulated"] else (lambda v: f"{fms(v)} ms")
        body.append([b["label"], b["target"] + (f" [{EMU}]" if b["emulated"] else ""),
                     b["ship"], b["why_ship"],
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


# ---- what holds INT8 back (deploy.analysis.int8_shortfalls) -------------------------------

WHY_TITLE = "What holds INT8 back"
WHY_NOTE = (f"Where the best INT8 file stays under {A.INT8_GOAL}x the best FP32 file on a target "
            f"(ShuffleNet's rule, {paper.RULE_OF_THUMB}; INT8 promises 4x less operand work): "
            "the latency model's per-node roofline (android_bench.perfmodel, docs/"
            "latency_model.md), summed per op class, for the ONNX Runtime FP32/INT8 pair of "
            "that target. share = the class's part of the INT8 file's predicted cost; speed-up "
            "= its predicted FP32 / INT8 cost. Float islands (INT8-file nodes left in float) "
            "run the same kernel in both files (1.0x); per-op overhead includes the "
            "per-inference call. Predicted from shipped micro-benchmark constants, not "
            "measured per class.")
CLASS_NAMES = {"elementwise": "element-wise", "activation": "activations (sigmoid-like)",
               "qdq": "Q/DQ", "pool": "pools"}


def _instr(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return fcount(v) if v >= 1e5 else f"{v / 1e3:.1f} k" if v else "0"


def _share(v) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{100 * v:.0f} %"


def why_blocks(doc: dict) -> list[tuple[str, list[str], tuple[list[str], list[list[str]]] | None]]:
    """Per model x target under INT8_GOAL: (title, lines, per-class table or None)."""
    out = []
    speed = {(s["model"], s["target"]): s for s in A.int8_speedups(doc)
             if s["format"] == "onnx"}
    for s in A.int8_shortfalls(doc):
        emu = s["emulated"]
        title = (f"{s['label']} on {s['target']}: best INT8 ({s['int8_runtime']}) is "
                 f"{fx(s['speedup'])} best FP32 ({s['fp32_runtime']}), under {A.INT8_GOAL}x")
        why = s["why"]
        if why is None:
            out.append((title, [f"No breakdown: {s['note']}."], None))
            continue
        cost = _instr if emu else (lambda v: f"{fms(v)} ms")
        files = f"{why['fp32']['file']} / {why['int8']['file']}"
        lines = [f"Breakdown of the ONNX Runtime pair {files}"
                 + ("" if key_format(s["int8_key"]) == "onnx" and
                    key_format(s["fp32_key"]) == "onnx" else
                    " (the latency model reads ONNX Runtime graphs; the best files here are "
                    f"{s['fp32_runtime']} and {s['int8_runtime']})") + "."]
        meas = speed.get((s["model"], s["target"]))
        lines.append(f"Predicted ONNX Runtime INT8 / FP32: {fx(why.get('predicted_speedup'))} "
                     f"({cost(why.get('fp32_predicted'))} vs {cost(why.get('int8_predicted'))}"
                     + (f" {EMU} instructions" if emu else "") + ")"
                     + (f"; measured {fx(meas['speedup'])}" if meas else "") + ".")
        worst = A.holding_back(why)
        if worst:
            lines.append("Held back most by: " + "; ".join(
                f"{CLASS_NAMES.get(r['class'], r['class'])}: {_share(r['int8_share'])} of INT8 "
                f"cost, {fx(r.get('speedup'), 1)}" for r in worst) + ".")
        fit = why.get("fit_mae")
        lines.append(f"Constants: the shipped {s['target']} micro-benchmark table (created "
                     f"{why.get('created') or '?'}"
                     + (f", fit error {100 * fit:.1f} %" if isinstance(fit, (int, float)) else "")
                     + ")" + ("; fitted on the host that made it, so another host's shares are "
                              "indicative" if not emu else "") + ".")
        head = ["op class", "share of INT8 cost", "FP32 cost", "INT8 cost", "FP32 -> INT8 speed-up"]
        rows = sorted((r for r in why.get("classes") or [] if r.get("fp32") or r.get("int8")),
                      key=lambda r: -(r.get("int8_share") or 0))
        body = [[CLASS_NAMES.get(r["class"], r["class"]), _share(r.get("int8_share")),
                 cost(r.get("fp32")), cost(r.get("int8")), fx(r.get("speedup"))] for r in rows]
        out.append((title, lines, (head, body)))
    return out
