"""The zoo's results table: one row per model of a sweep, as Markdown + plots.

    python -m deploy.zoo_results runs/latest/results.json --out docs/results.md

Reads a deploy run's results.json (a `python -m deploy --sweep deploy/zoo.toml` run; deploy
calls this itself with `--publish`) and writes, per model: MACs, params, memory access,
FP32 top-1 on the whole test set (the checkpoint's verified record) and on the run's
evaluation sample, INT8 top-1 / drop / agreement / output SQNR for ONNX Runtime and TFLite,
local latency and QEMU guest instructions FP32 -> INT8, the INT8 speed-up and the
efficiency against theory (vs the baseline's MACs). The seeds' claims are then checked on
those figures, one paragraph each. Speed-up arithmetic comes from deploy.analysis (which
takes it from android_bench.compare); nothing is recomputed here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_output, atomic_path, cli_entry, declare_inputs, load_json, \
    portable_arg

from android_bench.compare import ratio
from export.formats import Format

from . import analysis as A
from .tables import fcount, fx

FMTS = ("onnx", "tflite")
FMT_NAME = {f: Format(f).runtime.short for f in FMTS}   # export.formats: "ORT", "TFLite"


def pct(v: Any, d: int = 2) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{100 * v:.{d}f}"


def minstr(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v / 1e6:.1f}"


def ms(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.3f}" if v < 1 else f"{v:.2f}"


def arrow(a: str, b: str) -> str:
    return "-" if a == "-" and b == "-" else f"{a} → {b}"


# ---- per-model facts --------------------------------------------------------------------

def trained(m: dict) -> bool:
    return A.g(m, "weights", "kind") == "shipped"


def full_top1(m: dict) -> float | None:
    """The checkpoint's recorded top-1 on the whole test set (checked by zoo.verify)."""
    v = A.g(m, "weights", "metrics", "test_top1")
    return v if isinstance(v, (int, float)) else None


def acc(m: dict, key: str) -> dict:
    return A.g(m, "accuracy", "results", key, default={}) or {}


def drop(m: dict, key: str) -> float | None:
    """FP32 top-1 minus INT8 top-1 on the same images, in points (the accuracy stage
    records percentages; the float reference is the model of the same format)."""
    q, f = acc(m, A.int8_key_for(m, key)).get("top1"), acc(m, key).get("top1")
    return f - q if isinstance(q, (int, float)) and isinstance(f, (int, float)) else None


def num(v: Any, d: int = 2) -> str:
    """A figure the accuracy stage already records in percent."""
    return "-" if not isinstance(v, (int, float)) else f"{v:.{d}f}"


def instr(m: dict, target: str, key: str) -> float | None:
    b = A.bench(m, target, key)
    return (b or {}).get("instructions")


def latency(m: dict, target: str, key: str) -> float | None:
    b = A.bench(m, target, key)
    return (b or {}).get("median_ms")


def int8_speedups(doc: dict) -> dict[tuple[str, str, str], float | None]:
    """(model, target, format) -> INT8 over FP32 speed-up, computed once per table."""
    return {(s["model"], s["target"], s["format"]): s["speedup"] for s in A.int8_speedups(doc)}


def baseline_pairs(doc: dict) -> dict[tuple[str, str, str], dict]:
    """(model, target, artifact key) -> the pair against the baseline's FP32 model."""
    return {(p["model"], p["target"], p["key"]): p for p in A.baseline_pairs(doc)}


def training_note(m: dict) -> str:
    w = m.get("weights") or {}
    if w.get("kind") != "shipped":
        return "not trained (random init)"
    ep = w.get("epochs_done")
    return f"{ep} ep" if ep else "trained"


# ---- tables -----------------------------------------------------------------------------

