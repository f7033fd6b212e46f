"""The report's plots: results.json -> PNG bytes (matplotlib, Agg), one function per
plot; `PLOTS` lists them with their captions, in report order."""
from __future__ import annotations

import io

from export.card import key_format, key_is_int8, ordered_keys

from . import analysis as A
from .collect import fmt_prec
from .tables import EMU, fms

CAT_COLORS = {"conv": "#4C72B0", "depthwise": "#55A868", "shuffle/transpose": "#C44E52",
              "element-wise": "#8172B2", "quantize/dequantize": "#CCB974", "pool": "#64B5CD",
              "other": "#999999"}


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
            for key in A.bench_keys(m, t["id"]):
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
        # every file that ran: filled = ONNX, hollow = other runtimes, triangles = INT8
        for key in ordered_keys(p[2] for p in mine):
            sel = [p for p in mine if p[2] == key]
            color = "#DD8452" if key_is_int8(key) else "#4C72B0"
            face = key_format(key) == "onnx"
            ax.scatter([p[3] for p in sel], [p[4] for p in sel],
                       marker="^" if key_is_int8(key) else "o", s=46,
                       facecolors=color if face else "none", edgecolors=color, linewidths=1.4,
                       label=A.runtime_of(key), zorder=3)
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
        if any(key_is_int8(p[2]) for p in mine):
            ax.plot([lo, hi], [k * lo / 4, k * hi / 4], ":", color="#DD8452", linewidth=1,
                    label="same, INT8 at its 4x bit-width bound")
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
    ax.text(len(groups) - 0.5, 4.0, " bit-width bound 4x (32/8 bits)", va="bottom", ha="right",
            fontsize=7)
    ax.axhline(1.0, color="#B00020", linewidth=0.8)
    ax.text(len(groups) - 0.5, 1.0, " no gain", va="bottom", ha="right", fontsize=7, color="#B00020")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{lbl}\n{A.runtime_name(f)}" for lbl, f in groups],
                       fontsize=8)
    ax.set_ylabel("FP32 / INT8 (higher = INT8 faster)")
    ax.set_ylim(0, max(4.6, max(s["speedup"] for s in sp) * 1.15))
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.set_title("INT8 vs FP32 speed-up per model and target (bit-width bound 4x)")
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


WHY_PANELS = 6   # at most this many model x target panels (the tables list every one)


def plot_int8_why(doc: dict) -> bytes | None:
    """Per model x target under INT8_GOAL: each op class's share of the INT8 cost (bar)
    and its FP32 -> INT8 speed-up (label; red below the goal)."""
    items = [s for s in A.int8_shortfalls(doc) if s["why"]][:WHY_PANELS]
    if not items:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(items), 1, figsize=(6.4, 2.4 * len(items)), squeeze=False)
    for ax, s in zip(axes[:, 0], items):
        rows = sorted((r for r in s["why"]["classes"] if r.get("int8_share")),
                      key=lambda r: -r["int8_share"])
        low = [r.get("speedup") is None or r["speedup"] < A.INT8_GOAL for r in rows]
        ax.barh(range(len(rows)), [100 * r["int8_share"] for r in rows],
                color=["#C44E52" if x else "#55A868" for x in low])
        for i, r in enumerate(rows):
            sp = "-" if r.get("speedup") is None else f"{r['speedup']:.1f}x"
            ax.text(100 * r["int8_share"] + 1, i, sp, va="center", fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r["class"] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 110)
        ax.set_title(f"{s['label']} on {s['target']}: best INT8 {s['speedup']:.2f}x best FP32 "
                     f"(ONNX Runtime pair, predicted)", fontsize=8)
    axes[-1, 0].set_xlabel(f"% of the INT8 file's predicted cost; label: FP32 -> INT8 speed-up "
                           f"(red: under {A.INT8_GOAL}x)")
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
    colors = {"onnx": "#4C72B0", "onnx_int8": "#DD8452", "tflite": "#8CA9D3", "tflite_int8": "#F0B27A",
              "mnn": "#55A868", "mnn_int8": "#C44E52"}
    # "ONNX INT8 U8S8", "ExecuTorch INT8", "MNN FP32": export.formats' labels via the key
    labels = [f"{n}\n{' '.join(fmt_prec(k))}" for n, k, _ in items]
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
          "with its MACs (the MAC-ratio theory: speedup = MAC ratio); the vertical gap to a point "
          "is the efficiency lost. "
          "QEMU panels plot instruction counts (EMULATED: their milliseconds are emulation time)."),
         ("int8_speedup", plot_int8_speedup,
          "INT8 vs FP32 speed-up of the same model: latency ratio on real CPUs, instruction-count "
          "ratio on QEMU (hatched, EMULATED). Dashed: INT8's bit-width bound, 4x (32/8-bit "
          "operands, same MACs) - not the MAC-ratio theory of the first plot."),
         ("op_breakdown", plot_op_breakdown,
          "Latency by op type from onnxruntime's per-node profile (kernel time) on this host: "
          "conv vs depthwise vs shuffle/transposes vs element-wise vs quantize/dequantize."),
         ("int8_why", plot_int8_why,
          f"What holds INT8 back where the best INT8 stays under {A.INT8_GOAL}x the best FP32: "
          "each op class's share of the INT8 cost, from the latency model's per-node roofline "
          "of the ONNX Runtime pair (predicted, shipped constants); label: that class's FP32 -> "
          "INT8 speed-up."),
         ("accuracy", plot_accuracy, "Top-1 accuracy of every model file on the test set."))
