"""python -m deploy: from trained PyTorch CNNs to INT8 on ARM, and what it bought.

    python -m deploy                                  # the shipped ShuffleNet V1 (g=3, CIFAR-10)
    python -m deploy --models shufflenet_v1:width=0.5,shufflenet_v1,alexnet --dataset imagenet
    python -m deploy --sweep deploy/table8.toml       # ShuffleNet Table 8
        [--targets local,qemu:cortex-a72,qemu:cortex-a76] [--runs N] [--warmup N]
        [--limit-eval N] [--skip-tflite] [--baseline NAME] [--out runs/] [--jobs 2]

For every model: cost (zoo.cost) and weights (the shipped checkpoint, snapshotted,
else random init) -> export.onnx + export.tflite -> quant.ptq (ONNX Runtime
and TFLite INT8, the shipped calibration images) -> accuracy of all four files
on the test set (trained weights only) -> android_bench on every target
(local: wall-clock latency + per-op profile; qemu: EMULATED time + instruction
counts) -> android_bench.compare. Writes runs/<timestamp>/results.json after
every stage (atomically: Ctrl-C leaves a readable partial run), then
report.md + report.html (+ plots) from it; `python -m deploy.report` renders
any results.json again.

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
import time
from pathlib import Path
from typing import Sequence

from zoo.cli import variant_argv as variant_args
from zoo.clikit import make_parser
from zoo.util import ArmqError, check_writable_dir, cli_entry

from . import collect
from .spec import (DATASETS, ModelSpec, SpecError, TargetSpec, load_sweep, parse_model_list,
                   parse_target_list)
from .stages import (FAILED, OK, RESULTS_FORMAT, SKIPPED, Results, Runner, SkipStage, Stage,
                     now_iso)

PROG = "deploy"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "shufflenet_v1:groups=3"
DEFAULT_DATASET = "cifar10"
DEFAULT_TARGETS = "local,qemu:cortex-a72,qemu:cortex-a76"
# Per-target defaults when --runs/--warmup are not given: local timing is cheap and
# noisy (many runs); QEMU instruction counts are deterministic (few runs suffice).
DEFAULT_RUNS = {"local": 50, "qemu": 3}
DEFAULT_WARMUP = {"local": 5, "qemu": 1}
DEFAULT_NUM_CALIB = 500     # ONNX Runtime: calibration costs ~0.02 s CPU per image
# TFLite (PT2E): the observed torch graph costs ~0.5 s CPU per image on a 2-core x86, so
# 500 images alone would take 4+ minutes; 100 class-balanced images set minmax ranges
# that lose no more accuracy here (see the report's agreement numbers).
DEFAULT_NUM_CALIB_TFLITE = 100
RANDOM_NUM_CALIB = 100      # random-init models: calibration only sets ranges
# Accuracy on a class-balanced subset of the 10k test images by default: the ARM64
# INT8 ONNX graph runs ~10 ms per image on x86 (reference int8 kernels), 10k images
# of four files would cost ~2 minutes alone. --limit-eval 10000 for the full set.
DEFAULT_LIMIT_EVAL = 2000
PROFILE_RUNS = 20
TIMEOUTS = {"export_onnx": 1800, "export_tflite": 1800, "quant_ort": 3600, "quant_tflite": 3600,
            "accuracy": 1800, "opprofile": 900, "bench_local": 1800, "bench_qemu": 5400,
            "compare": 300}


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, __doc__, error_type=SpecError)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--models", help=f"comma-separated model specs name[:k=v...] (default "
                      f"{DEFAULT_MODELS}, the shipped CIFAR-10 weights)")
    what.add_argument("--sweep", type=Path, help="TOML file with models (and optionally targets, "
                      "dataset, runs, warmup, baseline, limit_eval); flags given override it")
    p.add_argument("--dataset", choices=DATASETS, help=f"config of models whose spec names none "
                   f"(default {DEFAULT_DATASET})")
    p.add_argument("--targets", help=f"comma-separated: local, qemu:<cpu> (default {DEFAULT_TARGETS})")
    p.add_argument("--runs", type=int, help="timed runs per model file (default: local "
                   f"{DEFAULT_RUNS['local']}, qemu {DEFAULT_RUNS['qemu']})")
    p.add_argument("--warmup", type=int, help="untimed runs first (default: local "
                   f"{DEFAULT_WARMUP['local']}, qemu {DEFAULT_WARMUP['qemu']})")
    p.add_argument("--limit-eval", type=int, help="evaluate accuracy on at most N test images, "
                   f"spread over the classes (default {DEFAULT_LIMIT_EVAL}; 10000 = the whole "
                   "CIFAR-10 test set)")
    p.add_argument("--skip-tflite", action="store_true", help="ONNX only (no TFLite export/PTQ)")
    p.add_argument("--baseline", help="model (spec or name) every other is compared with "
                   "(default: alexnet when in the run)")
    p.add_argument("--num-calib", type=int, help=f"calibration images (default ONNX Runtime "
                   f"{DEFAULT_NUM_CALIB}, TFLite {DEFAULT_NUM_CALIB_TFLITE}; random-init models at "
                   f"most {RANDOM_NUM_CALIB})")
    p.add_argument("--num-calib-tflite", type=int, help="calibration images of the TFLite "
                   "backend only (default: --num-calib if given, else "
                   f"{DEFAULT_NUM_CALIB_TFLITE})")
    p.add_argument("--eval-data", type=Path, help="labelled test set (default "
                   "assets/data/<dataset>_test.tar.gz)")
    p.add_argument("--calib-data", type=Path, help="calibration images (default "
                   "assets/data/<dataset>_calib.tar.gz, else the CIFAR-10 ones)")
    p.add_argument("--jobs", type=int, help="stages run side by side where timing allows "
                   "(accuracy and QEMU runs; never local timing) (default 2)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default runs/)")
    p.add_argument("--title", help="report title")
    p.add_argument("--no-report", action="store_true", help="results.json only")
    return p


# ---- settings ------------------------------------------------------------------------------

class Settings:
    def __init__(self, a: argparse.Namespace):
        sweep = load_sweep(a.sweep) if a.sweep else {}
        self.sweep_file = str(a.sweep) if a.sweep else None
        self.models: list[ModelSpec] = sweep.get("models") or parse_model_list(a.models or DEFAULT_MODELS)
        self.dataset: str = a.dataset or sweep.get("dataset") or DEFAULT_DATASET
        self.targets: list[TargetSpec] = parse_target_list(a.targets) if a.targets else \
            sweep.get("targets") or parse_target_list(DEFAULT_TARGETS)
        self.runs = a.runs if a.runs is not None else sweep.get("runs")
        self.warmup = a.warmup if a.warmup is not None else sweep.get("warmup")
        self.limit_eval = a.limit_eval if a.limit_eval is not None else \
            sweep.get("limit_eval", DEFAULT_LIMIT_EVAL)
        self.skip_tflite = bool(a.skip_tflite or sweep.get("skip_tflite", False))
        self.baseline = a.baseline or sweep.get("baseline")
        given_calib = a.num_calib if a.num_calib is not None else sweep.get("num_calib")
        self.num_calib = given_calib or DEFAULT_NUM_CALIB
        self.num_calib_tflite = a.num_calib_tflite or sweep.get("num_calib_tflite") or \
            given_calib or DEFAULT_NUM_CALIB_TFLITE
        self.jobs = a.jobs if a.jobs is not None else sweep.get("jobs") or 2
        self.title = a.title or sweep.get("title")
        self.eval_data = a.eval_data or (Path(sweep["eval_data"]) if sweep.get("eval_data") else None)
        self.calib_data = a.calib_data or (Path(sweep["calib_data"]) if sweep.get("calib_data") else None)
        for name in ("runs", "num_calib", "num_calib_tflite", "jobs", "limit_eval"):
            v = getattr(self, name)
            for x in (v.values() if isinstance(v, dict) else [v]):
                if x is not None and x < 1:
                    raise SpecError(f"--{name.replace('_', '-')} must be at least 1")
        for x in (self.warmup.values() if isinstance(self.warmup, dict) else [self.warmup]):
            if x is not None and x < 0:
                raise SpecError("--warmup must be 0 or more")
        for p in (self.eval_data, self.calib_data):
            if p is not None and not p.exists():
                raise SpecError(f"{p} does not exist")

    def runs_for(self, t: TargetSpec) -> int:
        """--runs for every target, or a sweep's {local = N, qemu = M}, else the defaults."""
        r = self.runs.get(t.kind) if isinstance(self.runs, dict) else self.runs
        return r if r is not None else DEFAULT_RUNS[t.kind]

    def warmup_for(self, t: TargetSpec) -> int:
        w = self.warmup.get(t.kind) if isinstance(self.warmup, dict) else self.warmup
        return w if w is not None else DEFAULT_WARMUP[t.kind]

    def to_dict(self) -> dict:
        return {"models": [m.text for m in self.models], "dataset": self.dataset,
                "targets": [t.id for t in self.targets],
                "runs": {t.id: self.runs_for(t) for t in self.targets},
                "warmup": {t.id: self.warmup_for(t) for t in self.targets},
                "limit_eval": self.limit_eval, "skip_tflite": self.skip_tflite,
                "baseline": self.baseline, "num_calib": self.num_calib,
                "num_calib_tflite": self.num_calib_tflite, "jobs": self.jobs,
                "sweep": self.sweep_file, "title": self.title,
                "eval_data": str(self.eval_data) if self.eval_data else None,
                "calib_data": str(self.calib_data) if self.calib_data else None}


