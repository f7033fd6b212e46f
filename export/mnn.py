"""Convert an exported ONNX model to MNN (FP32) and prove it computes the same.

    python -m export.mnn --card artifacts/<name>.json [--images DIR|tar] [--atol 1e-4]
    python -m export.mnn --onnx model.onnx [--out DIR]

Writes `<name>.mnn` beside the card (or in --out) and records it in the model card as
artifact `mnn` (converter, parity, op histogram). Parity: MNN's CPU module against
ONNX Runtime on the same real images, preprocessed as the card says (the card's ONNX
parity is already against PyTorch); max |diff| of the logits within --atol.

Any ONNX model works, zoo or not: with --onnx and a card beside it (`x.json`), the card
is followed and updated; without one, parity runs on random inputs of the ONNX input
shape and nothing is recorded (quant.ptq needs a card for the preprocessing).
Needs the `mnn` extra (MNN==3.6.1). The converter is MNN's compiled extension, called
directly: never MNN.tools or the mnnconvert command (see export/runtime.py).
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.clikit import make_parser
from zoo.util import ArmqError, captured_native_output, cli_entry, shown

from . import common
from .card import ModelCard, card_path_for, data_config, load_card

PROG = "export.mnn"
FORMAT = "mnn"
BIZ_CODE = "armq"   # MNN stores it in the file; get_info() reads it back


def command(card: Path, python: str = sys.executable) -> list[str]:
    """The command line of this export for a card (deploy's mnn export stage)."""
    return [python, "-m", PROG, "--card", str(card)]


def convert(onnx_path: Path, dest: Path) -> None:
    """ONNX -> MNN FP32 with `_tools.mnnconvert`; a failure is one line."""
    from .runtime import mnn_tools

    tools = mnn_tools()
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(dest),
            "--bizCode", BIZ_CODE]
    with captured_native_output() as lines:
        ok = tools.mnnconvert(argv)
    if not ok or not dest.is_file() or dest.stat().st_size == 0:
        why = next((ln.strip() for ln in reversed(lines) if "rror" in ln), "no output written")
        raise ArmqError(f"{onnx_path}: MNN cannot convert it ({shown(why)[:160]})")


def op_histogram(path: Path) -> dict[str, int]:
    """MNN op types of a .mnn file and their counts (MNN's own graph, as executed)."""
    from .runtime import mnn_module

    F = mnn_module().expr
    try:
        with captured_native_output():
            ops = F.load_as_dict(str(path))
    except Exception as e:  # noqa: BLE001 - MNN raises SystemError on bad files
        raise ArmqError(f"{path}: not a readable MNN model ({type(e).__name__})") from None
    return dict(sorted(Counter(v.op_type for v in ops.values()).items()))


def onnx_input_shape(onnx_path: Path) -> list[int]:
    from export.runtime import ort_session

    shape = ort_session(onnx_path, 1).get_inputs()[0].shape
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def parity_images(card: ModelCard | None, onnx_path: Path, images: Path | None,
                  n: int) -> tuple[np.ndarray, dict]:
    """Real images as the card preprocesses them; random ones without a card."""
    from .parity import parity_inputs

    if card is None:
        rng = np.random.default_rng(common.RANDOM_SEED)
        x = rng.standard_normal((n, *onnx_input_shape(onnx_path)[1:])).astype(np.float32)
        return x, {"data": "random", "n": n}
    return parity_inputs(data_config(card), images, n, PROG)


def export_mnn(onnx_path: Path, dest: Path, x: np.ndarray, data: dict, atol: float,
               threads: int | None) -> tuple[Path, dict]:
    """Convert, check against ORT, and return (the .mnn in a temp dir, card details)."""
    from .parity import compare
    from .runtime import mnn_session, mnn_version, ort_session, run_onnx

    t0 = time.time()
    ref = run_onnx(ort_session(onnx_path, threads), x)
    convert(onnx_path, dest)
    got = mnn_session(dest, threads).run(x)
    parity = compare(ref, got, atol, "MNN", data)
    return dest, {
        "converter": f"{mnn_version()} (_tools.mnnconvert, from ONNX)",
        "source": onnx_path.name,
        "parity": {**parity, "reference": "onnxruntime (FP32 ONNX)", "runtime": mnn_version()},
        "ops": op_histogram(dest),
        "versions": common.versions("MNN", "onnxruntime"),
        "seconds": round(time.time() - t0, 1),
    }


def resolve_input(card_arg: Path | None, onnx_arg: Path | None, out_arg: Path | None
                  ) -> tuple[Path, ModelCard | None, Path | None, Path]:
    """(ONNX file, card or None, card path or None, output folder) from --card or --onnx
    (and --out)."""
    if card_arg is not None:
        card = load_card(card_arg)
        if "onnx" not in card.artifacts:
            raise ArmqError(f"card {card_arg} has no FP32 ONNX model (run `python -m export.onnx`)")
        onnx_path = card.artifact_path(card_arg, "onnx")
        if not onnx_path.is_file():
            raise ArmqError(f"{onnx_path} (the card's ONNX model) does not exist")
        return onnx_path, card, Path(card_arg), Path(card_arg).parent
    onnx_path = Path(onnx_arg)
    if onnx_path.suffix.lower() != ".onnx" or ".int8." in onnx_path.name.lower():
        raise ArmqError(f"--onnx {onnx_path}: expected an FP32 .onnx file (MNN quantizes its "
                        "own FP32 model: python -m quant.ptq --backend mnn)")
    if not onnx_path.is_file():
        raise ArmqError(f"--onnx {onnx_path} does not exist")
    cp = card_path_for(onnx_path)
    card = load_card(cp) if cp.is_file() else None
    out = Path(out_arg) if out_arg is not None else onnx_path.parent
    return onnx_path, card, (cp if card is not None else None), out


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--card", type=Path, help="model card whose FP32 ONNX model to convert")
    src.add_argument("--onnx", type=Path, help="FP32 .onnx file (its card x.json is used when "
                     "present)")
    p.add_argument("--out", type=Path, help="output folder (default: beside the card / ONNX; "
                   "with --card the card's folder)")
    p.add_argument("--images", type=Path, help="folder or .tar of real images for the parity "
                   "check (default: the dataset's sample/test images when present)")
    p.add_argument("--num-images", type=int, default=common.DEFAULT_NUM_IMAGES,
                   help=f"images in the parity check (default {common.DEFAULT_NUM_IMAGES})")
    p.add_argument("--atol", type=float, default=common.DEFAULT_ATOL,
                   help=f"largest allowed |MNN - ORT| logit difference (default {common.DEFAULT_ATOL:g})")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of both runtimes "
                   "(default: $ARMQ_THREADS, else up to 4)")
    args = p.parse_args(argv)
    from .api import ExportOptions, to_mnn

    to_mnn(args.onnx, ExportOptions(num_images=args.num_images, atol=args.atol,
                                    threads=args.threads), args.images, args.out, card=args.card)
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
