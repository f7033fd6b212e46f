"""The Ray executor: each ready stage's command line becomes one Ray task.

The Runner keeps the plan (groups, needs, skips, results.json, Ctrl-C); a task runs the
stage's unchanged command line on some node with `LocalExecutor` (so timeouts, log and
cleanup are the local ones) and returns how it ended. What Ray adds:
- placement: a timing stage (`Job.exclusive`) asks for every CPU of a node, so nothing
  runs beside it there; a benchmark on an inventory device asks for the custom resource
  `device:<name>` (1 per device), so it lands where the device is, one at a time;
- artifacts: `shared` when every node sees the run folder at its path (one node: always),
  else `bytes`: the run-folder files a stage reads go with the task, the files it writes
  come back as (bytes, sha256) and are installed atomically here;
- a lost worker or node mid-stage is that stage failing (tasks are never retried: a
  half-run benchmark must not be run again silently).

Workers must run the same armq checkout at the same path (the command lines name this
interpreter and the repo); env vars ARMQ_*, PYTHONPATH and OMP_NUM_THREADS are forwarded.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from zoo.util import ArmqError, atomic_output

from . import ArtifactMode
from .base import Beat, ExecResult, Interrupted, Job, StageFailed, Stop
from .local import HEARTBEAT_S, LocalExecutor

RAY_VERSION = "2.60.0"
INSTALL_HINT = f"pip install 'armq[ray]' (or pip install ray=={RAY_VERSION})"
PROBE_NAME = ".executor-probe"
FORWARD_ENV = ("PYTHONPATH", "OMP_NUM_THREADS")
DRIVER_GRACE_S = 120.0     # beyond the stage's own timeout (enforced on the worker)

Files = dict[str, tuple[bytes, str]]    # run-folder-relative path -> (content, sha256)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ArmqError(f"--executor ray: Ray is not installed here; {INSTALL_HINT}") from None
    return ray


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _remap(text: str, old: str, new: str) -> str:
    return new + text[len(old):] if text == old or text.startswith(old + os.sep) else text


def run_on_worker(job: Job, run_dir: str, inputs: Files | None, dirs: list[str],
                  drop_omp: bool) -> tuple[ExecResult, Files]:
    """The body of the Ray task (module-level: importable on every worker)."""
    if drop_omp:
        # Ray sets OMP_NUM_THREADS in its workers; the local runner's stages never had it
        os.environ.pop("OMP_NUM_THREADS", None)
    local = LocalExecutor(death_signal=signal.SIGKILL)   # a killed worker: no stage left unseen
    if inputs is None:
        return local.run(job, lambda: False, lambda el: None), {}
    scratch = tempfile.mkdtemp(prefix="armq-stage-")
    try:
        for d in dirs:      # the run folder's tree, so every path a command is given exists
            Path(scratch, d).mkdir(parents=True, exist_ok=True)
        for rel, (data, sha) in inputs.items():
            if _sha(data) != sha:
                raise StageFailed(f"input {rel} arrived damaged (sha256 mismatch)")
            dst = Path(scratch, rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        m = lambda p: None if p is None else Path(_remap(str(p), run_dir, scratch))  # noqa: E731
        job.argv = [_remap(a, run_dir, scratch) for a in job.argv]
        job.log_path, job.stdout_path = m(job.log_path), m(job.stdout_path)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        res = local.run(job, lambda: False, lambda el: None)
        out: Files = {}
        for f in sorted(Path(scratch).rglob("*")):
            if f.is_file():
                rel = str(f.relative_to(scratch))
                data = f.read_bytes()
                if rel not in inputs or inputs[rel][1] != _sha(data):
                    out[rel] = (data, _sha(data))
        return res, out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _probe(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


class RayExecutor:
    """Connects to (or starts) a Ray cluster and runs jobs there. `devices`: the inventory
    resources the sweep needs; a cluster started here declares them on this node."""

    def __init__(self, address: str | None, devices: list[str],
                 mode: ArtifactMode = ArtifactMode.AUTO):
        if address is not None:
            _check_reachable(address)           # seconds, before Ray's own import
        ray = self.ray = import_ray()
        self.run_dir = Path(".").resolve()     # set by bind() once the run folder exists
        try:
            if address is None:
                # "local": a new one-node cluster even when another runs on this machine
                ray.init(address="local", num_cpus=os.cpu_count() or 1,
                         resources={d: 1 for d in devices},
                         include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            if address is None:
                raise ArmqError(f"--executor ray: cannot start a local Ray cluster ({why})") from None
            raise ArmqError(f"--ray-address {address}: cannot join the Ray cluster ({why}; a "
                            "cluster with token authentication also needs RAY_AUTH_MODE=token "
                            "here)") from None
        have = ray.cluster_resources()
        for d in devices:
            if have.get(d, 0) < 1:
                self.close()
                raise ArmqError(f"--devices: no Ray node offers resource {d} (start the node the "
                                f"device is attached to with ray start --resources "
                                f"'{{\"{d}\": 1}}')")
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        # a timing task takes a whole node: as many CPUs as the largest node has
        self.timing_cpus = max(float((n.get("Resources") or {}).get("CPU", 1)) for n in nodes)
        self.cpus = int(have.get("CPU", 1))
        self.nodes = [n.get("NodeManagerHostname") or n.get("NodeManagerAddress") for n in nodes]
        self._task = ray.remote(max_retries=0)(run_on_worker)
        self._nodes = nodes
        self.mode = mode
        self.forward = {k: v for k, v in os.environ.items()
                        if k.startswith("ARMQ_") or k in FORWARD_ENV}
        self.drop_omp = "OMP_NUM_THREADS" not in os.environ

    def bind(self, run_dir: Path) -> None:
        """The run folder is known: settle how artifacts travel."""
        self.run_dir = Path(run_dir).resolve()
        if self.mode is ArtifactMode.AUTO:
            self.mode = self._detect(self._nodes)

    def describe(self) -> dict:
        return {"executor": "ray", "artifacts": self.mode.value, "nodes": self.nodes,
                "cpus": self.cpus, "timing_cpus": self.timing_cpus}

    def _detect(self, nodes: list[dict]) -> ArtifactMode:
        """shared when a task on every node reads back a token written here."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = secrets.token_hex(8)
        probe = self.run_dir / PROBE_NAME
        probe.write_text(token)
        try:
            task = self.ray.remote(_probe)
            refs = [task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                n["NodeID"], soft=False)).remote(str(probe), token) for n in nodes]
            return ArtifactMode.SHARED if all(self.ray.get(refs, timeout=120)) \
                else ArtifactMode.BYTES
        finally:
            probe.unlink(missing_ok=True)

    def parallelism(self) -> int:
        return self.cpus

    def shares_files(self) -> bool:
        # bytes mode sends each task a copy of the card and installs the one it returns:
        # two stages updating one card side by side would lose one update
        return self.mode is ArtifactMode.SHARED

    def close(self) -> None:
        """Stops a cluster started here; leaves a joined one running."""
        if self.ray.is_initialized():
            self.ray.shutdown()

    # -- one job -------------------------------------------------------------------------
    def _inputs(self, job: Job) -> Files:
        """The run-folder files a command may read: those its argv names and, for a model's
        stage, that model's files (tag.*) in every run-folder folder its argv names."""
        base = str(self.run_dir)
        found: set[Path] = set()
        for a in job.argv:
            p = Path(a)
            if not (a == base or a.startswith(base + os.sep)) or not p.exists():
                continue
            folder = p if p.is_dir() else p.parent
            if p.is_file():
                found.add(p)
            if job.model:
                found.update(f for f in folder.glob(f"{job.model}.*") if f.is_file())
        out: Files = {}
        for f in sorted(found):
            data = f.read_bytes()
            out[str(f.relative_to(self.run_dir))] = (data, _sha(data))
        return out

    def _install(self, files: Files) -> None:
        for rel, (data, sha) in files.items():
            dst = (self.run_dir / rel).resolve()
            if self.run_dir not in dst.parents or _sha(data) != sha:
                raise StageFailed(f"output {rel} came back damaged or outside the run folder")
            with atomic_output(dst, "wb") as f:
                f.write(data)

    def run(self, job: Job, stop: Stop, beat: Beat) -> ExecResult:
        ray = self.ray
        job.env = {**self.forward, **job.env}
        bytes_mode = self.mode is ArtifactMode.BYTES
        inputs = self._inputs(job) if bytes_mode else None
        dirs = sorted(str(d.relative_to(self.run_dir)) for d in self.run_dir.rglob("*")
                      if d.is_dir()) if bytes_mode else []
        opts: dict[str, Any] = {"num_cpus": self.timing_cpus if job.exclusive else 1}
        if job.resources:
            opts["resources"] = dict(job.resources)
        ref = self._task.options(**opts).remote(job, str(self.run_dir), inputs, dirs,
                                                 self.drop_omp)
        t0 = time.monotonic()
        next_beat = t0 + HEARTBEAT_S
        try:
            while not ray.wait([ref], timeout=0.2)[0]:
                if stop():
                    self._cancel(ref)
                    raise Interrupted()
                el = time.monotonic() - t0
                if el > job.timeout_s + DRIVER_GRACE_S:   # the worker's own timeout did not end it
                    self._cancel(ref, force=True)
                    raise StageFailed(f"no result after {el:.0f} s (Ray task cancelled)")
                if time.monotonic() >= next_beat:
                    next_beat += HEARTBEAT_S
                    beat(el)
        except KeyboardInterrupt:
            self._cancel(ref)
            raise
        try:
            res, files = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, StageFailed):
                raise StageFailed(str(cause)) from None
            raise StageFailed(f"Ray task failed: {_first_line(cause or e)}") from None
        except ray.exceptions.RayError as e:
            # WorkerCrashedError, NodeDiedError, ...: the stage's process died with its worker
            raise StageFailed(f"Ray worker lost mid-stage ({type(e).__name__})") from None
        if files:
            self._install(files)
        return res

    def _cancel(self, ref: Any, force: bool = False) -> None:
        """Cancel a running task: KeyboardInterrupt in the task stops its command (SIGINT to
        its process group, as locally); wait a little for that cleanup."""
        try:
            self.ray.cancel(ref, force=force)
            self.ray.wait([ref], timeout=30)
        except Exception:  # noqa: BLE001 - a cancel that fails must not hide the interrupt
            pass


