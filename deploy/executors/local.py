"""The embedded executor: a stage's command line as a child process of this one."""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from pathlib import Path

from .base import Beat, ExecResult, Interrupted, Job, StageFailed, Stop

HEARTBEAT_S = 30.0


class LocalExecutor:
    """Runs each job in its own session (a hang is killed with its children; Ctrl-C is
    forwarded by us as SIGINT, so the CLI cleans up its own children, e.g. the bench
    runner). Also what a Ray task runs on its worker (deploy/executors/ray.py)."""

    def __init__(self, jobs: int = 1, die_with_parent: bool = False):
        self.jobs = max(1, jobs)
        # On a Ray worker: if the worker is killed, its stage process must die with it
        # (our session leader would otherwise keep a board or a CPU busy, unseen).
        self.die_with_parent = die_with_parent

    def parallelism(self) -> int:
        return self.jobs

    def shares_files(self) -> bool:
        return True

    def bind(self, run_dir: Path) -> None:
        pass

    def describe(self) -> dict:
        return {"executor": "local", "jobs": self.jobs}

    def close(self) -> None:
        pass

    def run(self, job: Job, stop: Stop, beat: Beat) -> ExecResult:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env.update(job.env)
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
                                        preexec_fn=_die_with_parent if self.die_with_parent
                                        else None)
            finally:
                if stdout is not log:
                    stdout.close()
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
        return ExecResult(rc=rc, cpu_seconds=cpu[0], node=platform.node())


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) in the child (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


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
