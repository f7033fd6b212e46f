"""Build (once) and find everything the QEMU target needs, in a user cache.

    python -m android_bench.qemu_setup [--tflite-runtime] [--rebuild] [--check]

Layout of $ARMQ_CACHE/qemu-sysroot (ARMQ_CACHE defaults to ~/.cache/armq):
    root/             Debian bookworm arm64 packages unpacked with `dpkg -x`: Python 3.11
                      and the C/C++ runtime libraries; the host's dpkg is never touched
                      (apt runs with a private state folder, APT::Architecture=arm64)
    root/opt/armq/    what the guest sees at the same path on every machine, so that
                      instruction counts do not depend on where the cache lives:
        site-litert/  aarch64 cp311 wheels: numpy, onnxruntime, ai-edge-litert
        site-tflite/  tflite-runtime 2.14 + numpy<2 (its own folder; --tflite-runtime)
        runner-<sha>.py  a copy of android_bench/runner.py, per content
    views/<cpu>/      the `qemu -L` prefix for one emulated CPU: links to root/* plus a
                      proc/cpuinfo written from what QEMU reports for that CPU (AT_HWCAP)
                      - onnxruntime reads /proc/cpuinfo and crashes on the host's x86 one,
                      and must not see dot-product on a CPU without it
    plugin/           armq_icount.so built from android_bench/qemu_plugin/armq_icount.c
                      against qemu-plugin.h from Debian's qemu source package
    manifest.json     what was built, versions

QEMU itself comes from Debian's `qemu-user` package (the dynamic qemu-aarch64 that
accepts -plugin); it is installed with apt-get when missing and we may (root or
password-less sudo; ARMQ_NO_APT=1 forbids it).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_output, cli_entry

LAYOUT_VERSION = 2
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
PLATFORMS_LITERT = ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64"]
PLATFORMS_TFLITE = PLATFORMS_LITERT + ["manylinux_2_34_aarch64"]

PLUGIN_SRC = Path(__file__).resolve().parent / "qemu_plugin" / "armq_icount.c"
RUNNER_SRC = Path(__file__).resolve().parent / "runner.py"
GUEST_DIR = "/opt/armq"              # inside the sysroot; the guest's path for armq files
GUEST_PYTHON = "/usr/bin/python3.11"

# -cpu name -> (qemu -cpu argument, MIDR fields for /proc/cpuinfo: implementer, variant, part, rev)
CPUS = {
    "cortex-a53": ("cortex-a53", (0x41, 0x0, 0xd03, 4)),
    "cortex-a72": ("cortex-a72", (0x41, 0x0, 0xd08, 3)),
    "cortex-a76": ("cortex-a76", (0x41, 0x4, 0xd0b, 1)),
    "neoverse-n1": ("neoverse-n1", (0x41, 0x4, 0xd0c, 1)),
    # SME emulation in `max` gave wrong LiteRT INT8 results: keep it off.
    "max": ("max,sme=off", (0x00, 0x0, 0x051, 0)),
}

# Linux arch/arm64 hwcap names in /proc/cpuinfo order (bit -> name).
HWCAP_NAMES = ["fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics",
               "fphp", "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop",
               "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat",
               "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"]
HWCAP2_NAMES = ["dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4",
                "flagm2", "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16",
                "dgh", "rng", "bti", "mte", "ecv", "afp", "rpres", "mte3", "sme", "smei16i64",
                "smef64f64", "smei8i32", "smef16f32", "smeb16f32", "smef32f32", "smefa64",
                "wfxt", "ebf16", "sveebf16"]


class QemuSetupError(ArmqError):
    pass


def cache_root() -> Path:
    base = os.environ.get("ARMQ_CACHE")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "armq"


def sysroot_dir() -> Path:
    return cache_root() / "qemu-sysroot"


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress:
        progress(msg)


def _run(argv: Sequence[str], what: str, cwd: Path | None = None, timeout: float = 900,
         env: dict | None = None) -> str:
    try:
        p = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                           errors="replace", timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise QemuSetupError(f"{what}: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise QemuSetupError(f"{what}: timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + p.stdout).splitlines()
                 if ln.strip() and "is ignored: it is neither" not in ln]
        err = next((ln for ln in reversed(lines) if ln.startswith(("E:", "ERROR", "error"))),
                   lines[-1] if lines else f"exit {p.returncode}")
        raise QemuSetupError(f"{what} failed: {err.strip()}")
    return p.stdout


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- QEMU ------------------------------------------------------------------------------

def _can_sudo() -> list[str] | None:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def apt_install(packages: Sequence[str], progress=None) -> None:
    """Install host packages with apt-get when we may; one-line error otherwise."""
    manual = f"install them yourself: sudo apt-get install -y {' '.join(packages)}"
    if os.environ.get("ARMQ_NO_APT") == "1":
        raise QemuSetupError(f"{', '.join(packages)} missing and ARMQ_NO_APT=1: {manual}")
    if not shutil.which("apt-get"):
        raise QemuSetupError(f"{', '.join(packages)} missing and no apt-get here: {manual}")
    sudo = _can_sudo()
    if sudo is None:
        raise QemuSetupError(f"{', '.join(packages)} missing and not root: {manual}")
    _say(progress, f"qemu: installing {' '.join(packages)} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
             "apt-get install", env=env)
    except QemuSetupError:
        _run(sudo + ["apt-get", "update", "-q"], "apt-get update", env=env)
        try:
            _run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                 "apt-get install", env=env)
        except QemuSetupError as e:
            raise QemuSetupError(f"qemu not installable ({e}); {manual}") from None


def find_qemu(install: bool = True, progress=None) -> tuple[str, bool]:
    """(path of qemu-aarch64, supports plugins). Prefers the dynamic build (plugins);
    $ARMQ_QEMU overrides."""
    forced = os.environ.get("ARMQ_QEMU")
    if forced:
        if not (shutil.which(forced) or Path(forced).is_file()):
            raise QemuSetupError(f"ARMQ_QEMU={forced} not found")
        return forced, _qemu_has_plugins(forced)
    dyn, static = shutil.which("qemu-aarch64"), shutil.which("qemu-aarch64-static")
    if dyn and _qemu_has_plugins(dyn):
        return dyn, True
    if install:
        apt_install(["qemu-user"], progress)
        return find_qemu(install=False)
    if dyn or static:
        return (dyn or static), False
    raise QemuSetupError("qemu-aarch64 not found; sudo apt-get install -y qemu-user")


def _qemu_has_plugins(qemu: str) -> bool:
    try:
        out = subprocess.run([qemu, "-h"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "-plugin" in out


def qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.splitlines()[0].strip() if out else "?"


# ---- private apt -----------------------------------------------------------------------

class PrivateApt:
    """apt-get with its own sources, lists, cache and (empty) dpkg status: arm64 only."""

    def __init__(self, base: Path):
        self.base = base
        for d in ("lists/partial", "cache/archives/partial", "etc/parts"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "status").touch()
        src = base / "etc" / "sources.list"
        signed = f"signed-by={KEYRING}" if Path(KEYRING).is_file() else "trusted=yes"
        lines = []
        for uri, suite in ((MIRROR, SUITE), (MIRROR, f"{SUITE}-updates"),
                           (SECURITY, f"{SUITE}-security")):
            lines.append(f"deb [arch=arm64 {signed}] {uri} {suite} main")
            lines.append(f"deb-src [{signed}] {uri} {suite} main")
        src.write_text("\n".join(lines) + "\n")
        self.opts = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
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
        return _run(["apt-get", *self.opts, *args], what, cwd=cwd)

    def update(self) -> None:
        if not self.updated:
            self._apt(["update"], "apt-get update (Debian bookworm arm64 lists)")
            self.updated = True

    def download(self, packages: Sequence[str], dest: Path) -> list[Path]:
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self._apt(["download", *packages], "apt-get download (arm64 packages)", cwd=dest)
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


def _unpack_wheels(wheels: Sequence[Path], site: Path) -> None:
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            for info in z.infolist():
                name = info.filename
                if name.startswith("/") or ".." in Path(name).parts:
                    raise QemuSetupError(f"{w.name}: unsafe member {name}")
            z.extractall(site)
            for info in z.infolist():  # keep the executable bit of shared objects
                mode = info.external_attr >> 16
                if mode & 0o111:
                    os.chmod(site / info.filename, mode & 0o777 | 0o644)


def _pip_download(reqs: Sequence[str], platforms: Sequence[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
            "--dest", str(dest), "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311"]
    for p in platforms + ["any"]:
        argv += ["--platform", p]
    _run(argv + list(reqs), f"pip download {' '.join(reqs)} (aarch64 wheels)")
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


def _extract_member(tar_path: Path, suffix: str, dest: Path) -> Path:
    with tarfile.open(tar_path, "r|*") as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(suffix):
                f = tf.extractfile(m)
                assert f is not None
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(f.read())
                return dest
    raise QemuSetupError(f"{tar_path.name} has no {suffix}")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _read_manifest(root: Path) -> dict:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_manifest(root: Path, m: dict) -> None:
    with atomic_output(root / "manifest.json", "w") as f:
        json.dump(m, f, indent=2)


def _build_base(root: Path, apt: PrivateApt, progress) -> dict:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        _say(progress, f"qemu-sysroot: downloading {len(DEBS)} Debian {SUITE} arm64 packages ...")
        debs = apt.download(DEBS, work / "debs")
        staging = work / "root"
        staging.mkdir()
        _say(progress, "qemu-sysroot: unpacking them (dpkg -x) ...")
        for d in debs:
            _run(["dpkg", "-x", str(d), str(staging)], f"dpkg -x {d.name}")
        _relink_absolute(staging)
        (staging / "proc").mkdir(exist_ok=True)
        if not (staging / "usr/bin/python3.11").is_file():
            raise QemuSetupError("python3.11 missing from the unpacked packages")
        _say(progress, "qemu-sysroot: downloading aarch64 wheels "
                       f"({', '.join(WHEELS_LITERT)}) ...")
        wheels = _pip_download(WHEELS_LITERT, PLATFORMS_LITERT, work / "wheels")
        site = staging / GUEST_DIR.lstrip("/") / "site-litert"
        site.mkdir(parents=True)
        _unpack_wheels(wheels, site)
        _say(progress, "qemu-sysroot: precompiling Python bytecode ...")
        _compileall([staging / "usr/lib/python3.11", site], strip=staging)
        for old in ("root", "site-litert", "site-tflite", "views"):   # layout 1 leftovers
            if (root / old).exists():
                shutil.rmtree(root / old)
        os.replace(staging, root / "root")
        return {"debs": [d.name for d in debs], "wheels_litert": [w.name for w in wheels]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_tflite(root: Path, progress) -> dict:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        _say(progress, f"qemu-sysroot: downloading aarch64 wheels ({', '.join(WHEELS_TFLITE)}) ...")
        wheels = _pip_download(WHEELS_TFLITE, PLATFORMS_TFLITE, work / "wheels")
        site = work / "site-tflite"
        site.mkdir()
        _unpack_wheels(wheels, site)
        dst = root / "root" / GUEST_DIR.lstrip("/") / "site-tflite"
        _compileall([site], strip=work, prepend=GUEST_DIR)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(site, dst)
        return {"wheels_tflite": [w.name for w in wheels]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_plugin(root: Path, apt: PrivateApt, progress) -> dict:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise QemuSetupError("no C compiler (cc) to build the instruction-count plugin; "
                             "sudo apt-get install -y gcc")
    plugin_dir = root / "plugin"
    header = plugin_dir / "include" / "qemu-plugin.h"
    if not header.is_file():
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            _say(progress, "qemu-plugin: downloading Debian's qemu source package for qemu-plugin.h ...")
            orig = apt.source("qemu", work / "src")
            _extract_member(orig, "/include/qemu/qemu-plugin.h", work / "qemu-plugin.h")
            header.parent.mkdir(parents=True, exist_ok=True)
            os.replace(work / "qemu-plugin.h", header)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _say(progress, "qemu-plugin: compiling armq_icount.so ...")
    out = plugin_dir / "armq_icount.so"
    tmp = plugin_dir / ".armq_icount.so.tmp"
    _run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-I", str(header.parent), "-o", str(tmp),
          str(PLUGIN_SRC)], "compiling the QEMU plugin")
    os.replace(tmp, out)
    return {"plugin_src_sha": _sha(PLUGIN_SRC), "plugin": str(out)}


def _guest_hwcaps(qemu: str, root: Path, cpu_arg: str) -> tuple[int, int]:
    code = ("import ctypes;f=ctypes.CDLL(None).getauxval;f.restype=ctypes.c_ulong;"
            "f.argtypes=[ctypes.c_ulong];print(f(16),f(26))")
    out = _run([qemu, "-L", str(root), "-cpu", cpu_arg, str(root / "usr/bin/python3.11"), "-S", "-c", code],
               f"probing the emulated {cpu_arg} CPU", timeout=300)
    a, b = out.split()
    return int(a), int(b)


def cpuinfo_text(cpu: str, hwcap: int, hwcap2: int, n: int = 1) -> str:
    impl, var, part, rev = CPUS[cpu][1]
    feats = [nm for i, nm in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
    feats += [nm for i, nm in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1]
    blocks = []
    for i in range(n):
        blocks.append(f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {' '.join(feats)}\n"
                      f"CPU implementer\t: 0x{impl:02x}\nCPU architecture: 8\n"
                      f"CPU variant\t: 0x{var:x}\nCPU part\t: 0x{part:03x}\n"
                      f"CPU revision\t: {rev}\n")
    return "\n".join(blocks) + "\n"


def _build_view(root: Path, qemu: str, cpu: str) -> dict:
    view = root / "views" / cpu
    tmp = root / "views" / f".{cpu}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "proc").mkdir(parents=True)
    for entry in (root / "root").iterdir():
        if entry.name != "proc":
            (tmp / entry.name).symlink_to(os.path.relpath(entry, tmp))
    hw, hw2 = _guest_hwcaps(qemu, root / "root", CPUS[cpu][0])
    (tmp / "proc" / "cpuinfo").write_text(cpuinfo_text(cpu, hw, hw2, n=os.cpu_count() or 1))
    if view.exists():
        shutil.rmtree(view)
    os.replace(tmp, view)
    return {"hwcap": hex(hw), "hwcap2": hex(hw2)}


# ---- the public entry point -------------------------------------------------------------

class Sysroot:
    """Paths of a ready sysroot."""

    def __init__(self, root: Path, qemu: str, plugins: bool, manifest: dict):
        self.root, self.qemu, self.plugins, self.manifest = root, qemu, plugins, manifest

    def view(self, cpu: str) -> Path:
        return self.root / "views" / cpu

    def site(self, runtime: str) -> str:
        """The guest path of the site-packages folder for `runtime`."""
        return f"{GUEST_DIR}/" + ("site-tflite" if runtime == "tflite_runtime" else "site-litert")

    def host_path(self, guest_path: str) -> Path:
        return self.root / "root" / guest_path.lstrip("/")

    def install_runner(self) -> str:
        """Copy runner.py into the sysroot under a name of its content; the guest path.
        The same runner is at the same guest path on every machine."""
        data = RUNNER_SRC.read_bytes()
        guest = f"{GUEST_DIR}/runner-{hashlib.sha256(data).hexdigest()[:12]}.py"
        dst = self.host_path(guest)
        if not dst.is_file() or dst.read_bytes() != data:
            fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".runner-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        return guest

    @property
    def plugin(self) -> Path | None:
        p = self.root / "plugin" / "armq_icount.so"
        return p if self.plugins and p.is_file() else None


def ensure(cpus: Sequence[str] = (), tflite_runtime: bool = False, plugin: bool = True,
           rebuild: bool = False, progress: Callable[[str], None] | None = None,
           install_qemu: bool = True) -> Sysroot:
    """Make sure the sysroot (and the views of `cpus`, the plugin, the tflite-runtime
    site) exist; build what is missing under a file lock. Cheap when all is there."""
    for c in cpus:
        if c not in CPUS:
            raise QemuSetupError(f"unknown CPU '{c}' (one of {', '.join(CPUS)})")
    qemu, has_plugins = find_qemu(install=install_qemu, progress=progress)
    root = sysroot_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QemuSetupError(f"cannot create the QEMU cache {root}: {e.strerror}") from None
    with _lock(root.parent / "qemu-sysroot.lock"):
        m = _read_manifest(root)
        if rebuild or m.get("layout") != LAYOUT_VERSION:
            m = {"layout": LAYOUT_VERSION}
        apt = PrivateApt(root / "apt")
        t0 = time.monotonic()
        built = False
        if "base" not in m or not (root / "root/usr/bin/python3.11").is_file() \
                or m["base"].get("wheels_pins") != WHEELS_LITERT:
            m.pop("views", None)
            m["base"] = dict(_build_base(root, apt, progress), wheels_pins=WHEELS_LITERT)
            shutil.rmtree(root / "views", ignore_errors=True)
            _write_manifest(root, m)
            built = True
        if tflite_runtime and ("tflite" not in m or
                               not (root / "root" / GUEST_DIR.lstrip("/") / "site-tflite").is_dir()):
            m["tflite"] = _build_tflite(root, progress)
            _write_manifest(root, m)
            built = True
        if plugin and has_plugins and (m.get("plugin", {}).get("plugin_src_sha") != _sha(PLUGIN_SRC)
                                       or not (root / "plugin/armq_icount.so").is_file()):
            m["plugin"] = _build_plugin(root, apt, progress)
            _write_manifest(root, m)
            built = True
        views = m.setdefault("views", {})
        for c in cpus:
            if c not in views or not (root / "views" / c / "proc/cpuinfo").is_file():
                _say(progress, f"qemu-sysroot: probing the emulated {c} CPU for /proc/cpuinfo ...")
                views[c] = _build_view(root, qemu, c)
                _write_manifest(root, m)
                built = True
        if built:
            size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
            _say(progress, f"qemu-sysroot: ready in {time.monotonic() - t0:.0f} s "
                           f"({size / 1e6:.0f} MB at {root})")
        # Downloaded .debs and lists are not needed once unpacked.
        shutil.rmtree(root / "apt" / "cache", ignore_errors=True)
        m["qemu"] = {"path": qemu, "version": qemu_version(qemu), "plugins": has_plugins}
        return Sysroot(root, qemu, has_plugins, m)


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("android_bench.qemu_setup",
                    description="Build the aarch64 sysroot and plugin for the qemu target.")
    p.add_argument("--cpu", action="append", choices=sorted(CPUS),
                   help="prepare this CPU's view (repeatable; default: all)")
    p.add_argument("--tflite-runtime", action="store_true",
                   help="also build the tflite-runtime 2.14 site (numpy<2)")
    p.add_argument("--rebuild", action="store_true", help="rebuild from scratch")
    p.add_argument("--check", action="store_true", help="only report what is there")
    a = p.parse_args(argv)
    if a.check:
        root = sysroot_dir()
        m = _read_manifest(root)
        if not m:
            print(f"no QEMU sysroot at {root} (build it: python -m android_bench.qemu_setup)")
            return 1
        print(json.dumps(m, indent=2))
        return 0
    sr = ensure(cpus=a.cpu or sorted(CPUS), tflite_runtime=a.tflite_runtime, rebuild=a.rebuild,
                progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"sysroot  {sr.root}")
    print(f"qemu     {sr.qemu} ({sr.manifest['qemu']['version']})")
    print(f"plugin   {sr.plugin or 'unavailable (qemu-aarch64 without plugin support)'}")
    for c, v in sr.manifest.get("views", {}).items():
        print(f"cpu      {c:12s} HWCAP {v['hwcap']} HWCAP2 {v['hwcap2']}")
    return 0


if __name__ == "__main__":
    cli_entry(main, "python -m android_bench.qemu_setup")
