"""Train a zoo model on an ImageFolder dataset (folders or .tar archives).

    python -m zoo.train --model shufflenet_v1 --groups 3 --dataset cifar10 \
        --data ../shared/data/cifar10 --epochs 30 --out ckpt.pt

The whole training set is decoded once into a uint8 tensor (cached under
~/.cache/armq) so an epoch costs only the network. Augmentation is the standard
CIFAR one (4-pixel pad + random crop + horizontal flip); the learning rate has
a linear warm-up then a cosine decay, per step. A resume file is written after
every epoch so CPU training can continue across sessions (`--resume`).

`--device cuda` keeps the decoded training set, the augmentation and the model
on the GPU and reads the loss/accuracy sums from it once per epoch (and every
`SYNC_EVERY` steps for the divergence check), so the GPU never waits on Python;
`--bf16` adds bf16 autocast there. `--time-budget` fits the schedule to a
wall-clock budget: the epoch count is decided once the warm-up epochs have been
timed, before the cosine decay starts, so every run ends its schedule.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .cli import add_model_args
from .data import DataError, LabelledImages, load_images
from .clikit import make_parser
from .util import ArmqError, atomic_output, check_writable_dir, cli_entry, declare_inputs, shown

CACHE = Path(os.environ.get("ARMQ_CACHE", Path.home() / ".cache" / "armq"))


def find_split(root: Path, split: str) -> Path:
    for cand in (root / split, root / f"{split}.tar", root / f"{split}.tar.gz", root / f"{split}.zip"):
        if cand.exists():
            return cand
    raise DataError(f"{root}: no '{split}' folder or {split}.tar inside")


def _read_cache(path: Path, size: int) -> LabelledImages | None:
    """The cached decode, or None (after one warning line) when the file is truncated or
    corrupt (a crash or full disk while another run wrote it, a copied cache): the caller
    decodes again and replaces it, instead of every later run failing with BadZipFile."""
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
            classes = tuple(str(c) for c in z["classes"].tolist())
        if (images.ndim != 4 or images.shape[1:] != (size, size, 3)
                or labels.shape != (len(images),)):
            raise ValueError(f"unexpected shapes {images.shape}, {labels.shape}")
    except MemoryError:
        raise   # the machine's problem: the cache may be fine
    except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
        print(f"zoo.train: warning: decoded-image cache {shown(path)} is unreadable "
              f"({type(e).__name__}); decoding again and rebuilding it", file=sys.stderr)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return LabelledImages(images, labels, classes, ())


def cached_images(src: Path, size: int, resize: int, class_names: tuple[str, ...]) -> LabelledImages:
    """Decode once, keep a .npz in the cache keyed by source path, size and mtime."""
    st = src.stat()
    key = hashlib.sha1(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}|{resize}|"
                       f"{','.join(class_names)}".encode()).hexdigest()[:16]
    path = CACHE / "decoded" / f"{src.name}-{key}.npz"
    if path.exists():
        cached = _read_cache(path, size)
        if cached is not None:
            return cached
    data = load_images(src, resize, size, class_names=class_names, progress=True,
                       desc=f"decoding {src.name}")
    with atomic_output(path) as f:
        np.savez(f, images=data.images, labels=data.labels, classes=np.asarray(data.class_names))
    return data


# Steps between reads of the loss on the host: each read waits for the device.
SYNC_EVERY = 50


def pick_device(choice: str) -> str:
    """'auto' -> cuda when torch sees a GPU, else cpu; 'cuda' without one is a user error."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ArmqError("--device cuda: torch sees no CUDA device (this torch build: "
                        f"{torch.__version__}); use --device cpu or auto")
    return choice


def has_grouped_conv(model) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


def pick_memory_format(choice: str, device: str, model):
    """channels_last on CPU (1.4x faster per step here); on CUDA too, except for nets with
    depthwise/grouped convs, whose cuDNN kernels ran several times slower in channels_last."""
    import torch

    if choice == "auto":
        choice = ("contiguous" if device == "cuda" and has_grouped_conv(model)
                  else "channels_last")
    return torch.channels_last if choice == "channels_last" else torch.contiguous_format


