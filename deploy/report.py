"""Render a deploy run: results.json -> report.md, report.html and plots/*.png beside it.

    python -m deploy.report runs/<timestamp>/results.json

The HTML is one self-contained file (plots embedded as base64 PNG); the
Markdown links the PNG files in plots/. Works on partial runs: whatever a
failed or interrupted stage did not produce is shown as missing, with why.
Emulated (QEMU) timings are labelled EMULATED wherever they appear.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_output, cli_entry

from . import analysis as A
from . import paper

PROG = "deploy.report"
CAT_COLORS = {"conv": "#4C72B0", "depthwise": "#55A868", "shuffle/transpose": "#C44E52",
              "element-wise": "#8172B2", "quantize/dequantize": "#CCB974", "pool": "#64B5CD",
              "other": "#999999"}
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


# ---- plots --------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 110,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_macs_latency(doc: dict) -> bytes | None:
    """MACs vs measured cost (log-log), one panel per target, with the MAC-ratio line."""
    ms = A.models(doc)
    ts = A.targets(doc)
    pts = []
    for tag, m in ms.items():
        macs = A.g(m, "cost", "macs")
        if not macs:
            continue
        for t in ts:
            for key in ("onnx", "onnx_int8", "tflite", "tflite_int8"):
                b = A.bench(m, t["id"], key)
                y = A.speed(b, bool(t.get("emulated")))
                if y:
                    pts.append((t["id"], tag, key, macs, y))
    if not pts:
        return None
    plt = _plt()
    panels = [t for t in ts if any(p[0] == t["id"] for p in pts)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    base = doc.get("baseline")
    for ax, t in zip(axes[0], panels):
        emu = bool(t.get("emulated"))
        mine = [p for p in pts if p[0] == t["id"]]
        for key, marker, face in (("onnx", "o", True), ("onnx_int8", "^", True),
                                  ("tflite", "o", False), ("tflite_int8", "^", False)):
            sel = [p for p in mine if p[2] == key]
            if not sel:
                continue
            color = "#4C72B0" if key.endswith("int8") is False else "#DD8452"
            ax.scatter([p[3] for p in sel], [p[4] for p in sel], marker=marker, s=46,
                       facecolors=color if face else "none", edgecolors=color, linewidths=1.4,
                       label=("ONNX " if key.startswith("onnx") else "TFLite ")
                       + ("INT8" if key.endswith("int8") else "FP32"), zorder=3)
        for p in mine:
            if p[2] == "onnx":
                ax.annotate(A.short_name(p[1], ms[p[1]]), (p[3], p[4]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
        # speedup = MAC ratio: a slope-1 line through the baseline's FP32 point (else the
        # largest model's): where every model would sit if time scaled with MACs.
        anchor = next((p for p in mine if p[1] == base and p[2] == "onnx"), None) or \
            max((p for p in mine if p[2] == "onnx"), key=lambda p: p[3], default=None) or \
            max(mine, key=lambda p: p[3])
        xs = [p[3] for p in mine]
        lo, hi = min(xs) / 1.6, max(xs) * 1.6
        k = anchor[4] / anchor[3]
        ax.plot([lo, hi], [k * lo, k * hi], "--", color="#555555", linewidth=1,
                label=f"speedup = MAC ratio (through {A.short_name(anchor[1], ms[anchor[1]])} FP32)")
        if any(p[2].endswith("int8") for p in mine):
            ax.plot([lo, hi], [k * lo / 4, k * hi / 4], ":", color="#DD8452", linewidth=1,
                    label="same, INT8 at the ideal 4x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MACs per inference")
        ax.set_ylabel("guest instructions / inference" if emu else "median latency (ms)")
        ax.set_title(f"{t['id']}" + (f"  [{EMU}: instruction count]" if emu else "  (wall clock)"),
                     color="#B00020" if emu else "black")
        ax.grid(True, which="both", alpha=0.25)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.suptitle("MACs vs measured cost: points above the dashed line gained less than the "
                 "MAC ratio", fontsize=9)
    fig.tight_layout()
    fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return _png(fig)


def plot_int8_speedup(doc: dict) -> bytes | None:
    sp = [s for s in A.int8_speedups(doc) if s["speedup"]]
    if not sp:
        return None
    plt = _plt()
    groups = list(dict.fromkeys((s["label"], s["format"]) for s in sp))
    tids = list(dict.fromkeys(s["target"] for s in sp))
    width = 0.8 / max(1, len(tids))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) * max(1, len(tids)) ** 0.5 + 2), 3.6))
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B2"]
    for j, tid in enumerate(tids):
        emu = A.is_emulated(doc, tid)
        xs, ys = [], []
        for i, gkey in enumerate(groups):
            s = next((x for x in sp if (x["label"], x["format"]) == gkey and x["target"] == tid), None)
            if s:
                xs.append(i + (j - (len(tids) - 1) / 2) * width)
                ys.append(s["speedup"])
        bars = ax.bar(xs, ys, width * 0.92, color=palette[j % len(palette)],
                      hatch="//" if emu else None, edgecolor="white" if not emu else "#333333",
                      label=tid + (f" [{EMU}: instr. ratio]" if emu else " (latency ratio)"))
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.2f}x", (b.get_x() + b.get_width() / 2, y), ha="center",
                        va="bottom", fontsize=7)
    ax.axhline(4.0, color="#555555", linestyle="--", linewidth=1)
    ax.text(len(groups) - 0.5, 4.0, " theoretical 4x (32/8 bits)", va="bottom", ha="right", fontsize=7)
    ax.axhline(1.0, color="#B00020", linewidth=0.8)
    ax.text(len(groups) - 0.5, 1.0, " no gain", va="bottom", ha="right", fontsize=7, color="#B00020")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{lbl}\n{'ONNX Runtime' if f == 'onnx' else 'TFLite'}" for lbl, f in groups],
                       fontsize=8)
    ax.set_ylabel("FP32 / INT8 (higher = INT8 faster)")
    ax.set_ylim(0, max(4.6, max(s["speedup"] for s in sp) * 1.15))
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.set_title("INT8 vs FP32 speed-up per model and target")
    fig.tight_layout()
    return _png(fig)


def plot_op_breakdown(doc: dict) -> bytes | None:
    bars = []
    for tag, m in A.models(doc).items():
        for key in ("onnx", "onnx_int8"):
            p = A.g(m, "profile", key)
            if isinstance(p, dict) and p.get("categories"):
                bars.append((f"{A.short_name(tag, m)} {'INT8' if key.endswith('int8') else 'FP32'}",
                             p["categories"], p.get("total_ms")))
    if not bars:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 0.55 * len(bars) + 1.5))
    for i, (label, cats, total) in enumerate(bars):
        left = 0.0
        for c, color in CAT_COLORS.items():
            v = A.g(cats, c, "pct", default=0.0) or 0.0
            if v <= 0:
                continue
            ax.barh(i, v, left=left, color=color, edgecolor="white",
                    label=c if i == 0 or c not in [h.get_label() for h in ax.patches] else None)
            if v >= 6:
                ax.text(left + v / 2, i, f"{v:.0f}%", ha="center", va="center", fontsize=7,
                        color="white")
            left += v
        ax.text(101, i, fms(total) + " ms", va="center", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in CAT_COLORS.values()]
    ax.legend(handles, list(CAT_COLORS), fontsize=7, ncol=7, frameon=False,
              loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    ax.set_xlabel("% of kernel time (onnxruntime profiler on the host, 1 thread)")
    ax.set_title("Where the time goes, by op type (ONNX models; host x86, not ARM)", pad=22)
    fig.tight_layout()
    return _png(fig)


def plot_accuracy(doc: dict) -> bytes | None:
    items = []
    for tag, m in A.models(doc).items():
        for key, r in (A.g(m, "accuracy", "results", default={}) or {}).items():
            if isinstance(r, dict) and r.get("top1") is not None:
                items.append((A.short_name(tag, m), key, r["top1"]))
    if not items:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(items) + 1.5), 3.0))
    colors = {"onnx": "#4C72B0", "onnx_int8": "#DD8452", "tflite": "#8CA9D3", "tflite_int8": "#F0B27A"}
    labels = [f"{n}\n{k.replace('_int8', ' INT8').replace('onnx', 'ONNX').replace('tflite', 'TFLite')}"
              + ("" if "int8" in k else " FP32") for n, k, _ in items]
    bars = ax.bar(range(len(items)), [v for *_, v in items], color=[colors.get(k, "#999") for _, k, _ in items])
    for b, (_, _, v) in zip(bars, items):
        ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    lo = min(v for *_, v in items)
    ax.set_ylim(max(0, lo - 10), min(100, max(v for *_, v in items) + 4))
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("top-1 %")
    ax.set_title("Accuracy on the test set")
    fig.tight_layout()
    return _png(fig)


PLOTS = (("macs_vs_latency", plot_macs_latency,
          "MACs vs measured cost, log-log. Dashed: where each model would be if its cost scaled "
          "with its MACs (speedup = MAC ratio); the vertical gap to a point is the efficiency lost. "
          "QEMU panels plot instruction counts (EMULATED: their milliseconds are emulation time)."),
         ("int8_speedup", plot_int8_speedup,
          "INT8 vs FP32 speed-up of the same model: latency ratio on real CPUs, instruction-count "
          "ratio on QEMU (hatched, EMULATED). Dashed: the 4x that 8-bit operands promise."),
         ("op_breakdown", plot_op_breakdown,
          "Latency by op type from onnxruntime's per-node profile (kernel time) on this host: "
          "conv vs depthwise vs shuffle/transposes vs element-wise vs quantize/dequantize."),
         ("accuracy", plot_accuracy, "Top-1 accuracy of every model file on the test set."))


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
    head = ["model", "MACs (ours)", "paper MFLOPs", "theoretical (ours)", "paper theoretical"]
    for tid in tids:
        head.append(f"measured {tid}" + (f" [{EMU}: instr.]" if A.is_emulated(doc, tid) else ""))
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
    sp = A.int8_speedups(doc)
    if not sp:
        return None
    head = ["model", "runtime", "target", "latency FP32/INT8", "range (95% CIs)", "instr. FP32/INT8",
            "efficiency vs 4x", "CPU features"]
    body = []
    for s in sp:
        rng = s.get("latency_range")
        body.append([s["label"], "ONNX Runtime" if s["format"] == "onnx" else "TFLite",
                     s["target"] + (f" [{EMU}]" if s["emulated"] else ""),
                     fx(s["latency_ratio"]) + (" (emulated)" if s["emulated"] else ""),
                     "-" if not rng or s["emulated"] else f"{rng[0]:.2f}-{rng[1]:.2f}x",
                     fx(s["instr_ratio"]),
                     fnum(s["efficiency"]),
                     ", ".join(k for k in s["features"] if k in ("asimd", "dotprod", "i8mm", "sve",
                                                                 "avx2", "avx512f", "avx512_vnni"))
                     or "-"])
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


# ---- writers ------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;
color:#222;padding:0 16px;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;
padding-bottom:3px}h3{font-size:14px;margin:14px 0 4px}
table{border-collapse:collapse;font-size:12px;margin:8px 0;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f4f6;position:sticky;top:0}
tr.fail td{background:#fde8e8}tr.missing td{color:#888}tr.emu td{background:#fff8e6}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff}
.complete{background:#2e7d32}.failed{background:#c62828}.interrupted{background:#ef6c00}
.running{background:#1565c0}.emu-banner{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;
border-radius:6px;margin:12px 0;font-size:13px}.fail-box{background:#fde8e8;border:1px solid #e57373;
padding:8px 12px;border-radius:6px;margin:12px 0;font-size:13px}
figure{margin:14px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.meta{color:#555;font-size:12px}
ul.explain li{margin:2px 0;font-size:13px}.small{font-size:11px;color:#666}
code{background:#f3f4f6;padding:0 3px;border-radius:3px}
"""


