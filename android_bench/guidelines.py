"""ShuffleNet V2's four guideline micro-benchmarks, on any android_bench target.

    python -m android_bench.guidelines [--target local|qemu|ssh|adb] [--cpu cortex-a76]
        [--host pi@board] [--only G1,G3] [--scales 1,2,4] [--size 56] [--width 1.0]
        [--blocks 10] [--runs 30] [--warmup 5] [--threads 1] [--keep DIR] [--json]

Ma, Zhang, Zheng and Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV 2018, Section 2, derive four guidelines from small
networks timed on a GPU and on an ARM phone; this module builds the same kind of
networks with torch at run time, exports them to ONNX, times each with runner.py
on the chosen target and prints the paper's tables (images/s at batch 1, as the
paper's ARM columns, with the median latency in ms):

  Table 1 (G1, equal channel width minimizes memory access cost): 10 blocks of two
    1x1 convolutions c1 -> c2 -> c1; rows c1:c2 = 1:1, 1:2, 1:6, 1:12 with (c1, c2)
    = (128,128), (90,180), (52,312), (36,432) for x1 -- c1*c2, hence FLOPs, held
    constant; columns x1, x2, x4 scale both widths.
  Table 2 (G2, excessive group convolution increases MAC): 10 1x1 group
    convolutions c -> c; rows g = 1, 2, 4, 8 with c = 128, 180, 256, 360 for x1
    (c^2/g constant); columns x1, x2, x4.
  Table 3 (G3, network fragmentation reduces parallelism): 10 blocks, each of 1 to 4
    1x1 convolutions in series or in parallel; rows 1-fragment, 2-fragment-series,
    4-fragment-series, 2-fragment-parallel, 4-fragment-parallel; columns c = 64,
    128, 256 (the paper's CPU columns). As in the paper, the other structures' channel
    numbers are adjusted so that their FLOPs equal the 1-fragment's: k convolutions
    in series run at width round(c / sqrt(k)); k parallel ones each map c -> c/k and
    are concatenated (our construction of the paper's appendix figure).
  Table 4 (G4, element-wise operations are non-negligible): 10 ResNet bottleneck
    units (1x1 4c->c, 3x3 c->c, 1x1 c->4c), rows ReLU on/off x shortcut on/off;
    columns c = 32, 64, 128.

Column scale s picks x s (G1, G2), c = 64 s (G3) and c = 32 s (G4); the default
--scales 1 runs only the first column. Feature maps are --size x --size (56, the
paper's benchmark resolution), batch 1, no BatchNorm. --width multiplies every
channel number (e.g. 0.25 to make emulation bearable; FLOP equality is then only
approximate because of rounding). FLOPs ("MACs", multiply-accumulates) and the
paper's memory access cost ("mem", elements read + written, weights included) of
each network are computed here with zoo.cost's formulas and printed beside the speed.

The paper's GPU columns (batches/s at batch 8) have no counterpart here: every
target runs a CPU runtime at batch 1.
"""
from __future__ import annotations

from zoo.clikit import make_parser
import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from zoo.util import cli_entry

# The networks (pure arithmetic; torch models and export): importable from here too.
from .guideline_cases import (CASE_BUILDERS, G1_RATIOS, G2_GROUPS, G3_STRUCTURES,  # noqa: F401
                              G4_VARIANTS, GUIDELINES, Case, Conv, GuidelineError, g1_cases,
                              g2_cases, g3_cases, g4_cases, make_cases)
from .guideline_models import build_model, export_case  # noqa: F401

TITLES = {
    "G1": "Table 1 (G1): equal channel width minimizes memory access cost",
    "G2": "Table 2 (G2): excessive group convolution increases memory access cost",
    "G3": "Table 3 (G3): network fragmentation reduces degree of parallelism",
    "G4": "Table 4 (G4): element-wise operations are non-negligible",
}


# ---- running and tables -----------------------------------------------------------------

@dataclass
class Cell:
    case: Case
    median_ms: float | None = None
    ci_ms: list[float] | None = None
    instructions: float | None = None
    error: str | None = None

    @property
    def images_per_s(self) -> float | None:
        return 1000.0 / self.median_ms if self.median_ms else None

    def to_dict(self) -> dict:
        return {**self.case.to_dict(), "median_ms": self.median_ms, "median_ci95_ms": self.ci_ms,
                "images_per_s": self.images_per_s, "instructions": self.instructions,
                "error": self.error}


