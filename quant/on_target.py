"""Model outputs computed on a benchmark target instead of this host.

An INT8 file's accuracy depends on the kernels that run it, and those depend on the CPU:
on x86 without VNNI, ONNX Runtime's U8S8 kernels add two u8 x s8 products into a
saturating int16 (ARM's widening multiplies do not), and an S8S8 file keeps its convs in
float on x86 while ARM runs them in int8. So a file made for an Arm core is scored with
that core's kernels: android_bench runs it (runner.py, the same harness as the benchmarks)
on the preprocessed images and brings the outputs back; the metrics are computed here.

Targets: `local` (the harness on this host), `qemu:<cpu>` (aarch64 emulation: the kernels
ONNX Runtime, LiteRT and MNN pick for that core; emulation is slow, so use a sample of
images), and `ssh` / `adb` (a board or a phone, reached with android_bench's own flags:
--host, --ssh-key, --serial, --python, ...; deploy adds them from the device inventory).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from android_bench.targets.spec import TargetSpec, TargetSpecError

from .common import QuantError

if TYPE_CHECKING:
    from android_bench.targets.base import TargetOptions


def parse_on(text: str, where: str = "--on") -> TargetSpec:
    """`local`, `qemu:<cpu>` (a core android_bench emulates), `ssh` or `adb`: the target
    syntax of android_bench/targets/spec.py (no inventory device names here)."""
    try:
        return TargetSpec.parse(text, where, devices=False)
    except TargetSpecError as e:
        raise QuantError(str(e)) from None


def _dequantized(y: np.ndarray, result: dict) -> np.ndarray:
    """Integer outputs (a full-integer TFLite model) -> the real values they stand for."""
    outs = result.get("outputs") or [{}]
    q = outs[0].get("quantization") if isinstance(outs[0], dict) else None
    if y.dtype.kind in "iu" and q and q[0]:
        return (y.astype(np.float32) - float(q[1])) * float(q[0])
    return y.astype(np.float32, copy=False)


def logits_on(target: TargetSpec, files: Sequence[Path], x: np.ndarray,
              progress: Callable[[str], None] | None = None,
              options: "TargetOptions | None" = None) -> list[np.ndarray]:
    """The first output of each file for every image of `x` (N x C x H x W float, the
    card's preprocessing), computed on `target`; one array (N x classes) per file.
    `options`: how to reach a board or phone (android_bench.cli.device_options)."""
    from dataclasses import replace

    from android_bench.targets import make_target
    from android_bench.targets.base import BenchConfig, BenchError, TargetOptions

    with tempfile.TemporaryDirectory(prefix="armq-on-target-") as tmp:
        inputs = Path(tmp) / "inputs.npy"
        np.save(inputs, np.ascontiguousarray(x, dtype=np.float32))
        # no instruction counting: only the outputs matter, and the plugin slows QEMU
        opts = options or TargetOptions()
        opts = replace(opts, cpu=target.cpu, extra={**opts.extra, "icount": False})
        try:
            bench = make_target(target.kind, opts)
        except BenchError as e:
            raise QuantError(f"on {target.id}: {e}") from None
        # one timed run: the runner still runs every remaining sample once for its output
        config = BenchConfig(threads=1, warmup=0, runs=1, inputs=str(inputs), save_outputs=True,
                             out_dir=tmp)
        try:
            results = bench.run([str(f) for f in files], config, progress)
        except BenchError as e:
            raise QuantError(f"on {target.id}: {e}") from None
        out = []
        for f, r in zip(files, results):
            y = np.load(r["outputs_npy"], allow_pickle=False)
            if len(y) != len(x):
                raise QuantError(f"on {target.id}: {f.name} gave {len(y)} outputs for "
                                 f"{len(x)} images")
            out.append(_dequantized(y.reshape(len(x), -1), r))
        return out


def command(model: Path, data: Path, limit: int, on: str,
            python: str | None = None) -> list[str]:
    """The command line that scores `model` on the target `on` (quant.evaluate --on); it
    prints the JSON document on stdout."""
    return [python or sys.executable, "-m", "quant.evaluate", "--model", str(model), "--on", on,
            "--data", str(data), "--limit", str(limit), "--json"]
