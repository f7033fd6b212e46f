"""Torch-free helpers every stage uses: the user-error type, atomic output
files, and the CLI wrapper that turns user errors into one line + exit 2."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import stat
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

# the CLI wrapper's signal handling and fd capture live in zoo/signals.py (re-exported)
from .signals import (Terminated, captured_native_output, install_term_handlers,  # noqa: F401
                      received, restore_handlers)


class ArmqError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""


PROG_PREFIX = "python -m "


def prog_of(module: str) -> str:
    """'zoo.cost' or 'python -m zoo.cost' -> 'python -m zoo.cost' (every CLI's prog); a
    console command with its subcommand ('armq export-onnx') is already a prog."""
    return module if module.startswith(PROG_PREFIX) or " " in module else PROG_PREFIX + module


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file normal permissions (mkstemp makes it 0600), then rename."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


# ---- no output may overwrite an input ----------------------------------------------------------

@dataclass(frozen=True)
class InputFolder:
    """A folder input: the real paths of its folders and of the files its symlinks name (no
    hard links: the atomic rename replaces an output's name, never its inode)."""
    path: Path
    dirs: frozenset[str]
    linked: frozenset[str]


def scan_folder(root: Path) -> InputFolder:
    """One walk (no recursion, each real folder once: link loops end) of an input folder."""
    dirs, linked, stack = set[str](), set[str](), [root]
    while stack:
        real = os.path.realpath(stack.pop())
        if real in dirs:
            continue
        dirs.add(real)
        with contextlib.suppress(OSError), os.scandir(real) as it:
            for e in it:
                if e.is_dir():              # a link to a folder too: the loader reads it
                    stack.append(Path(e.path))
                elif e.is_symlink():        # a file (or dangling link) somewhere else
                    linked.add(os.path.realpath(e.path))
    return InputFolder(root, frozenset(dirs), frozenset(linked))


# The files this CLI run reads and must never replace. Each CLI declares them once
# (declare_inputs) after parsing; atomic_output/atomic_paths check every target against
# them, so a writer cannot forget. Only while cli_entry runs a CLI: a main() called as a
# library (tests, deploy in-process steps) must not leave inputs behind for later writes.
_run_inputs: list[Path | InputFolder] | None = None


def declare_inputs(*paths: str | os.PathLike | None,
                   outputs: Sequence[str | os.PathLike | None] = ()) -> None:
    """Register this run's read-only inputs (None and '-' are skipped) and check the output
    files (or folders) named on the command line against them now, before any work. A document
    the CLI updates in place on purpose (quant.ptq's model card) is not an input in this sense."""
    given = [_as_input(p) for p in paths if p is not None and str(p) not in ("", "-")]
    if _run_inputs is not None:
        _run_inputs.extend(given)
    for out in outputs:
        if out is not None and str(out) not in ("", "-"):
            check_not_input(out, given)


def _as_input(p: str | os.PathLike | InputFolder) -> Path | InputFolder:
    return p if isinstance(p, InputFolder) else scan_folder(Path(p)) if os.path.isdir(p) else Path(p)


def same_file(a: Path, b: Path) -> bool:
    """Same file: by inode when both exist (hard links, symlinks), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_not_input(path: str | os.PathLike,
                    inputs: Sequence[str | os.PathLike | InputFolder] = ()) -> None:
    """Refuse (one line) to write `path` if it is one of `inputs` or of the run's declared
    inputs (the same path, a symlink to it or a hard link of it), lies in an input folder or
    is a file that a link in one names."""
    out = Path(path)
    for src in (*map(_as_input, inputs), *(_run_inputs or ())):
        if not isinstance(src, InputFolder):
            if same_file(out, src):
                raise ArmqError(f"output {shown(out)} is the input {shown(src)}; "
                                "name a different output file")
            continue
        real = Path(os.path.realpath(out))
        if any(str(d) in src.dirs for d in (real, *real.parents)):
            raise ArmqError(f"output {shown(out)} is inside the input folder {shown(src.path)}; "
                            "write it outside that folder")
        if str(real) in src.linked:
            raise ArmqError(f"output {shown(out)} is a file that a link in the input folder "
                            f"{shown(src.path)} names; name a different output file")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Write `path` through a temp file in the same folder, renamed on success.

    A crash or Ctrl-C leaves the previous file (if any) untouched and no partial one.
    Never replaces one of the run's declared inputs (declare_inputs).
    """
    path = Path(path)
    check_not_input(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ArmqError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        _publish(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _named_target(e, {tmp: path})


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like atomic_output, for libraries that want a file name to write to (a one-file
    `atomic_paths`)."""
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Several files as one transaction: yields a temp path per file (same folder as its
    target); only when the block succeeds are they renamed into place, all together.

    Every byte is written (and all space allocated) before the first rename, so a full
    disk or a kill while writing changes none of the targets; renames within a folder
    need no space. For pairs that must agree, e.g. an INT8 model and the card that
    records its sha256 (quant.ptq installs one, then saves the other)."""
    targets = [Path(p) for p in paths]
    for t in targets:
        check_not_input(t)
    tmps: list[Path] = []
    try:
        for t in targets:
            try:
                t.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{t.stem}.", suffix=t.suffix, dir=t.parent)
                os.close(fd)
            except OSError as e:
                raise ArmqError(f"cannot write to {t.parent}: {e.strerror or e}") from None
            tmps.append(Path(tmp))
        yield list(tmps)
        for tmp, t in zip(tmps, targets):
            _publish(str(tmp), t)
    except BaseException as e:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise _named_target(e, {str(tmp): t for tmp, t in zip(tmps, targets)})


def _named_target(e: BaseException, tmps: dict[str, Path]) -> BaseException:
    """A full disk while writing one of our temp files names the user's file, not the
    temp name (nor, for a copy, the source: shutil puts the source in filename and the
    destination in filename2). A file write without a name is ours when only one is open."""
    if not isinstance(e, OSError) or e.errno not in _DISK_FULL:
        return e
    names = [n for n in (e.filename2, e.filename) if n is not None]
    target = next((tmps[str(n)] for n in names if str(n) in tmps), None)
    if target is None and not names and len(tmps) == 1:
        target = next(iter(tmps.values()))
    if target is None:
        return e
    return OSError(e.errno, e.strerror, str(target)).with_traceback(e.__traceback__)


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


# ---- what a terminal shows ------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def shown(x: object) -> str:
    """`x` as text safe for one terminal line: control characters (newlines, ANSI escape
    sequences, NUL, ...) are shown repr-style (\\n, \\x1b) instead of acting on the terminal.
    Use it wherever a user-controlled name (file, member, card name) reaches a message."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(x))


PATH_PLACEHOLDER = "<dir>"


def portable_arg(word: str, base: str | os.PathLike) -> str:
    """A command-line word as a generated document prints it: an absolute path under
    `base` relative to it, any other absolute path `<dir>/<name>` (a document must run
    anywhere, and must not carry the paths of the machine that made it); `--flag=/path`
    alike; every other word unchanged."""
    flag, eq, value = word.partition("=") if word.startswith("-") else ("", "", word)
    if not value.startswith("/") or " " in value:
        return word
    p = Path(os.path.normpath(value))
    try:
        shown_path = str(p.relative_to(Path(os.path.abspath(base))))
    except ValueError:
        shown_path = f"{PATH_PLACEHOLDER}/{p.name}" if p.name else PATH_PLACEHOLDER
    return f"{flag}{eq}{shown_path}"


# ---- bounded resources on untrusted input ----------------------------------------------------

def env_limit(name: str, default: float, minimum: float = 0.0) -> float:
    """A resource cap from the environment (e.g. ARMQ_MAX_MEMBER_MB); a bad value is a user
    error naming the variable, not a silent fallback to 'no limit'."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return float(default)
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not v >= minimum or v == float("inf"):
        raise ArmqError(f"{name}={shown(raw)} is not a number >= {minimum:g}")
    return v


MAX_JSON_MB = 64.0        # ARMQ_MAX_JSON_MB: results, cards and compare inputs are far smaller
MAX_JSON_DEPTH = 64       # ARMQ_MAX_JSON_DEPTH: our documents nest < 10 deep
MAX_JSON_ITEMS = 2_000_000  # ARMQ_MAX_JSON_ITEMS: 60 MB of `[],` were 3 GB of Python lists


def _json_depth(doc: Any) -> int:
    """Nesting depth without recursion (a deep document must not blow the stack here)."""
    depth, stack = 0, [(doc, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return depth


def open_regular(path: Path, what: str) -> BinaryIO:
    """Open a user-named file, refusing anything but a regular file before a read: a FIFO or
    a device would block or never end (O_NONBLOCK: even opening a FIFO returns at once)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(mode := os.fstat(fd).st_mode):
        os.close(fd)
        kind = "a folder, not a file" if stat.S_ISDIR(mode) else "not a regular file (a FIFO?)"
        raise ArmqError(f"{what} {shown(path)} is {kind}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a user-supplied JSON file with bounded size and nesting depth.

    Every failure (missing, unreadable, too big, not UTF-8, not JSON, too deep) is one
    ArmqError line that names `what` and the file; callers check the shape themselves."""
    p = Path(path)
    cap = int(env_limit("ARMQ_MAX_JSON_MB", MAX_JSON_MB, 0.001) * 2**20)
    max_depth = int(env_limit("ARMQ_MAX_JSON_DEPTH", MAX_JSON_DEPTH, 1))
    try:
        with open_regular(p, what) as f:
            size = os.fstat(f.fileno()).st_size
            if size > cap:
                raise ArmqError(f"{what} {shown(p)} is too large ({size / 2**20:.1f} MB > "
                                f"{cap / 2**20:g} MB; raise ARMQ_MAX_JSON_MB if it is genuine)")
            data = f.read(cap + 1)      # bounded: a file growing meanwhile cannot blow past it
    except FileNotFoundError:
        raise ArmqError(f"{what} {shown(p)} not found") from None
    except OSError as e:
        raise ArmqError(f"cannot read {what} {shown(p)} ({e.strerror or e})") from None
    if len(data) > cap:
        raise ArmqError(f"{what} {shown(p)} is too large (> {cap / 2**20:g} MB)")
    # every value but the first follows a ',' or opens a container: an upper bound, cheap
    items = data.count(b",") + data.count(b"[") + data.count(b"{")
    max_items = int(env_limit("ARMQ_MAX_JSON_ITEMS", MAX_JSON_ITEMS, 1))
    if items > max_items:
        raise ArmqError(f"{what} {shown(p)} has too many values (~{items:,} > {max_items:,}; "
                        f"raise ARMQ_MAX_JSON_ITEMS if it is genuine)")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ArmqError(f"{what} {shown(p)} is nested too deeply (> {max_depth} levels)") from None
    except (UnicodeDecodeError, ValueError) as e:
        detail = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
        raise ArmqError(f"{what} {shown(p)} is not valid JSON ({shown(detail)})") from None
    if _json_depth(doc) > max_depth:
        raise ArmqError(f"{what} {shown(p)} is nested too deeply (> {max_depth} levels)")
    return doc


# ---- the CLI wrapper ---------------------------------------------------------------------------

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _error_line(e: BaseException) -> tuple[str, bool]:
    """(message, is_user_error) for an exception that ends a CLI."""
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
        # a copy (shutil) names its source in filename, the file being written in filename2
        where = e.filename2 if e.filename2 is not None else e.filename
        tmp = where is not None and Path(os.fsdecode(where)).resolve().is_relative_to(
            Path(tempfile.gettempdir()).resolve())
        return ("disk full while writing" + (f" {where}" if where else "")
                + f" ({e.strerror or 'no space left on device'}); free space "
                + ("in the temp folder (or point TMPDIR at a disk with room) " if tmp else "")
                + "and rerun", True)
    if isinstance(e, OSError) and e.errno == errno.EROFS:    # e.g. a run folder on a read-only mount
        where = e.filename2 if e.filename2 is not None else e.filename
        return (f"cannot write{f' {where}' if where else ''}: read-only file system; "
                "give an output in a writable folder", True)
    user = isinstance(e, (ArmqError, FileNotFoundError, PermissionError, IsADirectoryError))
    if isinstance(e, ArmqError) and str(e).strip():
        # ours: one line by contract, so a newline in it comes from a user-controlled name
        # and is escaped (by the caller), not a place to cut the message short
        msg = str(e).strip()
    else:
        msg = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
    if not user:
        msg = f"internal error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)"
    return msg, user


def cli_entry(main: Callable[[Sequence[str] | None], int | None], prog: str,
              argv: Sequence[str] | None = None) -> None:
    """Run a CLI main: user errors -> 'python -m prog: error: ...' and exit 2 (usage errors
    of a zoo.clikit parser included); --debug shows tracebacks.

    SIGTERM/SIGHUP are handled like Ctrl-C (cleanup runs) and exit 128+signum."""
    prog = prog_of(prog)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("ARMQ_DEBUG") == "1"
    if "--debug" in args:
        args.remove("--debug")
    global _run_inputs
    received.clear()
    outer, _run_inputs = _run_inputs, []
    previous = install_term_handlers()
    try:
        _run_main(main, prog, args, debug)
    finally:
        _run_inputs = outer
        restore_handlers(previous)


def _exit_on_broken_pipe() -> None:
    """The reader of stdout went away (`... | head -1`): not an error. As the Python docs'
    note on SIGPIPE advises, point stdout at devnull so the interpreter's final flush does
    not fail again, and exit like a process killed by SIGPIPE would report (128 + 13)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(128 + getattr(signal, "SIGPIPE", 13))


def _run_main(main: Callable[[Sequence[str] | None], int | None], prog: str, args: list[str],
              debug: bool) -> None:
    try:
        rc = main(args)
        sys.stdout.flush()      # a closed pipe shows here, inside the handler, not at exit
    except BrokenPipeError:
        _exit_on_broken_pipe()
    except SystemExit:          # argparse's --help and usage errors print, then exit
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _exit_on_broken_pipe()
        raise
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Terminated) else (received[0] if received else 0)
        if signum:
            print(f"{prog}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
            sys.exit(128 + signum)
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit codes
        if debug:
            traceback.print_exc()
        msg, user = _error_line(e)
        # An error is one line by contract: names inside it are escaped, never raw.
        print(f"{prog}: error: {shown(msg)}", file=sys.stderr)
        sys.exit(2 if user else 1)
    if received:
        # main caught the interrupt itself (deploy keeps what finished): still say which signal
        sys.exit(128 + received[0])
    sys.exit(rc or 0)
