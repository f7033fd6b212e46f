"""The aarch64 sysroot of the QEMU target: fetching and unpacking it.

    root/             Debian bookworm arm64 packages unpacked with `dpkg -x`: Python 3.11
                      and the C/C++ runtime libraries; the host's dpkg is never touched
                      (PrivateApt: apt with a private state folder, APT::Architecture=arm64)
    root/opt/armq/    what the guest sees at the same path on every machine, so that
                      instruction counts do not depend on where the cache lives:
        site-litert/  aarch64 cp311 wheels: numpy, onnxruntime, ai-edge-litert
        site-tflite/  tflite-runtime 2.14 + numpy<2 (its own folder; --tflite-runtime)
        site-mnn/     the MNN wheel alone (numpy comes from site-litert; runtime mnn)
        site-et/      the executorch wheel's runtime libraries and libarmq_et.so (.pte;
                      built by qemu_et.py with the cross g++ it unpacks into cross/)

qemu_setup.ensure decides what to (re)build and records it in the manifest.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from .qemu_host import QemuSetupError, run_tool, say

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

DEBS = ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11",
        "libc6", "libexpat1", "zlib1g", "libffi8", "libssl3", "libbz2-1.0", "liblzma5",
        "libsqlite3-0", "libstdc++6", "libgcc-s1", "libuuid1", "libncursesw6", "libtinfo6",
        "libreadline8", "libdb5.3", "libgomp1", "libcrypt1", "libnsl2", "libtirpc3",
        "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libcom-err2",
        "libkeyutils1", "media-types", "tzdata", "readline-common"]

# Pinned so that instruction counts compare across machines and days.
WHEELS_LITERT = ["numpy==2.4.6", "onnxruntime==1.32.0", "ai-edge-litert==1.4.0"]
WHEELS_TFLITE = ["numpy==1.26.4", "tflite-runtime==2.14.0"]
# Its own folder, added beside a ready sysroot: the base's pins (and so every existing
# ORT/LiteRT instruction count) stay as they are. Only the MNN wheel is unpacked; its one
# dependency, numpy, is site-litert's (the guest's PYTHONPATH names both).
WHEELS_MNN = ["MNN==3.6.1", "numpy==2.4.6"]
PLATFORMS_LITERT = ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64"]
PLATFORMS_TFLITE = PLATFORMS_LITERT + ["manylinux_2_34_aarch64"]

GUEST_DIR = "/opt/armq"              # inside the sysroot; the guest's path for armq files
GUEST_PYTHON = "/usr/bin/python3.11"


def cache_root() -> Path:
    base = os.environ.get("ARMQ_CACHE")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "armq"


def sysroot_dir() -> Path:
    return cache_root() / "qemu-sysroot"


# ---- private apt -----------------------------------------------------------------------

class PrivateApt:
    """apt-get with its own sources, lists, cache and (empty) dpkg status, for one
    architecture: arm64 for the guest, the host's for the cross compiler (qemu_et)."""

    def __init__(self, base: Path, arch: str = "arm64"):
        self.base, self.arch = base, arch
        for d in ("lists/partial", "cache/archives/partial", "etc/parts"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "status").touch()
        src = base / "etc" / "sources.list"
        signed = f"signed-by={KEYRING}" if Path(KEYRING).is_file() else "trusted=yes"
        lines = []
        for uri, suite in ((MIRROR, SUITE), (MIRROR, f"{SUITE}-updates"),
                           (SECURITY, f"{SUITE}-security")):
            lines.append(f"deb [arch={arch} {signed}] {uri} {suite} main")
            lines.append(f"deb-src [{signed}] {uri} {suite} main")
        src.write_text("\n".join(lines) + "\n")
        self.opts = ["-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures::={arch}",
                     "-o", f"Dir::Etc::SourceList={src}",
                     "-o", f"Dir::Etc::SourceParts={base / 'etc' / 'parts'}",
                     "-o", f"Dir::State::Lists={base / 'lists'}",
                     "-o", f"Dir::State::status={base / 'status'}",
                     "-o", f"Dir::Cache={base / 'cache'}",
                     "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
                     "-o", "Acquire::Retries=3", "-q"]
        self.updated = False

    def _apt(self, args: list[str], what: str, cwd: Path | None = None) -> str:
        if not shutil.which("apt-get"):
            raise QemuSetupError("building the QEMU sysroot needs apt-get (Debian/Ubuntu host)")
        return run_tool(["apt-get", *self.opts, *args], what, cwd=cwd)

    def update(self) -> None:
        if not self.updated:
            self._apt(["update"], f"apt-get update (Debian {SUITE} {self.arch} lists)")
            self.updated = True

    def download(self, packages: Sequence[str], dest: Path) -> list[Path]:
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self._apt(["download", *packages], f"apt-get download ({self.arch} packages)", cwd=dest)
        return sorted(dest.glob("*.deb"))

    def source(self, package: str, dest: Path) -> Path:
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self._apt(["source", "--download-only", package], f"apt-get source {package}", cwd=dest)
        origs = sorted(dest.glob(f"{package}_*.orig.tar.*"))
        if not origs:
            raise QemuSetupError(f"apt-get source {package} fetched no .orig tarball")
        return origs[-1]


# ---- building ---------------------------------------------------------------------------

