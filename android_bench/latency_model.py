"""A latency model that explains theory vs reality, per target.

    python -m android_bench.latency_model --targets local,qemu:cortex-a76,qemu:cortex-a72 \\
        --model artifacts/x.onnx artifacts/x.int8.onnx ... [--results runs/X/results.json] \\
        [--tables DIR] [--remeasure] [--doc docs/latency_model.md] [--json out.json]
    python -m android_bench.latency_model --targets qemu:cortex-a76 \\
        --breakdown artifacts/x.onnx artifacts/x.int8.onnx [--json out.json]

1. Micro-benchmarks: one op per model (dense, pointwise, depthwise and grouped
   convolutions, element-wise add, channel-shuffle transpose, global pool, Q/DQ) at a
   few sizes, FP32 and INT8 (ORT QDQ), measured on each target by android_bench
   (milliseconds locally, 1 thread; guest instructions per inference under QEMU).
   The table is cached as <tables>/<target>.json and reused unless --remeasure.
2. The roofline constants of each target are fitted on those micro-benchmarks only,
   then every --model file is predicted from the graph onnxruntime builds for it:
   per node max(MACs / op-class throughput, bytes / bandwidth) + a per-op overhead.
3. Each model's measured cost is split into theory (every MAC at the dense FP32 rate,
   / 4 for INT8) plus named causes: INT8 kernel rate vs 4x, op classes slower than
   dense, narrow layers (im2col, per-output and per-channel work), memory-bound
   layers, layout transposes, Q/DQ, float islands, sigmoid-like activations,
   element-wise work, per-op overhead, and what the model does not explain.

Measured model costs come from a deploy run's results.json or an earlier --json of
this CLI (--results; files matched by name), or are measured here. ONNX files only
(the TFLite graphs are not modelled).

--breakdown FP32 INT8 measures nothing: it predicts both files from the shipped
constants of each target and splits their costs by op class (perfmodel/breakdown.py):
each class's share of the INT8 cost and its FP32 -> INT8 speed-up. A target without
a table in --tables is one line in the output, not an error (deploy's "What holds
INT8 back" section runs it).

Measuring and fitting a table needs INT8 twins of the micro-models, made by quant's PTQ;
android_bench sits below quant, so this CLI reads tables only and `python -m
quant.latency_model` (same flags) is the one that measures, fits and caches them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from zoo.clikit import make_parser

from .perfmodel import report
from .targets.spec import TargetSpec, parse_target_list
from zoo.util import ArmqError, atomic_output, check_writable_dir, cli_entry, load_json

PROG = "android_bench.latency_model"
# The fitted tables ship inside the package (package data), so deploy and an installed
# armq read the same constants this CLI writes.
DEFAULT_TABLES = Path(__file__).resolve().parent / "perfmodel" / "tables"
LOCAL_RUNS, LOCAL_WARMUP = 50, 10
# QEMU instruction counts repeat exactly after the first inference: a few runs suffice
QEMU_RUNS, QEMU_WARMUP = 3, 1


def parse_targets(text: str) -> list[TargetSpec]:
    return parse_target_list(text, "--targets", devices=False)


def bench(target: TargetSpec, files: Sequence[Path], quiet: bool = False) -> dict[str, float]:
    """{file name: median ms (local) or instructions per inference (QEMU)}."""
    from .compare import instructions_per_inference
    from .targets import make_target
    from .targets.base import BenchConfig, PartialResults, TargetOptions

    t = make_target(target.kind, TargetOptions(cpu=target.cpu))
    cfg = BenchConfig(threads=1, runs=QEMU_RUNS if target.emulated else LOCAL_RUNS,
                      warmup=QEMU_WARMUP if target.emulated else LOCAL_WARMUP)
    progress = None if quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        results = t.run([str(f) for f in files], cfg, progress)
    except PartialResults as e:
        print(f"{PROG}: warning: {e}", file=sys.stderr)
        results = e.results
    out = {}
    for r in results:
        v = instructions_per_inference(r) if target.emulated else (r.get("timing_ms") or {}).get("median")
        if v:
            out[str(r["model"]["file"])] = float(v)
    return out


def from_results(docs: Sequence[dict], target: TargetSpec, files: Sequence[Path]
                 ) -> dict[str, float]:
    """The files' measured costs on `target` from deploy results.json files, or from
    earlier --json outputs of this CLI (re-explains without measuring again); where
    several have a file, the last one given wins."""
    found: dict[str, float] = {}
    for doc in docs:
        found.update(_measurements(doc, target))
    missing = [f.name for f in files if f.name not in found]
    if missing:
        raise ArmqError(f"--results has no {target.id} measurement of {missing[0]} (run deploy "
                        f"with that target, or drop --results to measure here)")
    return {f.name: found[f.name] for f in files}


def _measurements(doc: dict, target: TargetSpec) -> dict[str, float]:
    found: dict[str, float] = {}
    for t in doc.get("targets") or [] if doc.get("format") == report.JSON_FORMAT else []:
        if isinstance(t, dict) and t.get("target") == target.id:
            for name, m in (t.get("models") or {}).items():
                v = m.get("measured") if isinstance(m, dict) else None
                if isinstance(v, (int, float)) and v > 0:
                    found[str(name)] = float(v)
    for rec in (doc.get("models") or {}).values():
        for entry in ((rec or {}).get("bench") or {}).get(target.id, {}).values():
            if not isinstance(entry, dict):
                continue
            v = entry.get("instructions") if target.emulated else entry.get("median_ms")
            if isinstance(v, (int, float)) and v > 0:
                found[str(entry.get("file"))] = float(v)
    return found


def load_table(path: Path, target: TargetSpec) -> dict | None:
    from .perfmodel.microbench import TABLE_FORMAT, refit

    if not path.is_file():
        return None
    doc = load_json(path, "micro-benchmark table")
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT or not doc.get("rows"):
        raise ArmqError(f"{path} is not a micro-benchmark table ({TABLE_FORMAT}); "
                        f"rebuild it with python -m {FIT_PROG} --remeasure")
    if doc.get("target") != target.id:
        raise ArmqError(f"{path} holds micro-benchmarks of {doc.get('target')}, not {target.id}; "
                        f"rebuild it with python -m {FIT_PROG} --remeasure")
    try:
        return refit(doc)  # the fit is recomputed from the stored rows, never trusted
    except (KeyError, TypeError, ValueError) as e:
        raise ArmqError(f"{path}: malformed micro-benchmark row ({e}); rebuild it with "
                        f"python -m {FIT_PROG} --remeasure") from None


# Makes the INT8 twin of a float micro-model: (src, dst, work folder). quant's PTQ, so
# passed in by `python -m quant.latency_model` (android_bench may not import quant).
Quantize = Callable[[Path, Path, Path], None]
FIT_PROG = "quant.latency_model"


def table_for(target: TargetSpec, tables: Path, remeasure: bool, quiet: bool,
              quantize: Quantize | None = None) -> dict:
    from .perfmodel.microbench import measure_table, missing_rows

    path = tables / f"{target.slug}.json"
    doc = None if remeasure else load_table(path, target)
    if doc is None or missing_rows(doc):
        if quantize is None:
            why = "--remeasure" if remeasure else \
                f"{'an incomplete' if doc else 'no'} micro-benchmark table in {tables}"
            raise ArmqError(f"{target.id}: {why}: python -m {FIT_PROG} --targets {target.id} "
                            f"(same flags) measures and fits it; this CLI only reads tables (the "
                            f"INT8 micro-models come from quant's PTQ)")
        if not quiet:
            print(f"{PROG}: micro-benchmarks on {target.id} ...", file=sys.stderr, flush=True)
        doc = measure_table(target.id, target.unit, target.emulated,
                            lambda files: bench(target, files, quiet), quantize, previous=doc)
        with atomic_output(path, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return doc


def check_model(path: Path) -> None:
    if not path.is_file():
        raise ArmqError(f"model {path} not found")
    if path.suffix != ".onnx":
        raise ArmqError(f"{path.name}: only ONNX files are modelled (the latency model reads "
                        f"the graph onnxruntime builds); pass the .onnx / .int8.onnx files")


def build_parser(prog: str = PROG):
    p = make_parser(prog, __doc__)
    p.add_argument("--targets", default="local,qemu:cortex-a76,qemu:cortex-a72",
                   help="comma-separated: local, qemu:<cpu> (default: %(default)s)")
    p.add_argument("--model", nargs="+", action="extend", type=Path, default=[],
                   help=".onnx files (FP32 and INT8 QDQ) to predict and explain")
    p.add_argument("--results", type=Path, nargs="+", action="extend",
                   help="deploy runs' results.json (or this CLI's --json) with the models' "
                        "measurements; the last file with a measurement wins")
    p.add_argument("--tables", type=Path, default=DEFAULT_TABLES,
                   help="folder of cached micro-benchmark tables (default: %(default)s)")
    p.add_argument("--remeasure", action="store_true", help="re-run the micro-benchmarks")
    p.add_argument("--breakdown", nargs=2, type=Path, metavar=("FP32", "INT8"),
                   help="an FP32 .onnx and its INT8 .onnx: per op class, the share of the INT8 "
                        "cost and the FP32 -> INT8 speed-up, predicted from the shipped "
                        "constants (measures nothing)")
    p.add_argument("--doc", type=Path, help="write the Markdown report here")
    p.add_argument("--json", type=Path, help="write every number here")
    return p


def command(fp32: Path | str, int8: Path | str, target: str, out_json: Path | str,
            python: str | None = None) -> list[str]:
    """The command line of the per-op-class breakdown of one FP32/INT8 pair on `target`."""
    return [python or sys.executable, "-m", PROG, "--targets", target, "--breakdown",
            str(fp32), str(int8), "--json", str(out_json)]


def breakdown_main(a, targets: Sequence[TargetSpec]) -> int:
    from .perfmodel.breakdown import BREAKDOWN_FORMAT, breakdown
    from .perfmodel.graph import is_int8_model, onnx_work
    from .perfmodel.microbench import constants_of

    if a.model or a.results or a.remeasure or a.doc:
        raise ArmqError("--breakdown predicts one FP32/INT8 pair from the shipped constants: "
                        "drop --model, --results, --remeasure and --doc")
    fp32, int8 = a.breakdown
    for m in (fp32, int8):
        check_model(m)
    if a.json is not None:
        check_writable_dir(a.json.parent)
        if a.json.resolve() in {fp32.resolve(), int8.resolve()}:
            raise ArmqError(f"{a.json} is an input; choose another output path")
    out = {"format": BREAKDOWN_FORMAT, "fp32": fp32.name, "int8": int8.name, "targets": []}
    for t in targets:
        path = a.tables / f"{t.slug}.json"
        table = load_table(path, t)
        if table is None:
            out["targets"].append({"target": t.id, "note": (
                f"no fitted latency-model constants for {t.id} (python -m {PROG} --targets "
                f"{t.id} measures them)")})
            continue
        fw, qw = onnx_work(fp32, arm=t.emulated), onnx_work(int8, arm=t.emulated)
        if is_int8_model(fw) or not is_int8_model(qw):
            raise ArmqError(f"--breakdown takes the FP32 file first and the INT8 file second "
                            f"(got {fp32.name}, {int8.name})")
        b = breakdown(fw, qw, constants_of(table))
        out["targets"].append({"target": t.id, "created": table.get("created"),
                               "fit_mae": table.get("fit_mae"), **b.to_dict()})
    print(report.breakdown_text(out))
    if a.json:
        with atomic_output(a.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    return 0


def _check_io(a) -> list | None:
    """The flags' files, checked before any benchmark runs; the --results documents."""
    for m in a.model:
        check_model(m)
    if len({m.name for m in a.model}) != len(a.model):
        raise ArmqError("two --model files share a name: measurements are matched by file name")
    results = [load_json(r, "results.json") for r in a.results] if a.results else None
    for r, doc in zip(a.results or [], results or []):
        if not isinstance(doc, dict):
            raise ArmqError(f"{r} is not a deploy results.json (no 'models' object)")
    inputs = {m.resolve() for m in a.model} | {r.resolve() for r in a.results or []}
    for out in (a.doc, a.json):
        if out is not None:
            check_writable_dir(out.parent)
            if out.resolve() in inputs:
                raise ArmqError(f"{out} is an input; choose another output path")
    return results


