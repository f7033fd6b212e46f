"""ADB target: an Android phone over USB or `adb connect`.

    python -m android_bench --target adb --model artifacts/x.int8.tflite \\
        --benchmark-binary ~/Downloads/android_aarch64_benchmark_model [--serial SERIAL]
    python -m android_bench --target adb --model artifacts/x.int8.onnx \\
        --adb-python /data/local/tmp/python3        # a Python that the adb shell user can run

Two ways to measure:
  * TFLite's `benchmark_model` (.tflite only; the default): the native binary from
    LiteRT's prebuilt android_aarch64 benchmark tools or a bazel build. --benchmark-binary
    is a host file (pushed with the model) or, when no such host file exists, a path
    already on the device. It runs as
        benchmark_model --graph=M --num_threads=T --warmup_runs=W+1 --warmup_min_secs=0
                        --num_runs=R --min_secs=0 --max_secs=TIMEOUT [--enable_op_profiling=true]
    (exactly W+1 warm-up runs -- the first is runner.py's "first inference" -- and R
    timed runs) and its log is parsed: init time, first inference, warm-up and
    inference count/avg/std/min/max in microseconds, memory footprint, and with
    --profile the per-op-type summary. benchmark_model prints no median and no
    per-run samples, so timing_ms.median is null and mean/std/min/max are given;
    `compare` falls back to the mean for these results.
  * --adb-python PATH: runner.py itself, with a Python + numpy + runtime on the phone
    (the same result as every other target). Note that Termux's python lives in the
    Termux app's private folder, which the adb shell user cannot execute on an
    unrooted phone; it works with a python the shell user can run (pushed to
    /data/local/tmp, or on a rooted/debug build).

Each run: `mktemp -d /data/local/tmp/armq.XXXXXX` (or under --remote-dir), `adb push`
of the binary/runner, model (and card, inputs), the run with its pid recorded so
that a timeout kills it on the phone, `adb pull` of the result, and `rm -rf` of the
temp dir -- always, also after a failure. Every adb call is an argument list; the
one shell command line per step is built with shlex.quote. Time limits: 30 s for
state/mkdir/cleanup, 60 s + 4 s per MB for pushes, --timeout per model.

No device is needed for the tests: the output parser is tested on sample logs
written after benchmark_model's log statements, and the command plumbing against a
stand-in `adb` script; see tests/test_bench_adb.py for what is and is not covered.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from .base import (RESULT_FORMAT, RUNNER_PATH, BenchConfig, BenchError, ModelSpec, RunnerFailed,
                   RuntimeMissing, Target, TargetOptions, TargetUnavailable, check_runner_exit,
                   finish_result, load_result, remote_cleanup_cmd, remote_kill_cmd, run_process,
                   runner_argv)
from .ssh import PROBE_SCRIPT, missing_runtime, parse_probe

SHORT_TIMEOUT = 30.0
DEFAULT_REMOTE_ROOT = "/data/local/tmp"
_SAFE_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")


# ---- benchmark_model output parsing (pure) ---------------------------------------------

_LEVEL = re.compile(r"^(?:INFO|WARN|WARNING|ERROR|FATAL|VERBOSE):\s*")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _num(s: str) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def parse_stat_line(line: str) -> dict | None:
    """`count=50 first=266601 curr=266931 min=265837 max=268116 avg=266473 std=419`
    (also `count=5 curr=1234(all same)` and `count=0`) -> dict of floats, in us."""
    s = _LEVEL.sub("", line.strip())
    if not s.startswith("count="):
        return None
    all_same = "(all same)" in s
    s = s.replace("(all same)", " ")
    out: dict[str, float] = {}
    for key, val in re.findall(rf"(\w+)=({_NUM})", s):
        v = _num(val)
        if v is not None:
            out[key] = v
    if "count" not in out:
        return None
    if all_same or ("curr" in out and "avg" not in out and out["count"] > 0):
        c = out["curr"]
        out.update({"first": out.get("first", c), "min": c, "max": c, "avg": c, "std": 0.0})
    return out


def _profile_summary(lines: list[str]) -> dict | None:
    """The 'Summary by node type' table of --enable_op_profiling (regular runs' one)."""
    starts = [i for i, ln in enumerate(lines) if "Summary by node type" in ln]
    if not starts:
        return None
    regular = [i for i, ln in enumerate(lines) if "Regular Benchmark Runs" in ln]
    start = next((i for i in starts if regular and i > regular[-1]), starts[-1])
    ops = []
    for ln in lines[start + 1:]:
        s = _LEVEL.sub("", ln).strip()
        if not s:
            if ops:
                break
            continue
        if s.startswith("[") or s.startswith("="):
            if s.startswith("=") and ops:
                break
            continue
        toks = s.replace(",", " ").split()
        # [Node type] [count] [avg ms] [avg %] [cdf %] [mem KB] ([times called])
        nums = []
        while toks and _num(toks[-1].rstrip("%")) is not None:
            nums.insert(0, toks.pop())
        if not toks or len(nums) < 3:
            break
        ops.append({"op_type": " ".join(toks), "nodes": int(float(nums[0])),
                    "ms": float(nums[1]), "pct": float(nums[2].rstrip("%"))})
    if not ops:
        return None
    return {"available": True, "source": "benchmark_model --enable_op_profiling "
                                          "(Summary by node type)",
            "total_ms": round(sum(o["ms"] for o in ops), 6), "by_op_type": ops}


def parse_benchmark_output(text: str) -> dict:
    """Parse TFLite/LiteRT benchmark_model's log (stdout+stderr, with or without the
    `INFO: ` prefixes of newer versions). Times in microseconds as printed.

    Returns {"threads", "init_us", "first_us", "warmup": stat, "inference": stat,
    "model_size_mb", "memory": {...}, "profile", "errors"}; raises RunnerFailed when
    the log holds no inference statistics (the run failed: its ERROR line is the message).
    """
    lines = (text or "").splitlines()
    out: dict[str, Any] = {"threads": None, "init_us": None, "first_us": None, "warmup": None,
                           "inference": None, "model_size_mb": None, "memory": {},
                           "profile": None, "errors": []}
    stats: list[dict] = []
    pending_run = False
    summary: dict[str, float] = {}
    for raw in lines:
        ln = _LEVEL.sub("", raw.strip())
        if raw.strip().startswith(("ERROR:", "FATAL:")) or ln.startswith("Benchmarking failed"):
            out["errors"].append(ln)
        if m := re.match(r"^(?:Num threads|#threads used for CPU inference):\s*\[(\d+)\]", ln):
            out["threads"] = int(m.group(1))
        elif m := re.match(rf"^The input model file size \(MB\):\s*({_NUM})", ln):
            out["model_size_mb"] = _num(m.group(1))
        elif m := re.match(rf"^Initialized session in\s*({_NUM})\s*ms", ln):
            out["init_us"] = _num(m.group(1)) * 1000.0
        elif ln.startswith("Running benchmark for at least"):
            pending_run = True
        elif ln.startswith("count=") and pending_run:
            st = parse_stat_line(ln)
            if st is not None:
                stats.append(st)
            pending_run = False
        elif ln.startswith("Inference timings in us:"):
            for key, val in re.findall(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})", ln.split(":", 1)[1]):
                v = _num(val)
                if v is not None:
                    summary[key.strip()] = v
        elif m := re.match(rf"^Memory footprint delta from the start of the tool \(MB\):\s*"
                           rf"init=({_NUM})\s+overall=({_NUM})", ln):
            out["memory"].update({"init_mb": _num(m.group(1)), "overall_mb": _num(m.group(2))})
        elif m := re.match(rf"^Overall peak memory footprint \(MB\).*?:\s*({_NUM})", ln):
            out["memory"]["peak_mb"] = _num(m.group(1))
    if len(stats) >= 2:
        out["warmup"], out["inference"] = stats[0], stats[1]
    elif len(stats) == 1 and "Inference (avg)" in summary:
        out["inference"] = stats[0]
    if "Init" in summary:
        out["init_us"] = summary["Init"]
    if "First inference" in summary:
        out["first_us"] = summary["First inference"]
    if out["inference"] is None or not out["inference"].get("count"):
        why = out["errors"][0] if out["errors"] else "no inference statistics in its output"
        raise RunnerFailed(f"benchmark_model failed: {why}")
    if "Inference (avg)" in summary:
        out["inference"]["avg"] = summary["Inference (avg)"]
    if out["warmup"] is not None and "Warmup (avg)" in summary:
        out["warmup"]["avg"] = summary["Warmup (avg)"]
    if out["first_us"] is None and out["warmup"] is not None:
        out["first_us"] = out["warmup"].get("first")
    out["profile"] = _profile_summary(lines)
    return out


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def cpu_from_cpuinfo(text: str, abi: str = "", soc: str = "") -> dict:
    """CPU features that decide INT8 speed, from the phone's /proc/cpuinfo (runner.py's keys)."""
    flags: set[str] = set()
    hardware, n = "", 0
    for line in (text or "").splitlines():
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "features" and not flags:
            flags = set(v.split())
        elif k == "hardware":
            hardware = v.strip()
        elif k == "processor" and v.strip().isdigit():
            n += 1
    machine = "aarch64" if abi.startswith("arm64") or "asimd" in flags else (abi or "unknown")
    return {"machine": machine, "model": soc or hardware or "unknown",
            "features": {"asimd": "asimd" in flags or "neon" in flags, "dotprod": "asimddp" in flags,
                         "i8mm": "i8mm" in flags, "sve": "sve" in flags, "sve2": "sve2" in flags,
                         "fphp": "fphp" in flags, "bf16": "bf16" in flags, "sme": "sme" in flags},
            "feature_source": "/proc/cpuinfo (adb)" if flags else "none", "n_cpus": n or None}


