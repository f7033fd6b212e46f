"""The one argparse factory of every armq `python -m` CLI (torch-free).

`make_parser("zoo.cost", __doc__)` gives a parser whose prog is `python -m zoo.cost`,
whose usage errors become one line through `zoo.util.cli_entry`
(`python -m zoo.cost: error: ...`, exit 2) instead of argparse's usage block, and
that has the flags every CLI shares: --version, --debug (handled by cli_entry,
listed here so --help shows it), -q/--quiet and -v/--verbose.
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

from .util import ArmqError, prog_of

VERBOSITY_ENV = "ARMQ_VERBOSITY"   # inherited by the stages `deploy` runs as subprocesses


class UsageError(ArmqError):
    """A bad command line (printed as one line by cli_entry, exit 2)."""


def armq_version() -> str:
    """The installed package's version, else pyproject's (a checkout run via PYTHONPATH)."""
    from importlib import metadata

    try:
        return metadata.version("armq")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def verbosity() -> int:
    """-1 quiet, 0 normal, 1+ verbose (as set by the last parsed command line)."""
    try:
        return int(os.environ.get(VERBOSITY_ENV, "0"))
    except ValueError:
        return 0


def set_verbosity(level: int) -> None:
    """Logging level, Python warnings and progress bars (`progress_disabled`) follow it.
    Level 0 leaves logging and warnings as they are (no handler is added)."""
    os.environ[VERBOSITY_ENV] = str(level)
    if level == 0:
        return
    if level > 0:
        logging.basicConfig(format="%(name)s: %(levelname)s: %(message)s")
    logging.getLogger().setLevel(logging.ERROR if level < 0 else
                                 logging.INFO if level == 1 else logging.DEBUG)
    if level < 0:
        warnings.simplefilter("ignore")


def progress_disabled() -> bool | None:
    """tqdm's `disable`: off when quiet, else None (tqdm: only on a terminal)."""
    return True if verbosity() < 0 else None


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are raised (as `error_type`) for cli_entry to print."""

    def __init__(self, *args: Any, error_type: type[ArmqError] = UsageError, **kw: Any):
        super().__init__(*args, **kw)
        self.error_type = error_type

    def error(self, message: str):  # type: ignore[override]
        raise self.error_type(message)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None):
        ns, rest = super().parse_known_args(args, namespace)
        if hasattr(ns, "verbose") and hasattr(ns, "quiet"):
            # No flag: keep what a parent armq process passed down (deploy's stages).
            set_verbosity(-1 if ns.quiet else ns.verbose or verbosity())
        return ns, rest


def _add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"armq {armq_version()}")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error (also ARMQ_DEBUG=1)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="less output: no progress bars, Python warnings or log lines below errors")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-vv: debug)")


def make_parser(module: str, doc: str | None = None, *,
                error_type: type[ArmqError] = UsageError, **kw: Any) -> argparse.ArgumentParser:
    """The parser of `python -m <module>`; `doc` (the module docstring) gives the
    description (its first paragraph unless `description=` is passed)."""
    if doc is not None:
        kw.setdefault("description", doc.split("\n\n")[0])
    # "resolve": a CLI that already had its own --quiet keeps it (same dest, same meaning).
    p = OneLineParser(prog=prog_of(module), error_type=error_type, conflict_handler="resolve", **kw)
    _add_common_flags(p)
    return p
