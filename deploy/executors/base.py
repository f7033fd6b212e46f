"""The executor interface: a Job (one prepared command line) in, an ExecResult out."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol


class StageFailed(Exception):
    """A subprocess stage ended badly; the message is its reason."""


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C elsewhere) while this stage ran; it was stopped."""


@dataclass
class Job:
    """What an executor needs to run one stage: nothing of the plan, only the command."""

    stage_id: str
    argv: list[str]
    log_path: Path                       # the command's stderr (and stdout unless below)
    model: str | None = None             # its files travel with it when artifacts are bytes
    env: dict[str, str] = field(default_factory=dict)   # on top of the executing process's
    cwd: Path | None = None
    stdout_path: Path | None = None      # stdout goes here (renamed into place by the Runner)
    timeout_s: float = 3600.0
    exclusive: bool = False              # timing: nothing may run beside it on its machine
    resources: dict[str, float] = field(default_factory=dict)   # e.g. {"device:pi5-1": 1}


@dataclass
class ExecResult:
    rc: int
    cpu_seconds: float | None = None
    node: str | None = None              # host name of the machine that ran it


Beat = Callable[[float], None]           # called now and then with the seconds elapsed
Stop = Callable[[], bool]                # True once the run is interrupted


class Executor(Protocol):
    def run(self, job: Job, stop: Stop, beat: Beat) -> ExecResult:
        """Run `job` to its end. Raises StageFailed (timeout, lost worker), Interrupted
        (stop() turned true) or KeyboardInterrupt (Ctrl-C in this thread), having stopped
        the command first."""
        ...

    def bind(self, run_dir: Path) -> None:
        """The run folder now exists (before any stage runs)."""
        ...

    def describe(self) -> dict:
        """What results.json records under run.executor."""
        ...

    def parallelism(self) -> int:
        """How many stages of a side-by-side group may usefully run at once."""
        ...

    def shares_files(self) -> bool:
        """Do side-by-side stages see one run folder (so two stages updating one model card
        take turns through export.card.card_lock), rather than copies sent back whole?"""
        ...

    def close(self) -> None:
        ...
