"""Stages of a deploy run and the machinery that runs them.

A stage is either a subprocess of one of the project's CLIs (export.onnx,
quant.ptq, android_bench, ...) or a short in-process step (cost, weights).
Subprocesses are the rule: stages talk through files anyway (models + cards),
a crash or a hang of one converter cannot take the run down, its memory is
returned when it exits, and its failure reason is the last line of its stderr
(every armq CLI ends a failure with one `prog: error: ...` line). Each stage's
full output goes to `logs/<stage>.log` in the run folder. Where a prepared
command line runs is the executor's business (deploy/executors: this machine by
default, or a Ray cluster); everything else here is the same for every executor.

`Results` owns results.json and rewrites it atomically (temp file + rename)
after every stage transition, so an interrupted run leaves a readable file.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from zoo.util import ArmqError, atomic_output

from .executors.base import Executor, Interrupted, Job, StageFailed
from .executors.local import LocalExecutor

if TYPE_CHECKING:
    from .devices import DevicePool

RESULTS_FORMAT = "armq-deploy/1"
# Stages that run on an inventory device (deploy/devices.py), holding it while they run.
DEVICE_STAGES = ("bench", "probe", "accuracy_on")

# Stage statuses. "pending" until started; "skipped" when a needed stage failed
# or the stage does not apply (random weights -> no accuracy); "interrupted" on Ctrl-C.
PENDING, RUNNING, OK, FAILED, SKIPPED, INTERRUPTED = (
    "pending", "running", "ok", "failed", "skipped", "interrupted")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def last_line(text: str) -> str:
    """The failure reason: the last non-empty line, without tqdm carriage-return noise."""
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in (text or "").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("I0000", "W0000", "WARNING: All log"))]
    return lines[-1] if lines else ""


@dataclass
class Stage:
    """One unit of work. `run` does it (in process) or `argv` names the subprocess."""

    id: str
    kind: str                          # cost, weights, export_onnx, ..., bench, compare
    model: str | None = None           # variant tag
    target: str | None = None          # bench/compare: target id
    argv: list[str] | None = None
    run: Callable[["Stage"], dict | None] | None = None
    needs: list[str] = field(default_factory=list)
    when: Callable[[], str | None] | None = None   # returns a skip reason, or None to run
    prepare: Callable[["Stage"], None] | None = None  # builds argv late (after needs)
    timeout_s: float = 3600.0
    env: dict[str, str] = field(default_factory=dict)
    after: Callable[["Stage", dict], None] | None = None  # parse outputs into results
    exclusive: bool = False            # never runs beside another stage (timing-sensitive)
    stdout_file: Path | None = None    # stdout goes here (a JSON answer), stderr to the log
    # filled while running
    status: str = PENDING
    started: str | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    reason: str | None = None
    log: str | None = None
    node: str | None = None            # host name of the machine that ran it (where timed)
    outputs: dict = field(default_factory=dict)

    def record(self) -> dict:
        d = {"id": self.id, "kind": self.kind, "model": self.model, "target": self.target,
             "status": self.status, "started": self.started,
             "seconds": None if self.seconds is None else round(self.seconds, 2),
             "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 2),
             "reason": self.reason, "log": self.log}
        if self.node:
            d["node"] = self.node
        if self.argv:
            d["command"] = [Path(a).name if i == 0 else a for i, a in enumerate(self.argv)]
        if self.outputs:
            d["outputs"] = self.outputs
        return d


class Results:
    """results.json: the run's single source of truth (see deploy.schema for the layout)."""

    def __init__(self, path: Path, doc: dict):
        self.path = path
        self.doc = doc
        self.lock = threading.RLock()

    def model(self, tag: str) -> dict:
        return self.doc["models"].setdefault(tag, {})

    def save(self) -> None:
        with self.lock:
            text = json.dumps(self.doc, indent=1, default=_jsonable)
            with atomic_output(self.path, "w") as f:
                f.write(text)
                f.write("\n")