class Planned:
    """A model spec resolved against the zoo: its variant and file tag."""

    def __init__(self, spec: ModelSpec, variant):
        self.spec = spec
        self.variant = variant
        self.tag = variant.tag

    @property
    def dataset(self) -> str:
        return self.variant.dataset


def resolve_all(settings: Settings) -> list[Planned]:
    """Every spec -> zoo Variant (one-line error on an unknown model or knob)."""
    import zoo

    out: list[Planned] = []
    for s in settings.models:
        ds = s.dataset or settings.dataset
        try:
            v = zoo.resolve_variant(s.name, ds, s.input_size, s.num_classes, **s.params)
        except ArmqError as e:
            raise SpecError(f"model spec '{s.text}': {e}") from None
        if s.weights and not Path(s.weights).is_file():
            raise SpecError(f"model spec '{s.text}': weights {s.weights} not found")
        out.append(Planned(s, v))
    tags = [p.tag for p in out]
    dup = next((t for t in tags if tags.count(t) > 1), None)
    if dup:
        raise SpecError(f"two model specs give the same model {dup}")
    return out


def pick_baseline(settings: Settings, planned: list[Planned]) -> str | None:
    if settings.baseline:
        b = settings.baseline
        for p in planned:
            if b in (p.tag, p.spec.text, p.spec.name):
                return p.tag
        raise SpecError(f"--baseline {b}: not one of the run's models "
                        f"({', '.join(p.spec.text for p in planned)})")
    for p in planned:
        if p.spec.name == "alexnet" and len(planned) > 1:
            return p.tag
    return None


