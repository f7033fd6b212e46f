"""The latency model's CLI with table fitting: `python -m android_bench.latency_model`
plus the INT8 micro-models it cannot make itself.

    python -m quant.latency_model --targets local,qemu:cortex-a76 [--remeasure] \\
        [--tables DIR] [--model a.onnx a.int8.onnx ...] [--doc ...] [--json ...]

Fitting a target's roofline constants measures single-op micro-models in FP32 and INT8;
the INT8 twins come from armq's ORT PTQ (here, `quantize_micro`), so the fitting runs
from quant, which may import android_bench, and android_bench's CLI only reads the
fitted tables. Same flags and outputs as android_bench.latency_model (its docstring).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from android_bench import latency_model
from android_bench.perfmodel.microbench import CALIB_SAMPLES
from zoo.util import cli_entry

PROG = "quant.latency_model"


def quantize_micro(src: Path, dst: Path, work: Path, seed: int = 0) -> None:
    """INT8 twin of a float micro-model with armq's ORT PTQ (default QuantConfig)."""
    from .common import Method
    from .config import QuantConfig
    from .onnx_ptq import calibrate, model_input, preprocess, quantize

    pre = work / f"{src.stem}.pre.onnx"
    preprocess(src, pre)
    name, batch, shape = model_input(pre)
    x = np.random.default_rng(seed).standard_normal((CALIB_SAMPLES, *shape[1:])).astype(np.float32)
    ranges = calibrate(pre, x, Method.MINMAX, name, batch, work)
    quantize(pre, ranges, Method.MINMAX, dst, QuantConfig())


def main(argv: Sequence[str] | None = None) -> int:
    return latency_model.main(argv, quantize=quantize_micro, prog=PROG)


if __name__ == "__main__":
    cli_entry(main, PROG)
