"""Top-1/top-5 of a PyTorch checkpoint on a labelled ImageFolder (folder or archive).

    python -m zoo.evaluate --weights assets/weights/shufflenet_v1_g3_cifar10.pt \
        --data assets/data/cifar10_test.tar.gz [--limit N] [--json]

Preprocessing comes from the checkpoint's model config; class folders must be
the model's class names (else it is an error, not a silent 0%).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import DataError, load_images, normalize
from .clikit import make_parser
from .util import cli_entry


def check_labels(folders: set[str], class_names: Sequence[str], source) -> None:
    unknown = sorted(folders - set(class_names))
    if unknown:
        raise DataError(f"{source}: class folder '{unknown[0]}' is not one of the model's "
                        f"{len(class_names)} classes")


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def evaluate_checkpoint(weights: Path, data: Path, limit: int | None = None,
                        batch: int = 250) -> dict:
    import torch

    from .checkpoint import load_model
    from .config import DataConfig

    model, _ = load_model(weights)
    cfg: DataConfig = model.default_cfg
    imgs = load_images(data, cfg.resize, cfg.input_size, cfg.interpolation,
                       class_names=cfg.class_names or None, limit=limit, progress=True,
                       desc="evaluating")
    check_labels({n.split("/")[-2] for n in imgs.names if "/" in n}, cfg.class_names, data)
    outs = []
    with torch.no_grad():
        for s in range(0, len(imgs.images), batch):
            x = torch.from_numpy(normalize(imgs.images[s:s + batch], cfg))
            outs.append(model(x).numpy())
    logits = np.concatenate(outs)
    return {"weights": str(weights), "data": str(data), "n": int(len(logits)),
            "top1": topk_accuracy(logits, imgs.labels, 1),
            "top5": topk_accuracy(logits, imgs.labels, min(5, logits.shape[1])),
            "skipped": len(imgs.skipped)}


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("zoo.evaluate", __doc__)
    p.add_argument("--weights", type=Path, required=True, help="armq checkpoint (.pt)")
    p.add_argument("--data", type=Path, required=True, help="labelled ImageFolder: folder, .tar(.gz) or .zip")
    p.add_argument("--limit", type=int, help="evaluate on N images spread over the set")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = evaluate_checkpoint(args.weights, args.data, args.limit)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}%  on {r['n']} images "
              f"of {r['data']}")
    return 0


if __name__ == "__main__":
    cli_entry(main, "zoo.evaluate")
