"""Post-training INT8 quantization of exported models, for ONNX Runtime and TFLite.

    python -m quant.ptq --calib DIR [--model artifacts/<name>.onnx|.tflite|.mnn|<name>]
        [--backend ort|tflite|mnn|all] [--method minmax|entropy|percentile|auto]
        [--num-calib 500] [--per-tensor] [--eval DIR] [--fallback N] [--max-drop 0.5]
        [--out artifacts/]

Without --model, every model card in --out is quantized. Calibration images
(a folder, an ImageFolder tree or a .tar/.zip of one) are preprocessed as the
model card says. Writes `<name>.int8.onnx` (QDQ, int8 activations + per-channel
int8 weights) and/or `<name>.int8.tflite` (full integer, via litert-torch PT2E)
and/or `<name>.int8.mnn` (MNN's offline quantizer on the FP32 `.mnn` of
`python -m export.mnn`; method entropy = MNN's KL unless --method says minmax),
atomically, and records them in the card with the calibration details and an
audit of what the runtime really executes.

--method auto calibrates with each method and keeps the best on held-out images
split off the calibration source (never the --eval set). --fallback N keeps up
to N of the most sensitive layers (worst SQNR between float and INT8
activations) in float until the held-out accuracy drop is within --max-drop.
Both are decided once for both backends by quant.policy, from one
quant.config.QuantConfig. The layer ranking is measured on the ONNX model and
recorded in the card (`artifacts.onnx_int8.ranking`); the TFLite backend walks
it, whether ORT ran in this process or an earlier one (deploy runs each backend
in its own process).
--eval DIR evaluates float and INT8 of every backend on a labelled set, prints
one table and writes it into the card's `accuracy`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from export.litert_layout import add_flag, to_argv
from zoo.clikit import make_parser
from zoo.util import cli_entry

from .common import Backend, Method
from .ptq_steps import PROG



def command(model: str, calib: Path, backend: str, num_calib: int, out: Path,
            python: str = sys.executable, target: str | None = None,
            source: str | None = None, litert_rewrites: frozenset | None = None) -> list[str]:
    """The command line of one backend's quantization of the model `model` in `out`
    (`target`: --for, the INT8 recipe of that target; `source`: the --source of a model
    that is not the zoo's, which the TFLite backend rebuilds it from; `litert_rewrites`:
    the TFLite backend's --litert-rewrites, None: its default)."""
    return [python, "-m", PROG, "--calib", str(calib), "--model", model, "--backend", backend,
            "--num-calib", str(num_calib), "--out", str(out)] \
        + (["--for", target] if target else []) + (["--source", source] if source else []) \
        + (to_argv(litert_rewrites) if backend == Backend.TFLITE.value else [])


def parser() -> argparse.ArgumentParser:
    """The flags of `python -m quant.ptq` (each one a field of quant.api.PtqOptions)."""
    p = make_parser(PROG, __doc__)
    p.add_argument("--calib", required=True, help="calibration images: folder, ImageFolder tree, .tar/.zip")
    p.add_argument("--model", help="artifacts/<name>.onnx|.tflite|.json or a model name in --out "
                   "(default: every model card in --out)")
    p.add_argument("--backend", type=Backend, choices=list(Backend), default=None,
                   metavar="{ort,tflite,mnn,all}", help="default: the format of --model's file, "
                   "else every backend the model can use (mnn: when the card has an FP32 .mnn)")
    p.add_argument("--method", type=Method, choices=list(Method), default=None,
                   metavar="{minmax,entropy,percentile,auto}", help="activation range calibration "
                   "(default minmax; mnn: entropy, MNN's KL)")
    p.add_argument("--num-calib", type=int, default=500, help="calibration images (default 500)")
    p.add_argument("--holdout", type=int, default=500,
                   help="extra images of --calib held out to pick a method / check the drop "
                   "(default 500; used by --method auto, --fallback and --max-drop)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per channel)")
    p.add_argument("--activations", choices=("int8", "uint8"), default=None,
                   help="ONNX activation type: int8 (S8S8, default) or uint8 (U8S8); "
                   "--for picks it from the target instead")
    p.add_argument("--reduce-range", action="store_true",
                   help="with --activations uint8: 7-bit weights, for x86 without VNNI whose "
                   "int16 pair sums saturate (--for local picks it on such a host)")
    p.add_argument("--for", dest="target", metavar="TARGET",
                   help="pick the ONNX INT8 recipe for a target: local (this CPU), "
                   "qemu:cortex-a76, cortex-a72, or a board's flags such as "
                   "aarch64:asimd+asimddp / x86_64:avx512_vnni. U8S8 files are named "
                   "<model>.u8s8.int8.onnx (<model>.u8s8r.int8.onnx with 7-bit weights: x86 "
                   "without VNNI); TFLite full-integer is int8 only")
    p.add_argument("--tflite-layout", choices=("nhwc", "nchw"), default="nhwc",
                   help="TFLite input layout when the card has no float TFLite model to follow "
                   "(default nhwc)")
    add_flag(p)
    p.add_argument("--pt2e-annotations", choices=("armq", "litert"), default="armq",
                   help="TFLite: armq's quantizer (default) or litert-torch's PT2EQuantizer as "
                   "shipped, which leaves some ops in float (for comparison)")
    p.add_argument("--source", metavar="SPEC",
                   help="for a model exported with --source (file.py:fn, module:fn, model.pt2): "
                   "the same source again, so the TFLite backend can rebuild the torch model; "
                   "checked against the card's record (armq never runs a file a card names)")
    p.add_argument("--eval", help="labelled ImageFolder to report float vs INT8 accuracy on")
    p.add_argument("--eval-limit", type=int, help="use at most N --eval images")
    p.add_argument("--fallback", type=int, default=0,
                   help="keep up to N most sensitive layers in float to meet --max-drop")
    p.add_argument("--max-drop", type=float, default=0.5,
                   help="accuracy budget in points on the held-out images (default 0.5)")
    p.add_argument("--out", default="artifacts", help="folder of the models and cards (default artifacts/)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .api import PtqOptions, quantize

    quantize(args.model, args.calib, PtqOptions.from_args(args), args.out)
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
