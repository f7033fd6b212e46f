"""deploy as a library: `deploy(DeployConfig(...))` runs the whole pipeline (cost, exports,
INT8, accuracy, benchmarks, comparisons, report) into a new run folder and returns where
everything went. `python -m deploy` parses its flags into a `DeployConfig` and makes this
one call; its exit status is the result's `exit_code`.

    from deploy.api import DeployConfig, deploy
    res = deploy(DeployConfig(targets="local", runs=5, limit_eval=200, no_report=True))
    res.status, res.results      # "complete", runs/<ts>/results.json

Usage errors raise `SpecError` (an `ArmqError`) before the run folder exists; a stage
that fails does not raise: the run goes on, its status is "failed" (exit code 1).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from zoo.util import declare_inputs

from .cli import (PROG, check_publish, check_utf8_out, host_info, new_run_dir, point_latest,
                  print_summary)
from .devices import DevicePool, check_targets, load_devices, resolve_targets
from .executors import ArtifactMode, ExecutorKind, build as build_executor
from .plan import Plan, target_record
from .settings import REPO, DeployConfig, Settings, pick_baseline, resolve_all
from .spec import SpecError
from .stages import FAILED, RESULTS_FORMAT, Results, Runner, now_iso

__all__ = ["DeployConfig", "DeployResult", "deploy"]


@dataclass(frozen=True)
class DeployResult:
    """A finished run: its folder, results.json, report (None with no_report or when the
    renderer failed), status (complete, failed, interrupted) and the CLI's exit code."""

    run_dir: Path
    results: Path
    report: Path | None
    status: str
    exit_code: int
    document: dict = field(repr=False)


def deploy(config: DeployConfig = DeployConfig(),
           command: Sequence[str] | None = None) -> DeployResult:
    """Run the pipeline `config` asks for (`command`: recorded in results.json)."""
    t_start = time.monotonic()
    check_utf8_out(config.out)
    settings = Settings(config)
    declare_inputs(*settings.eval_data.values(), *settings.calib_data.values(),
                   outputs=[config.out])
    if config.publish is not None:
        check_publish(config.publish, config.sweep)
    planned = resolve_all(settings)
    baseline = pick_baseline(settings, planned)
    pool, executor = _scale_out(config, settings)
    try:
        return _run(config, settings, planned, baseline, pool, executor, t_start,
                    command if command is not None else ["deploy.api.deploy"])
    finally:
        executor.close()


def _scale_out(a: DeployConfig, settings: Settings) -> tuple[DevicePool | None, Any]:
    """The device pool and the executor, checked before the run folder exists."""
    kind = ExecutorKind(a.executor)
    if a.ray_address and kind is not ExecutorKind.RAY:
        raise SpecError("--ray-address needs --executor ray")
    pool = None
    if a.known_hosts is not None and a.devices is None:
        raise SpecError("--known-hosts is for the ssh boards of --devices")
    devices = load_devices(a.devices, a.known_hosts) if a.devices is not None else None
    # boards and phones by inventory name (`ssh` / `adb`: one target per such device)
    settings.targets = resolve_targets(settings.targets, devices, f"--devices {a.devices}")
    if devices is not None:
        # local timing may stay on this machine; every other target needs a device
        check_targets(devices, [t.id for t in settings.targets if t.kind != "local"],
                      f"--devices {a.devices}")
        used = {t.id for t in settings.targets}
        pool = DevicePool([d for d in devices if d.target in used])
    resources = [d.resource for d in pool.devices] if pool else []
    return pool, build_executor(kind, settings.jobs, a.ray_address, ArtifactMode(a.ray_artifacts),
                                resources)


def _run(a: DeployConfig, settings: Settings, planned: list, baseline: str | None,
         pool: DevicePool | None, executor: Any, t_start: float,
         command: Sequence[str]) -> DeployResult:
    run_dir = new_run_dir(a.out)
    executor.bind(run_dir)
    doc = {"format": RESULTS_FORMAT,
           "run": {"id": run_dir.name, "dir": str(run_dir), "started": now_iso(), "finished": None,
                   "status": "running", "command": list(command),
                   "host": host_info(), "repo": str(REPO),
                   "executor": executor.describe(),
                   "devices": [d.name for d in pool.devices] if pool else None},
           "config": settings.to_dict(), "baseline": baseline,
           "targets": [target_record(t) for t in settings.targets],
           "models": {p.tag: {"spec": p.spec.text, "name": p.spec.name, "dataset": p.dataset,
                              "variant": p.variant.to_dict()} for p in planned},
           "stages": [], "notes": []}
    results = Results(run_dir / "results.json", doc)
    plan = Plan(settings, planned, run_dir, results, baseline)
    plan.side_by_side = settings.jobs > 1 and executor.shares_files()
    # boards and phones first: their probed CPU decides their INT8 recipe (plan.stages)
    probes = plan.probe_stages()
    runner = Runner(results, run_dir, probes, jobs=settings.jobs, cwd=REPO,
                    executor=executor, devices=pool)
    if probes:
        print(f"{PROG}: probing {len(probes)} device(s) -> {run_dir}", file=sys.stderr, flush=True)
        runner.run_all([(probes, True)])
    groups = plan.stages()
    doc["notes"] = plan.notes
    all_stages = probes + [s for g, _ in groups for s in g]
    print(f"{PROG}: {len(planned)} model(s) x {len(settings.targets)} target(s), "
          f"{len(all_stages)} stages -> {run_dir}", file=sys.stderr, flush=True)
    runner.extend([s for g, _ in groups for s in g])
    runner.run_all(groups)
    doc["run"]["finished"] = now_iso()
    doc["run"]["wall_s"] = round(time.monotonic() - t_start, 1)
    failed = any(s.status == FAILED for s in all_stages)
    doc["run"]["status"] = "interrupted" if runner.interrupted else ("failed" if failed else "complete")
    results.save()
    report_path = None if a.no_report else _report(doc, run_dir, results, t_start)
    point_latest(run_dir)
    if a.publish is not None and not runner.interrupted:
        from .zoo_results import publish

        print(f"results table: {publish(doc, a.publish)}", file=sys.stderr)
    print_summary(doc, time.monotonic() - t_start, report_path)
    code = 130 if runner.interrupted else 1 if failed else 0
    return DeployResult(run_dir, run_dir / "results.json", report_path,
                        doc["run"]["status"], code, doc)


def _report(doc: dict, run_dir: Path, results: Results, t_start: float) -> Path | None:
    """report.md + report.html from results.json; a renderer failure leaves the results."""
    report_path = None
    t0 = time.monotonic()
    try:
        from .report import render
        report_path = render(run_dir / "results.json")
        doc["report"] = {"html": "report.html", "md": "report.md",
                         "seconds": round(time.monotonic() - t0, 1)}
    except KeyboardInterrupt:
        print(f"{PROG}: report not written (interrupted); results.json is complete",
              file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - the results must survive a renderer bug
        doc["report"] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{PROG}: warning: report failed: {type(e).__name__}: {e} (results.json is "
              f"complete; rerun `python -m deploy.report {run_dir / 'results.json'}`)",
              file=sys.stderr)
    doc["run"]["wall_s"] = round(time.monotonic() - t_start, 1)
    results.save()
    return report_path
