"""Per-CPU views of the QEMU sysroot: the `qemu -L` prefix for one emulated CPU.

views/<cpu>/ holds links to root/* plus a proc/cpuinfo written from the AT_HWCAP /
AT_HWCAP2 QEMU reports for that CPU: onnxruntime reads /proc/cpuinfo (and crashes
on the host's x86 one), and must not see dot-product on a CPU without it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .qemu_host import run_tool

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


def _guest_hwcaps(qemu: str, root: Path, cpu_arg: str) -> tuple[int, int]:
    code = ("import ctypes;f=ctypes.CDLL(None).getauxval;f.restype=ctypes.c_ulong;"
            "f.argtypes=[ctypes.c_ulong];print(f(16),f(26))")
    out = run_tool([qemu, "-L", str(root), "-cpu", cpu_arg, str(root / "usr/bin/python3.11"),
                    "-S", "-c", code], f"probing the emulated {cpu_arg} CPU", timeout=300)
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


def build_view(root: Path, qemu: str, cpu: str) -> dict:
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