def predict(a, targets: list, results: list | None,
            quantize: Quantize | None) -> list[report.TargetReport]:
    """Per target: its table's constants and each model's predicted split beside what was
    measured (--results, else a benchmark run now)."""
    from .perfmodel.graph import onnx_work
    from .perfmodel.microbench import constants_of
    from .perfmodel.roofline import explain

    quiet = a.quiet if hasattr(a, "quiet") else False
    # what --results lacks is a one-line error before any benchmark runs
    given = {t.id: from_results(results, t, a.model) for t in targets} if results is not None \
        else {}
    per_target = []
    for t in targets:
        table = table_for(t, a.tables, a.remeasure, quiet, quantize)
        c = constants_of(table)
        measured = given[t.id] if results is not None else \
            (bench(t, a.model, quiet) if a.model else {})
        rows = [(m.name, explain(onnx_work(m, arm=t.emulated), c, measured.get(m.name)))
                for m in a.model]
        per_target.append(report.TargetReport(t.id, t.unit, table, c, rows))
    return per_target


def main(argv: Sequence[str] | None = None, quantize: Quantize | None = None,
         prog: str = PROG) -> int:
    """The CLI; `quantize` (given by quant.latency_model) lets it fit missing tables."""
    a = build_parser(prog).parse_args(argv)
    targets = parse_targets(a.targets)
    if a.breakdown:
        return breakdown_main(a, targets)
    per_target = predict(a, targets, _check_io(a), quantize)
    print(report.text(per_target))
    if a.json:
        with atomic_output(a.json, "w") as f:
            json.dump(report.to_json(per_target), f, indent=1)
            f.write("\n")
    if a.doc:
        with atomic_output(a.doc, "w") as f:
            f.write(report.markdown(per_target, sys.argv[1:] if argv is None else list(argv)))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