def _jsonable(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


class Runner:
    """Runs stages in order (or a few at a time), records them, prints progress."""

    def __init__(self, results: Results, run_dir: Path, stages: list[Stage], jobs: int = 1,
                 out=sys.stderr, cwd: Path | None = None, executor: Executor | None = None,
                 devices: "DevicePool | None" = None):
        self.results = results
        self.run_dir = run_dir
        self.stages = list(stages)
        self.by_id = {s.id: s for s in stages}
        # where a prepared command runs (deploy/executors); side-by-side groups use as
        # many threads as the executor can feed (a Ray cluster: its CPUs)
        self.executor: Executor = executor or LocalExecutor(jobs)
        self.jobs = max(1, jobs, self.executor.parallelism())
        self.devices = devices
        self.out = out
        self.cwd = cwd
        self.print_lock = threading.Lock()
        self.interrupted = False
        self.done_count = 0
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._sync()

    def extend(self, stages: list[Stage]) -> None:
        """Stages planned after the first ones ran (a run's plan waits for its device
        probes: a board's INT8 recipe decides which PTQ stages there are)."""
        self.stages += stages
        self.by_id.update({s.id: s for s in stages})
        self._sync()

    # ---- bookkeeping -------------------------------------------------------------------
    def _sync(self) -> None:
        with self.results.lock:
            self.results.doc["stages"] = [s.record() for s in self.stages]
            self.results.save()

    def say(self, msg: str) -> None:
        with self.print_lock:
            print(msg, file=self.out, flush=True)

    def _label(self, s: Stage) -> str:
        what = s.kind if not s.target else f"{s.kind} {s.target}"
        return f"{what:<22} {s.model or '':<34}".rstrip()

    def _counter(self) -> str:
        n = len(self.stages)
        return f"[{self.done_count:>{len(str(n))}}/{n}]"

    def _finish(self, s: Stage, status: str, reason: str | None = None) -> None:
        s.status = status
        s.reason = reason
        with self.print_lock:
            self.done_count += 1
        t = "" if s.seconds is None else f"{s.seconds:6.1f} s" + \
            ("" if s.cpu_seconds is None else f" (cpu {s.cpu_seconds:.1f} s)")
        tag = {OK: "ok", FAILED: "FAILED", SKIPPED: "skipped", INTERRUPTED: "interrupted"}[status]
        line = f"{self._counter()} {self._label(s):<58} {tag:<8} {t}"
        if reason and status != OK:
            line += f"\n        {'why' if status == FAILED else 'note'}: {reason}"
        self.say(line)
        self._sync()

    def _measured_on(self, s: Stage) -> None:
        """Benchmarks and profiles: record in the model's entry where the figure was measured
        (the machine, and the inventory device when there is one)."""
        if s.kind not in ("bench", "opprofile") or not s.model or not s.node:
            return
        where = {"node": s.node}
        if s.outputs.get("device"):
            where["device"] = s.outputs["device"]
        with self.results.lock:
            self.results.model(s.model).setdefault("measured_on", {})[s.target or s.kind] = where

    # ---- one stage -----------------------------------------------------------------------
    def _skip_reason(self, s: Stage) -> str | None:
        for n in s.needs:
            dep = self.by_id.get(n)
            if dep is None:
                continue
            if dep.status != OK:
                return f"needs {dep.kind}" + (f" {dep.target}" if dep.target else "") + \
                    f" ({dep.status})"
        if s.when is not None:
            return s.when()
        return None

    def run_one(self, s: Stage) -> None:
        if self.interrupted:
            return
        why = self._skip_reason(s)
        if why:
            self._finish(s, SKIPPED, why)
            return
        s.status, s.started = RUNNING, now_iso()
        self._sync()    # results.json shows what is running (a reader can tell a hang)
        t0 = time.monotonic()
        try:
            if s.prepare is not None:
                s.prepare(s)
            if s.argv is not None:
                self._subprocess(s, t0)
            elif s.run is not None:
                self.say(f"    ... {self._label(s)}")
                c0 = time.thread_time()
                try:
                    out = s.run(s) or {}
                finally:
                    s.cpu_seconds = time.thread_time() - c0
                s.outputs.update(out)
            s.seconds = time.monotonic() - t0
            if s.after is not None and s.status == RUNNING:
                s.after(s, s.outputs)
            if s.status == RUNNING:
                self._measured_on(s)
                self._finish(s, OK)
        except Interrupted:
            s.seconds = time.monotonic() - t0
            self._finish(s, INTERRUPTED, "interrupted (Ctrl-C)")
        except SkipStage as e:
            s.seconds = time.monotonic() - t0
            self._finish(s, SKIPPED, str(e))
        except KeyboardInterrupt:
            s.seconds = time.monotonic() - t0
            self.interrupted = True
            self._finish(s, INTERRUPTED, "interrupted (Ctrl-C)")
            raise
        except Exception as e:  # noqa: BLE001 - a stage failing must not stop the run
            s.seconds = time.monotonic() - t0
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not isinstance(e, (ArmqError, StageFailed, OSError)):
                msg = f"{type(e).__name__}: {msg}"
            self._finish(s, FAILED, msg)

    def _subprocess(self, s: Stage, t0: float) -> None:
        log_path = self.run_dir / "logs" / f"{s.id.replace('/', '.').replace(':', '-')}.log"
        s.log = str(log_path.relative_to(self.run_dir))
        out_tmp = None
        if s.stdout_file is not None:
            Path(s.stdout_file).parent.mkdir(parents=True, exist_ok=True)
            out_tmp = Path(str(s.stdout_file) + ".part")
        job = Job(stage_id=s.id, argv=list(s.argv), log_path=log_path, model=s.model,
                  env=dict(s.env), cwd=self.cwd, stdout_path=out_tmp, timeout_s=s.timeout_s,
                  exclusive=s.exclusive)
        device = None
        if self.devices is not None and s.kind in DEVICE_STAGES and self.devices.serves(s.target):
            # the inventory's devices of this target take turns (one benchmark per device;
            # a board's probe waits for it too, and with Ray runs where the board is)
            device = self.devices.acquire(s.target, lambda: self.interrupted)
            if device is None:
                raise Interrupted()
            job.argv += device.bench_args()
            job.resources[device.resource] = 1
            s.outputs["device"] = device.name
        self.say(f"    ... {self._label(s)}" + (f" on {device.name}" if device else ""))
        try:
            res = self.executor.run(job, lambda: self.interrupted,
                                    lambda el: self.say(f"    ... {self._label(s)} still running "
                                                        f"({el:.0f} s)"))
        finally:
            if device is not None:
                self.devices.release(device)
        rc = res.rc
        s.cpu_seconds = res.cpu_seconds
        s.node = res.node
        text = log_path.read_text(errors="replace") if log_path.is_file() else ""
        s.outputs["exit_code"] = rc
        if out_tmp is not None:
            if rc == 0:
                os.replace(out_tmp, s.stdout_file)
            else:
                out_tmp.unlink(missing_ok=True)
        if rc != 0:
            reason = last_line(text) or f"exit status {rc}"
            if rc < 0:
                reason = f"killed by signal {-rc}" + (f" ({reason})" if reason else "")
            # the structured result may still hold finished parts (android_bench keeps them)
            if s.after is not None:
                try:
                    s.after(s, s.outputs)
                except Exception:  # noqa: BLE001 - the failure reason below is what matters
                    pass
            raise StageFailed(reason)

    # ---- the whole plan ------------------------------------------------------------------
    def run_all(self, groups: Sequence[tuple[Sequence[Stage], bool]]) -> None:
        """Run (stages, parallel) groups in order. A sequential group runs its stages in
        order (later ones may need earlier ones); a parallel group runs its non-exclusive
        stages `jobs` at a time, each once the stages of the group it needs have ended,
        exclusive ones alone first."""
        try:
            for group, parallel in groups:
                par = [s for s in group if not s.exclusive]
                if not parallel or self.jobs == 1 or len(par) <= 1:
                    for s in group:
                        self.run_one(s)
                        if self.interrupted:
                            break
                else:
                    for s in group:
                        if s.exclusive:
                            self.run_one(s)
                    self._parallel(par)
                if self.interrupted:
                    break
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if self.interrupted:
                for s in self.stages:
                    if s.status in (PENDING, RUNNING):
                        s.status = INTERRUPTED if s.status == RUNNING else SKIPPED
                        s.reason = "interrupted (Ctrl-C)" if s.status == INTERRUPTED else "not run (Ctrl-C)"
                self._sync()

    def _parallel(self, stages: list[Stage]) -> None:
        queue = list(stages)
        ids = {s.id for s in stages}
        turn = threading.Condition()

        def ready(s: Stage) -> bool:
            # what it needs from this group has ended (then run_one skips it if that failed)
            return all(self.by_id[n].status not in (PENDING, RUNNING) for n in s.needs if n in ids)

        def take() -> Stage | None:
            with turn:
                while queue and not self.interrupted:
                    s = next((x for x in queue if ready(x)), None)
                    if s is not None:
                        queue.remove(s)
                        return s
                    turn.wait(0.2)      # a stage it needs is running: wait for its end
                return None

        def worker():
            while not self.interrupted:
                s = take()
                if s is None:
                    return
                try:
                    self.run_one(s)
                except KeyboardInterrupt:
                    self.interrupted = True
                    return
                finally:
                    with turn:
                        turn.notify_all()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(self.jobs, len(queue)))]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
        except KeyboardInterrupt:
            self.interrupted = True     # each running stage's executor stops its command
            for t in threads:
                t.join(timeout=15)
            raise


class SkipStage(Exception):
    """Raised by a stage's prepare/run when it turns out not to apply."""
