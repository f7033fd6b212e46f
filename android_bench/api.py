"""The benchmark stage as a library: latency of model files on a target (local, qemu, ssh,
adb) with dataclass options and a typed result.

`python -m android_bench` parses its flags into `BenchOptions` and makes one call here.
Errors are `BenchError` (an `ArmqError`): one line naming the problem.

    from android_bench.api import BenchOptions, benchmark
    res = benchmark(["artifacts/x.onnx", "artifacts/x.int8.onnx"], BenchOptions(runs=20))
    res.median_ms("x.int8.onnx")
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from export.card import card_path_for
from zoo.util import atomic_output, check_writable_dir, declare_inputs

from .targets import make_target
from .targets.base import BenchConfig, BenchError, PartialResults, TargetOptions

__all__ = ["BenchError", "BenchOptions", "BenchResult", "TargetOptions", "benchmark"]

RESULTS_FORMAT = "armq-bench-results/1"


@dataclass(frozen=True)
class BenchOptions:
    """What to measure and where (`python -m android_bench`'s flags, same names)."""

    target: str = "local"                    # local, qemu:<cpu>, ssh, adb (targets/spec.py)
    device: TargetOptions | None = None      # host (ssh), serial (adb), ...; cpu: --cpu
    threads: int = 1
    warmup: int | None = None                # None: the target's default (10; qemu 1)
    runs: int | None = None                  # None: the target's default (100; qemu 5)
    profile: bool = False
    inputs: str | None = None                # .npy of preprocessed inputs (default: random)
    outputs_dir: str | None = None           # save each model's outputs here as .npy
    runtime: str = "auto"
    seed: int = 0
    timeout: float | None = None             # seconds per model (default: the target's)
    json: str | os.PathLike | None = None    # write the results document here (atomically)
    quiet: bool = False                      # no progress lines on stderr


@dataclass(frozen=True)
class BenchResult:
    """The results document ("armq-bench-results/1"): one record per model that finished,
    the failures, and (when some model failed) the error that ends the CLI non-zero."""

    document: dict = field(repr=False)
    json: Path | None = None
    error: str | None = None

    @property
    def results(self) -> list[dict]:
        return self.document["results"]

    @property
    def failures(self) -> list[dict]:
        return self.document["failures"]

    def median_ms(self, model: str | os.PathLike) -> float:
        """Median latency of the model file named `model` (its file name or path)."""
        name = Path(model).name
        for r in self.results:
            if Path(r["model"].get("file", "")).name == name:
                return float(r["timing_ms"]["median"])
        raise BenchError(f"{name}: not among the benchmarked models")


def benchmark(models: Sequence[str | os.PathLike], options: BenchOptions = BenchOptions(),
              command: Sequence[str] | None = None) -> BenchResult:
    """Benchmark `models` (.onnx / .tflite / .mnn / .pte files, cards beside them used) on
    `options.target`. Models that finished are kept when a later one fails: the result's
    `error` says why (and the JSON holds the finished ones). `command`: recorded in the
    document (the CLI's argv)."""
    a = options
    models = [str(m) for m in models]
    if not models:
        raise BenchError("--model is required (one or more .onnx / .tflite / .pte files), "
                         "unless --probe")
    # The models, their cards and the input samples are read, never replaced by --json.
    declare_inputs(*models, *(card_path_for(m) for m in models), a.inputs, outputs=[a.json])
    # Where results go must be writable now, not after an hour of benchmarks.
    if a.json:
        check_writable_dir(Path(a.json).parent)
    if a.outputs_dir:
        check_writable_dir(a.outputs_dir)
    from .cli import target_spec

    device = a.device or TargetOptions(extra={"icount": True})
    spec = target_spec(a.target, device.cpu)
    target = make_target(spec.kind, replace(device, cpu=spec.cpu))
    config = BenchConfig(threads=a.threads,
                         warmup=a.warmup if a.warmup is not None else target.default_warmup,
                         runs=a.runs if a.runs is not None else target.default_runs,
                         profile=a.profile, inputs=a.inputs, save_outputs=bool(a.outputs_dir),
                         out_dir=a.outputs_dir, runtime=a.runtime, seed=a.seed,
                         timeout_s=a.timeout)
    progress = None if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    error: PartialResults | None = None
    try:
        results, failures = target.run(models, config, progress), []
    except PartialResults as e:
        results, failures, error = e.results, e.failures, e
    doc = {"format": RESULTS_FORMAT,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": list(command) if command is not None else ["android_bench.api.benchmark"],
           "target": target.describe(), "config": config.to_dict(),
           "results": results, "failures": failures}
    written = None
    if a.json and (results or not failures):
        with atomic_output(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        written = Path(a.json)
    return BenchResult(doc, written, str(error) if error is not None else None)