def data_path(kind: str, dataset: str, given: Path | None) -> tuple[Path | None, str | None]:
    """(path, note): the shipped calibration / test images of a dataset."""
    if given is not None:
        return given, None
    assets = REPO / "assets" / "data"
    p = assets / f"{dataset}_{kind}.tar.gz"
    if p.is_file():
        return p, None
    if kind == "calib":
        alt = assets / "cifar10_calib.tar.gz"
        if alt.is_file():
            return alt, (f"no {dataset} calibration images shipped: calibrated on the CIFAR-10 "
                         f"ones, resized as the model expects")
    return None, f"no {dataset} {kind} images shipped"


# ---- the plan ------------------------------------------------------------------------------

class Plan:
    def __init__(self, settings: Settings, planned: list[Planned], run_dir: Path, results: Results,
                 baseline: str | None):
        self.s = settings
        self.planned = planned
        self.run_dir = run_dir
        self.art = run_dir / "artifacts"
        self.results = results
        self.baseline = baseline
        self.py = sys.executable
        self.notes: list[str] = []

    def card(self, p: Planned) -> Path:
        return self.art / f"{p.tag}.json"

    def refresh_card(self, p: Planned) -> None:
        summary = collect.summarize_card(self.card(p), self.run_dir)
        with self.results.lock:
            m = self.results.model(p.tag)
            m["card"] = summary.get("card")
            m["artifacts"] = summary.get("artifacts", {})

    def weights_kind(self, p: Planned) -> str | None:
        return (self.results.model(p.tag).get("weights") or {}).get("kind")

    # -- in-process stages --
    def run_cost(self, p: Planned):
        def run(stage: Stage) -> dict:
            import torch

            from zoo.cost import cost_of

            torch.set_num_threads(1)   # batch-1 bookkeeping run: threads only add sync waits
            rep = cost_of(p.variant)
            by_op = rep.by_op()
            cost = {"macs": rep.macs, "params": rep.params, "memory_access": rep.memory_access,
                    "input_size": rep.input_size, "by_op": by_op}
            with self.results.lock:
                self.results.model(p.tag)["cost"] = cost
            return {"macs": rep.macs}
        return run

    def run_weights(self, p: Planned):
        def run(stage: Stage) -> dict:
            from export.weights import find_shipped, load_pinned

            wdir = self.run_dir / "weights"
            if p.spec.weights:
                src, kind = Path(p.spec.weights), "given"
            else:
                hit = find_shipped(p.variant.model, dict(p.variant.params), p.variant.dataset,
                                   p.variant.num_classes)
                src, kind = (hit.path, "shipped") if hit else (None, "random")
            rec: dict = {"kind": kind}
            if src is not None:
                # Read the bytes once and keep them: the training run may rewrite the
                # shipped file at any time; every later stage uses this snapshot.
                raw = src.read_bytes()
                wdir.mkdir(parents=True, exist_ok=True)
                snap = wdir / f"{p.tag}.pt"
                snap.write_bytes(raw)
                ck = load_pinned(snap)
                rec.update(source=_show(src), snapshot=_show(snap, self.run_dir), sha256=ck.sha256)
                for k in ("metrics", "epochs_done", "epoch"):
                    if k in ck.data and isinstance(ck.data[k], (int, float, dict, str)):
                        rec[k] = ck.data[k]
            else:
                rec["note"] = "no shipped weights for this variant: random init (seed 0)"
            with self.results.lock:
                self.results.model(p.tag)["weights"] = rec
            return {"kind": kind}
        return run

    def weights_args(self, p: Planned) -> list[str]:
        snap = self.run_dir / "weights" / f"{p.tag}.pt"
        if self.weights_kind(p) in ("shipped", "given") and snap.is_file():
            return ["--weights", str(snap)]
        return ["--random-weights"]

    # -- stage list --
    def stages(self) -> list[tuple[list[Stage], bool]]:
        """(stages, parallel) groups: prepare each model (in order), time locally (alone),
        then accuracy and QEMU runs side by side, then the comparisons."""
        s = self.s
        g1: list[Stage] = []
        g2: list[Stage] = []
        g3: list[Stage] = []
        g4: list[Stage] = []
        local = [t for t in s.targets if t.kind == "local"]
        qemus = [t for t in s.targets if t.kind == "qemu"]
        for p in self.planned:
            t = p.tag
            mk = lambda kind, **kw: Stage(id=f"{t}/{kind}", kind=kind, model=t, **kw)  # noqa: E731
            g1.append(mk("cost", run=self.run_cost(p)))
            g1.append(mk("weights", run=self.run_weights(p)))
            common = [*variant_args(p.variant), "--out", str(self.art)]
            g1.append(mk("export_onnx", needs=[f"{t}/weights"], timeout_s=TIMEOUTS["export_onnx"],
                         prepare=self._argv(lambda p=p, common=common: [
                             self.py, "-m", "export.onnx", *common, *self.weights_args(p)]),
                         after=self._after_card(p)))
            if not s.skip_tflite:
                g1.append(mk("export_tflite", needs=[f"{t}/weights"],
                             timeout_s=TIMEOUTS["export_tflite"],
                             prepare=self._argv(lambda p=p, common=common: [
                                 self.py, "-m", "export.tflite", *common, *self.weights_args(p)]),
                             after=self._after_card(p)))
            p_calib, p_note = data_path("calib", p.dataset, s.calib_data)
            for backend in ("ort",) + (() if s.skip_tflite else ("tflite",)):
                needs = [f"{t}/export_onnx" if backend == "ort" else f"{t}/export_tflite"]
                g1.append(mk(f"quant_{backend}", needs=needs, timeout_s=TIMEOUTS[f"quant_{backend}"],
                             when=(lambda c=p_calib, n=p_note: n if c is None else None),
                             prepare=self._argv(lambda p=p, b=backend, c=p_calib: [
                                 self.py, "-m", "quant.ptq", "--calib", str(c), "--model", p.tag,
                                 "--backend", b, "--num-calib", str(self._num_calib(p, b)),
                                 "--out", str(self.art)]),
                             after=self._after_card(p)))
                if p_note and p_calib is not None and p_note not in self.notes:
                    self.notes.append(p_note)
            # accuracy: trained weights and a test set only
            ev, ev_note = data_path("test", p.dataset, s.eval_data)
            acc_json = self.run_dir / "accuracy" / f"{t}.json"
            g3.append(mk("accuracy", needs=[f"{t}/export_onnx"], timeout_s=TIMEOUTS["accuracy"],
                         when=self._acc_when(p, ev, ev_note),
                         env={"ARMQ_THREADS": "1"} if s.jobs > 1 else {},
                         prepare=self._argv(lambda p=p, ev=ev, acc_json=acc_json: [
                             self.py, "-m", "deploy.accuracy", "--card", str(self.card(p)),
                             "--data", str(ev), "--json", str(acc_json)]
                             + (["--limit", str(s.limit_eval)] if s.limit_eval else [])),
                         after=self._after_accuracy(p, acc_json)))
            for tg in local:
                g2.append(self._bench_stage(p, tg, exclusive=True))
                prof_json = self.run_dir / "profile" / f"{t}.json"
                g2.append(mk("opprofile", needs=[f"{t}/export_onnx"], exclusive=True,
                             timeout_s=TIMEOUTS["opprofile"],
                             prepare=self._prof_argv(p, prof_json),
                             after=self._after_profile(p, prof_json)))
            for tg in qemus:
                g3.append(self._bench_stage(p, tg, exclusive=False))
        for tg in s.targets:
            g4.append(self._compare_stage(tg))
        return [(g1, False), (g2, False), (g3, True), (g4, False)]

    def _num_calib(self, p: Planned, backend: str) -> int:
        n = self.s.num_calib_tflite if backend == "tflite" else self.s.num_calib
        return min(n, RANDOM_NUM_CALIB) if self.weights_kind(p) == "random" else n

    def _argv(self, build):
        def prepare(stage: Stage) -> None:
            stage.argv = build()
        return prepare

    def _after_card(self, p: Planned):
        def after(stage: Stage, out: dict) -> None:
            self.refresh_card(p)
        return after

    def _acc_when(self, p: Planned, ev: Path | None, ev_note: str | None):
        def when() -> str | None:
            kind = self.weights_kind(p)
            if kind == "random":
                return "random-init weights: accuracy is meaningless (cost and latency still measured)"
            if ev is None:
                return (ev_note or "no test set") + " (give --eval-data)"
            return None
        return when

    def _after_accuracy(self, p: Planned, path: Path):
        def after(stage: Stage, out: dict) -> None:
            doc = collect.read_json(path)
            if isinstance(doc, dict):
                with self.results.lock:
                    self.results.model(p.tag)["accuracy"] = {
                        "data": _show(Path(str(doc.get("data", "")))), "n": doc.get("n"),
                        "results": doc.get("results") or {}}
        return after

    def _prof_argv(self, p: Planned, out_json: Path):
        def prepare(stage: Stage) -> None:
            files = [self.art / f"{p.tag}.onnx", self.art / f"{p.tag}.int8.onnx"]
            files = [str(f) for f in files if f.is_file()]
            if not files:
                raise SkipStage("no ONNX model to profile")
            stage.argv = [self.py, "-m", "deploy.opprofile", "--model", *files,
                          "--runs", str(PROFILE_RUNS), "--json", str(out_json)]
            stage.outputs["load_avg_before"] = _load()
        return prepare

    def _after_profile(self, p: Planned, path: Path):
        def after(stage: Stage, out: dict) -> None:
            doc = collect.read_json(path)
            prof = collect.summarize_profile(doc)
            if prof:
                with self.results.lock:
                    self.results.model(p.tag)["profile"] = prof
        return after

    def _bench_stage(self, p: Planned, tg: TargetSpec, exclusive: bool) -> Stage:
        out_json = self.run_dir / "bench" / tg.slug / f"{p.tag}.json"

        def prepare(stage: Stage) -> None:
            card = collect.read_json(self.card(p)) or {}
            arts = card.get("artifacts") or {}
            files = []
            for key in collect.ARTIFACT_KEYS:
                det = arts.get(key)
                if isinstance(det, dict):
                    f = self.card(p).parent / str(det.get("path", ""))
                    if f.is_file():
                        files.append(str(f))
            if not files:
                raise SkipStage("no model file to run (every export failed)")
            argv = [self.py, "-m", "android_bench", "--model", *files, "--target", tg.kind,
                    "--runs", str(self.s.runs_for(tg)), "--warmup", str(self.s.warmup_for(tg)),
                    "--json", str(out_json)]
            if tg.cpu:
                argv += ["--cpu", tg.cpu]
            stage.argv = argv
            stage.outputs["load_avg_before"] = _load()

        def after(stage: Stage, out: dict) -> None:
            stage.outputs["load_avg_after"] = _load()
            doc = collect.read_json(out_json)
            res, fails = collect.summarize_bench(doc)
            with self.results.lock:
                b = self.results.model(p.tag).setdefault("bench", {})
                b[tg.id] = res
                if fails:
                    self.results.model(p.tag).setdefault("bench_failures", {})[tg.id] = fails
                self.results.doc.setdefault("bench_files", {}).setdefault(tg.id, {})[p.tag] = \
                    _show(out_json, self.run_dir)

        return Stage(id=f"{p.tag}/bench/{tg.id}", kind="bench", model=p.tag, target=tg.id,
                     needs=[f"{p.tag}/export_onnx"] if self.s.skip_tflite else [],
                     exclusive=exclusive, prepare=prepare, after=after,
                     timeout_s=TIMEOUTS["bench_qemu" if tg.emulated else "bench_local"])

    def _compare_stage(self, tg: TargetSpec) -> Stage:
        out_json = self.run_dir / "bench" / tg.slug / "compare.json"

        def prepare(stage: Stage) -> None:
            files = sorted((self.run_dir / "bench" / tg.slug).glob("*.json"))
            files = [f for f in files if f.name != "compare.json"]
            n_results = 0
            have_base = False
            for f in files:
                doc = collect.read_json(f) or {}
                rs = doc.get("results") or []
                n_results += len(rs)
                if self.baseline and f.stem == self.baseline and rs:
                    have_base = True
            if n_results < 2:
                raise SkipStage("fewer than two results on this target: nothing to compare")
            stage.argv = [self.py, "-m", "android_bench.compare", *map(str, files), "--json"]
            if have_base:
                stage.argv += ["--baseline", self.baseline]
            stage.stdout_file = out_json

        def after(stage: Stage, out: dict) -> None:
            doc = collect.read_json(out_json)
            if isinstance(doc, dict):
                with self.results.lock:
                    self.results.doc.setdefault("compare", {})[tg.id] = doc
        return Stage(id=f"compare/{tg.id}", kind="compare", target=tg.id, prepare=prepare,
                     after=after, timeout_s=TIMEOUTS["compare"])


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _show(p: Path, base: Path | None = None) -> str:
    base = base or REPO
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)


