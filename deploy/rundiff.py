"""Do two deploy runs agree where they must? Compare everything that does not depend on
where or when the stages ran.

    python -m deploy.rundiff runs/A runs/B        # run folders or their results.json

The question behind it: a sweep moved to another executor (`--executor ray`), another
machine or another armq commit should change timings only. Compared exactly: every stage's
status, each model's cost, weights hash, artifact sizes / sha256 / op counts, accuracy
(top-1, top-5, agreement, SQNR: everything but seconds; on this host and, for the files the
QEMU targets run, under emulation), which files each target
benchmarked (size, runtime, threads, INT8), the ONNX profile's node counts, and each
target's INT8 recipe. Compared within a tolerance: QEMU guest instructions per inference,
which move by a few hundred in 10^7 between repeated inferences of one process (allocation
addresses change a few code paths); the tolerance is the larger of the two runs' own
variation over their warm-up and timed inferences, or --tolerance-pct. Latency, wall time,
nodes and dates are not compared, nor whether a real CPU's why_int8 stage ran (it runs where
the measured INT8 speed-up stays under the goal: a timing).

Exit status: 0 the runs agree, 1 they differ (each difference one line), 2 a bad input.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, cli_entry, load_json

from .analysis import is_emulated
from .report import fields_of, load_results

PROG = "deploy.rundiff"


def _timing_decided(doc: dict, stage: dict) -> bool:
    """A stage whose running at all follows from measured latency: why_int8 on a real CPU
    runs only where best INT8 / best FP32 (milliseconds there) stays under the goal."""
    return stage.get("kind") == "why_int8" and not is_emulated(doc, str(stage.get("target")))


def non_timing(doc: dict) -> dict[str, Any]:
    """Everything of a results.json that must not depend on where or when stages ran."""
    out: dict[str, Any] = {
        "stages": {s.get("id"): s.get("status") for s in doc.get("stages") or []
                   if not _timing_decided(doc, s)},
        "targets": {t.get("id"): (t.get("recipe") or {}).get("name")
                    for t in doc.get("targets") or []},
    }
    for tag, m in (doc.get("models") or {}).items():
        out[f"models.{tag}"] = {
            "cost": m.get("cost"), "weights": (m.get("weights") or {}).get("sha256"),
            "artifacts": {k: {f: a.get(f) for f in ("size_bytes", "sha256", "ops")}
                          for k, a in (m.get("artifacts") or {}).items()},
            "accuracy": {k: {f: v for f, v in r.items() if f != "seconds"}
                         for k, r in ((m.get("accuracy") or {}).get("results") or {}).items()},
            "accuracy_on_target": {t: {f: v for f, v in r.items() if f != "seconds"}
                                   for t, r in (m.get("accuracy_on_target") or {}).items()},
            "bench": {t: {k: {f: r.get(f) for f in ("file", "size_bytes", "emulated", "runtime",
                                                    "threads", "int8")}
                          for k, r in per.items()} for t, per in (m.get("bench") or {}).items()},
            "profile_nodes": {k: {c: v.get("nodes") for c, v in (p.get("categories") or {}).items()}
                              for k, p in (m.get("profile") or {}).items()},
        }
    return out


def _diff(a: Any, b: Any, path: str, out: list[str]) -> int:
    """Append one line per difference (a key on one side only: one line for all below it);
    returns the number of leaf fields compared."""
    if isinstance(a, dict) and isinstance(b, dict) and (a or b):
        n = 0
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(f"{sub}: only in run {'A' if k in a else 'B'}")
                n += 1
            else:
                n += _diff(a[k], b[k], sub, out)
        return n
    if not _same(a, b):
        out.append(f"{path}: {a!r} vs {b!r}")
    return 1


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _same(a: Any, b: Any) -> bool:
    """Equal, where NaN (a value not measured) equals NaN on the same field and differs from
    every number: `nan != nan` would report identical runs as different, and every ordered
    comparison with NaN is False (a tolerance test would let NaN agree with anything)."""
    if _is_nan(a) or _is_nan(b):
        return _is_nan(a) and _is_nan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@dataclass(frozen=True)
class Count:
    """One file's guest instructions per inference on one emulated target, in one run."""

    per_inference: float
    variation_pct: float     # (max - min) / median over its warm-up and timed inferences


def _raw_counts(doc: dict, run_dir: Path, target: str, tag: str) -> dict[str, list[float]]:
    """{file name: warm-up + timed counts} from the android_bench JSON the run kept."""
    rel = ((doc.get("bench_files") or {}).get(target) or {}).get(tag)
    if not isinstance(rel, str):
        return {}
    path = (run_dir / rel).resolve()
    if not path.is_relative_to(run_dir.resolve()) or not path.is_file():
        return {}   # a results.json names files inside its own run folder, nothing else
    raw = load_json(path, "benchmark file")
    out: dict[str, list[float]] = {}
    for r in (raw.get("results") or []) if isinstance(raw, dict) else []:
        ins = r.get("instructions") if isinstance(r, dict) else None
        name = (r.get("model") or {}).get("file") if isinstance(r, dict) else None
        if isinstance(ins, dict) and isinstance(name, str):
            vals = [v for v in [*(ins.get("warmup") or []), *(ins.get("timed") or [])]
                    if isinstance(v, (int, float))]
            if vals:
                out[name] = vals
    return out