def is_int8_model(model: ModelSpec) -> bool:
    """From the file name convention (x.int8.tflite) or the card's artifact key (*_int8)."""
    if ".int8." in model.path.name or ".int8" in model.path.stem:
        return True
    if model.card:
        try:
            card = json.loads(Path(model.card).read_text())
            for key, art in (card.get("artifacts") or {}).items():
                if key.endswith("int8") and Path(str(art.get("path", ""))).name == model.path.name:
                    return True
        except (OSError, ValueError, AttributeError):
            pass
    return False


def result_from_benchmark(parsed: dict, model: ModelSpec, config: BenchConfig,
                          device: dict, binary: str) -> dict:
    """An armq-bench/1 result (runner.py's layout) from benchmark_model's parsed log."""
    card = {}
    if model.card:
        try:
            card = json.loads(Path(model.card).read_text())
        except (OSError, ValueError):
            card = {}
    inf, warm = parsed["inference"], parsed.get("warmup") or {}
    int8 = is_int8_model(model)
    cpu = device.get("cpu") or cpu_from_cpuinfo("")
    try:
        from ..runner import int8_warnings
        warnings = int8_warnings(cpu, int8)
    except Exception:  # noqa: BLE001 - warnings are advisory
        warnings = []
    warnings.append("benchmark_model reports mean/std/min/max only: no median, no "
                    "confidence interval, no per-run samples")
    h = hashlib.sha256(model.path.read_bytes()).hexdigest()
    timing = {"init": _ms(parsed.get("init_us")), "first": _ms(parsed.get("first_us")),
              "warmup_total": (_ms(warm["avg"]) * warm["count"]
                               if warm.get("avg") is not None and warm.get("count") else None),
              "warmup_runs": config.warmup, "runs": int(inf["count"]),
              "mean": _ms(inf.get("avg")), "median": None, "p90": None, "p99": None,
              "min": _ms(inf.get("min")), "max": _ms(inf.get("max")), "std": _ms(inf.get("std")),
              "median_ci95": None, "median_ci_coverage": None, "clock": "benchmark_model",
              "statistic": "mean"}
    card_in = card.get("input") or {}
    return {
        "format": RESULT_FORMAT, "runner_version": None,
        "model": {"file": model.path.name, "format": "tflite", "sha256": h,
                  "size_bytes": model.path.stat().st_size, "int8": int8,
                  "card_name": card.get("name"), "cost": card.get("cost")},
        "runtime": {"name": "tflite benchmark_model", "version": None,
                    "threads": parsed.get("threads") or config.threads, "binary": binary},
        "input": {"name": card_in.get("name"), "shape": card_in.get("shape"),
                  "dtype": card_in.get("dtype"), "quantization": None,
                  "source": {"kind": "random", "by": "benchmark_model"}},
        "outputs": [],
        "output_check": None,
        "timing_ms": timing,
        "system": {"os": "Android", "release": device.get("release"),
                   "sdk": device.get("sdk"), "device": device.get("model"),
                   "manufacturer": device.get("manufacturer"), "android": True, "cpu": cpu},
        "config": {"threads": config.threads, "warmup": config.warmup, "runs": config.runs,
                   "profile": config.profile, "markers": False, "seed": None},
        "memory_mb": parsed.get("memory") or None,
        "profile": parsed.get("profile") if config.profile else None,
        "warnings": warnings,
    }


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

