"""ExecuTorch INT8: armq's PT2E annotations (quant.pt2e, as the TFLite backend's; int8,
per-channel symmetric weights) with your calibration images, lowered to the XNNPACK delegate.

    python -m quant.et_ptq --card artifacts/<name>.json --calib DIR|tar [--num-calib N]
                           [--source SPEC]   (a model exported with --source: the same again)

    torch model (the card's checkpoint, as quant.tflite_ptq rebuilds it) -> torch.export
    (NCHW-contiguous example) -> prepare_pt2e(armq's quantizer) -> calibration images ->
    convert_pt2e -> torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) ->
    `<name>.int8.pte`, recorded in the card as `pte_int8` (file and card in one transaction).

Accuracy and agreement are measured on the file itself by `python -m quant.evaluate --card`
(the card's `pte` model is its reference, quant.evaluate.ref_keys). Runs in the ExecuTorch
venv (`make venv-executorch`); started from the main venv it re-runs itself there.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from export import et_venv
from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_paths, cli_entry, declare_inputs

PROG = "quant.et_ptq"
DEFAULT_NUM_CALIB = 200


def command(card: Path, calib: Path, num_calib: int = DEFAULT_NUM_CALIB,
            python: str = sys.executable, source: str | None = None) -> list[str]:
    """The command line of this stage (deploy's ExecuTorch INT8 stage; `source`: the
    --source of a model that is not the zoo's)."""
    return [python, "-m", PROG, "--card", str(card), "--calib", str(calib),
            "--num-calib", str(num_calib)] + (["--source", source] if source else [])


def quantize(model, calib: np.ndarray):
    """The PT2E-quantized exported program of `model`, calibrated on `calib` (NCHW).

    The annotations are armq's (quant.pt2e, the TFLite backend's: one home): int8 per-channel
    symmetric weights, int8 activations, conv -> ReLU6 and add -> ReLU fused with the observer
    after the activation, shared ranges for shape ops. XNNPACK's own XNNPACKQuantizer leaves
    ReLU6 out of its conv patterns, so a conv's pre-clamp range is what ReLU6 gets quantized
    with: EfficientNet-Lite0, 750 ImageNet samples, 88.00 % top-1 agreement with FP32 (SQNR
    7.4 dB) against 97.73 % (18.5 dB) with these annotations, every op still delegated."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from export.executorch import export_program

    from .common import Method
    from .pt2e import make_quantizer

    try:
        quantizer = make_quantizer(Method.MINMAX)
    except ImportError as e:
        raise ArmqError(f"ExecuTorch INT8 uses armq's PT2E annotations, which build on "
                        f"litert-torch ({e.name} is missing): pip install 'armq[tflite]'") from None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(export_program(model, calib).module(), quantizer)
        for i in range(len(calib)):
            prepared(torch.from_numpy(np.ascontiguousarray(calib[i:i + 1])))
        converted = convert_pt2e(prepared)
    return export_program(converted, calib)


def run(card_path: Path, calib_src: Path, num_calib: int, source: str | None = None) -> Path:
    from export.card import card_lock, load_card, save_card
    from export.executorch import lower, pte_details, quiet_imports
    from export.runtime import et_method

    from .calib import check_source, load_set
    from .common import ModelRef
    from .tflite_ptq import build_torch_model

    if not card_path.is_file():
        raise ArmqError(f"--card {card_path} does not exist (export the model first)")
    check_source(calib_src, "--calib")
    quiet_imports()
    ref = ModelRef(load_card(card_path), card_path)
    from export.source import source_for_card
    model = build_torch_model(ref, source_for_card(source, ref.card.source))
    calib = load_set(calib_src, ref.card, limit=num_calib, progress=False, what="--calib")
    t0 = time.time()
    try:
        flat, audit = lower(quantize(model, calib.x))
    except ArmqError:
        raise
    except Exception as e:  # noqa: BLE001 - one line naming the model
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ArmqError(f"{ref.name}: ExecuTorch INT8 failed: {type(e).__name__}: {first[:200]}") \
            from None
    # a quick self-check on calibration images: the file runs and mostly agrees with torch
    import torch
    x = calib.x[:16]
    with torch.no_grad():
        ref_logits = model(torch.from_numpy(x)).numpy()
    got = et_method(flat)(x)
    agree = float((ref_logits.argmax(1) == got.argmax(1)).mean())
    details = pte_details(audit, None, "int8", time.time() - t0)
    details["calibration"] = {"data": str(calib_src), "n": int(len(calib)),
                              "quantizer": "armq PT2E annotations (quant.pt2e), minmax, int8 "
                                           "per-channel symmetric weights",
                              "calib_top1_agreement": agree}
    dest = card_path.parent / f"{ref.name}.int8.pte"
    if dest.resolve() in (card_path.resolve(), Path(calib_src).resolve()):
        raise ArmqError(f"{dest} would overwrite an input")
    with card_lock(card_path), atomic_paths(dest, card_path) as (tmp_dest, tmp_card):
        tmp_dest.write_bytes(flat)
        card = load_card(card_path)
        card.record_artifact(card_path, "pte_int8", tmp_dest, installed_as=dest, **details)
        card.accuracy.pop("pte_int8", None)  # a new model: old numbers are stale
        save_card(card, tmp_card)
    print(f"{dest}: INT8 ExecuTorch program, {audit['delegated_subgraphs']} XNNPACK subgraph(s), "
          f"{audit['num_undelegated']} op(s) outside; calibrated on {len(calib)} images; top-1 "
          f"agreement with torch on {len(x)} of them {agree:.3f}; card {card_path}")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("--card", type=Path, required=True, help="model card from an export")
    p.add_argument("--calib", type=Path, required=True,
                   help="calibration images: folder, ImageFolder tree, .tar/.zip")
    p.add_argument("--num-calib", type=int, default=DEFAULT_NUM_CALIB,
                   help=f"calibration images (default {DEFAULT_NUM_CALIB})")
    p.add_argument("--source", metavar="SPEC",
                   help="for a model exported with --source (file.py:fn, module:fn, model.pt2): "
                   "the same source again; checked against the card's record (armq never "
                   "runs a file a card names)")
    args = p.parse_args(argv)
    if args.num_calib < 1:
        raise ArmqError("--num-calib must be at least 1")
    declare_inputs(args.calib)     # the INT8 file goes beside the card, never among the images
    if not args.card.is_file():
        raise ArmqError(f"--card {args.card} does not exist (export the model first)")
    et_venv.reexec_in_venv(PROG, None if argv is None else list(argv))
    run(args.card, args.calib, args.num_calib, args.source)
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
