"""RemoteTarget: runner.py on a machine reached through a remote shell (ssh, adb).

Both remote targets do the same thing per run:
 1. check the device and probe its Python (PROBE_SCRIPT: interpreter, CPU
    architecture, which of numpy / onnxruntime / ai_edge_litert / tflite_runtime
    import) -- a one-line error before anything is copied;
 2. `mktemp -d` a session folder on the device and copy runner.py there once;
 3. per model `mI/`: copy the model (and card, and --inputs once), run
    `cd TMP && PYTHON runner.py ... --json mI/result.json` as a background job
    whose pid is kept in mI/pid while it runs, so that a timeout kills it on the
    device (killing the local ssh/adb client does not stop a remote process);
 4. fetch the result JSON (and saved outputs) back;
 5. `rm -rf TMP` -- always, also after a failure, a timeout or Ctrl-C.

What differs between transports is only how to reach the device, so that is all
a subclass implements: `shell` (one POSIX shell command line on the device),
`push` / `pull` (copy one file in / out), `place` (how messages name the
device), and where needed `check` (is the device there at all), `close` (end a
held connection) and `_install` (what else a session needs on the device).
Every command line sent to the device is built here or in the subclass with
shlex.quote; remote paths are mktemp output and fixed names.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from abc import abstractmethod
from pathlib import Path
from typing import Callable, ClassVar, Sequence

from zoo.util import check_not_input

from .base import (RUNNER_PATH, BenchConfig, BenchError, ModelSpec, RunnerFailed, RuntimeMissing,
                   Target, TargetUnavailable, check_runner_exit, finish_result, last_line,
                   load_result, run_process, runner_argv)

SHORT_TIMEOUT = 30.0       # mktemp, mkdir, cleanup, kill: seconds, or the device is gone
PROBE_TIMEOUT = 60.0       # the probe imports numpy and the runtimes: slow on small boards
PROBE_MARK = "ARMQ-PROBE "
SAFE_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")

# Runs on the device: what the runner needs. Kept tiny and Python-3.6 compatible
# (old board images); prints one marked JSON line whatever the login shell echoes.
PROBE_SCRIPT = """\
import json, platform, sys
info = {"python": platform.python_version(), "machine": platform.machine(),
        "executable": sys.executable, "modules": {}}
for name in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"):
    try:
        mod = __import__(name)
        info["modules"][name] = str(getattr(mod, "__version__", "unknown"))
    except Exception as e:
        info["modules"][name] = None
        info.setdefault("errors", {})[name] = type(e).__name__ + ": " + str(e)[:200]
try:
    with open("/proc/cpuinfo") as f:
        info["cpuinfo"] = f.read(65536)
except Exception:
    pass
print("%s" + json.dumps(info))
""" % PROBE_MARK

# Which probed module serves which model format (any one of them will do).
RUNTIME_MODULES = {".onnx": ("onnxruntime",), ".tflite": ("ai_edge_litert", "tflite_runtime")}
INSTALL_HINT = {".onnx": "pip install onnxruntime",
                ".tflite": "pip install ai-edge-litert (or tflite-runtime)"}


# ---- pure helpers ---------------------------------------------------------------------

def parse_probe(stdout: str) -> dict | None:
    """The probe's JSON from its marked line (None if there is none or it is broken)."""
    for line in (stdout or "").splitlines():
        if line.startswith(PROBE_MARK):
            try:
                info = json.loads(line[len(PROBE_MARK):])
            except json.JSONDecodeError:
                return None
            if not isinstance(info, dict):
                return None
            # the device sends its /proc/cpuinfo text; runner.py's reader reads it here
            text = info.pop("cpuinfo", None)
            info["cpu_flags"] = cpuinfo_flags(text if isinstance(text, str) else "")
            return info
    return None


def missing_runtime(probe: dict, suffix: str) -> str | None:
    """None if the probed device can run a model of this suffix, else what to install."""
    mods = probe.get("modules", {})
    wanted = RUNTIME_MODULES.get(suffix.lower(), ())
    if any(mods.get(m) for m in wanted):
        return None
    return INSTALL_HINT.get(suffix.lower(), "a runtime")