def instruction_counts(doc: dict, run_dir: Path) -> dict[str, Count]:
    """{"<model>@<target>:<artifact key>": Count} for every emulated benchmark."""
    out: dict[str, Count] = {}
    for tag, m in (doc.get("models") or {}).items():
        for target, per in (m.get("bench") or {}).items():
            raw = None
            for key, r in per.items():
                if not r.get("emulated") or not isinstance(r.get("instructions"), (int, float)):
                    continue
                if raw is None:
                    raw = _raw_counts(doc, run_dir, target, tag)
                vals = raw.get(str(r.get("file")))
                med = statistics.median(vals) if vals else None
                var = (100.0 * (max(vals) - min(vals)) / med if vals and med
                       else float(r.get("instructions_spread_pct") or 0.0))
                out[f"{tag}@{target}:{key}"] = Count(float(r["instructions"]), var)
    return out


@dataclass
class Comparison:
    fields: int                       # non-timing fields compared exactly
    differences: list[str]            # one line each
    counts: int                       # instruction counts compared
    worst_count_pct: float            # the largest relative difference between the runs
    worst_count: str | None

    @property
    def agree(self) -> bool:
        return not self.differences


def compare(a: dict, a_dir: Path, b: dict, b_dir: Path,
            tolerance_pct: float | None = None) -> Comparison:
    diffs: list[str] = []
    fields = _diff(non_timing(a), non_timing(b), "", diffs)
    ca, cb = instruction_counts(a, a_dir), instruction_counts(b, b_dir)
    worst, worst_key = 0.0, None
    for k in sorted(set(ca) | set(cb)):
        if k not in ca or k not in cb:
            diffs.append(f"{k} instructions: only in run {'A' if k in ca else 'B'}")
            continue
        x, y = ca[k], cb[k]
        if not (math.isfinite(x.per_inference) and math.isfinite(y.per_inference)):
            if not _same(x.per_inference, y.per_inference):
                diffs.append(f"{k} instructions: {x.per_inference:.0f} vs {y.per_inference:.0f}")
            continue
        rel = 100.0 * abs(x.per_inference - y.per_inference) / max(x.per_inference, 1.0)
        tol = tolerance_pct if tolerance_pct is not None else max(x.variation_pct, y.variation_pct)
        if rel > worst:
            worst, worst_key = rel, k
        if rel > tol:
            diffs.append(f"{k} instructions: {x.per_inference:.0f} vs {y.per_inference:.0f} "
                         f"({rel:.4f} % apart, tolerance {tol:.4f} %)")
    return Comparison(fields, diffs, len(set(ca) & set(cb)), worst, worst_key)


def _open(arg: Path) -> tuple[dict, Path]:
    rp = arg / "results.json" if arg.is_dir() else arg
    doc = load_results(rp)
    with fields_of(rp):     # every field compare() reads, of the right type
        non_timing(doc)
        instruction_counts(doc, rp.parent)
    return doc, rp.parent


def _describe(doc: dict) -> str:
    run = doc.get("run") or {}
    ex = (run.get("executor") or {}).get("executor", "?")
    wall = run.get("wall_s")
    return (f"{run.get('id', '?')} ({ex} executor, {run.get('status', '?')}"
            + (f", {wall / 60:.1f} min" if isinstance(wall, (int, float)) else "") + ")")


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("run_a", type=Path, help="a deploy run folder or its results.json")
    p.add_argument("run_b", type=Path, help="the run to compare it with")
    p.add_argument("--tolerance-pct", type=float, default=None, metavar="PCT",
                   help="QEMU instruction counts may differ by this much (default: the larger "
                        "of the two runs' own variation between inferences)")
    p.add_argument("--max-lines", type=int, default=50, metavar="N",
                   help="print at most N differences (default 50)")
    args = p.parse_args(argv)
    if args.max_lines < 0:
        raise ArmqError(f"--max-lines {args.max_lines}: expected a number >= 0")
    if args.tolerance_pct is not None and not args.tolerance_pct >= 0:
        raise ArmqError(f"--tolerance-pct {args.tolerance_pct}: expected a number >= 0")
    a, a_dir = _open(args.run_a)
    b, b_dir = _open(args.run_b)
    c = compare(a, a_dir, b, b_dir, args.tolerance_pct)
    print(f"A: {_describe(a)}\nB: {_describe(b)}")
    for line in c.differences[:args.max_lines]:
        print(f"differs: {line}")
    if len(c.differences) > args.max_lines:
        print(f"... and {len(c.differences) - args.max_lines} more (--max-lines)")
    worst = (f"; largest difference {c.worst_count_pct:.4f} % ({c.worst_count})"
             if c.worst_count else "")
    print(f"{'agree' if c.agree else 'DIFFER'}: {c.fields} non-timing fields compared exactly, "
          f"{len(c.differences)} different; {c.counts} QEMU instruction counts compared{worst}")
    return 0 if c.agree else 1


if __name__ == "__main__":
    cli_entry(main, PROG)
