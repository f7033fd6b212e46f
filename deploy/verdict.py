"""What a deploy run decides, from results.json: the configuration to ship per model and
target (the report's headline and its "Which configuration to ship" table) and the run's
badge (complete, partial, failed, ...). Pure functions over deploy.analysis's numbers."""
from __future__ import annotations

from .analysis import (MAX_INT8_DROP, SLOW_INT8, bench_keys, best_per_target, g, models,
                       runtime_of, targets)


def ship_choice(doc: dict) -> list[dict]:
    """Per model x target, the configuration to ship (best_per_target's records, decided):
    the best INT8 file when it is at least SLOW_INT8x the best FP32 file and loses at most
    MAX_INT8_DROP top-1 points against it on the same test images (unmeasured accuracy
    does not block it: `drop` None says so); else the best FP32 file (`ship_key`, `ship`);
    `why_ship` says which rule decided."""
    out = []
    for b in best_per_target(doc):
        acc = g(models(doc), b["model"], "accuracy", "results", default={}) or {}
        fp, q = (g(acc, b[k], "top1") for k in ("fp32_key", "int8_key"))
        drop = fp - q if isinstance(fp, (int, float)) and isinstance(q, (int, float)) else None
        fast = isinstance(b["speedup"], (int, float)) and b["speedup"] >= SLOW_INT8
        int8 = fast and (drop is None or drop <= MAX_INT8_DROP)
        why = (f"INT8 {b['speedup']:.2f}x the best FP32 file" if fast else
               f"INT8 only {b['speedup']:.2f}x the best FP32 file (under {SLOW_INT8}x)"
               if isinstance(b["speedup"], (int, float)) else "no INT8 speed-up measured")
        if fast and drop is not None:
            why += (f", {drop:.2f} pt top-1 lost (over {MAX_INT8_DROP:g})" if not int8 else
                    f", {0.0 - drop:+.2f} pt top-1")
        elif fast:
            why += ", accuracy not measured"
        key = b["int8_key"] if int8 else b["fp32_key"]
        out.append({**b, "ship_key": key, "ship_int8": int8, "ship": runtime_of(key),
                    "drop": drop, "why_ship": why})
    return out


def unmeasured_targets(doc: dict) -> list[str]:
    """The targets where no model has an FP32 and an INT8 file measured: no choice there."""
    have = {b["target"] for b in best_per_target(doc)}
    return [t["id"] for t in targets(doc) if t["id"] not in have]


def measured_models(doc: dict) -> list[str]:
    """The models with some figure measured: a file benchmarked on some target."""
    return [tag for tag, m in models(doc).items()
            if any(bench_keys(m, t["id"]) for t in targets(doc))]


def run_badge(doc: dict) -> str:
    """The report's run status: a run with failed stages is `partial` when some model has
    figures to read (measured on some target), `failed` when none has; else results.json's
    status (complete, interrupted, running)."""
    status = str(g(doc, "run", "status", default="running"))
    if status != "failed":
        return status
    return "partial" if measured_models(doc) else "failed"


def badge_text(doc: dict) -> str:
    """The badge with what it rests on: `partial (2 of 3 models measured, 4 stages failed)`."""
    badge = run_badge(doc)
    if badge != "partial":
        return badge
    n = len(models(doc))
    f = sum(1 for s in doc.get("stages") or [] if s.get("status") == "failed")
    return (f"partial ({len(measured_models(doc))} of {n} model{'s' if n != 1 else ''} measured, "
            f"{f} stage{'s' if f != 1 else ''} failed)")