def planned_epochs(requested: int, budget_s: float | None, seconds: Sequence[float],
                   done: int, done_before: int = 0) -> int:
    """Epoch count that fits: `done_before` epochs already run, plus as many more as
    `budget_s` (the time left) holds at the mean pace of `seconds`. Never fewer than
    `done` + 1, never more than `requested`."""
    if budget_s is None or not seconds:
        return requested
    pace = max(1e-9, sum(seconds) / len(seconds))
    return max(done + 1, min(requested, done_before + int(max(0.0, budget_s) // pace)))


def augment(x, pad: int = 4, cutout: int = 0, fill: Sequence[int] = (0, 0, 0)):
    """Random crop with zero padding + horizontal flip on a uint8 NCHW batch.

    cutout > 0 also blanks one cutout x cutout square per image (centre anywhere, clipped at the
    border; DeVries & Taylor 2017) with the `fill` colour, which normalises to ~0: a regulariser
    for small CIFAR nets that otherwise overfit.
    """
    import torch

    n, c, h, w = x.shape
    dev = x.device  # random numbers are drawn where the batch lives (no host round trip)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    i = torch.randint(0, 2 * pad + 1, (n,), device=dev)
    j = torch.randint(0, 2 * pad + 1, (n,), device=dev)
    rows = (i[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (j[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = xp[torch.arange(n, device=dev)[:, None, None, None],
             torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    flip = torch.rand(n, device=dev) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    if cutout > 0:
        cy = torch.randint(0, h, (n, 1, 1), device=dev)
        cx = torch.randint(0, w, (n, 1, 1), device=dev)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        half = cutout // 2
        mask = ((ys >= cy - half) & (ys < cy - half + cutout)
                & (xs >= cx - half) & (xs < cx - half + cutout))  # (n, h, w)
        fill_t = torch.tensor(list(fill), dtype=out.dtype, device=dev).view(1, c, 1, 1)
        out = torch.where(mask[:, None], fill_t, out)
    return out


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * t))


def evaluate(model, images, labels, mean, std, batch: int = 500) -> float:
    """Top-1 in float32 (no autocast), on the device the model and mean live on."""
    import torch

    model.eval()
    dev = mean.device
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(images[s:s + batch]).to(dev).permute(0, 3, 1, 2).float().div_(255)
            x = (x - mean) / std
            y = torch.from_numpy(labels[s:s + batch]).to(dev)
            correct += (model(x).argmax(1) == y).sum()
    return int(correct) / len(images)


def device_name(device: str) -> str:
    """What the log records: 'cpu (N threads)' or the GPU's name."""
    import torch

    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name()}, torch {torch.__version__})"
    return f"cpu ({torch.get_num_threads()} threads, torch {torch.__version__})"


def parser() -> argparse.ArgumentParser:
    """The flags of `python -m zoo.train`."""
    p = make_parser("zoo.train", __doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", type=Path, required=True,
                   help="folder holding train/ and test/ (folders or .tar archives)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD, nesterov)")
    p.add_argument("--wd", type=float, default=5e-4, help="weight decay (not on BN/bias)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--cutout", type=int, default=0, metavar="PX",
                   help="blank a random PX x PX square per training image (0: off; 16 for CIFAR)")
    p.add_argument("--eval-every", type=int, default=5, help="test every N epochs (and the last)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where to train (default cpu; auto: cuda when torch sees a GPU)")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast for the forward pass (CUDA only; weights stay float32)")
    p.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"),
                   default="auto", help="activation layout (auto: channels_last, but NCHW on "
                   "CUDA for nets with depthwise/grouped convs)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="fit the schedule to this wall-clock budget: the epoch count (at most "
                        "--epochs) is fixed after the warm-up epochs have been timed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, help="use only N training images (smoke tests)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--resume", action="store_true", help="continue from <out>.resume.pt")
    p.add_argument("--init", type=Path, metavar="CKPT",
                   help="start from these weights with a fresh schedule (a warm restart: fine-tune "
                        "a shipped checkpoint with another cosine cycle)")
    p.add_argument("--log", type=Path, help="JSON-lines log (default: <out>.log.jsonl)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse inconsistent flags and unusable outputs before any work."""
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise ArmqError("--epochs, --batch-size and --lr must be positive")
    if args.cutout < 0:
        raise ArmqError(f"--cutout must be >= 0, got {args.cutout}")
    # --init and the data are read, never replaced by the checkpoint or its log.
    declare_inputs(args.init, args.data, outputs=[args.out, args.log])
    # The checkpoint and log folders must take files now, not after the first epoch.
    check_writable_dir(args.out.parent)
    if args.log:
        check_writable_dir(args.log.parent)
    if args.init and args.resume:
        raise ArmqError("--init and --resume exclude each other: --resume continues its own schedule")
    if args.time_budget is not None and args.time_budget <= 0:
        raise ArmqError(f"--time-budget must be positive, got {args.time_budget}")
    if args.time_budget and args.resume:
        raise ArmqError("--time-budget and --resume exclude each other: the resumed schedule "
                        "keeps its epoch count")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check_args(args)
    from .train_loop import train

    top1, n = train(args)
    print(f"test top-1 {top1:.4f} ({n} images) -> {args.out}")
    return 0


if __name__ == "__main__":
    cli_entry(main, "zoo.train")
