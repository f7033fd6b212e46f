"""A killed deploy takes its stages with it and leaves a results.json that says so.

    python -m deploy.watchdog RUN/results.json     (started by LocalExecutor.bind; reads stdin)

SIGKILL or the OOM killer gives deploy no chance to stop its stages: they run in sessions
of their own (so that a hang is killed with its children), and the parent-death signal
each stage gets (deploy/executors/local.py) reaches the stage process only, not what it
started. This small process outlives deploy and learns from a pipe which process groups
are running: `+PGID` when a stage starts, `-PGID` when it ended, `done` when deploy ends
normally. The end of the pipe without `done` means deploy died: every live group gets
SIGTERM (the CLIs clean up their temp folders and children as on Ctrl-C), SIGKILL after
GRACE_S, and results.json's run.status becomes "killed" (its running stages "interrupted",
its pending ones "skipped"), so the run is recognisable as not finished. Standard library
only: it starts in a fraction of a second.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

GRACE_S = 5.0
KILLED = "killed"


class Watchdog:
    """deploy's side: start the watchdog process, tell it about stage process groups."""

    def __init__(self, results_path: Path):
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-m", "deploy.watchdog", str(results_path)],
            cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)   # a Ctrl-C or hang-up of the terminal is not for it

    def _send(self, line: str) -> None:
        with self.lock:
            if self.proc is None or self.proc.stdin is None:
                return
            try:
                self.proc.stdin.write(f"{line}\n".encode())
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass     # it died: the stages still get their parent-death signal

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def unwatch(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        """deploy ends normally: the watchdog exits without touching anything."""
        self._send("done")
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def stop_groups(groups: set[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM every group, SIGKILL what is left after grace_s."""
    for g in groups:
        try:
            os.killpg(g, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(g) for g in groups):
        time.sleep(0.1)
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass


def mark_killed(results_path: Path) -> None:
    """results.json of a run whose deploy died: recognisably not finished."""
    try:
        doc = json.loads(results_path.read_text())
    except (OSError, ValueError):
        return
    run = doc.get("run") if isinstance(doc, dict) else None
    if not isinstance(run, dict) or run.get("status") != "running":
        return
    run["status"] = KILLED
    run["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    for s in doc.get("stages") or []:
        if isinstance(s, dict) and s.get("status") == "running":
            s["status"], s["reason"] = "interrupted", "deploy was killed"
        elif isinstance(s, dict) and s.get("status") == "pending":
            s["status"], s["reason"] = "skipped", "not run (deploy was killed)"
    tmp = results_path.with_name(f".{results_path.name}.{os.getpid()}.killed")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, results_path)
    except OSError:
        tmp.unlink(missing_ok=True)


def watch(stream: IO[bytes], results_path: Path) -> bool:
    """Follow deploy's messages until the pipe ends; True when deploy died (no `done`)."""
    groups: set[int] = set()
    for raw in stream:
        line = raw.decode(errors="replace").strip()
        if line == "done":
            return False
        if line[:1] in "+-" and line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    stop_groups(groups)
    mark_killed(results_path)
    return True


def main(argv: list[str] | None = None) -> int:
    # zoo.clikit / zoo.util are standard library only (no torch, no numpy): still quick
    from zoo.clikit import make_parser

    p = make_parser("deploy.watchdog", __doc__)
    p.add_argument("results", type=Path, help="the run's results.json (deploy starts this)")
    args = p.parse_args(argv)
    if args.results.suffix != ".json" or not args.results.parent.is_dir():
        p.error(f"{args.results}: not a results.json in an existing run folder")
    for s in (signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)   # only the end of the pipe ends it
    watch(sys.stdin.buffer, args.results)
    return 0


if __name__ == "__main__":
    from zoo.util import cli_entry

    cli_entry(main, "deploy.watchdog")
