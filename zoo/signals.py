"""Process-level helpers of the CLI wrapper (zoo.util.cli_entry): SIGTERM/SIGHUP raised as
an interrupt like Ctrl-C, and native libraries' fd 1/2 output captured. Their own module so
zoo.util stays short; zoo.util re-exports them for existing imports."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from typing import Any, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP (CI cancel, `timeout`, `docker stop`, a closed terminal), raised where
    the main thread is, like Ctrl-C: every CLI already stops its children, keeps what finished
    and removes its temp dirs on KeyboardInterrupt (finally blocks, context managers)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_TERM_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                      if s is not None)
received: list[int] = []


def on_term(signum: int, frame: object) -> None:
    # Raise once: a second signal during cleanup must not abort the cleanup itself.
    first = not received
    received.append(signum)
    if first:
        raise Terminated(signum)


def install_term_handlers() -> dict[int, Any]:
    """Install on_term; returns the previous handlers (restored when cli_entry ends, so a
    CLI run in-process, e.g. by a test, leaves its host process as it was)."""
    previous: dict[int, Any] = {}
    for s in _TERM_SIGNALS:
        try:
            old = signal.getsignal(s)
            if old is signal.SIG_IGN:
                continue    # e.g. nohup: the user asked for this signal to be ignored
            signal.signal(s, on_term)
            previous[s] = old
        except (ValueError, OSError):   # not the main thread / platform without it
            pass
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    for s, old in previous.items():
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(s, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def captured_native_output() -> Iterator[list[str]]:
    """Send fd 1/2 (C++ logging of converters) to a temp file; yields a list that
    receives the captured lines afterwards, for error messages."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())
