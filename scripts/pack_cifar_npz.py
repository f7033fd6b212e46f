"""Pack an ImageFolder .tar (CIFAR-10's train/test) into one .npz of JPEG bytes, or unpack it.

    python scripts/pack_cifar_npz.py --pack ../shared/data/cifar10 out.npz [--test-every 5]
    python scripts/pack_cifar_npz.py --unpack out.npz DIR     # DIR/train/<class>/x.jpg, DIR/test/...

For moving the data set to a GPU machine whose upload is size-capped: the JPEG bytes are kept
as they are (no re-encoding), without the tar's 512-byte member padding.
"""
from __future__ import annotations

import argparse
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np


def pack(root: Path, out: Path, test_every: int) -> None:
    arrays = {}
    for split in ("train", "test"):
        with tarfile.open(root / f"{split}.tar") as t:
            members = sorted((m for m in t.getmembers() if m.isfile()), key=lambda m: m.name)
            if split == "test":
                members = members[::test_every]
            blobs = [t.extractfile(m).read() for m in members]
        arrays[f"{split}_names"] = np.array([m.name for m in members])
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_bytes"] = np.frombuffer(b"".join(blobs), np.uint8)
    np.savez(out, **arrays)


def unpack(src: Path, dest: Path) -> None:
    z = np.load(src)
    for split in ("train", "test"):
        names, off, data = z[f"{split}_names"], z[f"{split}_offsets"], z[f"{split}_bytes"]
        for i, name in enumerate(names.tolist()):
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts:
                raise SystemExit(f"unsafe member name {name!r}")
            p = dest / split / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data[off[i]:off[i + 1]].tobytes())
        print(f"{split}: {len(names)} images")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--pack", nargs=2, type=Path, metavar=("ROOT", "OUT"))
    g.add_argument("--unpack", nargs=2, type=Path, metavar=("NPZ", "DIR"))
    ap.add_argument("--test-every", type=int, default=5, help="keep every Nth test image")
    a = ap.parse_args()
    if a.pack:
        pack(*a.pack, a.test_every)
    else:
        unpack(*a.unpack)


if __name__ == "__main__":
    main()
