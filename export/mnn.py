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

import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_path, atomic_paths, captured_native_output, \
    check_writable_dir, cli_entry, declare_inputs, shown

from . import common
from .card import ModelCard, card_lock, card_path_for, data_config, load_card, save_card

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


def _resolve(args) -> tuple[Path, ModelCard | None, Path | None, Path]:
    """(ONNX file, card or None, card path or None, output folder) from the flags."""
    if args.card is not None:
        card = load_card(args.card)
        if "onnx" not in card.artifacts:
            raise ArmqError(f"card {args.card} has no FP32 ONNX model (run `python -m export.onnx`)")
        onnx_path = card.artifact_path(args.card, "onnx")
        if not onnx_path.is_file():
            raise ArmqError(f"{onnx_path} (the card's ONNX model) does not exist")
        return onnx_path, card, Path(args.card), Path(args.card).parent
    onnx_path = Path(args.onnx)
    if onnx_path.suffix.lower() != ".onnx" or ".int8." in onnx_path.name.lower():
        raise ArmqError(f"--onnx {onnx_path}: expected an FP32 .onnx file (MNN quantizes its "
                        "own FP32 model: python -m quant.ptq --backend mnn)")
    if not onnx_path.is_file():
        raise ArmqError(f"--onnx {onnx_path} does not exist")
    cp = card_path_for(onnx_path)
    card = load_card(cp) if cp.is_file() else None
    out = Path(args.out) if args.out is not None else onnx_path.parent
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
    common.check_parity_args(args)
    declare_inputs(args.onnx, args.images, outputs=[args.out])
    if args.card is not None and args.out is not None and \
            args.out.resolve() != args.card.resolve().parent:
        raise ArmqError("--out applies to --onnx only (with --card the .mnn goes beside the card)")
    from .runtime import mnn_tools, resolve_threads

    mnn_tools()  # fail early, in one line, without the runtime
    threads = resolve_threads(args.threads)
    onnx_path, card, card_path, out_dir = _resolve(args)
    check_writable_dir(out_dir)
    name = card.name if card is not None else onnx_path.stem
    dest = out_dir / f"{name}.{FORMAT}"
    x, data = parity_images(card, onnx_path, args.images, args.num_images)
    with tempfile.TemporaryDirectory(prefix="armq-mnn-") as td:
        tmp_model, details = export_mnn(onnx_path, Path(td) / dest.name, x, data, args.atol,
                                        threads)
        if card is None or card_path is None or card_path.parent.resolve() != out_dir.resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(tmp_model, tmp)
            common.share_mode(dest)
            common.warn(PROG, f"no model card beside {onnx_path.name} in {out_dir}: {dest.name} "
                        "is not recorded in any card")
        else:
            # The model and the card that records its hash change together (quant.ptq's rule).
            with card_lock(card_path), atomic_paths(dest, card_path) as (tmp_dest, tmp_card):
                shutil.copyfile(tmp_model, tmp_dest)
                card = load_card(card_path)   # re-read: another stage may have added to it
                card.record_artifact(card_path, "mnn", tmp_dest, installed_as=dest, **details)
                card.accuracy.pop("mnn", None)  # a new model: old numbers are stale
                save_card(card, tmp_card)
            common.share_mode(dest)
    par = details["parity"]
    print(f"{dest}: {sum(details['ops'].values())} MNN ops, FP32; parity vs ORT on {par['n']} "
          f"images ({par['data']}): max |diff| {par['max_abs_diff']:.2e}, top-1 agreement "
          f"{par['top1_agreement']:.3f}" + (f"; card {card_path}" if card_path else ""))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