PROBE_TIMEOUT_S = 5.0
# HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5):
# Ray's GCS and its client server speak gRPC, whose servers answer with a SETTINGS frame.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_reachable(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A host:port (or ray://host:port) nobody answers on, or where something that is not
    gRPC answers (ray.init would wait there for minutes), is one line now; `auto` is left to
    Ray (it finds a cluster started on this machine)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    tls = os.environ.get("RAY_USE_TLS", "0").lower() not in ("0", "false", "")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            if tls:                 # its handshake is Ray's to make: only reachability here
                return
            s.settimeout(timeout)
            s.sendall(_H2_PREFACE)
            head = s.recv(9)        # a frame header: length (3), type (1), flags, stream id
    except socket.timeout:
        raise ArmqError(f"--ray-address {address}: something answers there but says nothing "
                        f"Ray would ({timeout:g} s without a gRPC reply); is it a Ray head's "
                        f"port (default 6379, ray:// 10001)?") from None
    except OSError as e:
        raise ArmqError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); "
                        f"start the head with `ray start --head` or give its address") from None
    if len(head) < 4 or head[3] != 4:       # 4: SETTINGS, the first frame a server sends
        raise ArmqError(f"--ray-address {address}: the service there is not Ray (no gRPC "
                        f"reply); is it a Ray head's port (default 6379, ray:// 10001)?")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"
