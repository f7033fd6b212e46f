"""The cost (MACs, parameters, memory access) of the model `export.onnx` builds with the
same flags: `armq cost` runs this.

    python -m export.cost --model shufflenet_v1 --groups 3      # the shipped CIFAR-10 one, 32 px
    python -m export.cost --source mynet.py:build --input-size 64 --mean ... --std ...

One home for which config a flag set means: export.build.prepare (no --dataset: the given
or shipped weights' dataset and input size, else ImageNet's 224 px). `python -m zoo.cost`
stays the zoo-level table of a variant as named (its --dataset default: imagenet).
"""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Sequence

from zoo.cost import format_table, measure
from zoo.util import ArmqError, cli_entry

from . import build, common

PROG = "export.cost"


def main(argv: Sequence[str] | None = None) -> int:
    p = common.make_parser(f"python -m {PROG}", __doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = common.parse(p, argv)
    common.set_threads(args.threads)
    # prepare's "weights: ...; config: ..." line goes to stderr: stdout is the table or JSON
    with contextlib.redirect_stdout(sys.stderr):
        prep = build.prepare(build.ModelConfig.from_args(args), PROG)
    if prep.model is None:
        raise ArmqError(f"{prep.name}: an ONNX file has no torch module to count; "
                               "pass the factory file.py:fn or a .pt2")
    rep = measure(prep.model, prep.input_size, prep.variant.model, prep.variant.to_dict())
    print(json.dumps(rep.to_dict()) if args.json else format_table(rep))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