def _md(head: list[str], body: list[list[str]], right_from: int = 1) -> list[str]:
    out = ["| " + " | ".join(head) + " |",
           "| " + " | ".join("---" if i < right_from else "---:" for i in range(len(head))) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return out


def accuracy_table(doc: dict) -> list[str]:
    n = A.g(doc, "config", "limit_eval")
    head = ["model", "weights", "FP32 top-1 % (10k, torch)", f"FP32 top-1 % ({n} img, ORT)",
            "INT8 ORT top-1 %", "drop pt", "agree %", "SQNR dB",
            f"FP32 top-1 % ({n} img, TFLite)", "INT8 TFLite top-1 %", "drop pt", "agree %", "SQNR dB"]
    body = []
    for tag, m in A.models(doc).items():
        label = A.short_name(tag, m)
        if not trained(m):
            body.append([label, training_note(m)] + ["not trained"] + ["-"] * (len(head) - 3))
            continue
        row = [label, training_note(m), pct(full_top1(m))]
        for fmt in FMTS:
            q = acc(m, A.int8_key_for(m, fmt))
            d = drop(m, fmt)
            row += [num(acc(m, fmt).get("top1")), num(q.get("top1")),
                    "-" if d is None else f"{d:+.2f}", num(q.get("agreement")),
                    "-" if q.get("sqnr_db") is None else f"{q['sqnr_db']:.1f}"]
        body.append(row)
    return _md(head, body, right_from=2)


def speed_table(doc: dict) -> list[str]:
    qemu = [t["id"] for t in A.targets(doc) if t.get("emulated")]
    local = [t["id"] for t in A.targets(doc) if not t.get("emulated")]
    head = ["model", "MACs", "params", "memory access"]
    for t in local:
        head += [f"{t} ms ORT FP32 → INT8", f"{t} ms TFLite FP32 → INT8"]
    for t in qemu:
        head += [f"{t.split(':')[-1]} M instr. ORT FP32 → INT8",
                 f"{t.split(':')[-1]} M instr. TFLite FP32 → INT8"]
    body = []
    for tag, m in A.models(doc).items():
        row = [A.short_name(tag, m), fcount(A.g(m, "cost", "macs")), fcount(A.g(m, "cost", "params")),
               fcount(A.g(m, "cost", "memory_access"))]
        for t in local:
            row += [arrow(ms(latency(m, t, f)), ms(latency(m, t, A.int8_key_for(m, f, t)))) for f in FMTS]
        for t in qemu:
            row += [arrow(minstr(instr(m, t, f)), minstr(instr(m, t, A.int8_key_for(m, f, t)))) for f in FMTS]
        body.append(row)
    return _md(head, body)


def speedup_table(doc: dict) -> list[str]:
    ts = [t["id"] for t in A.targets(doc)]
    base = doc.get("baseline")
    head = ["model"] + [f"INT8 speed-up {t} (ORT / TFLite)" for t in ts]
    if base:
        head += [f"MAC ratio vs {base.split('_')[0]}",
                 "measured FP32 vs baseline, a76 instr. (ORT / TFLite)",
                 "efficiency (measured / MAC ratio)"]
    body = []
    a76 = next((t for t in ts if t.endswith("cortex-a76")), ts[-1] if ts else None)
    int8, pairs = int8_speedups(doc), baseline_pairs(doc)
    for tag, m in A.models(doc).items():
        row = [A.short_name(tag, m)]
        for t in ts:
            row.append(" / ".join(fx(int8.get((tag, t, f))) for f in FMTS))
        if base:
            ps = [pairs.get((tag, a76, f)) for f in FMTS]
            mr = next((p["mac_ratio"] for p in ps if p), None)
            row += [fx(mr) if tag != base else "1.00x (baseline)",
                    " / ".join(fx((p or {}).get("speedup")) for p in ps),
                    " / ".join(fx((p or {}).get("efficiency")) for p in ps)]
        body.append(row)
    return _md(head, body)


# ---- the seeds' claims, on these numbers -------------------------------------------------

def find(doc: dict, model: str, **params: Any) -> tuple[str, dict] | None:
    for tag, m in A.models(doc).items():
        v = m.get("variant") or {}
        if v.get("model") == model and all(
                (v.get("params") or {}).get(k) == val for k, val in params.items()):
            return tag, m
    return None


def _desc(doc: dict, hit: tuple[str, dict] | None) -> str:
    if hit is None:
        return "(not in this run)"
    tag, m = hit
    t1 = full_top1(m)
    return (f"{A.short_name(tag, m)}: {fcount(A.g(m, 'cost', 'macs'))} MACs, "
            f"{fcount(A.g(m, 'cost', 'params'))} params, "
            + (f"{100 * t1:.2f} % top-1 ({training_note(m)})" if t1 is not None and trained(m)
               else "not trained"))


def epochs(m: dict) -> int | None:
    ep = A.g(m, "weights", "epochs_done")
    return ep if isinstance(ep, int) else None


def fair(*ms: dict) -> str:
    """A warning when the compared checkpoints trained for different epoch counts."""
    eps = {epochs(m) for m in ms}
    return "" if len(eps) == 1 else " Their schedules differ (" + " vs ".join(
        f"{epochs(m)} ep" for m in ms) + "), so the accuracy gap is partly training length."


def a76_fp32(doc: dict, m: dict, fmt: str = "tflite") -> float | None:
    t = next((t["id"] for t in A.targets(doc) if t["id"].endswith("cortex-a76")), None)
    return instr(m, t, fmt) if t else None


def top1_gap(a: dict, b: dict) -> str:
    x, y = full_top1(a), full_top1(b)
    return "-" if x is None or y is None else f"{100 * (x - y):+.2f} pt"


def claims(doc: dict) -> list[str]:
    out: list[str] = []
    p1, p4, p32 = (find(doc, "hetconv_vgg16", part=p) for p in (1, 4, 32))
    if p1 and (p4 or p32):
        lines = []
        for hit in (p4, p32):
            if hit is None:
                continue
            r = ratio(A.g(hit[1], "cost", "macs"), A.g(p1[1], "cost", "macs"))
            saved = "-" if r is None else f"{100 * (1 - r):.0f} %"
            sp = ratio(a76_fp32(doc, p1[1]), a76_fp32(doc, hit[1]))
            lines.append(f"P={A.g(hit[1], 'variant', 'params', 'part')}: {saved} fewer MACs, "
                         f"{fx(sp)} fewer cortex-a76 FP32 TFLite instructions, top-1 "
                         f"{top1_gap(hit[1], p1[1])} ({training_note(hit[1])} vs "
                         f"{training_note(p1[1])})")
        out.append("**HetConv** (P=1 is the paper's baseline: VGG-16 with all five pools and an "
                   "FC 512-512-10 head, Li et al.'s CIFAR VGG-16, not the zoo's `vgg16`). "
                   + _desc(doc, p1) + ". " + "; ".join(lines) + "." + fair(
                       *(h[1] for h in (p1, p4, p32) if h)))
    v2h, v1h = find(doc, "shufflenet_v2", width=0.5), find(doc, "shufflenet_v1", width=0.5)
    mb = find(doc, "mobilenet_v2")
    if v2h:
        bits = [_desc(doc, h) for h in (v2h, v1h, mb)]
        if v1h:
            sp = ratio(a76_fp32(doc, v1h[1]), a76_fp32(doc, v2h[1]))
            bits.append(f"at equal MACs V2 0.5x runs {fx(sp)} fewer cortex-a76 FP32 TFLite "
                        f"instructions than V1 0.5x and scores {top1_gap(v2h[1], v1h[1])}")
        out.append("**ShuffleNet V2 0.5x vs V1 0.5x and MobileNet**. " + "; ".join(bits) + "."
                   + (fair(v2h[1], v1h[1]) if v1h else ""))
    sh, rn = find(doc, "shiftnet"), find(doc, "resnet18")
    if sh:
        extra = ""
        if rn:
            pr = ratio(A.g(rn[1], "cost", "params"), A.g(sh[1], "cost", "params"))
            extra = (f"; ShiftNet has {fx(pr, 0)} fewer parameters than ResNet-18 at "
                     f"{top1_gap(sh[1], rn[1])} top-1." + fair(sh[1], rn[1]))
        out.append("**Shift** (zero-FLOP shifts replace spatial convolutions). " + _desc(doc, sh)
                   + "; " + _desc(doc, rn) + extra)
    fam: dict[str, list[str]] = {}
    for tag, m in A.models(doc).items():
        if not trained(m):
            continue
        drops = {FMT_NAME[f]: drop(m, f) for f in FMTS if drop(m, f) is not None}
        if not drops:
            continue
        ok = [k for k, d in drops.items() if d <= 0.5]
        bad = [f"{k} {drops[k]:+.2f} pt, "
               f"SQNR {acc(m, A.int8_key_for(m, f)).get('sqnr_db', float('nan')):.1f} dB"
               for f, k in FMT_NAME.items() if k in drops and k not in ok]
        verdict = ("holds on both" if not bad else
                   f"holds on {', '.join(ok)}, breaks on {'; '.join(bad)}" if ok else
                   f"breaks on both ({'; '.join(bad)})")
        name = A.g(m, "variant", "model", default=tag)
        fam.setdefault(name, []).append(f"{A.short_name(tag, m)} {verdict}")
    if fam:
        out.append("**INT8 per family** (drop = FP32 - INT8 top-1 on the same images; holds = "
                   "within 0.5 pt): " + "; ".join(", ".join(v) for v in fam.values()) + ".")
    return out


# ---- plots ------------------------------------------------------------------------------

def plot_accuracy_vs_macs(doc: dict) -> bytes | None:
    from .plots import _plt, _png

    pts = [(A.g(m, "cost", "macs"), full_top1(m), A.short_name(t, m),
            [acc(m, A.int8_key_for(m, f)).get("top1") for f in FMTS], [acc(m, f).get("top1") for f in FMTS])
           for t, m in A.models(doc).items() if trained(m) and full_top1(m) is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for macs, t1, label, q, f in pts:
        ax.scatter(macs, 100 * t1, color="#1f77b4", s=22, zorder=3)
        ax.annotate(label, (macs, 100 * t1), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for qi, fi, mk in zip(q, f, ("v", "x")):
            if isinstance(qi, (int, float)) and isinstance(fi, (int, float)):
                # INT8 drawn at the full-set FP32 minus its drop on the sample (same images).
                ax.scatter(macs, 100 * t1 - (fi - qi), marker=mk, color="#d62728", s=16, zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image (log)")
    ax.set_ylabel("CIFAR-10 top-1 %")
    ax.set_title("Accuracy vs arithmetic: FP32 (dots), INT8 ORT (v) and TFLite (x)")
    return _png(fig)


def plot_efficiency(doc: dict) -> bytes | None:
    from .plots import _plt, _png

    pairs = [p for p in A.baseline_pairs(doc)
             if p["target"].endswith("cortex-a76") and p["precision"] == "FP32"
             and p.get("mac_ratio") and p.get("speedup")]
    if not pairs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for fmt, mk in (("onnx", "o"), ("tflite", "s")):
        ps = [p for p in pairs if p["format"] == fmt]
        ax.scatter([p["mac_ratio"] for p in ps], [p["speedup"] for p in ps], marker=mk,
                   label=FMT_NAME[fmt], s=22)
        for p in ps if fmt == "tflite" else ():  # one label per model: the ORT twin is below it
            ax.annotate(p["label"], (p["mac_ratio"], p["speedup"]), fontsize=6,
                        xytext=(4, -2), textcoords="offset points")
    lim = max(max(p["mac_ratio"] for p in pairs), max(p["speedup"] for p in pairs)) * 1.3
    ax.plot([0.1, lim], [0.1, lim], color="#888", lw=0.8, ls="--", label="measured = MAC ratio")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"MAC ratio vs {doc.get('baseline')} (theory)")
    ax.set_ylabel("measured speed-up, cortex-a76 guest instructions (EMULATED)")
    ax.set_title("Theoretical vs measured FP32 speed-up over the baseline")
    ax.legend(fontsize=7)
    return _png(fig)


# ---- the document -----------------------------------------------------------------------

def _command(run: dict) -> str:
    """The run's command line with its paths relative to the run's repository (or `<dir>/`
    outside it): the published table must not carry the paths of the machine that ran it."""
    words = [str(w) for w in run.get("command") or ["python -m deploy --sweep deploy/zoo.toml"]]
    base = str(run.get("repo") or ".")
    return " ".join(portable_arg(w, base) for w in words)


def render(doc: dict, plot_dir: str = "results") -> tuple[str, dict[str, bytes]]:
    run = doc.get("run") or {}
    n = A.g(doc, "config", "limit_eval")
    lines = [f"# {A.g(doc, 'config', 'title', default='armq zoo results')}", "",
             f"Generated by `python -m deploy.zoo_results` from run {run.get('id', '?')} "
             f"(`{_command(run)}`, "
             f"{run.get('status', '?')}, started {run.get('started', '?')}, host "
             f"{A.g(run, 'host', 'cpu', default='?')}). Do not edit by hand.", "",
             "- **FP32 top-1 (10k)** is each checkpoint's record on all 10,000 CIFAR-10 test "
             "images, re-measured on this CPU from the shipped file (`python -m zoo.verify`). "
             f"The other accuracy columns are on the run's {n}-image class-balanced sample, so "
             "FP32 and INT8 are compared on the same images (drop = FP32 - INT8, in points; "
             "agreement = same top-1 as the float model of the same format).",
             "- QEMU columns are guest instructions per inference under user-mode emulation "
             "(EMULATED: deterministic, not board latency). Local milliseconds are the median of "
             "timed runs on this x86 host" + (" taken on a busy machine" if any(
                 "busy" in str(x).lower() for x in doc.get("notes") or []) else "") + ".",
             "- Rows marked *not trained* carry cost and speed only (random init).", "",
             "## Accuracy, FP32 vs INT8", ""]
    lines += accuracy_table(doc)
    lines += ["", "## Cost and speed", ""] + speed_table(doc)
    lines += ["", "## Speed-ups: INT8 over FP32, and FP32 over the baseline vs theory", "",
              "INT8 speed-up = FP32 / INT8 latency (local) or instructions (QEMU); the bit-width "
              "bound is 4x. MAC ratio = baseline MACs / model MACs (the theory of the seeds); "
              "efficiency = measured / MAC ratio.", ""] + speedup_table(doc)
    plots: dict[str, bytes] = {}
    for name, fn in (("accuracy_vs_macs.png", plot_accuracy_vs_macs),
                     ("efficiency_a76.png", plot_efficiency)):
        png = fn(doc)
        if png:
            plots[name] = png
            lines += ["", f"![{name[:-4]}]({plot_dir}/{name})"]
    cl = claims(doc)
    if cl:
        lines += ["", "## The seeds' claims, checked on these numbers", ""]
        for c in cl:
            lines += [c, ""]
    return "\n".join(lines).rstrip() + "\n", plots


def publish(doc: dict, out: Path) -> Path:
    """Write `out` (Markdown) and its plots in `<out stem>/` beside it, each atomically."""
    if out.suffix.lower() != ".md":
        raise ArmqError(f"--out {out}: expected a .md file")
    plot_dir = out.with_suffix("")
    text, plots = render(doc, plot_dir.name)
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        with atomic_output(plot_dir / name) as f:
            f.write(png)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("deploy.zoo_results", __doc__)
    p.add_argument("results", type=Path, help="a deploy run's results.json")
    p.add_argument("--out", type=Path, required=True, help="Markdown file to write (plots beside it)")
    args = p.parse_args(argv)
    declare_inputs(args.results, outputs=[args.out])
    doc = load_json(args.results, "results file")   # bounded: size, depth, values, a FIFO
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise ArmqError(f"{args.results}: not a deploy results.json (no 'models')")
    if args.out.resolve() == args.results.resolve():
        raise ArmqError("--out would overwrite the results.json it reads")
    from .report import fields_of
    with fields_of(args.results):
        print(publish(doc, args.out))
    return 0


if __name__ == "__main__":
    cli_entry(main, "deploy.zoo_results")
