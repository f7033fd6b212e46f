"""The one home of the target syntax: `local`, `qemu:<cpu>`, `ssh[:<device>]`, `adb[:<device>]`.

Every CLI that names a target parses and prints it here: `python -m android_bench
--target`, `python -m android_bench.latency_model --targets`, `quant.evaluate --on`,
`quant.ptq --for` (its `local` / `qemu:<cpu>` forms) and deploy's `--targets` / sweep
files. It lives in android_bench, the lowest package that has targets, so quant and
deploy import it downward. A device name (`ssh:<device>`) means a device of deploy's
inventory; the lower CLIs reach a board through their own flags (--host, --serial), so
they parse with `devices=False`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from ..qemu_cpus import CPUS
from .base import BenchError


class TargetKind(str, Enum):
    LOCAL = "local"
    QEMU = "qemu"
    SSH = "ssh"
    ADB = "adb"


KINDS = tuple(k.value for k in TargetKind)
REMOTE_KINDS = (TargetKind.SSH.value, TargetKind.ADB.value)
QEMU_CPUS = tuple(CPUS)
DEFAULT_QEMU_CPU = "cortex-a76"
# A device name: also a Ray resource name and a results.json key, never a path.
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class TargetSpecError(BenchError):
    """A malformed target (printed as one line)."""


@dataclass(frozen=True)
class TargetSpec:
    kind: str                  # KINDS: "local" | "qemu" | "ssh" | "adb"
    cpu: str | None = None     # qemu: the emulated core
    device: str | None = None  # ssh/adb: the inventory device (None: every one of the kind)
    # ssh/adb: "<machine>:<flag>+<flag>..." read from the device by its probe stage (the
    # form quant.config.recipe_for_target takes); not part of the target's identity
    probed: str | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, text: str, where: str = "--targets", devices: bool = True) -> "TargetSpec":
        """`local`, `qemu` (= qemu:cortex-a76), `qemu:<cpu>`, `ssh`, `adb`, and with
        devices=True `ssh:<device>` / `adb:<device>`."""
        kind, _, rest = text.strip().partition(":")
        kind = kind.lower()
        if kind == TargetKind.LOCAL.value and not rest:
            return cls(kind)
        if kind == TargetKind.QEMU.value:
            cpu = rest.lower() or DEFAULT_QEMU_CPU
            if cpu not in QEMU_CPUS:
                raise TargetSpecError(f"{where}: '{text}': unknown qemu cpu '{cpu}' "
                                      f"(one of {', '.join(QEMU_CPUS)})")
            return cls(kind, cpu)
        if kind in REMOTE_KINDS and (devices or not rest):
            if rest and not DEVICE_NAME.match(rest):
                raise TargetSpecError(f"{where}: '{text}': '{rest}' is not a device name (the "
                                      f"name of a [[device]] in --devices)")
            return cls(kind, device=rest or None)
        forms = "ssh:<device> or adb:<device>" if devices else \
            "ssh or adb with the device's flags: --host / --serial ..."
        raise TargetSpecError(f"{where}: '{text}' is not a target (local, qemu:<cpu> e.g. "
                              f"qemu:cortex-a72, {forms})")

    def format(self) -> str:
        """The text `parse` reads back: `local`, `qemu:<cpu>`, `ssh:<device>`."""
        return self.id

    def __str__(self) -> str:
        return self.id

    @property
    def id(self) -> str:
        where = self.cpu or self.device
        return self.kind if where is None else f"{self.kind}:{where}"

    @property
    def emulated(self) -> bool:
        return self.kind == TargetKind.QEMU.value

    @property
    def remote(self) -> bool:
        """A board or phone: benchmarked through android_bench's ssh/adb target."""
        return self.kind in REMOTE_KINDS

    @property
    def unit(self) -> str:
        """What a benchmark on it counts: guest instructions under QEMU, else milliseconds."""
        return "instructions" if self.emulated else "ms"

    @property
    def slug(self) -> str:
        """The id as a file or folder name."""
        return self.id.replace(":", "-")

    @property
    def recipe_target(self) -> str:
        """What quant.config.recipe_for_target (and quant.ptq --for) takes for this target:
        its id, or for a board / phone the machine and CPU flags its probe read."""
        if not self.remote:
            return self.id
        if self.probed is None:
            raise TargetSpecError(f"target {self.id}: no INT8 recipe before its device is probed")
        return self.probed


def parse_target_list(text: str, where: str = "--targets", devices: bool = True,
                      cls: type[TargetSpec] = TargetSpec) -> list[TargetSpec]:
    """Comma-separated targets, each once."""
    items = [t for t in (s.strip() for s in text.split(",")) if t]
    if not items:
        raise TargetSpecError(f"{where}: no target given")
    out: list[TargetSpec] = []
    for t in items:
        ts = cls.parse(t, where, devices)
        if ts in out:
            raise TargetSpecError(f"{where}: '{ts.id}' given twice")
        out.append(ts)
    return out