def cpuinfo_flags(text: str) -> list[str]:
    """The CPU flags of a /proc/cpuinfo text (runner.parse_cpuinfo: its first Features (ARM)
    or flags (x86) line), at most 400."""
    from ..runner import parse_cpuinfo

    return parse_cpuinfo(text)["flags"][:400]


def copy_timeout(size_bytes: float) -> float:
    """Seconds allowed for copying this many bytes: 60 s + 4 s per MB (slow USB, Wi-Fi)."""
    return 60.0 + 4.0 * size_bytes / 1e6


def remote_cleanup_cmd(tmp: str) -> str:
    """Shell line for a session folder's end: kill runners still running (a timeout left
    them), then remove the folder. `tmp` is quoted here."""
    q = shlex.quote(tmp)
    return (f"for f in {q}/m*/pid; do [ -f \"$f\" ] && kill -9 \"$(cat \"$f\")\" "
            f"2>/dev/null; done; rm -rf -- {q}")


def remote_kill_cmd(pidfile: str) -> str:
    """Shell line that kills the process whose pid a remote job wrote (never fails)."""
    q = shlex.quote(pidfile)
    return f"[ -f {q} ] && kill -9 \"$(cat {q})\" 2>/dev/null; true"


def job_cmd(tmp: str, i: int, program: str, args: Sequence[str],
            merge_stderr: bool = False) -> str:
    """`cd TMP && PROGRAM ARGS` as a background job whose pid sits in mI/pid while it
    runs (for a kill after a timeout; removed as soon as it ends); exits with its
    status. `program` is already quoted (it may be `python runner.py`)."""
    redirect = " 2>&1" if merge_stderr else ""
    return (f"cd {shlex.quote(tmp)} && {{ {program} {shlex.join(args)}{redirect} & "
            f"echo $! > m{i}/pid; wait $!; rc=$?; rm -f m{i}/pid; exit $rc; }}")


# ---- the target ---------------------------------------------------------------------------

