"""Logits of an ExecuTorch program on a batch of preprocessed images, for the main venv.

    python -m export.et_run --model x.pte --inputs x.npy --outputs y.npy [--threads N]

quant.evaluate (main venv, no executorch) runs this in the ExecuTorch venv
(quant.runners.EtRunner): `x.npy` is float32 N x C x H x W as the card's preprocessing
makes it, `y.npy` float32 N x classes. The program runs through export.runtime.et_method.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_output, cli_entry

PROG = "export.et_run"


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("--model", type=Path, required=True, help=".pte file")
    p.add_argument("--inputs", type=Path, required=True, help="float32 NCHW .npy batch")
    p.add_argument("--outputs", type=Path, required=True, help="where the logits .npy goes")
    p.add_argument("--threads", type=int, default=0, help="XNNPACK threads (0: the default)")
    args = p.parse_args(argv)
    if args.outputs.resolve() in (args.model.resolve(), args.inputs.resolve()):
        raise ArmqError("--outputs would overwrite an input")
    try:
        x = np.load(args.inputs, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ArmqError(f"--inputs {args.inputs}: not a readable .npy array ({e})") from None
    if x.ndim != 4 or x.dtype != np.float32:
        raise ArmqError(f"--inputs {args.inputs}: expected float32 N x C x H x W, got "
                        f"{x.dtype} {list(x.shape)}")
    from export import et_venv

    et_venv.reexec_in_venv(PROG, None if argv is None else list(argv))
    from export.runtime import et_method

    y = et_method(args.model, args.threads or None)(x)
    with atomic_output(args.outputs, "wb") as f:
        np.save(f, y)
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
