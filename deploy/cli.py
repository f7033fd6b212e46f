"""python -m deploy: from trained PyTorch CNNs to INT8 on ARM, and what it bought.

    python -m deploy                                  # the shipped ShuffleNet V1 (g=3, CIFAR-10)
    python -m deploy --models shufflenet_v1:width=0.5,shufflenet_v1,alexnet --dataset imagenet
    python -m deploy --sweep deploy/table8.toml       # ShuffleNet Table 8
        [--targets local,qemu:cortex-a72,qemu:cortex-a76] [--runs N] [--warmup N]
        [--limit-eval N] [--target-eval N] [--runtimes ort,tflite,mnn,executorch] [--skip-tflite] [--baseline NAME]
        [--out runs/] [--jobs 2] [--executor local|ray [--ray-address ADDR]] [--devices deploy/devices.toml]

For every model: cost (zoo.cost) and weights (the shipped checkpoint, snapshotted,
else random init) -> export.onnx + export.tflite -> quant.ptq (ONNX Runtime
and TFLite INT8, the shipped calibration images) -> accuracy of all four files
on the test set (trained weights only; each QEMU target's ONNX INT8 file also
on a sample under that emulated core, --target-eval) -> android_bench on every
target (local: wall-clock latency + per-op profile; qemu: EMULATED time +
instruction counts) -> android_bench.compare. Writes runs/<timestamp>/results.json after
every stage (atomically: Ctrl-C leaves a readable partial run), then
report.md + report.html (+ plots) from it; `python -m deploy.report` renders
any results.json again. This module is the CLI; deploy/settings.py resolves what
was asked, deploy/plan.py turns it into stages, deploy/stages.py runs them.

Model specs are name[:key=value...] (see deploy.spec); models without shipped
weights are exported with random weights: their accuracy is skipped, cost and
latency are still measured. Exit status: 0 when every stage passed, 1 when
some failed (the report marks them), 2 on a usage error, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
from pathlib import Path
from typing import Sequence

from zoo.clikit import make_parser
from export.litert_layout import add_flag as add_litert_rewrites_flag
from zoo.util import ArmqError, check_writable_dir, cli_entry, declare_inputs, shown

from .executors import ArtifactMode, ExecutorKind
from .settings import (DEFAULT_DATASET, DEFAULT_LIMIT_EVAL, DEFAULT_MODELS, DEFAULT_NUM_CALIB,
                       DEFAULT_NUM_CALIB_TFLITE, DEFAULT_RUNS, DEFAULT_TARGETS, DEFAULT_WARMUP,
                       DEFAULT_RUNTIMES, DEFAULT_TARGET_EVAL, RANDOM_NUM_CALIB, RUNTIMES,
                       DeployConfig, Settings, pick_baseline, resolve_all)  # noqa: F401 (tests)
from .spec import DATASETS, SpecError
from .stages import FAILED, OK, SKIPPED

PROG = "deploy"


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, __doc__, error_type=SpecError)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--models", help=f"comma-separated model specs name[:k=v...] (default "
                      f"{DEFAULT_MODELS}, the shipped CIFAR-10 weights)")
    what.add_argument("--sweep", type=Path, help="TOML file with models (and optionally targets, "
                      "dataset, runs, warmup, baseline, limit_eval); flags given override it")
    p.add_argument("--dataset", choices=DATASETS, help=f"config of models whose spec names none "
                   f"(default {DEFAULT_DATASET})")
    p.add_argument("--targets", help=f"comma-separated: local, qemu:<cpu>, ssh:<device>, "
                   f"adb:<device> (ssh / adb: every such device of --devices) "
                   f"(default {DEFAULT_TARGETS})")
    p.add_argument("--runs", type=int, help="timed runs per model file (default: local "
                   f"{DEFAULT_RUNS['local']}, qemu {DEFAULT_RUNS['qemu']})")
    p.add_argument("--warmup", type=int, help="untimed runs first (default: local "
                   f"{DEFAULT_WARMUP['local']}, qemu {DEFAULT_WARMUP['qemu']})")
    p.add_argument("--limit-eval", type=int, help="evaluate accuracy on at most N test images, "
                   f"spread over the classes (default {DEFAULT_LIMIT_EVAL}; 10000 = the whole "
                   "CIFAR-10 test set)")
    p.add_argument("--target-eval", type=int, metavar="N", help="score the ONNX INT8 file each "
                   "QEMU, board or phone target runs on that target, on N test images (its own "
                   f"kernels, not this host's; default {DEFAULT_TARGET_EVAL}; 0: off)")
    p.add_argument("--runtimes", help=f"comma-separated runtimes to export, quantize, evaluate "
                   f"and benchmark: {', '.join(RUNTIMES)} (default {DEFAULT_RUNTIMES}; ort always)")
    p.add_argument("--skip-tflite", action="store_true", help="drop tflite from --runtimes "
                   "(no TFLite export/PTQ)")
    p.add_argument("--baseline", help="model (spec or name) every other is compared with "
                   "(default: alexnet when in the run)")
    p.add_argument("--num-calib", type=int, help=f"calibration images (default ONNX Runtime "
                   f"{DEFAULT_NUM_CALIB}, TFLite {DEFAULT_NUM_CALIB_TFLITE}; random-init models at "
                   f"most {RANDOM_NUM_CALIB})")
    p.add_argument("--num-calib-tflite", type=int, help="calibration images of the TFLite "
                   "backend only (default: --num-calib if given, else "
                   f"{DEFAULT_NUM_CALIB_TFLITE})")
    add_litert_rewrites_flag(p)
    p.add_argument("--parity-atol", type=float, metavar="A", help="the exports' parity "
                   "bound |exported - torch| (export's --atol; default 1e-4)")
    p.add_argument("--parity-rtol", type=float, metavar="R", help="plus R x the largest "
                   "|torch logit| (export's --rtol; e.g. 1e-5 for reparameterised nets whose "
                   "logits reach the thousands)")
    p.add_argument("--parity-min-agreement", type=float, metavar="FRACTION", help="least "
                   "share of parity images with torch's top-1 class (export's --min-agreement)")
    p.add_argument("--eval-data", metavar="PATH|DATASET=PATH,...", help="labelled test set "
                   "for every model, or per dataset, e.g. imagenet=val/ (default "
                   "assets/data/<dataset>_test.tar.gz)")
    p.add_argument("--calib-data", metavar="PATH|DATASET=PATH,...", help="calibration images, "
                   "for every model or per dataset (default assets/data/<dataset>_calib.tar.gz, "
                   "else the CIFAR-10 ones)")
    p.add_argument("--jobs", type=int, help="stages run side by side where timing allows "
                   "(accuracy and QEMU runs; never local timing) (default 2)")
    scale = p.add_argument_group("scaling out (README 'Scaling out')")
    scale.add_argument("--executor", choices=[k.value for k in ExecutorKind], default="local",
                       help="where stage commands run: local (this machine, default) or ray "
                            "(tasks on a Ray cluster; pip install 'armq[ray]')")
    scale.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (e.g. "
                       "auto, or ray://head:10001); default: start a one-node cluster here")
    scale.add_argument("--ray-artifacts", choices=[m.value for m in ArtifactMode],
                       default="auto", help="how Ray workers get and return files: shared "
                       "(they see the run folder), bytes (as task data + sha256), auto (default)")
    scale.add_argument("--devices", type=Path, metavar="FILE.toml", help="device inventory: "
                       "benchmarks of a target fan out over its devices, one at a time per device "
                       "(example: deploy/devices.toml)")
    scale.add_argument("--known-hosts", type=Path, metavar="FILE", help="known_hosts of the "
                       "inventory's ssh boards (default: armq's own, $XDG_STATE_HOME/armq/known_hosts)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default runs/)")
    p.add_argument("--title", help="report title")
    p.add_argument("--no-report", action="store_true", help="results.json only")
    p.add_argument("--publish", type=Path, metavar="FILE.md",
                   help="also write the one-row-per-model results table (+ plots in FILE/) "
                        "there, e.g. docs/results.md for the zoo sweep (deploy.zoo_results)")
    return p


# ---- the run folder -----------------------------------------------------------------------

def new_run_dir(out: Path) -> Path:
    out = check_writable_dir(out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    # mkdir without exist_ok is the claim: of runs started in the same second, each gets
    # its own folder (checking exists() first raced: FileExistsError with 6 at once).
    for i in range(1, 10_000):
        # absolute: the stages run in another folder (Runner's cwd)
        d = out.resolve() / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            d.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise ArmqError(f"no free run folder name under {out} for {stamp}")
    return d


def point_latest(run_dir: Path) -> None:
    """<out>/latest -> this run, once it finished (complete, failed or interrupted: its
    results.json is final). Not at the start: a killed deploy must not leave `latest` at a
    run that never ended. Atomic (a new link renamed over the old one), and never over a
    file or folder of the user's that happens to be called `latest`."""
    latest = run_dir.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, latest)
    except OSError:
        tmp.unlink(missing_ok=True)