def new_run_dir(out: Path) -> Path:
    out = check_writable_dir(out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    d = out / stamp
    i = 2
    while d.exists():
        d = out / f"{stamp}-{i}"
        i += 1
    d.mkdir(parents=True)
    latest = out / "latest"
    try:
        if latest.is_symlink() or not latest.exists():
            if latest.is_symlink():
                latest.unlink()
            latest.symlink_to(d.name)
    except OSError:
        pass
    return d


def host_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"node": platform.node(), "machine": platform.machine(), "cpu": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "nice": os.nice(0) if hasattr(os, "nice") else None}


# ---- summary -------------------------------------------------------------------------------

STAGE_ORDER = ("cost", "weights", "export_onnx", "export_tflite", "quant_ort", "quant_tflite",
               "accuracy", "opprofile", "bench", "compare", "report")


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
    par_kinds = ("accuracy", "bench qemu") if (doc.get("config") or {}).get("jobs", 1) > 1 else ()
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

def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.monotonic()
    a = build_parser().parse_args(argv)
    settings = Settings(a)
    planned = resolve_all(settings)
    baseline = pick_baseline(settings, planned)
    run_dir = new_run_dir(a.out)
    doc = {"format": RESULTS_FORMAT,
           "run": {"id": run_dir.name, "dir": str(run_dir), "started": now_iso(), "finished": None,
                   "status": "running", "command": ["python -m deploy", *(sys.argv[1:] if argv is None
                                                                          else argv)],
                   "host": host_info(), "repo": str(REPO)},
           "config": settings.to_dict(), "baseline": baseline,
           "targets": [{"id": t.id, "kind": t.kind, "cpu": t.cpu, "emulated": t.emulated}
                       for t in settings.targets],
           "models": {p.tag: {"spec": p.spec.text, "name": p.spec.name, "dataset": p.dataset,
                              "variant": p.variant.to_dict()} for p in planned},
           "stages": [], "notes": []}
    results = Results(run_dir / "results.json", doc)
    plan = Plan(settings, planned, run_dir, results, baseline)
    groups = plan.stages()
    doc["notes"] = plan.notes
    all_stages = [s for g, _ in groups for s in g]
    print(f"{PROG}: {len(planned)} model(s) x {len(settings.targets)} target(s), "
          f"{len(all_stages)} stages -> {run_dir}", file=sys.stderr, flush=True)
    runner = Runner(results, run_dir, all_stages, jobs=settings.jobs, cwd=REPO)
    runner.run_all(groups)
    doc["run"]["finished"] = now_iso()
    doc["run"]["wall_s"] = round(time.monotonic() - t_start, 1)
    failed = any(s.status == FAILED for s in all_stages)
    doc["run"]["status"] = "interrupted" if runner.interrupted else ("failed" if failed else "complete")
    results.save()
    report_path = None
    if not a.no_report:
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
    print_summary(doc, time.monotonic() - t_start, report_path)
    if runner.interrupted:
        return 130
    return 1 if failed else 0


def entry(argv: Sequence[str] | None = None) -> None:
    cli_entry(main, PROG, argv)


if __name__ == "__main__":
    entry()
