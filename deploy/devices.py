"""The device inventory (`--devices FILE`): the benchmark targets a sweep may use.

    [[device]]
    name = "a76-1"          # unique; with Ray also the custom resource device:a76-1
    kind = "qemu"           # local | qemu | ssh | adb
    cpu = "cortex-a76"      # qemu only

    [[device]]              # a board: android_bench --target ssh
    name = "pi5-1"
    kind = "ssh"
    host = "pi5-1.lan"      # or user@host; optional user, port, key (a private key file,
    user = "pi"             # relative to this file), strict (ssh's StrictHostKeyChecking),
                            # python (default python3 on the board); host keys go to armq's
                            # own known_hosts (`deploy --known-hosts FILE`: another), never
                            # to a file the inventory names

    [[device]]              # a phone: android_bench --target adb
    name = "pixel-7"
    kind = "adb"
    serial = "28071FDH2000XY"               # optional with one phone attached
    python = "/data/local/tmp/py/bin/python3"   # runner.py on the phone, and/or
    benchmark_binary = "android_aarch64_benchmark_model"   # TFLite's (.tflite only)
    remote_dir = "/data/local/tmp"          # optional (ssh too): the scratch folder there

A bench stage of target `qemu:cortex-a76` runs on whichever device of that target is
free (`DevicePool`): benchmarks fan out over every device of a kind, and a device runs
one benchmark at a time. A board or a phone is its own target, `ssh:<name>` /
`adb:<name>` (`--targets ssh` = every ssh device, each its own target): two boards are
not interchangeable, so each keeps its own figures and INT8 recipe. The file is data:
names become resource names and entries in results.json, never paths (no device field
chooses where anything is written on this machine; `remote_dir` is a scratch folder on the
device, which android_bench makes with mktemp there and removes).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Callable

# a folder on the device and ssh's host-key modes: android_bench's own rules
from android_bench.targets.remote import SAFE_REMOTE_PATH as _REMOTE_DIR
from android_bench.targets.ssh import STRICT_MODES, armq_known_hosts

from .spec import DEVICE_NAME, QEMU_CPUS, REMOTE_KINDS, SpecError, TargetSpec, read_toml

_HOST = re.compile(r"^[A-Za-z0-9._@-]+$")     # user@board: no spaces, no shell syntax
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")
# a device-side interpreter: an absolute or PATH name, plain characters, never an option
_PROGRAM = re.compile(r"^[A-Za-z0-9._/+][A-Za-z0-9._/+-]*$")
RESOURCE_PREFIX = "device:"


class DeviceKind(str, Enum):
    LOCAL = "local"
    QEMU = "qemu"
    SSH = "ssh"
    ADB = "adb"


# Which fields each kind takes (name and kind: all of them), and their types.
_FIELDS: dict[DeviceKind, tuple[str, ...]] = {
    DeviceKind.LOCAL: (), DeviceKind.QEMU: ("cpu",),
    DeviceKind.SSH: ("host", "user", "port", "key", "strict", "python", "remote_dir"),
    DeviceKind.ADB: ("serial", "python", "benchmark_binary", "remote_dir")}
_INT_FIELDS = ("port",)


@dataclass(frozen=True)
class Device:
    name: str
    kind: DeviceKind
    cpu: str | None = None
    host: str | None = None
    serial: str | None = None
    user: str | None = None
    port: int | None = None
    key: str | None = None
    python: str | None = None
    benchmark_binary: str | None = None
    remote_dir: str | None = None       # scratch folder on the device (android_bench's default)
    known_hosts: str | None = None      # ssh: the command line's file, else armq's own (never the inventory's)
    strict: str | None = None           # ssh: StrictHostKeyChecking (android_bench's modes)

    @property
    def target(self) -> str:
        """The sweep target id this device serves (deploy.spec.TargetSpec.id)."""
        if self.kind is DeviceKind.QEMU:
            return f"qemu:{self.cpu}"
        if self.kind in (DeviceKind.SSH, DeviceKind.ADB):
            return f"{self.kind.value}:{self.name}"
        return self.kind.value

    @property
    def resource(self) -> str:
        return RESOURCE_PREFIX + self.name

    def bench_args(self) -> list[str]:
        """What android_bench needs beyond --target to reach this device (its CLI flags)."""
        args: list[str] = []
        if self.kind is DeviceKind.SSH:
            args += ["--host", f"{self.user}@{self.host}" if self.user else str(self.host)]
            args += ["--ssh-port", str(self.port)] if self.port else []
            args += ["--ssh-key", self.key] if self.key else []
            args += ["--known-hosts", self.known_hosts] if self.known_hosts else []
            args += ["--ssh-strict", self.strict] if self.strict else []
            args += ["--python", self.python] if self.python else []
        elif self.kind is DeviceKind.ADB:
            args += ["--serial", self.serial] if self.serial else []
            args += ["--adb-python", self.python] if self.python else []
            args += ["--benchmark-binary", self.benchmark_binary] if self.benchmark_binary else []
        if self.remote_dir:
            args += ["--remote-dir", self.remote_dir]
        return args


def load_devices(path: Path, known_hosts: Path | None = None) -> list[Device]:
    """Parse and validate an inventory; every problem is one SpecError line naming the field.
    Its ssh boards record host keys in `known_hosts` (the command line's) or armq's own file."""
    where = f"--devices {path}"
    doc = read_toml(Path(path), where)
    extra = sorted(set(doc) - {"device"})
    if extra:
        raise SpecError(f"{where}: unknown key '{extra[0]}' (devices are [[device]] tables)")
    rows = doc.get("device")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise SpecError(f"{where}: no [[device]] tables (each needs name and kind)")
    devices: list[Device] = []
    for i, row in enumerate(rows, 1):
        d = _device(row, f"{where}: device {i}", Path(path).resolve().parent)
        if d.kind is DeviceKind.SSH:
            d = replace(d, known_hosts=str(known_hosts or armq_known_hosts()))
        devices.append(d)
    seen: set[str] = set()
    for d in devices:
        if d.name in seen:
            raise SpecError(f"{where}: device name '{d.name}' is used twice (names must be unique)")
        seen.add(d.name)
    return devices


def _device(row: dict, where: str, base: Path) -> Device:
    name = row.get("name")
    if not isinstance(name, str) or not DEVICE_NAME.match(name):
        raise SpecError(f"{where}: field 'name' must be 1-63 letters, digits, '.', '_' or '-' "
                        f"(got {name!r})")
    where = f"{where} ('{name}')"
    try:
        kind = DeviceKind(row.get("kind"))
    except ValueError:
        raise SpecError(f"{where}: field 'kind' must be one of "
                        f"{', '.join(k.value for k in DeviceKind)} (got {row.get('kind')!r})") from None
    if "known_hosts" in row:    # ssh appends host keys to it: not a device file's choice
        raise SpecError(f"{where}: field 'known_hosts' is not taken from an inventory (a device "
                        f"file must not choose where ssh writes); pass deploy --known-hosts FILE")
    allowed = {"name", "kind", *_FIELDS[kind]}
    extra = sorted(set(row) - allowed)
    if extra:
        raise SpecError(f"{where}: field '{extra[0]}' does not apply to kind {kind.value} "
                        f"(fields: {', '.join(sorted(allowed))})")
    for k in _FIELDS[kind]:
        want = int if k in _INT_FIELDS else str
        if k in row and (not isinstance(row[k], want) or isinstance(row[k], bool)):
            raise SpecError(f"{where}: field '{k}' must be {'an integer' if want is int else 'a string'}")
    cpu = row.get("cpu")
    if kind is DeviceKind.QEMU:
        cpu = cpu or "cortex-a76"
        if cpu not in QEMU_CPUS:
            raise SpecError(f"{where}: field 'cpu': unknown qemu cpu '{cpu}' (one of "
                            f"{', '.join(QEMU_CPUS)})")
    host, user, port = row.get("host"), row.get("user"), row.get("port")
    if kind is DeviceKind.SSH and (not host or not _HOST.match(host) or host.startswith("-")):
        raise SpecError(f"{where}: field 'host' must be user@board or board (got {host!r})")
    if user is not None and (not _USER.match(user) or "@" in str(host)):
        raise SpecError(f"{where}: field 'user' must be a user name, given once (in 'host' as "
                        f"user@board, or here) (got {user!r})")
    if port is not None and not 0 < port < 65536:
        raise SpecError(f"{where}: field 'port' must be 1-65535 (got {port})")
    serial = row.get("serial")
    if serial is not None and (not _HOST.match(serial) or serial.startswith("-")):
        raise SpecError(f"{where}: field 'serial' must be an adb serial (got {serial!r})")
    python = row.get("python")
    if python is not None and not _PROGRAM.match(python):
        raise SpecError(f"{where}: field 'python' must be the device's interpreter, a path or "
                        f"a name of plain characters (got {python!r})")
    strict = row.get("strict")
    if strict is not None and strict not in STRICT_MODES:
        raise SpecError(f"{where}: field 'strict' must be one of {', '.join(STRICT_MODES)} "
                        f"(ssh's StrictHostKeyChecking; got {strict!r})")
    remote_dir = row.get("remote_dir")
    if remote_dir is not None and not _REMOTE_DIR.match(remote_dir):
        raise SpecError(f"{where}: field 'remote_dir' must be an absolute path on the device, "
                        f"plain characters (got {remote_dir!r})")
    binary = row.get("benchmark_binary")
    if kind is DeviceKind.ADB and not (python or binary):
        raise SpecError(f"{where}: an adb phone needs field 'python' (runner.py with a Python "
                        f"on the phone: .onnx and .tflite) or 'benchmark_binary' (TFLite's "
                        f"benchmark_model: .tflite only)")
    for k, v in (("benchmark_binary", binary), ("key", row.get("key"))):
        if v is not None and (not v.strip() or v.startswith("-")):
            raise SpecError(f"{where}: field '{k}' must be a file name (got {v!r})")
    return Device(name=name, kind=kind, cpu=cpu, host=host, serial=serial, user=user, port=port,
                  key=_beside(row.get("key"), base, on_device_ok=False), python=python,
                  benchmark_binary=_beside(binary, base, on_device_ok=True), remote_dir=remote_dir,
                  strict=strict)


def _beside(value: str | None, base: Path, on_device_ok: bool) -> str | None:
    """A host file named in the inventory, relative to the inventory's folder. The
    benchmark binary may instead be a path on the phone (android_bench's rule): kept as
    written when no such host file exists."""
    if value is None:
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if on_device_ok and not p.is_file():
        return value
    return str(p)


def resolve_targets(targets: list[TargetSpec], devices: list[Device] | None,
                    where: str) -> list[TargetSpec]:
    """Boards and phones by their inventory name: `ssh:<name>` / `adb:<name>` checked against
    the inventory (it exists, it is of that kind), a bare `ssh` / `adb` expanded into one
    target per device of the kind. One SpecError line for each problem, before any work."""
    out: list[TargetSpec] = []
    for t in targets:
        if not t.remote:
            out.append(t)
            continue
        if devices is None:
            raise SpecError(f"--targets {t.id}: boards and phones are reached through a device "
                            f"inventory: add --devices FILE (a [[device]] of kind {t.kind}; "
                            f"README 'Scaling out')")
        of_kind = [d for d in devices if d.kind.value == t.kind]
        if t.device is None:
            if not of_kind:
                raise SpecError(f"{where}: no device of kind {t.kind} for target '{t.kind}' (add "
                                f"a [[device]] with kind = \"{t.kind}\", or drop the target)")
            out += [TargetSpec(t.kind, device=d.name) for d in of_kind]
            continue
        d = next((d for d in devices if d.name == t.device), None)
        if d is None:
            names = ", ".join(x.name for x in of_kind) or "none"
            raise SpecError(f"{where}: no device named '{t.device}' (target {t.id}; {t.kind} "
                            f"devices there: {names})")
        if d.kind.value != t.kind:
            hint = f" (target {d.target})" if d.kind.value in REMOTE_KINDS else ""
            raise SpecError(f"{where}: device '{d.name}' is of kind {d.kind.value}, not "
                            f"{t.kind}{hint}")
        out.append(t)
    return list(dict.fromkeys(out))     # `ssh,ssh:pi5-1`: pi5-1 once


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
