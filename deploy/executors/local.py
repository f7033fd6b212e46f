"""The embedded executor: a stage's command line as a child process of this one."""
from __future__ import annotations

import os
import platform
import signal
import site
import subprocess
import time
from pathlib import Path
from typing import Callable

from ..watchdog import Watchdog
from .base import Beat, ExecResult, Interrupted, Job, StageFailed, Stop

HEARTBEAT_S = 30.0
ARMQ_ROOT = Path(__file__).resolve().parents[2]   # the folder holding deploy/, export/, ...


class LocalExecutor:
    """Runs each job in its own session (a hang is killed with its children; Ctrl-C is
    forwarded by us as SIGINT, so the CLI cleans up its own children, e.g. the bench
    runner). Also what a Ray task runs on its worker (deploy/executors/ray.py).

    A stage dies with this process: it gets `death_signal` when we die, however we die
    (SIGTERM: the CLIs clean up as on Ctrl-C; a Ray worker asks for SIGKILL), and after
    bind() deploy's watchdog (deploy/watchdog.py) stops its whole process group and marks
    results.json if we were killed. It starts with SIGINT's default handling even when we
    were started with SIGINT ignored (a background job, nohup-like launchers): the SIGINT
    we forward must stop it at once, not after the SIGKILL 10 s later."""

    def __init__(self, jobs: int = 1, death_signal: int = signal.SIGTERM):
        self.jobs = max(1, jobs)
        self.death_signal = death_signal
        self.prctl = _libc_prctl()   # resolved here: no dlopen between fork and exec
        self.watchdog: Watchdog | None = None

    def parallelism(self) -> int:
        return self.jobs

    def shares_files(self) -> bool:
        return True

    def bind(self, run_dir: Path) -> None:
        if self.watchdog is None:
            self.watchdog = Watchdog(run_dir / "results.json")

    def describe(self) -> dict:
        return {"executor": "local", "jobs": self.jobs}

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog = None

    def run(self, job: Job, stop: Stop, beat: Beat) -> ExecResult:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env.update(job.env)
        env = safe_path_env(env)
        t0 = time.monotonic()
        with open(job.log_path, "w") as log:
            log.write("$ " + " ".join(job.argv) + "\n")
            log.flush()
            stdout = open(job.stdout_path, "w") if job.stdout_path is not None else log
            try:
                proc = subprocess.Popen(job.argv, stdout=stdout, stderr=subprocess.STDOUT
                                        if stdout is log else log,
                                        stdin=subprocess.DEVNULL, cwd=job.cwd, env=env,
                                        start_new_session=True,
                                        preexec_fn=_child_setup(os.getpid(), self.death_signal,
                                                                self.prctl))
            finally:
                if stdout is not log:
                    stdout.close()
            if self.watchdog is not None:
                self.watchdog.watch(proc.pid)   # its own session: pgid == pid
            try:
                rc, cpu = self._wait(job, proc, stop, beat, t0)
            finally:
                if self.watchdog is not None:
                    self.watchdog.unwatch(proc.pid)
        return ExecResult(rc=rc, cpu_seconds=cpu, node=platform.node())

    def _wait(self, job: Job, proc: subprocess.Popen, stop: Stop, beat: Beat,
              t0: float) -> tuple[int, float | None]:
        """The stage's exit status and CPU seconds; stops it on Ctrl-C, stop() or timeout."""
        cpu: list[float | None] = [None]
        next_beat = t0 + HEARTBEAT_S
        while True:
            try:
                rc = _reap(proc, cpu)
                if rc is not None:
                    break
                time.sleep(0.2)
            except KeyboardInterrupt:
                _stop(proc)     # its own session: Ctrl-C did not reach it
                raise
            if stop():
                _stop(proc)
                raise Interrupted()
            el = time.monotonic() - t0
            if el > job.timeout_s:
                _stop(proc)
                raise StageFailed(f"no result after {job.timeout_s:.0f} s (killed)")
            if time.monotonic() >= next_beat:
                next_beat += HEARTBEAT_S
                beat(el)
        return rc, cpu[0]


def safe_path_env(env: dict[str, str]) -> dict[str, str]:
    """Every stage command (`python -m export.onnx`, `quant.ptq`, ...) with PYTHONSAFEPATH
    (= `python -P`, inherited by their own children): the working folder is never on its
    sys.path, so a user's folder holding its own `deploy/`, `export/` or `quant/` cannot
    replace armq's. armq's own root goes on PYTHONPATH instead, for a checkout run without
    installing; an installed armq (site-packages) is found as usual."""
    out = dict(env)
    out["PYTHONSAFEPATH"] = "1"
    installed = {Path(p).resolve() for p in (*site.getsitepackages(), site.getusersitepackages())}
    if ARMQ_ROOT not in installed:
        parts = [str(ARMQ_ROOT), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
        out["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return out


PR_SET_PDEATHSIG = 1


def _libc_prctl() -> Callable[..., int] | None:
    """libc's prctl (Linux), else None."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(parent: int, death_signal: int,
                 prctl: Callable[..., int] | None) -> Callable[[], None]:
    """What the stage process does between fork and exec: SIGINT back to its default (an
    ignored signal stays ignored across exec), and the parent-death signal."""
    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, death_signal)
            if os.getppid() != parent:       # we died before prctl: no signal will come
                os.kill(os.getpid(), death_signal)
    return setup


def _reap(proc: subprocess.Popen, cpu: list) -> int | None:
    """Exit status of a finished stage process (None while it runs), recording the CPU
    seconds it and the children it waited for used: on a busy machine wall time says
    little, CPU time says what the stage costs."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:
        return proc.wait()
    if pid == 0:
        return None
    cpu[0] = ru.ru_utime + ru.ru_stime
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT the stage's process group (CLIs clean up on KeyboardInterrupt), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
