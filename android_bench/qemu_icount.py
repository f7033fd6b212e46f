"""The instruction-count plugin of the QEMU target: plugin/armq_icount.so, built from
android_bench/qemu_plugin/armq_icount.c against qemu-plugin.h from Debian's qemu
source package (fetched once with the sysroot's private apt).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .qemu_host import QemuSetupError, run_tool, say
from .qemu_sysroot import PrivateApt

PLUGIN_SRC = Path(__file__).resolve().parent / "qemu_plugin" / "armq_icount.c"


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


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_plugin(root: Path, apt: PrivateApt, progress) -> dict:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise QemuSetupError("no C compiler (cc) to build the instruction-count plugin; "
                             "sudo apt-get install -y gcc")
    plugin_dir = root / "plugin"
    header = plugin_dir / "include" / "qemu-plugin.h"
    if not header.is_file():
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            say(progress, "qemu-plugin: downloading Debian's qemu source package for qemu-plugin.h ...")
            orig = apt.source("qemu", work / "src")
            _extract_member(orig, "/include/qemu/qemu-plugin.h", work / "qemu-plugin.h")
            header.parent.mkdir(parents=True, exist_ok=True)
            os.replace(work / "qemu-plugin.h", header)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(progress, "qemu-plugin: compiling armq_icount.so ...")
    out = plugin_dir / "armq_icount.so"
    tmp = plugin_dir / ".armq_icount.so.tmp"
    run_tool([cc, "-shared", "-fPIC", "-O2", "-Wall", "-I", str(header.parent), "-o", str(tmp),
              str(PLUGIN_SRC)], "compiling the QEMU plugin")
    os.replace(tmp, out)
    return {"plugin_src_sha": file_sha(PLUGIN_SRC), "plugin": str(out)}