def _relink_absolute(root: Path) -> None:
    """Packages ship absolute symlinks (/etc/...); point them inside the sysroot."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                t = os.readlink(p)
                if t.startswith("/"):
                    p.unlink()
                    p.symlink_to(os.path.relpath(root / t.lstrip("/"), p.parent))


def _unpack_wheels(wheels: Sequence[Path], site: Path, only: Sequence[str] = ()) -> None:
    """Unpack `wheels` into `site`; `only`: just the members under these prefixes."""
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            members = [i for i in z.infolist()
                       if not only or i.filename.startswith(tuple(only))]
            for info in members:
                name = info.filename
                if name.startswith("/") or ".." in Path(name).parts:
                    raise QemuSetupError(f"{w.name}: unsafe member {name}")
            z.extractall(site, members)
            for info in members:  # keep the executable bit of shared objects
                mode = info.external_attr >> 16
                if mode & 0o111:
                    os.chmod(site / info.filename, mode & 0o777 | 0o644)


def _pip_download(reqs: Sequence[str], platforms: Sequence[str], dest: Path,
                  no_deps: bool = False) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
            "--dest", str(dest), "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311", *(["--no-deps"] if no_deps else [])]
    for p in platforms + ["any"]:
        argv += ["--platform", p]
    run_tool(argv + list(reqs), f"pip download {' '.join(reqs)} (aarch64 wheels)")
    return sorted(dest.glob("*.whl"))


def _compileall(paths: Sequence[Path], strip: Path | None = None, prepend: str = "/") -> None:
    """Precompile .pyc with the host's Python 3.11 (same bytecode), so runs never write
    into the cache and start faster."""
    if sys.version_info[:2] != (3, 11):
        return
    import compileall
    import io
    for p in paths:
        with contextlib.redirect_stdout(io.StringIO()):
            kw = {"stripdir": str(strip), "prependdir": prepend} if strip else {}
            compileall.compile_dir(str(p), quiet=2, workers=1, **kw)


def build_base(root: Path, apt: PrivateApt, progress) -> dict:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        say(progress, f"qemu-sysroot: downloading {len(DEBS)} Debian {SUITE} arm64 packages ...")
        debs = apt.download(DEBS, work / "debs")
        staging = work / "root"
        staging.mkdir()
        say(progress, "qemu-sysroot: unpacking them (dpkg -x) ...")
        for d in debs:
            run_tool(["dpkg", "-x", str(d), str(staging)], f"dpkg -x {d.name}")
        _relink_absolute(staging)
        (staging / "proc").mkdir(exist_ok=True)
        if not (staging / "usr/bin/python3.11").is_file():
            raise QemuSetupError("python3.11 missing from the unpacked packages")
        say(progress, "qemu-sysroot: downloading aarch64 wheels "
                      f"({', '.join(WHEELS_LITERT)}) ...")
        wheels = _pip_download(WHEELS_LITERT, PLATFORMS_LITERT, work / "wheels")
        site = staging / GUEST_DIR.lstrip("/") / "site-litert"
        site.mkdir(parents=True)
        _unpack_wheels(wheels, site)
        say(progress, "qemu-sysroot: precompiling Python bytecode ...")
        _compileall([staging / "usr/lib/python3.11", site], strip=staging)
        for old in ("root", "site-litert", "site-tflite", "views"):   # layout 1 leftovers
            if (root / old).exists():
                shutil.rmtree(root / old)
        os.replace(staging, root / "root")
        return {"debs": [d.name for d in debs], "wheels_litert": [w.name for w in wheels]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_site(root: Path, progress, site_name: str, specs, platforms,
                keep: str | None = None, only: Sequence[str] = (),
                finish=None, no_deps: bool = False) -> list[str]:
    """Download `specs` as aarch64 wheels, unpack them into the guest's `site_name` folder
    (compiled, replacing an older one atomically); `keep`: only wheels whose file name starts
    with it (the others are dependencies another site already has), `no_deps`: not their
    dependencies at all; `only`: only members
    under these prefixes; `finish(site)`: a last step on the unpacked folder before it
    replaces the old one. The wheel names."""
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        say(progress, f"qemu-sysroot: downloading aarch64 wheels ({', '.join(specs)}) ...")
        wheels = [w for w in _pip_download(specs, platforms, work / "wheels", no_deps)
                  if keep is None or w.name.lower().startswith(keep)]
        if not wheels:
            raise QemuSetupError(f"pip downloaded no aarch64 wheel for {site_name}")
        site = work / site_name
        site.mkdir()
        _unpack_wheels(wheels, site, only)
        if finish is not None:
            finish(site)
        dst = root / "root" / GUEST_DIR.lstrip("/") / site_name
        _compileall([site], strip=work, prepend=GUEST_DIR)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(site, dst)
        return [w.name for w in wheels]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_mnn(root: Path, progress) -> dict:
    # MNN's numpy comes from site-litert: keep the MNN wheel only
    return {"wheels_mnn": _build_site(root, progress, "site-mnn", WHEELS_MNN, PLATFORMS_LITERT,
                                      keep="mnn-")}


def build_tflite(root: Path, progress) -> dict:
    return {"wheels_tflite": _build_site(root, progress, "site-tflite", WHEELS_TFLITE,
                                         PLATFORMS_TFLITE)}