def cells_from_results(cases: Sequence[Case], results: Sequence[dict],
                       failures: Sequence[dict] = ()) -> list[Cell]:
    """Match runner results (by model file name) back to the cases."""
    from .compare import instructions_per_inference

    by_file = {str((r.get("model") or {}).get("file")): r for r in results}
    err_by_file = {Path(str(f.get("model"))).name: str(f.get("error")) for f in failures}
    cells = []
    for c in cases:
        fname = f"{c.file_stem}.onnx"
        r = by_file.get(fname)
        if r is None:
            cells.append(Cell(c, error=err_by_file.get(fname, "no result")))
            continue
        tm = r.get("timing_ms") or {}
        cells.append(Cell(c, median_ms=tm.get("median"), ci_ms=tm.get("median_ci95"),
                          instructions=instructions_per_inference(r)))
    return cells


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def format_tables(cells: Sequence[Cell], where: str = "", emulated: bool = False) -> str:
    """One table per guideline: rows as in the paper, one column per scale, cells
    'images/s (ms)'; the first column's widths, MACs and memory access on the left."""
    lines = []
    if where:
        lines.append(f"target: {where}" + ("  [EMULATED: times are emulation time; compare "
                                          "instruction counts, not ms]" if emulated else ""))
    for g in GUIDELINES:
        gc = [c for c in cells if c.case.guideline == g]
        if not gc:
            continue
        rows = list(dict.fromkeys(c.case.row for c in gc))
        scales = sorted({c.case.scale for c in gc})
        first = {c.case.row: c for c in gc if c.case.scale == scales[0]}
        col_names = []
        for s in scales:
            lab = next(c.case.column for c in gc if c.case.scale == s)
            col_names.append(f"{lab} img/s (ms)")
        head = ["", f"widths @{next(iter(first.values())).case.column}", "MACs", "mem", *col_names]
        if any(c.instructions for c in gc):
            head.append("instr./inf.")
        body = []
        for row in rows:
            f = first.get(row)
            widths = ""
            if f is not None:
                sp = f.case.spec
                widths = {"g1": lambda: f"({sp['c1']},{sp['c2']})", "g2": lambda: f"c={sp['c']}",
                          "g3": lambda: f"c={sp['c']}", "g4": lambda: f"c={sp['c']}"}[sp["kind"]]()
            out = [row, widths, _fmt_count(f.case.macs) if f else "",
                   _fmt_count(f.case.memory_access) if f else ""]
            for s in scales:
                cell = next((c for c in gc if c.case.row == row and c.case.scale == s), None)
                if cell is None or cell.median_ms is None:
                    out.append("failed" if cell is not None and cell.error else "-")
                else:
                    out.append(f"{cell.images_per_s:.1f} ({cell.median_ms:.2f})")
            if len(head) > len(out):
                instr = f.instructions if f else None
                out.append(_fmt_count(instr) if instr else "-")
            body.append(out)
        w = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines.append("")
        lines.append(TITLES[g])
        lines.append("  " + "  ".join(h.ljust(w[i]) if i < 2 else h.rjust(w[i])
                                      for i, h in enumerate(head)))
        lines.append("  " + "  ".join("-" * x for x in w))
        for r in body:
            lines.append("  " + "  ".join(v.ljust(w[i]) if i < 2 else v.rjust(w[i])
                                          for i, v in enumerate(r)))
        for c in gc:
            if c.error:
                lines.append(f"  failed: {c.case.row} ({c.case.column}): {c.error}")
    lines.append("")
    lines.append("img/s = 1000 / median ms at batch 1. MACs: multiply-accumulates; mem: memory "
                 "access cost in elements (ShuffleNet V2's MAC).")
    return "\n".join(lines)


