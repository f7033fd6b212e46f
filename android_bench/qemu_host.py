"""Locating qemu-aarch64 on this host (installing Debian's qemu-user when we may), and
running the host tools the QEMU setup needs (one-line QemuSetupError on failure).

QEMU itself comes from Debian's `qemu-user` package: the dynamic qemu-aarch64, which
accepts -plugin (the static build does not, so it gives no instruction counts).
apt-get runs when qemu is missing and we may (root or password-less sudo;
ARMQ_NO_APT=1 forbids it). $ARMQ_QEMU names a qemu-aarch64 to use instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from zoo.util import ArmqError


class QemuSetupError(ArmqError):
    pass


def say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress:
        progress(msg)


def run_tool(argv: Sequence[str], what: str, cwd: Path | None = None, timeout: float = 900,
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
    say(progress, f"qemu: installing {' '.join(packages)} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run_tool(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                 "apt-get install", env=env)
    except QemuSetupError:
        run_tool(sudo + ["apt-get", "update", "-q"], "apt-get update", env=env)
        try:
            run_tool(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
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
