"""ExecuTorch programs (.pte) under QEMU: the runner library, built on demand.

executorch's Python runtime links libtorch and PyPI's aarch64 torch is the CUDA build, so
the guest runs `.pte` files through libarmq_et.so instead: a C ABI over the runtime API
that the aarch64 executorch wheel's torch-free libraries export, loaded by runner.py with
ctypes (`--et-lib`), so the benchmark protocol (markers, statistics, JSON) is runner.py's.

    cross/              Debian bookworm's x86-64 -> aarch64 g++ 12 and binutils, unpacked
                        with `dpkg -x` (apt with a private state folder; nothing installed)
    root/opt/armq/site-et/executorch/lib/      the wheel's libexecutorch*.so (XNNPACK,
                        optimized and quantized kernels, threadpool) + libarmq_et.so
    root/opt/armq/site-et/executorch/include/  the wheel's headers (build input)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .qemu_host import QemuSetupError, run_tool, say
from .qemu_icount import file_sha
from .qemu_sysroot import GUEST_DIR, SUITE, PrivateApt, _build_site

WHEELS_ET = ["executorch==1.5.1"]       # the local venv's pin (export/executorch-requirements.txt)
PLATFORMS_ET = ["manylinux_2_28_aarch64"]
RUNNER_SRC = Path(__file__).resolve().parent / "et_runner" / "armq_et.cpp"
# Linked with --no-as-needed: the kernel and backend libraries register themselves
# from static constructors, the runner never names a symbol of theirs.
LIBS = ["executorch", "executorch_backend_xnnpack", "executorch_kernels_optimized",
        "executorch_kernels_quantized", "executorch_threadpool"]
MEMBERS = tuple(f"executorch/lib/lib{n}.so" for n in LIBS) + ("executorch/include/",)
SITE = "site-et"
GUEST_LIB = f"{GUEST_DIR}/{SITE}/executorch/lib/libarmq_et.so"

# The cross compiler and what it needs beyond a Debian base system (apt-get download
# does not resolve dependencies, so the list is complete for bookworm).
CROSS_DEBS = ["g++-12-aarch64-linux-gnu", "gcc-12-aarch64-linux-gnu",
              "cpp-12-aarch64-linux-gnu", "gcc-12-aarch64-linux-gnu-base",
              "gcc-12-cross-base", "binutils-aarch64-linux-gnu",
              "libstdc++-12-dev-arm64-cross", "libgcc-12-dev-arm64-cross",
              "libc6-dev-arm64-cross", "libc6-arm64-cross", "linux-libc-dev-arm64-cross",
              "libgcc-s1-arm64-cross", "libstdc++6-arm64-cross", "libasan8-arm64-cross",
              "libatomic1-arm64-cross", "libgomp1-arm64-cross", "libitm1-arm64-cross",
              "liblsan0-arm64-cross", "libtsan2-arm64-cross", "libubsan1-arm64-cross",
              "libhwasan0-arm64-cross",
              "libisl23", "libmpc3", "libmpfr6", "libgmp10", "libjansson4"]
GXX = "usr/bin/aarch64-linux-gnu-g++-12"
HOST_LIBDIR = "usr/lib/x86_64-linux-gnu"   # the host-side libraries the packages carry


def _host_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                              text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def ensure_cross(root: Path, progress) -> Path:
    """The unpacked cross toolchain folder (downloaded once)."""
    cross = root / "cross"
    if (cross / GXX).is_file():
        return cross
    if _host_arch() != "amd64":
        raise QemuSetupError("building the ExecuTorch runner for QEMU needs an x86-64 "
                             f"Debian/Ubuntu host (Debian's {CROSS_DEBS[0]}); none here")
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        say(progress, f"qemu-et: downloading Debian {SUITE}'s aarch64 cross g++ "
                      f"({len(CROSS_DEBS)} packages) ...")
        apt = PrivateApt(root / "apt-cross", arch="amd64")
        debs = apt.download(CROSS_DEBS, work / "debs")
        staging = work / "cross"
        staging.mkdir()
        for d in debs:
            run_tool(["dpkg", "-x", str(d), str(staging)], f"dpkg -x {d.name}")
        if not (staging / GXX).is_file():
            raise QemuSetupError(f"{GXX} missing from the unpacked cross packages")
        shutil.rmtree(cross, ignore_errors=True)
        os.replace(staging, cross)
        return cross
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(root / "apt-cross" / "cache", ignore_errors=True)


def _compile(cross: Path, site: Path) -> None:
    et = site / "executorch"
    out = et / "lib" / "libarmq_et.so"
    inc = et / "include"
    argv = [str(cross / GXX), "-std=c++17", "-O2", "-shared", "-fPIC",
            # the wheel's c10 headers come without the cmake-generated macro header
            "-DC10_USING_CUSTOM_GENERATED_MACROS",
            "-I", str(inc), "-I", str(inc / "executorch/runtime/core/portable_type/c10"),
            # the same bytes from every build folder
            f"-ffile-prefix-map={site}={GUEST_DIR}/{SITE}",
            f"-ffile-prefix-map={RUNNER_SRC.parent}=et_runner",
            "-o", str(out), str(RUNNER_SRC), "-L", str(et / "lib"),
            # libc.so is a linker script naming /usr/aarch64-linux-gnu/...: inside cross/
            f"-Wl,--sysroot={cross}", "-Wl,--no-as-needed", *[f"-l{n}" for n in LIBS],
            "-Wl,-rpath,$ORIGIN"]
    env = dict(os.environ, LD_LIBRARY_PATH=str(cross / HOST_LIBDIR), LC_ALL="C")
    run_tool(argv, "compiling the ExecuTorch runner (libarmq_et.so)", env=env)


def build_et(root: Path, progress) -> dict:
    """site-et: the wheel's libraries and headers, and libarmq_et.so compiled against them."""
    cross = ensure_cross(root, progress)

    def finish(site: Path) -> None:
        say(progress, "qemu-et: compiling libarmq_et.so (aarch64) ...")
        _compile(cross, site)
    wheels = _build_site(root, progress, SITE, WHEELS_ET, PLATFORMS_ET, only=MEMBERS,
                         finish=finish, no_deps=True)
    return {"wheels_et": wheels, "runner_src_sha": file_sha(RUNNER_SRC)}


def is_ready(root: Path, manifest: dict) -> bool:
    return (manifest.get("et", {}).get("runner_src_sha") == file_sha(RUNNER_SRC)
            and (root / "root" / GUEST_LIB.lstrip("/")).is_file())
