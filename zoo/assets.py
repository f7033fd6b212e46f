"""Where the shipped assets are (`assets_dir`), and rebuilding the small data sets
under assets/data from ../shared/data:

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


def assets_dir() -> Path:
    """The shipped assets: `weights/` (checkpoints) and `data/` (small real data sets).

    In a checkout this is the repository's `assets/` (armq/assets is a symlink to it:
    every shipped checkpoint). An installed wheel carries a copy of the small ones only
    (pyproject.toml, [tool.setuptools.package-data]): the default ShuffleNet V1 g=3
    CIFAR-10 checkpoint and the CIFAR-10 calibration and test archives. The home is here,
    in the lowest package, so zoo, export and deploy can ask without importing upward
    (armq re-exports it as `armq.assets_dir`); zoo and armq are sibling packages both in a
    checkout and in site-packages.
    """
    return Path(__file__).resolve().parents[1] / "armq" / "assets"


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
