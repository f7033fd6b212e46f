"""Image data without torch: folders, ImageFolder trees, .tar/.tar.gz/.zip of them.

Used by training, calibration and evaluation. Members of archives are read in
memory, never extracted, so a hostile archive cannot write anywhere; names
that are absolute or contain '..' are refused anyway, as `tarfile`'s 'data'
filter would.
"""
from __future__ import annotations

import io
import os
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image

from .config import DataConfig
from .util import ArmqError, env_limit, shown

T = TypeVar("T")


# Caps on untrusted data (env vars so a genuine huge dataset can raise them): a member
# (or file) is refused by its declared size BEFORE it is read, and read with a bounded
# read so a lying header cannot blow past it; an image is refused by its header's
# pixel count before PIL decodes it, and again by the resize's output size (a 10^7 x 1 px
# line scaled to a 32 px short side is 10 Gpx); an archive or folder by its file count,
# while it is listed (a 7 MB .tar.gz holds a million empty members).
MAX_MEMBER_MB = 64.0      # ARMQ_MAX_MEMBER_MB
MAX_PIXELS = 50_000_000   # ARMQ_MAX_PIXELS
MAX_FILES = 200_000       # ARMQ_MAX_FILES: ImageNet's validation set has 50,000


def max_member_bytes() -> int:
    return int(env_limit("ARMQ_MAX_MEMBER_MB", MAX_MEMBER_MB, 0.001) * 2**20)


def max_pixels() -> int:
    return int(env_limit("ARMQ_MAX_PIXELS", MAX_PIXELS, 1))


def _max_files() -> int:
    return int(env_limit("ARMQ_MAX_FILES", MAX_FILES, 1))


def _too_many(src: Path, cap: int) -> DataError:
    return DataError(f"{shown(src)}: more than {cap:,} files or archive members "
                     f"(ARMQ_MAX_FILES; raise it if the data set is genuine)")


def _count(items: Iterable[T], src: Path) -> Iterator[T]:
    """`items`, refused in one line past ARMQ_MAX_FILES entries (checked while listing)."""
    cap = _max_files()
    for n, x in enumerate(items, 1):
        if n > cap:
            raise _too_many(src, cap)
        yield x


def zip_entry_count(src: Path) -> int | None:
    """The entry count a zip's end-of-central-directory record declares (ZIP64 too), read
    from the file's tail without parsing the directory: zipfile.ZipFile builds one object per
    entry before anything can be counted (a million entries: hundreds of MB). None when no
    record is found (zipfile then says what is wrong)."""
    with open(src, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - (22 + 0xFFFF)))      # the record, then a comment of <= 64 KiB
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 22:
            return None
        n = int.from_bytes(tail[at + 10:at + 12], "little")
        loc = at - 20                              # ZIP64: its locator sits just before
        if n != 0xFFFF or loc < 0 or tail[loc:loc + 4] != b"PK\x06\x07":
            return n
        f.seek(int.from_bytes(tail[loc + 8:loc + 16], "little"))
        rec = f.read(40)
        return int.from_bytes(rec[32:40], "little") if rec[:4] == b"PK\x06\x06" else n


class MemberTooLarge(OSError):
    """An image file or archive member over ARMQ_MAX_MEMBER_MB (skipped like unreadable ones)."""


def _too_large(size: int, cap: int) -> MemberTooLarge:
    return MemberTooLarge(f"{size / 2**20:.1f} MB is over the {cap / 2**20:g} MB limit "
                          f"(ARMQ_MAX_MEMBER_MB)")


def _bounded(declared: int, cap: int, open_: Callable[[], "io.BufferedIOBase"]) -> bytes:
    """Read at most `cap` bytes of a file whose header says `declared` bytes."""
    if declared > cap:
        raise _too_large(declared, cap)
    with open_() as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise _too_large(len(data), cap)
    return data


IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


class DataError(ArmqError, ValueError):
    """A user error about image data (printed as one line)."""


