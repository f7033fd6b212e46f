"""The device inventory (`--devices FILE`): the benchmark targets a sweep may use.

    [[device]]
    name = "a76-1"          # unique; with Ray also the custom resource device:a76-1
    kind = "qemu"           # local | qemu | ssh | adb
    cpu = "cortex-a76"      # qemu only

A bench stage of target `qemu:cortex-a76` runs on whichever device of that target is
free (`DevicePool`): benchmarks fan out over every device of a kind, and a device runs
one benchmark at a time. The file is data: names become resource names and entries in
results.json, never paths (no device field chooses where anything is written).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from .spec import QEMU_CPUS, SpecError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9._@-]+$")     # user@board: no spaces, no shell syntax
RESOURCE_PREFIX = "device:"


class DeviceKind(str, Enum):
    LOCAL = "local"
    QEMU = "qemu"
    SSH = "ssh"
    ADB = "adb"


# Which fields each kind takes (name and kind: all of them).
_FIELDS: dict[DeviceKind, tuple[str, ...]] = {
    DeviceKind.LOCAL: (), DeviceKind.QEMU: ("cpu",), DeviceKind.SSH: ("host",),
    DeviceKind.ADB: ("serial",)}


@dataclass(frozen=True)
class Device:
    name: str
    kind: DeviceKind
    cpu: str | None = None
    host: str | None = None
    serial: str | None = None

    @property
    def target(self) -> str:
        """The sweep target id this device serves (deploy.spec.TargetSpec.id)."""
        return f"qemu:{self.cpu}" if self.kind is DeviceKind.QEMU else self.kind.value

    @property
    def resource(self) -> str:
        return RESOURCE_PREFIX + self.name

    def bench_args(self) -> list[str]:
        """What android_bench needs beyond --target to reach this device."""
        if self.kind is DeviceKind.SSH:
            return ["--host", str(self.host)]
        if self.kind is DeviceKind.ADB and self.serial:
            return ["--serial", self.serial]
        return []


def load_devices(path: Path) -> list[Device]:
    """Parse and validate an inventory; every problem is one SpecError line naming the field."""
    import tomllib

    where = f"--devices {path}"
    if not Path(path).is_file():
        raise SpecError(f"{where}: no such file")
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{where}: not valid TOML ({str(e).splitlines()[0]})") from None
    extra = sorted(set(doc) - {"device"})
    if extra:
        raise SpecError(f"{where}: unknown key '{extra[0]}' (devices are [[device]] tables)")
    rows = doc.get("device")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise SpecError(f"{where}: no [[device]] tables (each needs name and kind)")
    devices: list[Device] = []
    for i, row in enumerate(rows, 1):
        devices.append(_device(row, f"{where}: device {i}"))
    seen: set[str] = set()
    for d in devices:
        if d.name in seen:
            raise SpecError(f"{where}: device name '{d.name}' is used twice (names must be unique)")
        seen.add(d.name)
    return devices


def _device(row: dict, where: str) -> Device:
    name = row.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(f"{where}: field 'name' must be 1-63 letters, digits, '.', '_' or '-' "
                        f"(got {name!r})")
    where = f"{where} ('{name}')"
    try:
        kind = DeviceKind(row.get("kind"))
    except ValueError:
        raise SpecError(f"{where}: field 'kind' must be one of "
                        f"{', '.join(k.value for k in DeviceKind)} (got {row.get('kind')!r})") from None
    allowed = {"name", "kind", *_FIELDS[kind]}
    extra = sorted(set(row) - allowed)
    if extra:
        raise SpecError(f"{where}: field '{extra[0]}' does not apply to kind {kind.value} "
                        f"(fields: {', '.join(sorted(allowed))})")
    for k in _FIELDS[kind]:
        if k in row and not isinstance(row[k], str):
            raise SpecError(f"{where}: field '{k}' must be a string")
    cpu = row.get("cpu")
    if kind is DeviceKind.QEMU:
        cpu = cpu or "cortex-a76"
        if cpu not in QEMU_CPUS:
            raise SpecError(f"{where}: field 'cpu': unknown qemu cpu '{cpu}' (one of "
                            f"{', '.join(QEMU_CPUS)})")
    host = row.get("host")
    if kind is DeviceKind.SSH and (not host or not _HOST.match(host)):
        raise SpecError(f"{where}: field 'host' must be user@board (got {host!r})")
    serial = row.get("serial")
    if serial is not None and not _HOST.match(serial):
        raise SpecError(f"{where}: field 'serial' must be an adb serial (got {serial!r})")
    return Device(name=name, kind=kind, cpu=cpu, host=host, serial=serial)


def check_targets(devices: list[Device], targets: list[str], where: str) -> None:
    """Before any work: every target of the sweep has at least one device."""
    have = {d.target for d in devices}
    for t in targets:
        if t not in have:
            raise SpecError(f"{where}: no device serves target '{t}' (add a [[device]] with "
                            f"that kind, or drop the target)")


class DevicePool:
    """Free devices per target. `acquire` blocks until one is free (or `stop()` says the
    run is over); a device is never handed to two stages at once."""

    def __init__(self, devices: list[Device]):
        self.devices = list(devices)
        self._busy: set[str] = set()
        self._cv = threading.Condition()

    def serves(self, target: str | None) -> bool:
        return any(d.target == target for d in self.devices)

    def acquire(self, target: str, stop: Callable[[], bool]) -> Device | None:
        with self._cv:
            while not stop():
                for d in self.devices:
                    if d.target == target and d.name not in self._busy:
                        self._busy.add(d.name)
                        return d
                self._cv.wait(timeout=0.2)
        return None

    def release(self, d: Device) -> None:
        with self._cv:
            self._busy.discard(d.name)
            self._cv.notify_all()
