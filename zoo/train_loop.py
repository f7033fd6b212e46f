"""The training loop of `python -m zoo.train` (zoo/train.py: the flags, the data cache,
augmentation and schedule helpers): set up, resume, one epoch, an epoch's bookkeeping.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cli import variant_from_args
from .clikit import progress_disabled
from .data import DataError, LabelledImages
from .train import (SYNC_EVERY, augment, cached_images, device_name, evaluate, find_split, lr_at,
                    pick_device, pick_memory_format, planned_epochs)
from .util import ArmqError


@dataclass
class _Run:
    """One training run's state, shared by its epochs."""

    args: argparse.Namespace
    variant: Any
    model: Any
    cfg: Any
    device: str
    train: Any          # (x uint8 NCHW, y) on the device
    test: LabelledImages
    norm: tuple         # (mean, std, fill)
    opt: Any
    steps_per_epoch: int
    total: int
    warmup: int
    epochs: int
    history: list
    resume_path: Path
    log_path: Path
    fmt: Any = None
    recipe: dict = field(default_factory=dict)


def _data(args: argparse.Namespace, cfg, device: str):
    """(x_train, y_train) on the device, and the test set, as the model's config says."""
    import torch

    train = cached_images(find_split(args.data, "train"), cfg.input_size, cfg.resize, cfg.class_names)
    test = cached_images(find_split(args.data, "test"), cfg.input_size, cfg.resize, cfg.class_names)
    if train.labels.min() < 0 or train.labels.max() >= cfg.num_classes:
        raise DataError(f"{args.data}: class folders do not match the model's "
                        f"{cfg.num_classes} classes")
    if args.limit_train:
        train = LabelledImages(train.images[:: max(1, len(train.images) // args.limit_train)],
                               train.labels[:: max(1, len(train.labels) // args.limit_train)],
                               train.class_names, ())
    # The whole uint8 training set lives on the training device (150 MB for CIFAR-10).
    x_train = torch.from_numpy(train.images).permute(0, 3, 1, 2).contiguous().to(device)
    return (x_train, torch.from_numpy(train.labels).to(device)), test


def _setup(args: argparse.Namespace) -> _Run:
    """Model, data, optimizer and schedule; the --init weights or the --resume state."""
    import torch
    from .checkpoint import load_weights, read_checkpoint
    from ._registry import create_model

    variant = variant_from_args(args)
    device = pick_device(args.device)
    if args.bf16 and device != "cuda":
        raise ArmqError("--bf16 needs --device cuda (bf16 autocast on CPU is slower here)")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model(variant)
    cfg = model.default_cfg
    (x_train, y_train), test = _data(args, cfg, device)
    norm = (torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1),
            torch.tensor(cfg.std, device=device).view(1, 3, 1, 1),
            tuple(round(255 * m) for m in cfg.mean))
    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (no_decay if prm.ndim <= 1 else decay).append(prm)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.wd},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    run = _Run(args, variant, model, cfg, device, (x_train, y_train), test, norm, opt,
               steps_per_epoch, steps_per_epoch * args.epochs,
               int(args.warmup_epochs * steps_per_epoch), args.epochs, [],
               args.out.with_name(args.out.name + ".resume.pt"),
               args.log or args.out.with_name(args.out.name + ".log.jsonl"))
    if args.init:
        load_weights(model, read_checkpoint(args.init)["state_dict"], f"--init {args.init}")
        print(f"starting from the weights in {args.init}", file=sys.stderr)
    return run


def _resume(run: _Run) -> int:
    """Load the --resume state into the run; returns the epoch to start at."""
    import torch
    from .checkpoint import load_weights, read_checkpoint

    state = read_checkpoint(run.resume_path)
    load_weights(run.model, state["state_dict"], f"resume file {run.resume_path}")
    run.opt.load_state_dict(state["optimizer"])
    start_epoch, run.history = int(state["epoch"]), list(state.get("history", []))
    torch.set_rng_state(state["rng"])
    if run.device == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"])
    print(f"resuming at epoch {start_epoch + 1}/{run.epochs}", file=sys.stderr)
    return start_epoch


def _epoch(run: _Run, epoch: int, autocast, crit) -> dict:
    """One pass over the training set; its log record."""
    import torch
    from tqdm import tqdm

    args, (x_train, y_train), (mean, std, fill) = run.args, run.train, run.norm
    run.model.train()
    t0 = time.time()
    perm = torch.randperm(len(x_train), device=run.device)
    seen = 0
    # Sums stay on the device; the host reads them every SYNC_EVERY steps and at the end.
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), dtype=torch.int64, device=run.device)
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{run.epochs}", unit="step",
               leave=False, file=sys.stderr, mininterval=5,
               disable=progress_disabled())
    for it in bar:
        step = epoch * run.steps_per_epoch + it
        for g in run.opt.param_groups:
            g["lr"] = lr_at(step, run.total, run.warmup, args.lr)
        idx = perm[it * args.batch_size:(it + 1) * args.batch_size]
        xb = augment(x_train[idx], cutout=args.cutout, fill=fill).float().div_(255).sub_(mean).div_(std)
        xb = xb.contiguous(memory_format=run.fmt)
        yb = y_train[idx]
        with autocast:
            out = run.model(xb)
            loss = crit(out.float(), yb)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        seen += len(idx)
        loss_sum += loss.detach() * len(idx)
        correct += (out.argmax(1) == yb).sum()
        if it % SYNC_EVERY == SYNC_EVERY - 1 or it == run.steps_per_epoch - 1:
            mean_loss = float(loss_sum) / seen
            if not math.isfinite(mean_loss):
                raise ArmqError(f"training diverged at epoch {epoch + 1} (loss {mean_loss}): "
                                "lower --lr")
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{int(correct) / seen:.3f}")
    return {"epoch": epoch + 1, "loss": round(float(loss_sum) / seen, 4),
            "train_top1": round(int(correct) / seen, 4), "seconds": round(time.time() - t0, 1)}


