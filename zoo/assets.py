"""Rebuild the small shipped data sets under assets/data from ../shared/data.

    python -m zoo.assets [--shared ../shared/data] [--out assets/data]

The archives are deterministic (sorted members, zero mtimes) so a rebuild is
byte-identical and shows no diff.
"""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Sequence

from .clikit import make_parser
from .util import ArmqError, atomic_output, cli_entry


def repack(src: Path, dst: Path, per_class: int | None = None) -> int:
    """Copy the image members of `src` into a gzipped tar, optionally the first N per class."""
    if not src.is_file():
        raise ArmqError(f"{src} not found (is ../shared/data beside the repo?)")
    with tarfile.open(src) as t:
        members = sorted((m for m in t.getmembers() if m.isfile()), key=lambda m: m.name)
        if per_class:
            counts: dict[str, int] = {}
            chosen = []
            for m in members:
                c = m.name.split("/")[0]
                if counts.get(c, 0) < per_class:
                    counts[c] = counts.get(c, 0) + 1
                    chosen.append(m)
            members = chosen
        with atomic_output(dst) as raw, \
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as out:
            for m in members:
                data = t.extractfile(m).read()
                info = tarfile.TarInfo(m.name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                out.addfile(info, io.BytesIO(data))
    return len(members)


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("zoo.assets", __doc__)
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "data")
    args = p.parse_args(argv)
    n = repack(args.shared / "cifar10" / "test.tar", args.out / "cifar10_test.tar.gz")
    print(f"{args.out / 'cifar10_test.tar.gz'}: {n} images")
    n = repack(args.shared / "cifar10" / "train.tar", args.out / "cifar10_calib.tar.gz", per_class=50)
    print(f"{args.out / 'cifar10_calib.tar.gz'}: {n} images")
    return 0


if __name__ == "__main__":
    cli_entry(main, "zoo.assets")