class RemoteTarget(Target):
    """runner.py through a remote shell. Subclasses: SshTarget, AdbTarget."""

    emulated = False
    default_timeout_s = 900.0
    # Folder name prefix of the session folder `mktemp -d` makes.
    tmp_prefix: ClassVar[str] = "armq"
    # The device in prose ("no python3 on the board") and the option naming its Python.
    device_word: ClassVar[str] = "device"
    python_option: ClassVar[str] = "--python"

    def __init__(self, python: str | None, remote_dir: str | None):
        if python is not None and (not python or python.startswith("-")):
            raise BenchError(f"bad {self.python_option} {python!r}")
        if remote_dir is not None and not SAFE_REMOTE_PATH.match(remote_dir):
            raise BenchError(f"--remote-dir {remote_dir!r}: use an absolute path of plain characters")
        self.python = python
        self.remote_dir = remote_dir         # None: "${TMPDIR:-/tmp}" on the device
        self.probe_info: dict | None = None
        self.tmp: str | None = None          # session folder of the current run()
        self.last_tmp: str | None = None     # ... kept after cleanup, for tests and logs
        self._inputs_remote: str | None = None
        self._n = 0                          # models run in this session: folder m<n>
        self.log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)

    # ---- the transport: what a subclass implements ----

    @property
    @abstractmethod
    def place(self) -> str:
        """The device as error messages name it ("ssh pi@board", "the adb device")."""

    @abstractmethod
    def shell(self, command: str, timeout: float = SHORT_TIMEOUT, what: str = "remote shell",
              on_timeout: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        """Run one shell command line on the device. A transport failure or hang raises
        TargetUnavailable; with `on_timeout` (a model's run) a hang raises RunnerTimeout
        after calling it."""

    @abstractmethod
    def push(self, local: str | Path, remote: str, what: str) -> None:
        """Copy one host file to a device path (TargetUnavailable when it fails)."""

    @abstractmethod
    def pull(self, remote: str, local: str | Path, what: str, model: str) -> None:
        """Copy one device file to a host path."""

    def push_into(self, files: Sequence[Path], remote_dir: str, what: str) -> None:
        """Copy host files into a device folder under their own names (one call each;
        a transport that copies several files at once overrides this)."""
        for f in files:
            self.push(f, f"{remote_dir}/{f.name}", what)

    def close(self) -> None:
        """End whatever connection the transport holds (run() calls it last). Never raises."""

    def _call(self, argv: Sequence[str], timeout: float, what: str,
              on_timeout: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        """Run a transport client (ssh, scp, adb) on this host. Its hang without
        `on_timeout` is the transport's, not a model's: the target is unusable."""
        try:
            return run_process(argv, timeout, what=what, on_timeout=on_timeout)
        except RunnerFailed as e:  # RunnerTimeout
            if on_timeout is None:
                raise TargetUnavailable(str(e)) from None
            raise

    # ---- the session ----

    def check(self) -> None:
        if self.probe_info is None:
            self.probe()

    def probe(self) -> dict:
        """Ask the device's Python what it has; one line if it or numpy is missing."""
        p = self.shell(f"{shlex.quote(str(self.python))} -c {shlex.quote(PROBE_SCRIPT)}",
                       PROBE_TIMEOUT, f"probing {self.python}")
        info = parse_probe(p.stdout)
        if info is None:
            err = (p.stderr or "").lower()
            if p.returncode == 127 or "not found" in err or "no such file" in err:
                raise TargetUnavailable(
                    f"{self.place}: no {self.python!r} on the {self.device_word} (install "
                    f"python3, or name the interpreter with {self.python_option})")
            raise TargetUnavailable(f"{self.place}: {self.python} -c failed (exit "
                                    f"{p.returncode}: {last_line(p.stderr) or 'no output'})")
        if not info.get("modules", {}).get("numpy"):
            raise TargetUnavailable(f"{self.place}: numpy is missing for {self.python} on the "
                                    f"{self.device_word} (pip install numpy there)")
        self.probe_info = info
        return info

    def cpu(self) -> dict:
        """What decides the device's INT8 recipe (quant.config.recipe_for): its architecture
        and the CPU flags of /proc/cpuinfo (its first Features/flags line; empty when
        unreadable). Connects and probes like a run, then closes (`--probe`)."""
        try:
            self.check()
            return self._cpu()
        finally:
            self.close()

    def _cpu(self) -> dict:
        info = self.probe_info or {}
        flags = [str(f) for f in info.get("cpu_flags") or []]
        return {"machine": str(info.get("machine") or "unknown"), "flags": flags,
                "source": "/proc/cpuinfo" if flags else "none"}

    def _start_session(self) -> str:
        """mktemp -d the session folder and install what every model needs there."""
        name = f"{self.tmp_prefix}.XXXXXX"
        template = (f"{shlex.quote(self.remote_dir)}/{name}" if self.remote_dir
                    else f'"${{TMPDIR:-/tmp}}"/{name}')
        p = self.shell(f"mktemp -d {template}", what="mktemp")
        tmp = last_line(p.stdout)
        if p.returncode != 0 or not SAFE_REMOTE_PATH.match(tmp):
            detail = (p.stderr or p.stdout).strip()[:200] or "mktemp failed"
            raise TargetUnavailable(f"{self.place}: cannot make a temp dir ({detail})")
        self.tmp = self.last_tmp = tmp
        self.say(f"    {self.place}: working in {tmp}")
        self._install(tmp)
        return tmp

    def _install(self, tmp: str) -> None:
        """What a session needs besides the models: runner.py."""
        self.push(RUNNER_PATH, f"{tmp}/runner.py", "copying runner.py")

    def cleanup(self) -> bool:
        """Remove the session folder (killing runs left over); True if it is gone.
        Never raises: it runs in finally blocks."""
        if not self.tmp:
            return True
        tmp, self.tmp, self._inputs_remote = self.tmp, None, None
        try:
            p = self.shell(remote_cleanup_cmd(tmp), what="cleanup")
            if p.returncode == 0:
                return True
            detail = last_line(p.stderr) or p.returncode
            self.log(f"android_bench: warning: could not remove {tmp} on {self.place}: {detail}")
        except BenchError as e:
            self.log(f"android_bench: warning: could not remove {tmp} on {self.place}: {e}")
        return False

    def _kill(self, pidfile: str) -> None:
        try:
            self.shell(remote_kill_cmd(pidfile), what="stopping the hung run")
        except BenchError:
            pass

    def run(self, model_paths: Sequence[str | os.PathLike], config: BenchConfig,
            progress: Callable[[str], None] | None = None) -> list[dict]:
        try:
            return super().run(model_paths, config, progress)
        finally:
            try:
                self.cleanup()
            finally:
                self.close()

    # ---- one model ----

    def _new_model_dir(self) -> tuple[int, str]:
        """(i, TMP/mI): a fresh folder for the next model, in the session (started
        on first use)."""
        tmp = self.tmp or self._start_session()
        i = self._n
        self._n += 1
        mdir = f"{tmp}/m{i}"
        p = self.shell(f"mkdir -p {shlex.quote(mdir)}", what="mkdir")
        if p.returncode != 0:
            raise TargetUnavailable(f"{self.place}: cannot create {mdir}")
        return i, mdir

    def _run_job(self, i: int, program: str, args: Sequence[str], timeout: float, what: str,
                 merge_stderr: bool = False) -> subprocess.CompletedProcess:
        """Run model i's program in the session folder; a timeout kills it on the device."""
        tmp = str(self.tmp)
        return self.shell(job_cmd(tmp, i, program, args, merge_stderr), timeout, what,
                          on_timeout=lambda: self._kill(f"{tmp}/m{i}/pid"))

    def _check_runtime(self, model: ModelSpec, config: BenchConfig) -> None:
        if self.probe_info is None:
            self.probe()
        if config.runtime != "auto":
            return
        suffix = model.path.suffix.lower()
        need = missing_runtime(self.probe_info or {}, suffix)
        if need:
            raise RuntimeMissing(f"{model.name} on {self.place}: no runtime for {suffix} "
                                 f"models with {self.python} ({need} on the {self.device_word})")

    def run_model(self, model: ModelSpec, config: BenchConfig) -> dict:
        self._check_runtime(model, config)
        i, mdir = self._new_model_dir()
        self.push_into([model.path, *([model.card] if model.card else [])], mdir,
                       f"copying {model.name}")
        if config.inputs and self._inputs_remote is None:
            self.push(Path(config.inputs).resolve(), f"{self.tmp}/inputs.npy", "copying inputs")
            self._inputs_remote = f"{self.tmp}/inputs.npy"
        # Paths relative to the session folder, where the job runs.
        args = runner_argv(config, f"m{i}/{model.path.name}",
                           card=f"m{i}/{model.card.name}" if model.card else None,
                           json_out=f"m{i}/result.json",
                           inputs="inputs.npy" if self._inputs_remote else None,
                           outputs_npy=f"m{i}/outputs.npy" if config.save_outputs else None)
        self.say(f"    running {model.name} on {self.place}")
        p = self._run_job(i, f"{shlex.quote(str(self.python))} runner.py", args,
                          self.timeout_for(config), model.name)
        check_runner_exit(p.returncode, p.stderr, model.name, self.place)
        with tempfile.TemporaryDirectory(prefix=f"armq-{self.kind}-") as local:
            result = Path(local) / "result.json"
            self.pull(f"{mdir}/result.json", result, f"fetching the result of {model.name}",
                      model.name)
            raw = load_result(result, model.name, self.place)
        if config.save_outputs:
            out_dir = Path(config.out_dir or ".")
            out_dir.mkdir(parents=True, exist_ok=True)
            dest = out_dir / f"{model.path.name}.outputs.npy"
            check_not_input(dest)   # never over one of the run's inputs
            self.pull(f"{mdir}/outputs.npy", dest,
                      f"fetching the outputs of {model.name}", model.name)
        result = finish_result(raw, self.describe(), model)
        if config.save_outputs:
            result["outputs_npy"] = str(dest)
        return result