def _esc(s) -> str:
    return html.escape(str(s))


def _html_table(head, body, cls=None) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, r in enumerate(body):
        c = (cls[i] if cls else "") or ""
        out.append(f"<tr class='{c}'>" + "".join(f"<td>{_esc(x)}</td>" for x in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _md_table(head, body) -> str:
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in body]
    return "\n".join(lines)


def render(results_path: str | Path) -> Path:
    """Write report.md, report.html and plots/ beside results.json; returns the HTML path."""
    rp = Path(results_path)
    try:
        doc = json.loads(rp.read_text())
    except FileNotFoundError:
        raise ArmqError(f"{rp} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArmqError(f"{rp} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("armq-deploy/"):
        raise ArmqError(f"{rp} is not a deploy results file (format armq-deploy/1)")
    out_dir = rp.parent
    plot_dir = out_dir / "plots"
    pngs: list[tuple[str, bytes, str]] = []
    for name, fn, caption in PLOTS:
        try:
            data = fn(doc)
        except Exception as e:  # noqa: BLE001 - one plot failing must not lose the report
            data = None
            caption += f" (plot failed: {type(e).__name__}: {e})"
        if data:
            plot_dir.mkdir(exist_ok=True)
            with atomic_output(plot_dir / f"{name}.png", "wb") as f:
                f.write(data)
            pngs.append((name, data, caption))
    md = build_md(doc, pngs)
    htm = build_html(doc, pngs)
    with atomic_output(out_dir / "report.md", "w") as f:
        f.write(md)
    with atomic_output(out_dir / "report.html", "w") as f:
        f.write(htm)
    return out_dir / "report.html"


def _title(doc: dict) -> str:
    t = A.g(doc, "config", "title")
    if t:
        return str(t)
    names = [A.short_name(k, m) for k, m in A.models(doc).items()]
    return "armq deploy: " + (", ".join(names[:4]) + (" ..." if len(names) > 4 else "") or "run")


def _sections(doc: dict):
    """Shared content: (kind, payload) items both writers render."""
    run = doc.get("run") or {}
    items = []
    emu_t = [t["id"] for t in A.targets(doc) if t.get("emulated")]
    if emu_t:
        items.append(("emu", f"{', '.join(emu_t)} ran under QEMU user-mode emulation: their "
                      f"milliseconds are EMULATED (emulation time on this host, FP32 "
                      f"disproportionately slow), not board latency. Compare their guest "
                      f"instruction counts, which are deterministic."))
    busy = busy_note(doc)
    if busy:
        items.append(("busy", busy))
    fails = [s for s in doc.get("stages") or [] if s.get("status") in ("failed", "interrupted")]
    if fails:
        items.append(("fail", [f"{s['kind']}{' ' + s['target'] if s.get('target') else ''}"
                               f"{' (' + s['model'] + ')' if s.get('model') else ''}: "
                               f"{s['status']}: {s.get('reason')}" for s in fails]))
    if run.get("status") == "running":
        items.append(("fail", ["this run has not finished (partial results.json)"]))
    return items


def busy_note(doc: dict) -> str | None:
    """A warning when local timings were taken on a loaded machine."""
    cpus = A.g(doc, "run", "host", "cpus") or 1
    loads = [x for s in doc.get("stages") or [] if s.get("kind") in ("bench", "opprofile")
             and not str(s.get("target") or "").startswith("qemu")
             for x in ((s.get("outputs") or {}).get("load_avg_before"),
                       (s.get("outputs") or {}).get("load_avg_after")) if isinstance(x, (int, float))]
    if not loads:
        start = A.g(doc, "run", "host", "load_avg")
        loads = [start[0]] if start else []
    if not loads or max(loads) <= cpus:
        return None
    return (f"local timings were taken on a busy machine (load average up to {max(loads):.1f} on "
            f"{cpus} CPUs): wall-clock latencies, their ratios and the per-op profile are "
            f"inflated and noisy (see the CI widths). QEMU instruction counts are not affected.")


def _meta_lines(doc: dict) -> list[str]:
    run = doc.get("run") or {}
    host = run.get("host") or {}
    cfg = doc.get("config") or {}
    lines = [f"run {run.get('id', '?')}: {run.get('status', '?')}, started {run.get('started', '?')}, "
             f"wall {fnum(run.get('wall_s'), 0)} s",
             f"host: {host.get('cpu', '?')} ({host.get('cpus', '?')} CPUs, {host.get('machine', '?')}); "
             f"load average at start {', '.join(f'{x:.1f}' for x in host.get('load_avg') or []) or '?'}",
             f"command: {' '.join(run.get('command') or [])}",
             f"targets: {', '.join(cfg.get('targets') or [])}; timed runs {_per_target(cfg.get('runs'))}, "
             f"warm-up {_per_target(cfg.get('warmup'))}; accuracy on "
             f"{cfg.get('limit_eval') or 'the full test set'}{' images' if cfg.get('limit_eval') else ''}"
             + (f"; baseline {doc.get('baseline')}" if doc.get("baseline") else "")]
    for n in doc.get("notes") or []:
        lines.append(f"note: {n}")
    return lines


def _per_target(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {x}" for k, x in v.items())
    return str(v)


def _model_blurbs(doc: dict) -> list[tuple[str, str, list[str]]]:
    out = []
    for tag, m in A.models(doc).items():
        w = m.get("weights") or {}
        cost = m.get("cost") or {}
        head = (f"{fcount(cost.get('macs'))} MACs, {fcount(cost.get('params'))} params, "
                f"input {cost.get('input_size', '?')} px; weights: {w.get('kind', '?')}"
                + (f" ({w.get('source')})" if w.get("source") else ""))
        out.append((f"{A.short_name(tag, m)}  ({tag})", head, A.explain(doc, tag)))
    return out


def build_md(doc: dict, pngs) -> str:
    L = [f"# {_title(doc)}", ""]
    L += [f"- {x}" for x in _meta_lines(doc)] + [""]
    for kind, payload in _sections(doc):
        if kind == "emu":
            L += [f"> **{EMU}:** {payload}", ""]
        elif kind == "busy":
            L += [f"> **Busy machine:** {payload}", ""]
        else:
            L += ["> **Failed or interrupted stages** (finished stages are kept):"] + [f"> - {x}" for x in payload] + [""]
    L += ["## What the numbers say", ""]
    for title, head, sentences in _model_blurbs(doc):
        L += [f"### {title}", "", f"*{head}*", ""] + [f"- {s}" for s in sentences] + [""]
    L += ["## Plots", ""]
    for name, _, cap in pngs:
        L += [f"![{name}](plots/{name}.png)", "", f"*{cap}*", ""]
    L += ["## Results (model x format x precision x target)", ""]
    head, body, _ = main_table(doc)
    L += [_md_table(head, body), ""]
    t8 = table8_table(doc)
    if t8:
        L += ["## ShuffleNet Table 8: theoretical vs measured speed-up over the baseline", "",
              f"Paper: {paper.CITATION}; efficiency = measured / theoretical; the paper's rule of "
              f"thumb: {paper.RULE_OF_THUMB}. Paper figures and their provenance: deploy/paper.py.",
              "",
              _md_table(*t8), ""]
    i8 = int8_table(doc)
    if i8:
        L += ["## INT8 vs FP32", "", _md_table(*i8), ""]
    head, body, _ = stage_table(doc)
    L += ["## Stages", "", _md_table(head, body), ""]
    L += ["---", "Generated by `python -m deploy` (armq). Definitions: " + A.DEFINITIONS]
    return "\n".join(L) + "\n"


def build_html(doc: dict, pngs) -> str:
    run = doc.get("run") or {}
    status = run.get("status", "running")
    H = ["<!doctype html><html><head><meta charset='utf-8'>",
         f"<title>{_esc(_title(doc))}</title><style>{CSS}</style></head><body>",
         f"<h1>{_esc(_title(doc))} <span class='badge {status}'>{_esc(status)}</span></h1>"]
    H += [f"<div class='meta'>{_esc(x)}</div>" for x in _meta_lines(doc)]
    for kind, payload in _sections(doc):
        if kind == "emu":
            H.append(f"<div class='emu-banner'><b>{EMU}:</b> {_esc(payload)}</div>")
        elif kind == "busy":
            H.append(f"<div class='emu-banner'><b>Busy machine:</b> {_esc(payload)}</div>")
        else:
            H.append("<div class='fail-box'><b>Failed or interrupted stages</b> (finished stages "
                     "are kept):<ul>"
                     + "".join(f"<li>{_esc(x)}</li>" for x in payload) + "</ul></div>")
    H.append("<h2>What the numbers say</h2>")
    for title, head, sentences in _model_blurbs(doc):
        H.append(f"<h3>{_esc(title)}</h3><div class='small'>{_esc(head)}</div><ul class='explain'>"
                 + "".join(f"<li>{_esc(s)}</li>" for s in sentences) + "</ul>")
    H.append("<h2>Plots</h2>")
    if not pngs:
        H.append("<p class='small'>No plot: no stage produced numbers to draw.</p>")
    for name, data, cap in pngs:
        b64 = base64.b64encode(data).decode("ascii")
        H.append(f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64,{b64}'>"
                 f"<figcaption>{_esc(cap)}</figcaption></figure>")
    head, body, cls = main_table(doc)
    H.append("<h2>Results (model x format x precision x target)</h2>")
    H.append(_html_table(head, body, cls))
    t8 = table8_table(doc)
    if t8:
        H.append("<h2>ShuffleNet Table 8: theoretical vs measured speed-up over the baseline</h2>")
        H.append(f"<p class='small'>Paper: {_esc(paper.CITATION)}. Efficiency = measured / "
                 f"theoretical; the paper's rule of thumb: {_esc(paper.RULE_OF_THUMB)}. Paper "
                 f"figures and their provenance: deploy/paper.py.</p>")
        H.append(_html_table(*t8))
    i8 = int8_table(doc)
    if i8:
        H.append("<h2>INT8 vs FP32</h2>" + _html_table(*i8))
    head, body, cls = stage_table(doc)
    H.append("<h2>Stages</h2>" + _html_table(head, body, cls))
    H.append("<p class='small'>Generated by <code>python -m deploy</code> (armq). Definitions: "
             + _esc(A.DEFINITIONS) + "</p>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("results", type=Path, help="runs/<timestamp>/results.json")
    a = p.parse_args(argv)
    out = render(a.results)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