def host_info() -> dict:
    from android_bench.targets.local import host_cpu_model   # one /proc/cpuinfo reader

    return {"node": platform.node(), "machine": platform.machine(), "cpu": host_cpu_model(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "nice": os.nice(0) if hasattr(os, "nice") else None}


# ---- summary -------------------------------------------------------------------------------

STAGE_ORDER = ("probe", "cost", "weights", "export_onnx", "export_tflite", "export_mnn", "quant_ort",
               "quant_tflite", "quant_mnn",
               "accuracy", "opprofile", "bench", "compare", "why_int8", "report")


def stage_times(stages: list[dict]) -> list[tuple[str, float, float, int, int]]:
    """(stage kind [+ target], wall s, cpu s, count ok, count not ok) in pipeline order."""
    acc: dict[str, list] = {}
    for s in stages:
        k = s["kind"] + (f" {s['target']}" if s.get("kind") == "bench" and s.get("target") else "")
        a = acc.setdefault(k, [0.0, 0.0, 0, 0])
        a[0] += s.get("seconds") or 0.0
        a[1] += s.get("cpu_seconds") or 0.0
        if s.get("status") == OK:
            a[2] += 1
        elif s.get("status") != SKIPPED:
            a[3] += 1
    order = {k: i for i, k in enumerate(STAGE_ORDER)}
    return sorted(((k, *v) for k, v in acc.items()),
                  key=lambda r: (order.get(r[0].split()[0], 99), r[0]))


def print_summary(doc: dict, wall: float, report: Path | None, out=sys.stdout) -> None:
    stages = doc.get("stages", [])
    n = {st: sum(1 for s in stages if s["status"] == st) for st in (OK, FAILED, SKIPPED, "interrupted")}
    print(f"\n{PROG}: {len(stages)} stages: {n[OK]} ok, {n[FAILED]} failed, {n[SKIPPED]} skipped"
          + (f", {n['interrupted']} interrupted" if n["interrupted"] else "")
          + f"; wall time {_mmss(wall)}", file=out)
    print("  per stage, summed over models (|| = ran side by side with other || stages):", file=out)
    print(f"    {'stage':<26} {'wall':>8} {'cpu':>8}", file=out)
    run = doc.get("run") or {}
    jobs = (doc.get("config") or {}).get("jobs", 1)
    par_kinds: tuple[str, ...] = ("accuracy", "bench qemu") if jobs > 1 else ()
    if jobs > 1 and (run.get("executor") or {}).get("artifacts") != "bytes":
        par_kinds += ("export_", "quant_")      # group 1 side by side (Plan.side_by_side)
    for k, secs, cpu, ok, bad in stage_times(stages):
        mark = " ||" if k.startswith(par_kinds) else ""
        print(f"    {k:<26} {secs:7.1f}s {cpu:7.1f}s{mark}" + (f"   ({bad} not ok)" if bad else ""),
              file=out)
    rep = (doc.get("report") or {}).get("seconds")
    if rep is not None:
        print(f"    {'report':<26} {rep:7.1f}s", file=out)
    load = (doc.get("run") or {}).get("host", {}).get("load_avg")
    if load and load[0] > ((doc.get("run") or {}).get("host", {}).get("cpus") or 1):
        print(f"  note: load average {load[0]:.1f} at start on {doc['run']['host'].get('cpus')} CPUs: "
              "wall times are inflated; cpu times are what the stages cost", file=out)
    for s in stages:
        if s["status"] in (FAILED, "interrupted"):
            print(f"  {s['status'].upper()}: {s['kind']}{' ' + s['target'] if s.get('target') else ''}"
                  f"{' ' + s['model'] if s.get('model') else ''}: {s.get('reason')}", file=out)
    if report is not None:
        print(f"report: {report}", file=out)
    print(f"results: {Path(doc['run']['dir']) / 'results.json'}", file=out)


def _mmss(s: float) -> str:
    return f"{int(s // 60)}m{s % 60:04.1f}s" if s >= 60 else f"{s:.1f}s"


# ---- main ----------------------------------------------------------------------------------

def check_publish(path: Path, sweep: Path | None) -> None:
    """Before any work: a .md file in a writable folder, never the sweep file read."""
    if path.suffix.lower() != ".md":
        raise ArmqError(f"--publish {path}: expected a .md file")
    declare_inputs(sweep, outputs=[path])
    check_writable_dir(path.parent)


def check_utf8_out(out: Path) -> None:
    """The run folder's path goes into every stage's command line, log and JSON file, all
    UTF-8: a name that is not (bytes from another locale) failed every stage, so refuse
    it here, before any work."""
    try:
        str(out.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(f"--out {shown(str(out))}: the path is not valid UTF-8; name a folder "
                        f"whose path is") from None


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from .api import deploy

    res = deploy(DeployConfig.from_args(a),
                 command=["python -m deploy", *(sys.argv[1:] if argv is None else argv)])
    return res.exit_code


def entry(argv: Sequence[str] | None = None) -> None:
    cli_entry(main, PROG, argv)


if __name__ == "__main__":
    entry()