class AdbTarget(Target):
    kind = "adb"
    emulated = False
    default_timeout_s = 900.0

    def __init__(self, serial: str | None = None, *, adb: str | None = None,
                 benchmark_binary: str | None = None, python: str | None = None,
                 remote_dir: str | None = None):
        if serial is not None and (not serial or serial.startswith("-")):
            raise BenchError(f"bad --serial {serial!r}")
        if remote_dir is not None and not _SAFE_REMOTE_PATH.match(remote_dir):
            raise BenchError(f"--remote-dir {remote_dir!r}: use an absolute path of plain characters")
        if python is not None and (not python or python.startswith("-")):
            raise BenchError(f"bad --adb-python {python!r}")
        self.serial = serial
        self.adb = adb or "adb"
        self.benchmark_binary = benchmark_binary
        self.python = python
        self.remote_dir = remote_dir or DEFAULT_REMOTE_ROOT
        self.device: dict = {}
        self.probe_info: dict | None = None
        self.tmp: str | None = None
        self.last_tmp: str | None = None
        self._bin_remote: str | None = None
        self._inputs_remote: str | None = None
        self._n = 0
        self.log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)

    @property
    def mode(self) -> str:
        return "python" if self.python else "benchmark_model"

    # ---- command lines ----

    def adb_argv(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def _adb(self, args: Sequence[str], timeout: float, what: str,
             on_timeout: Callable[[], None] | None = None):
        try:
            p = run_process(self.adb_argv(*args), timeout, what=f"{what} (adb)",
                            on_timeout=on_timeout)
        except RunnerFailed as e:
            if on_timeout is None:
                raise TargetUnavailable(str(e)) from None
            raise
        msg = classify_adb_failure(p.stderr, self.serial) if p.returncode != 0 else None
        if msg:
            raise TargetUnavailable(msg)
        return p

    def shell(self, command: str, timeout: float = SHORT_TIMEOUT, what: str = "adb shell",
              on_timeout: Callable[[], None] | None = None):
        return self._adb(["shell", command], timeout, what, on_timeout)

    def push(self, local: str | Path, remote: str, what: str) -> None:
        size = Path(local).stat().st_size
        p = self._adb(["push", str(local), remote], 60.0 + 4.0 * size / 1e6, what)
        if p.returncode != 0:
            lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
            raise TargetUnavailable(f"{what} failed: {lines[-1] if lines else p.returncode}")

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

    # ---- steps ----

    def check(self) -> None:
        if not (shutil.which(self.adb) or Path(self.adb).is_file()):
            raise TargetUnavailable(f"{self.adb} not found: install Android platform-tools "
                                    f"(Debian: apt-get install adb) or pass --adb PATH")
        if self.mode == "benchmark_model" and not self.benchmark_binary:
            raise TargetUnavailable("--target adb needs --benchmark-binary (TFLite's "
                                    "benchmark_model for android_aarch64) or --adb-python")
        p = self._adb(["get-state"], SHORT_TIMEOUT, "adb get-state")
        state = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
        if p.returncode != 0 or state != "device":
            lines = [ln for ln in (p.stderr or "").splitlines() if ln.strip()]
            raise TargetUnavailable(f"adb: device not ready ({state or (lines[-1] if lines else 'no state')})")
        self.device = self._device_info()
        self.say(f"    adb: {self.device.get('manufacturer', '')} {self.device.get('model', '?')}, "
                 f"Android {self.device.get('release', '?')}, {self.device.get('abi', '?')}")
        if self.mode == "python" and self.probe_info is None:
            self._probe_python()

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
        return info

    def _probe_python(self) -> None:
        p = self.shell(f"{shlex.quote(self.python)} -c {shlex.quote(PROBE_SCRIPT)}",
                       what="probing the device's python")
        info = parse_probe(p.stdout)
        if info is None:
            raise TargetUnavailable(f"--adb-python {self.python} does not run on the device "
                                    f"({(p.stderr or p.stdout).strip()[-200:] or 'no output'})")
        if not info.get("modules", {}).get("numpy"):
            raise TargetUnavailable(f"numpy is missing for {self.python} on the device")
        self.probe_info = info

    def _start_session(self) -> str:
        p = self.shell(f"mktemp -d {shlex.quote(self.remote_dir)}/armq.XXXXXX",
                       what="mktemp on the device")
        tmp = p.stdout.strip().splitlines()[-1].strip() if p.stdout.strip() else ""
        if p.returncode != 0 or not _SAFE_REMOTE_PATH.match(tmp):
            raise TargetUnavailable(f"cannot make a temp dir under {self.remote_dir} on the "
                                    f"device ({(p.stderr or p.stdout).strip()[:200]})")
        self.tmp = self.last_tmp = tmp
        if self.mode == "python":
            self.push(RUNNER_PATH, f"{tmp}/runner.py", "pushing runner.py")
        else:
            b = Path(str(self.benchmark_binary)).expanduser()
            if b.is_file():
                self.push(b, f"{tmp}/benchmark_model", "pushing benchmark_model")
                self.shell(f"chmod 755 {shlex.quote(tmp)}/benchmark_model")
                self._bin_remote = f"{tmp}/benchmark_model"
            else:
                q = shlex.quote(str(self.benchmark_binary))
                t = self.shell(f"[ -x {q} ] && echo ok", what="checking benchmark_model")
                if t.stdout.strip() != "ok":
                    raise TargetUnavailable(f"--benchmark-binary {self.benchmark_binary}: no "
                                            f"such file on this host, nor executable on the device")
                self._bin_remote = str(self.benchmark_binary)
        return tmp

    def cleanup(self) -> bool:
        if not self.tmp:
            return True
        tmp, self.tmp, self._inputs_remote, self._bin_remote = self.tmp, None, None, None
        try:
            p = self.shell(remote_cleanup_cmd(tmp), what="cleanup")
            if p.returncode == 0:
                return True
            self.log(f"android_bench: warning: could not remove {tmp} on the device")
        except BenchError as e:
            self.log(f"android_bench: warning: could not remove {tmp} on the device: {e}")
        return False

    def _kill(self, pidfile: str) -> None:
        try:
            self.shell(remote_kill_cmd(pidfile), what="stopping the hung run")
        except BenchError:
            pass

    def run(self, model_paths, config: BenchConfig, progress=None) -> list[dict]:
        try:
            return super().run(model_paths, config, progress)
        finally:
            self.cleanup()

    def run_model(self, model: ModelSpec, config: BenchConfig) -> dict:
        suffix = model.path.suffix.lower()
        if self.mode == "benchmark_model" and suffix != ".tflite":
            raise RunnerFailed(f"{model.name}: benchmark_model runs .tflite models only "
                               f"(use --adb-python for .onnx)")
        if self.mode == "python" and config.runtime == "auto":
            need = missing_runtime(self.probe_info or {}, suffix)
            if need:
                raise RuntimeMissing(f"{model.name} on the device: no runtime for {suffix} "
                                     f"models with {self.python} ({need})")
        tmp = self.tmp or self._start_session()
        i = self._n
        self._n += 1
        mdir = f"{tmp}/m{i}"
        self.shell(f"mkdir -p {shlex.quote(mdir)}", what="mkdir on the device")
        self.push(model.path, f"{mdir}/{model.path.name}", f"pushing {model.name}")
        timeout = self.timeout_for(config)
        if self.mode == "benchmark_model":
            args = [f"--graph={mdir}/{model.path.name}", f"--num_threads={config.threads}",
                    f"--warmup_runs={config.warmup + 1}", "--warmup_min_secs=0",
                    f"--num_runs={config.runs}", "--min_secs=0", f"--max_secs={int(timeout)}"]
            if config.profile:
                args.append("--enable_op_profiling=true")
            prog = shlex.quote(str(self._bin_remote))
        else:
            if model.card:
                self.push(model.card, f"{mdir}/{model.card.name}", "pushing the card")
            if config.inputs and self._inputs_remote is None:
                self.push(Path(config.inputs).resolve(), f"{tmp}/inputs.npy", "pushing inputs")
                self._inputs_remote = f"{tmp}/inputs.npy"
            args = runner_argv(config, f"m{i}/{model.path.name}",
                               card=f"m{i}/{model.card.name}" if model.card else None,
                               json_out=f"m{i}/result.json",
                               inputs="inputs.npy" if self._inputs_remote else None,
                               outputs_npy=f"m{i}/outputs.npy" if config.save_outputs else None)
            prog = f"{shlex.quote(str(self.python))} runner.py"
        remote = (f"cd {shlex.quote(tmp)} && {{ {prog} {shlex.join(args)} 2>&1 & "
                  f"echo $! > m{i}/pid; wait $!; rc=$?; rm -f m{i}/pid; exit $rc; }}"
                  if self.mode == "benchmark_model" else
                  f"cd {shlex.quote(tmp)} && {{ {prog} {shlex.join(args)} & "
                  f"echo $! > m{i}/pid; wait $!; rc=$?; rm -f m{i}/pid; exit $rc; }}")
        # benchmark_model stops starting runs after --max_secs; the margin covers its
        # init and the run in progress.
        margin = min(30.0, max(5.0, 0.25 * timeout)) if self.mode == "benchmark_model" else 0.0
        self.say(f"    running {model.name} on the device ({self.mode})")
        p = self.shell(remote, timeout + margin, f"{model.name} on the device",
                       on_timeout=lambda: self._kill(f"{mdir}/pid"))
        if self.mode == "benchmark_model":
            try:
                parsed = parse_benchmark_output(p.stdout + "\n" + (p.stderr or ""))
            except RunnerFailed as e:
                raise RunnerFailed(f"{model.name}: {e} (exit {p.returncode})") from None
            if p.returncode != 0:
                why = parsed["errors"][0] if parsed["errors"] else "no error line"
                raise RunnerFailed(f"{model.name}: benchmark_model exited {p.returncode} ({why})")
            raw = result_from_benchmark(parsed, model, config, self.device,
                                        str(self.benchmark_binary))
            return finish_result(raw, self.describe(), model)
        check_runner_exit(p.returncode, p.stderr, model.name, "the adb device")
        with tempfile.TemporaryDirectory(prefix="armq-adb-") as local:
            self.pull(f"{mdir}/result.json", Path(local) / "result.json",
                      "pulling the result", model.name)
            raw = load_result(Path(local) / "result.json", model.name, "the adb device")
            if config.save_outputs:
                out_dir = Path(config.out_dir or ".")
                out_dir.mkdir(parents=True, exist_ok=True)
                self.pull(f"{mdir}/outputs.npy", out_dir / f"{model.path.name}.outputs.npy",
                          "pulling the outputs", model.name)
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
