"""Re-evaluate shipped checkpoints and check each against the top-1 it records.

    python -m zoo.verify [--weights-dir assets/weights] [--data assets/data/cifar10_test.tar.gz]
                         [--only NAME ...] [--tolerance 0.001] [--record]

Every checkpoint carries `metrics.test_top1`, the figure its training measured.
This evaluates the file as shipped (float16 transport included) on the whole
test set and fails when the two differ by more than --tolerance (a fraction:
0.001 = 0.1 pt). `--record` writes the figure measured here into the file
instead (the first time a GPU-trained checkpoint is measured on the full set:
its training may have tested on a sample), keeping the earlier one beside it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from .clikit import make_parser
from .util import ArmqError, atomic_output, cli_entry

def shipped_files(folder: Path, only: Sequence[str] = ()) -> list[Path]:
    files = sorted(p for p in folder.glob("*.pt") if not p.name.endswith(".resume.pt"))
    if only:
        files = [p for p in files if any(o in p.name for o in only)]
    if not files:
        raise ArmqError(f"{folder}: no checkpoint to verify" + (f" matching {list(only)}" if only else ""))
    return files


def record_top1(path: Path, top1: float, n: int, where: str) -> None:
    """Store the measured top-1 as the file's `metrics.test_top1` (the file stays in its
    transport dtype: it is rewritten from its raw contents, not from a cast copy)."""
    import torch

    raw = torch.load(path, map_location="cpu", weights_only=True)
    metrics = dict(raw.get("metrics") or {})
    old = metrics.get("test_top1")
    if old is not None and old != top1:
        metrics.setdefault("test_top1_at_training", old)
    metrics.update(test_top1=round(top1, 4), test_images=n, measured=where)
    raw["metrics"] = metrics
    with atomic_output(path) as f:
        torch.save(raw, f)


def provenance_table(files: Sequence[Path]) -> str:
    """One Markdown row per checkpoint, from what the file records about its training."""
    from ._registry import Variant
    from .checkpoint import read_checkpoint

    rows = ["| file | variant | epochs | trained on | batch / peak lr | top-1 (10k) | MB |",
            "| --- | --- | ---: | --- | --- | ---: | ---: |"]
    for path in files:
        ck = read_checkpoint(path)
        rec, m = ck.get("recipe") or {}, ck.get("metrics") or {}
        v = Variant.from_dict(ck["variant"]) if "variant" in ck else None
        dev = str(rec.get("device") or "cpu (2 cores)")
        dev = "H100 (shared ../shared/checkpoints run)" if dev == "cuda" else \
            "H100 (this project's GPU run)" if dev.startswith("cuda") else dev.split(",")[0]
        top1 = m.get("test_top1")
        rows.append(f"| `{path.name}` | {v.tag if v else '-'} | {ck.get('epochs_done', '-')} | {dev} "
                    f"| {rec.get('batch_size', '-')} / {rec.get('lr', '-')} | "
                    f"{'-' if top1 is None else f'{100 * top1:.2f} %'} | "
                    f"{path.stat().st_size / 1e6:.1f} |")
    return "\n".join(rows)


def verify(files: Sequence[Path], data: Path, tolerance: float, record: bool = False,
           as_json: bool = False) -> int:
    """Evaluate each checkpoint on `data` and check (or, `record`, write) its recorded
    top-1; prints one row per file; returns how many do not match their record."""
    from .checkpoint import read_checkpoint
    from .evaluate import evaluate_checkpoint

    bad = 0
    for path in files:
        recorded = (read_checkpoint(path).get("metrics") or {}).get("test_top1")
        r = evaluate_checkpoint(path, data)
        row = {"file": path.name, "n": r["n"], "top1": round(r["top1"], 4), "recorded": recorded}
        if record:
            record_top1(path, r["top1"], r["n"], f"zoo.verify on {data.name}")
            row["status"] = "recorded"
        elif not isinstance(recorded, (int, float)):
            row["status"] = "no recorded top-1"
            bad += 1
        else:
            ok = abs(r["top1"] - recorded) <= tolerance + 1e-9
            row["status"] = "ok" if ok else "MISMATCH"
            bad += not ok
        print(json.dumps(row) if as_json else
              f"{row['file']:<44} top-1 {100 * row['top1']:6.2f} %  recorded "
              f"{'-' if recorded is None else f'{100 * recorded:6.2f} %'}  {row['status']}",
              flush=True)
    return bad


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("zoo.verify", __doc__)
    from zoo.assets import assets_dir  # the one place that knows where the shipped assets are

    p.add_argument("--weights-dir", type=Path, default=assets_dir() / "weights")
    p.add_argument("--data", type=Path, default=assets_dir() / "data" / "cifar10_test.tar.gz",
                   help="labelled test set (default: the shipped CIFAR-10 test set, 10,000 images)")
    p.add_argument("--only", nargs="+", default=(), metavar="NAME",
                   help="only files whose name contains one of these")
    p.add_argument("--tolerance", type=float, default=0.001,
                   help="largest accepted |measured - recorded| top-1, a fraction (default 0.001)")
    p.add_argument("--record", action="store_true",
                   help="write the measured top-1 into each file instead of checking it")
    p.add_argument("--json", action="store_true", help="one JSON line per checkpoint")
    p.add_argument("--table", action="store_true",
                   help="print the provenance table (Markdown) of the records; evaluate nothing")
    args = p.parse_args(argv)
    if not 0 <= args.tolerance < 1:
        raise ArmqError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    if args.table:
        print(provenance_table(shipped_files(args.weights_dir, args.only)))
        return 0
    bad = verify(shipped_files(args.weights_dir, args.only), args.data, args.tolerance,
                 args.record, args.json)
    if bad:
        print(f"python -m zoo.verify: error: {bad} checkpoint(s) do not match their record",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli_entry(main, "zoo.verify")