@dataclass(frozen=True)
class ImageRecord:
    name: str                     # path inside the source, posix style
    label: str | None             # parent folder name, None for a flat folder
    read: Callable[[], bytes]


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_member(name: str) -> bool:
    pp = PurePosixPath(name)
    return not pp.is_absolute() and ".." not in pp.parts


def _label_of(rel: PurePosixPath) -> str | None:
    return rel.parts[-2] if len(rel.parts) >= 2 else None


def list_images(source: str | os.PathLike) -> list[ImageRecord]:
    """Every image file of a folder tree or archive, sorted by name."""
    src = Path(source)
    if not src.exists():
        raise DataError(f"{shown(src)}: no such file or directory")
    records: list[ImageRecord] = []
    cap = max_member_bytes()
    if src.is_dir():
        for p in sorted(_count(src.rglob("*"), src)):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                rel = PurePosixPath(p.relative_to(src).as_posix())
                records.append(ImageRecord(str(rel), _label_of(rel),
                                           lambda p=p: _bounded(p.stat().st_size, cap,
                                                                lambda: open(p, "rb"))))
    elif _is_archive(src) and src.name.lower().endswith(".zip"):
        if (zip_entry_count(src) or 0) > _max_files():   # before the directory is parsed
            raise _too_many(src, _max_files())
        try:
            zf = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{shown(src)}: not a readable zip archive ({shown(e)})") from None
        for info in sorted(_count(zf.infolist(), src), key=lambda i: i.filename):
            rel = PurePosixPath(info.filename)
            if info.is_dir() or rel.suffix.lower() not in IMAGE_EXTS:
                continue
            if not _safe_member(info.filename):
                raise DataError(f"{shown(src)}: unsafe member name '{shown(info.filename)}'")
            records.append(ImageRecord(str(rel), _label_of(rel),
                                       lambda zf=zf, i=info: _bounded(i.file_size, cap,
                                                                     lambda: zf.open(i))))
    elif _is_archive(src):
        try:
            tf = tarfile.open(src)
            members = list(_count(tf, src))     # iterating reads headers one at a time
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{shown(src)}: not a readable tar archive ({shown(e)})") from None
        for m in sorted(members, key=lambda m: m.name):
            rel = PurePosixPath(m.name)
            if not m.isfile() or rel.suffix.lower() not in IMAGE_EXTS:
                continue
            if not _safe_member(m.name):
                raise DataError(f"{shown(src)}: unsafe member name '{shown(m.name)}'")
            records.append(ImageRecord(str(rel), _label_of(rel),
                                       lambda tf=tf, m=m: _bounded(m.size, cap,
                                                                  lambda: tf.extractfile(m))))
    else:
        raise DataError(f"{shown(src)}: expected a folder of images or a .tar/.tar.gz/.zip archive")
    return records


def decode_rgb(data: bytes) -> Image.Image:
    """Decode any PIL-readable image to 8-bit RGB (grayscale, RGBA, 16-bit, palette).

    Anything that is not a decodable image raises DataError: PIL's decoders raise
    many exception types on corrupt input (OSError, ValueError, SyntaxError,
    struct.error, EOFError, DecompressionBombError, ...)."""
    try:
        return _decode_rgb(data)
    except (MemoryError, ArmqError):
        raise  # the machine's problem, not the file's; or already one line (a bad cap env)
    except Exception as e:  # noqa: BLE001 - see above
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{type(e).__name__}: {first}" if first else type(e).__name__) from None