def _end_epoch(run: _Run, epoch: int, rec: dict, warmup_epochs: int) -> float | None:
    """The time budget's schedule, the test score, the log line and both checkpoints of
    a finished epoch; returns its test top-1 when it was tested."""
    import torch
    from .checkpoint import save_checkpoint

    args = run.args
    if epoch + 1 == warmup_epochs and args.time_budget and not args.resume:
        # Decide the schedule's length now, while the lr is still warming up, so the cosine
        # decay that follows runs to its end inside the budget.
        # Paced on the last warm-up epoch: the first also holds cuDNN's kernel search.
        elapsed = sum(h["seconds"] for h in run.history) + rec["seconds"]
        run.epochs = planned_epochs(args.epochs, args.time_budget - elapsed, [rec["seconds"]],
                                    epoch + 1, done_before=epoch + 1)
        run.total = run.steps_per_epoch * run.epochs
        rec["planned_epochs"] = run.epochs
        print(f"time budget {args.time_budget:.0f} s: {run.epochs} epochs", file=sys.stderr)
    rec["device"] = run.recipe["device"]
    top1 = None
    if (epoch + 1) % args.eval_every == 0 or epoch + 1 == run.epochs:
        top1 = evaluate(run.model, run.test.images, run.test.labels, *run.norm[:2])
        rec["test_top1"] = round(top1, 4)
    run.history.append(rec)
    print(json.dumps(rec), flush=True)
    with open(run.log_path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    run.recipe["epochs"] = run.epochs
    meta = {"data_config": run.cfg.to_dict(), "recipe": run.recipe, "history": run.history,
            "metrics": {"test_top1": rec.get("test_top1")}, "epochs_done": epoch + 1}
    save_checkpoint(args.out, run.model, run.variant, **meta)
    with_state = {"optimizer": run.opt.state_dict(), "epoch": epoch + 1, "epochs": run.epochs,
                  "history": run.history, "rng": torch.get_rng_state()}
    if run.device == "cuda":
        with_state["cuda_rng"] = torch.cuda.get_rng_state()
    save_checkpoint(run.resume_path, run.model, run.variant, **with_state)
    return top1


def train(args: argparse.Namespace) -> tuple[float, int]:
    """Train as the parsed flags say, writing the checkpoint after every epoch; returns
    (the last test top-1, the number of test images)."""
    import torch

    run = _setup(args)
    start_epoch = _resume(run) if args.resume else 0
    run.fmt = pick_memory_format(args.memory_format, run.device, run.model)
    run.model = run.model.to(device=run.device, memory_format=run.fmt)
    if run.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels once
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    run.recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                  if k in ("epochs", "batch_size", "lr", "wd", "label_smoothing", "warmup_epochs",
                           "seed", "init", "cutout", "bf16", "time_budget")}
    run.recipe["device"] = device_name(run.device)
    run.recipe["memory_format"] = "channels_last" if run.fmt == torch.channels_last else "contiguous"
    top1 = float("nan")
    warmup_epochs = max(1, math.ceil(args.warmup_epochs))
    epoch = start_epoch
    while epoch < run.epochs:
        rec = _epoch(run, epoch, autocast, crit)
        tested = _end_epoch(run, epoch, rec, warmup_epochs)
        top1 = top1 if tested is None else tested
        epoch += 1
    return top1, len(run.test.images)