def run_guidelines(cases: Sequence[Case], target, config, work_dir: Path,
                   progress: Callable[[str], None] | None = None) -> tuple[list[Cell], str | None]:
    """Export every case, run them all on `target`; returns the cells and the first error
    (finished cases are kept when some fail)."""
    from .targets.base import PartialResults

    paths = []
    for i, c in enumerate(cases):
        if progress:
            progress(f"exporting {c.file_stem} ({i + 1}/{len(cases)})")
        paths.append(export_case(c, work_dir))
    try:
        results, failures, err = target.run(paths, config, progress), [], None
    except PartialResults as e:
        results, failures, err = e.results, e.failures, str(e)
    return cells_from_results(cases, results, failures), err


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m android_bench.guidelines`."""
    from .cli import add_device_args

    ap = make_parser("android_bench.guidelines",
                     description="ShuffleNet V2 guideline micro-benchmarks "
                                 "(Ma et al., ECCV 2018, Sec. 2, Tables 1-4)")
    ap.add_argument("--target", default="local",
                    help="local, qemu:<cpu>, ssh or adb (android_bench's target syntax)")
    ap.add_argument("--cpu", help="qemu: the core, as in --target qemu:<cpu> (older form)")
    # --host, --serial, ...: android_bench's own device flags
    ap.set_defaults(device_dests=add_device_args(ap))
    ap.add_argument("--only", default="G1,G2,G3,G4", help="guidelines to run (default all)")
    ap.add_argument("--scales", default="1",
                    help="column scales, comma-separated (paper: 1,2,4; default 1)")
    ap.add_argument("--size", type=int, default=56, help="feature map size (default 56)")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1)")
    ap.add_argument("--blocks", type=int, default=10, help="blocks per network (default 10)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, help="untimed runs per network (default 5; qemu 1)")
    ap.add_argument("--runs", type=int, help="timed runs per network (default 30; qemu 5)")
    ap.add_argument("--no-icount", action="store_true",
                    help="qemu: no instruction counting (no plugin build)")
    ap.add_argument("--timeout", type=float, help="seconds per network (default: the target's)")
    ap.add_argument("--keep", help="keep the generated ONNX models in this folder")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write the results as JSON (to FILE, or stdout without one)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def measure(a: argparse.Namespace) -> tuple[dict, list[Cell], str]:
    """Run the guideline networks the parsed flags `a` ask for: (the JSON document, its
    cells, where they ran)."""
    from .cli import device_options, target_spec
    from .targets import make_target
    from .targets.base import BenchConfig

    spec = target_spec(a.target, a.cpu)
    try:
        scales = [int(s) for s in a.scales.split(",") if s.strip()]
    except ValueError:
        raise GuidelineError(f"--scales {a.scales!r}: comma-separated integers") from None
    only = [g.strip().upper() for g in a.only.split(",") if g.strip()]
    cases = make_cases(only, scales, a.width, a.size, a.blocks)
    target = make_target(spec.kind, device_options(a, a.device_dests, cpu=spec.cpu, icount=not a.no_icount))
    emulated = bool(getattr(target, "emulated", False))
    warmup = a.warmup if a.warmup is not None else (target.default_warmup if emulated else 5)
    runs = a.runs if a.runs is not None else (target.default_runs if emulated else 30)
    config = BenchConfig(threads=a.threads, warmup=warmup, runs=runs, timeout_s=a.timeout,
                         runtime="onnxruntime").validate()
    progress = None if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    if a.keep:
        work = Path(a.keep)
        work.mkdir(parents=True, exist_ok=True)
        cells, err = run_guidelines(cases, target, config, work, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="armq-guidelines-") as tmp:
            cells, err = run_guidelines(cases, target, config, Path(tmp), progress)
    desc = target.describe()
    where = " ".join(str(v) for k, v in desc.items() if k in ("kind", "host", "cpu", "serial") and v)
    doc: dict[str, Any] = {"format": "armq-guidelines/1", "target": desc,
                           "config": {"size": a.size, "width": a.width, "blocks": a.blocks,
                                      "scales": scales, **config.to_dict()},
                           "cells": [c.to_dict() for c in cells], "error": err}
    return doc, cells, where


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    doc, cells, where = measure(a)
    err, desc = doc["error"], doc["target"]
    if a.json == "-":
        print(json.dumps(doc, indent=2))
    else:
        if a.json:
            from zoo.util import atomic_output
            with atomic_output(a.json, "w") as f:
                json.dump(doc, f, indent=2)
        print(format_tables(cells, where, bool(desc.get("emulated"))))
    if err:
        raise GuidelineError(err)
    return 0


if __name__ == "__main__":
    cli_entry(main, "android_bench.guidelines")