def _decode_rgb(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    # The header's size, checked before decoding: PIL's own bomb check only warns up to
    # 2x MAX_IMAGE_PIXELS, and a tiny PNG can declare a gigapixel canvas.
    w, h = img.size
    limit = max_pixels()
    if w * h > limit:
        raise DataError(f"{w}x{h} = {w * h / 1e6:.1f} Mpx is over the {limit / 1e6:g} Mpx "
                        f"limit (ARMQ_MAX_PIXELS)")
    img.load()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black, not on garbage from the alpha-less channels.
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB")


_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def resize_crop(img: Image.Image, resize: int, crop: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize the short side to `resize`, centre-crop `crop`: uint8 HxWx3."""
    w, h = img.size
    if min(w, h) != resize:
        scale = resize / min(w, h)
        size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
        if size[0] * size[1] > max_pixels():    # the header check saw the smaller input
            raise DataError(f"{w}x{h} resized to {size[0]}x{size[1]} = "
                            f"{size[0] * size[1] / 1e6:.1f} Mpx is over the {max_pixels() / 1e6:g} "
                            f"Mpx limit (ARMQ_MAX_PIXELS)")
        img = img.resize(size, _RESAMPLE.get(interpolation, Image.BILINEAR))
        w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def normalize(batch_u8: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW normalized with the model's mean/std."""
    x = batch_u8.astype(np.float32) / 255.0
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class LabelledImages:
    images: np.ndarray             # uint8 N x H x W x 3, already resized/cropped
    labels: np.ndarray             # int64 N (-1 where unlabelled)
    class_names: tuple[str, ...]   # folder names in label order
    names: tuple[str, ...]         # member names, for reports
    skipped: tuple[str, ...] = ()  # unreadable members


def iter_decoded(records: list[ImageRecord], resize: int, crop: int,
                 interpolation: str = "bilinear") -> Iterator[tuple[ImageRecord, np.ndarray | None, str]]:
    for r in records:
        try:
            data = r.read()
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error) as e:
            # e.g. a zip member failing its CRC, a tar cut short inside a member
            what = "too large" if isinstance(e, MemberTooLarge) else "unreadable archive member"
            yield r, None, f"{what} ({type(e).__name__}: {e})"
            continue
        try:
            img = decode_rgb(data)  # every decode failure is a DataError
        except DataError as e:
            yield r, None, str(e)
            continue
        try:
            arr = resize_crop(img, resize, crop, interpolation)
        except DataError as e:              # over a cap: the message names it
            yield r, None, str(e)
        except (OSError, ValueError) as e:  # a decoded image PIL still cannot resample
            yield r, None, f"{type(e).__name__}: {e}"
        else:
            yield r, arr, ""


def load_images(source: str | os.PathLike, resize: int, crop: int, interpolation: str = "bilinear",
                class_names: tuple[str, ...] | None = None, limit: int | None = None,
                progress: bool = False, desc: str = "images") -> LabelledImages:
    """Decode a source into memory. Unreadable files are skipped with a warning;
    a source with no usable image is an error.

    `class_names` fixes the label order (a model's classes); otherwise the
    sorted folder names are used, as torchvision's ImageFolder does.
    """
    records = list_images(source)
    if not records:
        raise DataError(f"{shown(source)}: no image files found")
    if limit is not None and limit < len(records):
        # Spread the subset over all classes: deterministic stride, not the first N.
        idx = np.linspace(0, len(records) - 1, limit).round().astype(int)
        records = [records[i] for i in sorted(set(idx.tolist()))]
    folders = sorted({r.label for r in records if r.label is not None})
    names = tuple(class_names) if class_names else tuple(folders)
    index = {c: i for i, c in enumerate(names)}
    it = iter_decoded(records, resize, crop, interpolation)
    if progress:
        from tqdm import tqdm

        from .clikit import progress_disabled
        it = tqdm(it, total=len(records), desc=desc, unit="img", leave=False,
                  disable=progress_disabled())
    imgs, labels, kept, skipped = [], [], [], []
    first = ""      # why the first one was skipped: the error line says it if none is left
    for r, arr, err in it:
        if arr is None:
            first = first or f"{shown(r.name)}: {shown(err)}"
            skipped.append(r.name)
            warnings.warn(f"skipping {shown(r.name)}: {shown(err)}", stacklevel=2)
            continue
        imgs.append(arr)
        labels.append(index.get(r.label, -1) if r.label is not None else -1)
        kept.append(r.name)
    if not imgs:
        raise DataError(f"{shown(source)}: none of the {len(records)} image files could be "
                        f"decoded (the first: {first})")
    return LabelledImages(np.stack(imgs), np.asarray(labels, np.int64), names, tuple(kept),
                          tuple(skipped))
