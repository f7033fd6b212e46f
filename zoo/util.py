"""Torch-free helpers every stage uses: the user-error type, atomic output
files, and the CLI wrapper that turns user errors into one line + exit 2."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


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

# The files this CLI run reads and must never replace. Each CLI declares them once
# (declare_inputs) after parsing; atomic_output/atomic_paths check every target against
# them, so a writer cannot forget. Only while cli_entry runs a CLI: a main() called as a
# library (tests, deploy in-process steps) must not leave inputs behind for later writes.
_run_inputs: list[Path] | None = None


def declare_inputs(*paths: str | os.PathLike | None,
                   outputs: Sequence[str | os.PathLike | None] = ()) -> None:
    """Register this run's read-only inputs (None and '-' are skipped) and check the output
    files named on the command line against them now, before any work. A document the CLI
    updates in place on purpose (quant.ptq's model card) is not an input in this sense."""
    given = [Path(p) for p in paths if p is not None and str(p) not in ("", "-")]
    if _run_inputs is not None:
        _run_inputs.extend(given)
    for out in outputs:
        if out is not None and str(out) not in ("", "-"):
            check_not_input(out, given)


def same_file(a: Path, b: Path) -> bool:
    """Same file: by inode when both exist (hard links, symlinks), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_not_input(path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse (one line) to write `path` if it is one of `inputs` or of the run's declared
    inputs -- the same path, a symlink to it or a hard link of it."""
    out = Path(path)
    for src in (*map(Path, inputs), *(_run_inputs or ())):
        if same_file(out, src):
            raise ArmqError(f"output {shown(out)} is the input {shown(src)}; "
                            "name a different output file")


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
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    except BaseException:
        for tmp in tmps:
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


def _json_depth(doc: Any) -> int:
    """Nesting depth without recursion (a deep document must not blow the stack here)."""
    depth, stack = 0, [(doc, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return depth


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a user-supplied JSON file with bounded size and nesting depth.

    Every failure (missing, unreadable, too big, not UTF-8, not JSON, too deep) is one
    ArmqError line that names `what` and the file; callers check the shape themselves."""
    p = Path(path)
    cap = int(env_limit("ARMQ_MAX_JSON_MB", MAX_JSON_MB, 0.001) * 2**20)
    max_depth = int(env_limit("ARMQ_MAX_JSON_DEPTH", MAX_JSON_DEPTH, 1))
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > cap:
                raise ArmqError(f"{what} {shown(p)} is too large ({size / 2**20:.1f} MB > "
                                f"{cap / 2**20:g} MB; raise ARMQ_MAX_JSON_MB if it is genuine)")
            data = f.read(cap + 1)      # bounded: a file growing meanwhile cannot blow past it
    except FileNotFoundError:
        raise ArmqError(f"{what} {shown(p)} not found") from None
    except IsADirectoryError:
        raise ArmqError(f"{what} {shown(p)} is a folder, not a file") from None
    except OSError as e:
        raise ArmqError(f"cannot read {what} {shown(p)} ({e.strerror or e})") from None
    if len(data) > cap:
        raise ArmqError(f"{what} {shown(p)} is too large (> {cap / 2**20:g} MB)")
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

class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP (CI cancel, `timeout`, `docker stop`, a closed terminal), raised where
    the main thread is, like Ctrl-C: every CLI already stops its children, keeps what finished
    and removes its temp dirs on KeyboardInterrupt (finally blocks, context managers)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_TERM_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                      if s is not None)
_received: list[int] = []


def _on_term(signum: int, frame: object) -> None:
    # Raise once: a second signal during cleanup must not abort the cleanup itself.
    first = not _received
    _received.append(signum)
    if first:
        raise Terminated(signum)


def _install_term_handlers() -> dict[int, Any]:
    """Install _on_term; returns the previous handlers (restored when cli_entry ends, so a
    CLI run in-process, e.g. by a test, leaves its host process as it was)."""
    previous: dict[int, Any] = {}
    for s in _TERM_SIGNALS:
        try:
            old = signal.getsignal(s)
            if old is signal.SIG_IGN:
                continue    # e.g. nohup: the user asked for this signal to be ignored
            signal.signal(s, _on_term)
            previous[s] = old
        except (ValueError, OSError):   # not the main thread / platform without it
            pass
    return previous


def _restore_handlers(previous: dict[int, Any]) -> None:
    for s, old in previous.items():
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(s, old if old is not None else signal.SIG_DFL)


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _error_line(e: BaseException) -> tuple[str, bool]:
    """(message, is_user_error) for an exception that ends a CLI."""
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
        where = e.filename if e.filename is not None else None
        return ("disk full while writing" + (f" {where}" if where else "")
                + f" ({e.strerror or 'no space left on device'}); free space and rerun", True)
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
    _received.clear()
    outer, _run_inputs = _run_inputs, []
    previous = _install_term_handlers()
    try:
        _run_main(main, prog, args, debug)
    finally:
        _run_inputs = outer
        _restore_handlers(previous)


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
        signum = e.signum if isinstance(e, Terminated) else (_received[0] if _received else 0)
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
    if _received:
        # main caught the interrupt itself (deploy keeps what finished): still say which signal
        sys.exit(128 + _received[0])
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
