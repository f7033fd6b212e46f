"""ADB target: an Android phone over USB or `adb connect`.

    python -m android_bench --target adb --model artifacts/x.int8.tflite \\
        --benchmark-binary ~/Downloads/android_aarch64_benchmark_model [--serial SERIAL]
    python -m android_bench --target adb --model artifacts/x.int8.onnx \\
        --adb-python /data/local/tmp/python3        # a Python that the adb shell user can run

Two ways to measure:
  * TFLite's `benchmark_model` (.tflite only; the default): see tflite_benchmark.py
    for its command line and how its log becomes a result (no median: `compare`
    falls back to the mean). --benchmark-binary is a host file (pushed with the
    model) or, when no such host file exists, a path already on the device.
  * --adb-python PATH: runner.py itself, with a Python + numpy + runtime on the phone
    (the same result as every other target; the session is RemoteTarget's, as for
    ssh). Note that Termux's python lives in the Termux app's private folder, which
    the adb shell user cannot execute on an unrooted phone; it works with a python
    the shell user can run (pushed to /data/local/tmp, or on a rooted/debug build).

Each run: `mktemp -d /data/local/tmp/armq.XXXXXX` (or under --remote-dir), `adb push`
of the binary/runner, model (and card, inputs), the run with its pid recorded so
that a timeout kills it on the phone, `adb pull` of the result, and `rm -rf` of the
temp dir -- always, also after a failure. Every adb call is an argument list; the
one shell command line per step is built with shlex.quote. Time limits: 30 s for
state/mkdir/cleanup, 60 s for the --adb-python probe, 60 s + 4 s per MB for pushes,
--timeout per model.

No device is needed for the tests: the output parser is tested on sample logs
written after benchmark_model's log statements, and the command plumbing against a
stand-in `adb` script; see tests/test_bench_adb.py for what is and is not covered.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Sequence

from .base import (BenchConfig, BenchError, ModelSpec, RunnerFailed, TargetOptions,
                   TargetUnavailable, finish_result, last_line)
from .remote import SHORT_TIMEOUT, RemoteTarget, copy_timeout, cpuinfo_flags
from .tflite_benchmark import (benchmark_argv, cpu_from_cpuinfo, is_int8_model,  # noqa: F401
                               parse_benchmark_output, parse_stat_line, result_from_benchmark)

DEFAULT_REMOTE_ROOT = "/data/local/tmp"


def classify_adb_failure(stderr: str, serial: str | None) -> str | None:
    """One line for adb's own failures (None when the message is not adb's)."""
    s = (stderr or "").lower()
    dev = f"device {serial}" if serial else "the device"
    if "no devices/emulators found" in s or "no devices found" in s:
        return ("no Android device connected (adb devices lists none): plug it in with USB "
                "debugging on, or `adb connect HOST:PORT`")
    if "more than one device" in s:
        return "several Android devices connected: pick one with --serial (see `adb devices`)"
    if re.search(r"device '.*' not found", s):
        return f"{dev} is not connected (see `adb devices`)"
    if "unauthorized" in s:
        return f"{dev} is unauthorized: accept the USB debugging prompt on the phone"
    if "offline" in s:
        return f"{dev} is offline: reconnect it (or `adb kill-server`)"
    if "cannot connect to daemon" in s or "failed to start daemon" in s:
        return "cannot start or reach the adb server (`adb start-server`)"
    return None


# ---- the target ------------------------------------------------------------------------

class AdbTarget(RemoteTarget):
    kind = "adb"
    python_option = "--adb-python"

    def __init__(self, serial: str | None = None, *, adb: str | None = None,
                 benchmark_binary: str | None = None, python: str | None = None,
                 remote_dir: str | None = None):
        if serial is not None and (not serial or serial.startswith("-")):
            raise BenchError(f"bad --serial {serial!r}")
        super().__init__(python, remote_dir or DEFAULT_REMOTE_ROOT)
        self.serial = serial
        self.adb = adb or "adb"
        self.benchmark_binary = benchmark_binary
        self.device: dict = {}
        self._bin_remote: str | None = None

    @property
    def mode(self) -> str:
        return "python" if self.python else "benchmark_model"

    @property
    def place(self) -> str:
        return f"adb device {self.serial}" if self.serial else "the adb device"

    # ---- the transport ----

    def adb_argv(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def _adb(self, args: Sequence[str], timeout: float, what: str,
             on_timeout: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        p = self._call(self.adb_argv(*args), timeout, f"{what} (adb)", on_timeout)
        msg = classify_adb_failure(p.stderr, self.serial) if p.returncode != 0 else None
        if msg:
            raise TargetUnavailable(msg)
        return p

    def shell(self, command: str, timeout: float = SHORT_TIMEOUT, what: str = "adb shell",
              on_timeout: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        return self._adb(["shell", command], timeout, what, on_timeout)

    def push(self, local: str | Path, remote: str, what: str) -> None:
        p = self._adb(["push", str(local), remote], copy_timeout(Path(local).stat().st_size), what)
        if p.returncode != 0:
            raise TargetUnavailable(f"{what} failed: {last_line(p.stderr or p.stdout) or p.returncode}")

    def pull(self, remote: str, local: str | Path, what: str, model: str) -> None:
        p = self._adb(["pull", remote, str(local)], 120.0, what)
        if p.returncode != 0:
            raise RunnerFailed(f"{model}: {what} failed ({(p.stderr or '').strip()[-200:]})")

    def describe(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "emulated": False, "serial": self.serial,
                             "mode": self.mode}
        if self.device:
            d["device"] = self.device.get("model")
            d["android"] = self.device.get("release")
            d["abi"] = self.device.get("abi")
        if self.mode == "python":
            d["python"] = self.python
        else:
            d["benchmark_binary"] = self.benchmark_binary
        return d

    # ---- the session ----

    def check(self) -> None:
        if not (shutil.which(self.adb) or Path(self.adb).is_file()):
            raise TargetUnavailable(f"{self.adb} not found: install Android platform-tools "
                                    f"(Debian: apt-get install adb) or pass --adb PATH")
        if self.mode == "benchmark_model" and not self.benchmark_binary:
            raise TargetUnavailable("--target adb needs --benchmark-binary (TFLite's "
                                    "benchmark_model for android_aarch64) or --adb-python")
        p = self._adb(["get-state"], SHORT_TIMEOUT, "adb get-state")
        state = last_line(p.stdout)
        if p.returncode != 0 or state != "device":
            raise TargetUnavailable(f"adb: device not ready ({state or last_line(p.stderr) or 'no state'})")
        self.device = self._device_info()
        self.say(f"    adb: {self.device.get('manufacturer', '')} {self.device.get('model', '?')}, "
                 f"Android {self.device.get('release', '?')}, {self.device.get('abi', '?')}")
        if self.mode == "python" and self.probe_info is None:
            self.probe()

    def _device_info(self) -> dict:
        mark = "@@ARMQ@@"
        props = ("ro.product.model", "ro.product.manufacturer", "ro.build.version.release",
                 "ro.build.version.sdk", "ro.product.cpu.abi", "ro.soc.model")
        cmd = "; ".join([*(f"getprop {p}" for p in props), f"echo {mark}",
                         "cat /proc/cpuinfo 2>/dev/null"])
        p = self.shell(cmd, what="reading device properties")
        head, _, cpuinfo = p.stdout.partition(mark)
        vals = (head.splitlines() + [""] * len(props))[:len(props)]
        info = dict(zip(("model", "manufacturer", "release", "sdk", "abi", "soc"),
                        (v.strip() for v in vals)))
        info["cpu"] = cpu_from_cpuinfo(cpuinfo, info.get("abi", ""), info.get("soc", ""))
        info["cpu_flags"] = cpuinfo_flags(cpuinfo)
        return info

    def _cpu(self) -> dict:
        """The phone's CPU from getprop + /proc/cpuinfo (read by check() in both modes)."""
        flags = list(self.device.get("cpu_flags") or [])
        return {"machine": str((self.device.get("cpu") or {}).get("machine") or "unknown"),
                "flags": flags, "source": "/proc/cpuinfo (adb)" if flags else "none"}

    def _install(self, tmp: str) -> None:
        """runner.py (--adb-python), else benchmark_model: pushed when it is a host
        file, used in place when it is a path on the device."""
        if self.mode == "python":
            super()._install(tmp)
            return
        b = Path(str(self.benchmark_binary)).expanduser()
        if b.is_file():
            self.push(b, f"{tmp}/benchmark_model", "pushing benchmark_model")
            self.shell(f"chmod 755 {shlex.quote(tmp)}/benchmark_model")
            self._bin_remote = f"{tmp}/benchmark_model"
            return
        q = shlex.quote(str(self.benchmark_binary))
        t = self.shell(f"[ -x {q} ] && echo ok", what="checking benchmark_model")
        if t.stdout.strip() != "ok":
            raise TargetUnavailable(f"--benchmark-binary {self.benchmark_binary}: no such file "
                                    f"on this host, nor executable on the device")
        self._bin_remote = str(self.benchmark_binary)

    def cleanup(self) -> bool:
        self._bin_remote = None
        return super().cleanup()

    # ---- one model ----

    def run_model(self, model: ModelSpec, config: BenchConfig) -> dict:
        if self.mode == "python":
            return super().run_model(model, config)
        if model.path.suffix.lower() != ".tflite":
            raise RunnerFailed(f"{model.name}: benchmark_model runs .tflite models only "
                               f"(use --adb-python for .onnx)")
        i, mdir = self._new_model_dir()
        self.push(model.path, f"{mdir}/{model.path.name}", f"pushing {model.name}")
        timeout = self.timeout_for(config)
        args = benchmark_argv(f"{mdir}/{model.path.name}", config, timeout)
        # benchmark_model stops starting runs after --max_secs; the margin covers its
        # init and the run in progress.
        margin = min(30.0, max(5.0, 0.25 * timeout))
        self.say(f"    running {model.name} on {self.place} (benchmark_model)")
        p = self._run_job(i, shlex.quote(str(self._bin_remote)), args, timeout + margin,
                          model.name, merge_stderr=True)
        try:
            parsed = parse_benchmark_output(p.stdout + "\n" + (p.stderr or ""))
        except RunnerFailed as e:
            raise RunnerFailed(f"{model.name}: {e} (exit {p.returncode})") from None
        if p.returncode != 0:
            why = parsed["errors"][0] if parsed["errors"] else "no error line"
            raise RunnerFailed(f"{model.name}: benchmark_model exited {p.returncode} ({why})")
        raw = result_from_benchmark(parsed, model, config, self.device, str(self.benchmark_binary))
        return finish_result(raw, self.describe(), model)


# ---- factory and CLI options -------------------------------------------------------------

def add_arguments(parser) -> None:
    g = parser.add_argument_group("adb target")
    g.add_argument("--benchmark-binary", help="TFLite benchmark_model for the phone (host file "
                                              "to push, or a path on the device)")
    g.add_argument("--adb-python", help="run runner.py with this python on the device instead")
    g.add_argument("--adb", help="adb executable (default: adb on PATH)")


def make_target(options: TargetOptions) -> AdbTarget:
    x = options.extra or {}
    return AdbTarget(options.serial, adb=x.get("adb"), benchmark_binary=x.get("benchmark_binary"),
                     python=x.get("adb_python") or options.python or None,
                     remote_dir=options.remote_dir)
