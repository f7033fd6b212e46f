"""Build (once) and find everything the QEMU target needs, in a user cache.

    python -m android_bench.qemu_setup [--tflite-runtime] [--mnn] [--executorch] [--rebuild] [--check]

Layout of $ARMQ_CACHE/qemu-sysroot (ARMQ_CACHE defaults to ~/.cache/armq):
    root/             Debian bookworm arm64 packages unpacked with `dpkg -x`: Python 3.11
                      and the C/C++ runtime libraries; the host's dpkg is never touched
                      (apt runs with a private state folder, APT::Architecture=arm64)
    root/opt/armq/    what the guest sees at the same path on every machine, so that
                      instruction counts do not depend on where the cache lives:
        site-litert/  aarch64 cp311 wheels: numpy, onnxruntime, ai-edge-litert
        site-tflite/  tflite-runtime 2.14 + numpy<2 (its own folder; --tflite-runtime)
        site-et/      ExecuTorch's aarch64 runtime libraries + libarmq_et.so (.pte files;
                      --executorch; qemu_et.py, with the cross g++ in cross/)
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

This module decides what to (re)build, under a file lock, and records it in the
manifest; the work is done by
    qemu_host.py     locating (and installing) qemu-aarch64, running host tools
    qemu_sysroot.py  fetching and unpacking the Debian packages and aarch64 wheels
    qemu_cpus.py     the per-CPU views and their /proc/cpuinfo
    qemu_icount.py   building the instruction-count plugin
    qemu_et.py       building the ExecuTorch runner library (cross-compiled)
whose public names are importable from here as well.
"""
from __future__ import annotations

from zoo.clikit import make_parser
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from zoo.util import atomic_output, cli_entry

# Public names of the parts, importable from android_bench.qemu_setup as before the split.
from . import qemu_et
from .qemu_cpus import CPUS, HWCAP2_NAMES, HWCAP_NAMES, build_view, cpuinfo_text  # noqa: F401
from .qemu_host import (QemuSetupError, apt_install, find_qemu, qemu_version,  # noqa: F401
                        run_tool, say)
from .qemu_icount import PLUGIN_SRC, build_plugin, file_sha
from .qemu_sysroot import (DEBS, GUEST_DIR, GUEST_PYTHON, KEYRING, MIRROR,  # noqa: F401
                           PLATFORMS_LITERT, PLATFORMS_TFLITE, SECURITY, SUITE, WHEELS_LITERT,
                           WHEELS_TFLITE, PrivateApt, build_base, build_mnn, build_tflite, cache_root,
                           sysroot_dir)

LAYOUT_VERSION = 2
RUNNER_SRC = Path(__file__).resolve().parent / "runner.py"


# ---- the cache: one builder at a time, a manifest of what is built ---------------------

@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_manifest(root: Path) -> dict:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_manifest(root: Path, m: dict) -> None:
    with atomic_output(root / "manifest.json", "w") as f:
        json.dump(m, f, indent=2)


# ---- the ready sysroot and the entry point --------------------------------------------

class Sysroot:
    """Paths of a ready sysroot."""

    def __init__(self, root: Path, qemu: str, plugins: bool, manifest: dict):
        self.root, self.qemu, self.plugins, self.manifest = root, qemu, plugins, manifest

    def view(self, cpu: str) -> Path:
        return self.root / "views" / cpu

    def site(self, runtime: str) -> str:
        """The guest path of the site-packages folder for `runtime`."""
        if runtime == "mnn":   # the MNN wheel alone; numpy from site-litert
            return f"{GUEST_DIR}/site-mnn:{GUEST_DIR}/site-litert"
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
    def et_lib(self) -> str:
        """The guest path of libarmq_et.so (runner.py --et-lib); built with executorch=True."""
        return qemu_et.GUEST_LIB

    @property
    def plugin(self) -> Path | None:
        p = self.root / "plugin" / "armq_icount.so"
        return p if self.plugins and p.is_file() else None


def ensure(cpus: Sequence[str] = (), tflite_runtime: bool = False, plugin: bool = True,
           rebuild: bool = False, progress: Callable[[str], None] | None = None,
           install_qemu: bool = True, mnn: bool = False, executorch: bool = False) -> Sysroot:
    """Make sure the sysroot (and the views of `cpus`, the plugin, the tflite-runtime,
    MNN and ExecuTorch sites) exist; build what is missing under a file lock. Cheap when
    all is there."""
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
            m["base"] = dict(build_base(root, apt, progress), wheels_pins=WHEELS_LITERT)
            shutil.rmtree(root / "views", ignore_errors=True)
            _write_manifest(root, m)
            built = True
        if tflite_runtime and ("tflite" not in m or
                               not (root / "root" / GUEST_DIR.lstrip("/") / "site-tflite").is_dir()):
            m["tflite"] = build_tflite(root, progress)
            _write_manifest(root, m)
            built = True
        if mnn and ("mnn" not in m or
                    not (root / "root" / GUEST_DIR.lstrip("/") / "site-mnn").is_dir()):
            m["mnn"] = build_mnn(root, progress)
            _write_manifest(root, m)
            built = True
        if executorch and not qemu_et.is_ready(root, m):
            m["et"] = qemu_et.build_et(root, progress)
            _write_manifest(root, m)
            built = True
        if plugin and has_plugins and (m.get("plugin", {}).get("plugin_src_sha") != file_sha(PLUGIN_SRC)
                                       or not (root / "plugin/armq_icount.so").is_file()):
            m["plugin"] = build_plugin(root, apt, progress)
            _write_manifest(root, m)
            built = True
        views = m.setdefault("views", {})
        for c in cpus:
            if c not in views or not (root / "views" / c / "proc/cpuinfo").is_file():
                say(progress, f"qemu-sysroot: probing the emulated {c} CPU for /proc/cpuinfo ...")
                views[c] = build_view(root, qemu, c)
                _write_manifest(root, m)
                built = True
        if built:
            size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
            say(progress, f"qemu-sysroot: ready in {time.monotonic() - t0:.0f} s "
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
    p.add_argument("--mnn", action="store_true", help="also build the MNN 3.6.1 site (runtime mnn)")
    p.add_argument("--executorch", action="store_true",
                   help="also build the ExecuTorch runner (libarmq_et.so; .pte files)")
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
                mnn=a.mnn, executorch=a.executorch, progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"sysroot  {sr.root}")
    print(f"qemu     {sr.qemu} ({sr.manifest['qemu']['version']})")
    print(f"plugin   {sr.plugin or 'unavailable (qemu-aarch64 without plugin support)'}")
    for c, v in sr.manifest.get("views", {}).items():
        print(f"cpu      {c:12s} HWCAP {v['hwcap']} HWCAP2 {v['hwcap2']}")
    return 0


if __name__ == "__main__":
    cli_entry(main, "python -m android_bench.qemu_setup")
