"""Torch-free helpers every stage uses: the user-error type, atomic output
files, and the CLI wrapper that turns user errors into one line + exit 2."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Iterator, Sequence


class ArmqError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""


PROG_PREFIX = "python -m "


def prog_of(module: str) -> str:
    """'zoo.cost' or 'python -m zoo.cost' -> 'python -m zoo.cost' (every CLI's prog)."""
    return module if module.startswith(PROG_PREFIX) else PROG_PREFIX + module


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file normal permissions (mkstemp makes it 0600), then rename."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Write `path` through a temp file in the same folder, renamed on success.

    A crash or Ctrl-C leaves the previous file (if any) untouched and no partial one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ArmqError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like atomic_output, for libraries that want a file name to write to."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise ArmqError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        yield Path(tmp)
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove we can write there, before long work starts."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".armq-probe-"):
            pass
    except OSError as e:
        raise ArmqError(f"output folder {p} is not writable ({e.strerror or e})") from None
    return p


def cli_entry(main: Callable[[Sequence[str] | None], int | None], prog: str,
              argv: Sequence[str] | None = None) -> None:
    """Run a CLI main: user errors -> 'python -m prog: error: ...' and exit 2 (usage errors
    of a zoo.clikit parser included); --debug shows tracebacks."""
    prog = prog_of(prog)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("ARMQ_DEBUG") == "1"
    if "--debug" in args:
        args.remove("--debug")
    try:
        rc = main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit codes
        if debug:
            traceback.print_exc()
        user = isinstance(e, (ArmqError, FileNotFoundError, PermissionError, IsADirectoryError))
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not user:
            msg = f"internal error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2 if user else 1)
    sys.exit(rc or 0)


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
