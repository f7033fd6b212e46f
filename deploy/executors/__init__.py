"""Where a ready stage's command runs: the executor seam of deploy.Runner.

The Runner decides what runs when (groups, needs, skips, Ctrl-C, results.json); an
executor only runs one prepared command line and says how it ended. `local` (the
default) runs it as a child process of deploy; `ray` runs the same command line as a
Ray task on a cluster node (deploy/executors/ray.py, optional extra armq[ray]).
"""
from __future__ import annotations

from enum import Enum

from .base import ExecResult, Executor, Interrupted, Job, StageFailed

__all__ = ["ExecResult", "Executor", "ExecutorKind", "Interrupted", "Job", "StageFailed"]


class ExecutorKind(str, Enum):
    LOCAL = "local"
    RAY = "ray"


class ArtifactMode(str, Enum):
    """How a Ray worker sees the run folder: `shared` (same path on every node: one node
    always), `bytes` (inputs and outputs travel as task arguments/results with their
    sha256), `auto` (shared when every node sees the run folder, else bytes)."""
    AUTO = "auto"
    SHARED = "shared"
    BYTES = "bytes"


def build(kind: ExecutorKind, jobs: int, address: str | None = None,
          mode: ArtifactMode = ArtifactMode.AUTO, resources: list[str] | None = None) -> Executor:
    """The executor a run asked for; Ray is imported (and the cluster joined) only here."""
    if kind is ExecutorKind.RAY:
        from .ray import RayExecutor

        return RayExecutor(address, resources or [], mode)
    from .local import LocalExecutor

    return LocalExecutor(jobs)
