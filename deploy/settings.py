"""What a deploy run was asked to do: the defaults, `Settings` (flags over a sweep
file over defaults, validated), and every model spec resolved against the zoo.

Pure bookkeeping: no stage runs here (deploy/plan.py turns this into stages).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from export.formats import Runtime
from zoo.util import ArmqError

from .spec import (ModelSpec, SpecError, TargetSpec, load_sweep, parse_data_arg, parse_model_list,
                   parse_target_list)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "shufflenet_v1:groups=3"
DEFAULT_DATASET = "cifar10"
DEFAULT_TARGETS = "local,qemu:cortex-a72,qemu:cortex-a76"
# Every runtime a run can use (--runtimes), and the default set. ort is always in a run:
# the ONNX export is what the other formats derive from or are checked against.
# --skip-tflite stays: it drops tflite from the set.
RUNTIMES = tuple(r.value for r in Runtime)    # export.formats: the one list of runtimes
DEFAULT_RUNTIMES = "ort,tflite"
# Per-target defaults when --runs/--warmup are not given: local timing is cheap and
# noisy (many runs); QEMU instruction counts are deterministic (few runs suffice).
# Boards and phones (ssh, adb) are real CPUs timed by the wall clock, like local.
DEFAULT_RUNS = {"local": 50, "qemu": 3, "ssh": 50, "adb": 50}
DEFAULT_WARMUP = {"local": 5, "qemu": 1, "ssh": 5, "adb": 5}
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
# The ONNX INT8 file each QEMU, board or phone target runs is scored again there (its own
# kernels: x86's int16 saturation or float convs do not apply there). Emulation runs
# ~0.15 s per CIFAR-10 image (ShuffleNet V1 g=3, cortex-a72), so a sample of this size.
DEFAULT_TARGET_EVAL = 200
@dataclass(frozen=True)
class DeployConfig:
    """What `python -m deploy` was asked (its flags, same names; None: the sweep file's
    value, else the default). `Settings` validates it and fills in the defaults."""

    models: str | None = None            # comma-separated specs name[:k=v...]
    sweep: Path | None = None            # TOML sweep file
    dataset: str | None = None
    targets: str | None = None           # local, qemu:<cpu>, ssh:<device>, adb:<device>
    runs: int | None = None
    warmup: int | None = None
    limit_eval: int | None = None
    target_eval: int | None = None
    runtimes: str | None = None          # ort,tflite,mnn,executorch
    skip_tflite: bool = False
    baseline: str | None = None
    num_calib: int | None = None
    num_calib_tflite: int | None = None
    litert_rewrites: frozenset | None = None
    eval_data: str | None = None
    calib_data: str | None = None
    jobs: int | None = None
    executor: str = "local"
    ray_address: str | None = None
    ray_artifacts: str = "auto"
    devices: Path | None = None
    known_hosts: Path | None = None      # known_hosts of the inventory's ssh boards
    parity_atol: float | None = None     # the exports' parity criterion (export --atol ...)
    parity_rtol: float | None = None
    parity_min_agreement: float | None = None
    out: Path = Path("runs")
    title: str | None = None
    no_report: bool = False
    publish: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DeployConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


class Settings:
    def __init__(self, a: DeployConfig):
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
        te = getattr(a, "target_eval", None)
        self.target_eval: int = te if te is not None else sweep.get("target_eval",
                                                                    DEFAULT_TARGET_EVAL)
        rt = getattr(a, "runtimes", None)
        self.runtimes: tuple[str, ...] = parse_runtimes(
            rt or sweep.get("runtimes") or DEFAULT_RUNTIMES,
            "--runtimes" if rt or not sweep.get("runtimes") else f"--sweep {a.sweep}: 'runtimes'")
        if a.skip_tflite or sweep.get("skip_tflite", False):     # = drop tflite
            self.runtimes = tuple(r for r in self.runtimes if r != "tflite")
        self.skip_tflite = "tflite" not in self.runtimes
        self.baseline = a.baseline or sweep.get("baseline")
        # the first one given (a 0 is refused below, never replaced by a default)
        given_calib = _first(a.num_calib, sweep.get("num_calib"))
        self.num_calib = _first(given_calib, DEFAULT_NUM_CALIB)
        self.num_calib_tflite = _first(a.num_calib_tflite, sweep.get("num_calib_tflite"),
                                       given_calib, DEFAULT_NUM_CALIB_TFLITE)
        self.jobs = _first(a.jobs, sweep.get("jobs"), 2)
        # export.litert_layout rewrites of the TFLite stages (None: their default)
        self.litert_rewrites = getattr(a, "litert_rewrites", None)
        self.title = a.title or sweep.get("title")
        # the exports' parity criterion (export.parity.Tolerance), passed on as their flags
        self.parity_args: tuple[str, ...] = parity_flags(a)
        # {dataset or None (all): path}: deploy.spec.parse_data_arg
        self.eval_data = parse_data_arg(a.eval_data or sweep.get("eval_data"), "--eval-data")
        self.calib_data = parse_data_arg(a.calib_data or sweep.get("calib_data"), "--calib-data")
        for name in ("runs", "num_calib", "num_calib_tflite", "jobs", "limit_eval"):
            v = getattr(self, name)
            for x in (v.values() if isinstance(v, dict) else [v]):
                if x is not None and x < 1:
                    raise SpecError(f"--{name.replace('_', '-')} must be at least 1")
        if self.target_eval < 0:
            raise SpecError("--target-eval must be 0 (off) or more")
        for x in (self.warmup.values() if isinstance(self.warmup, dict) else [self.warmup]):
            if x is not None and x < 0:
                raise SpecError("--warmup must be 0 or more")
        if self.litert_rewrites is not None and self.skip_tflite:
            raise SpecError("--litert-rewrites is for the TFLite stages, and this run has none "
                            "(--runtimes without tflite, or --skip-tflite)")
        for p in (*self.eval_data.values(), *self.calib_data.values()):
            if not p.exists():
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
                "limit_eval": self.limit_eval, "target_eval": self.target_eval,
                "skip_tflite": self.skip_tflite,
                "runtimes": list(self.runtimes),
                "baseline": self.baseline, "num_calib": self.num_calib,
                "num_calib_tflite": self.num_calib_tflite, "jobs": self.jobs,
                "sweep": self.sweep_file, "title": self.title,
                "eval_data": _show_data(self.eval_data),
                "calib_data": _show_data(self.calib_data),
                "litert_rewrites": None if self.litert_rewrites is None
                else sorted(r.value for r in self.litert_rewrites),
                "parity": list(self.parity_args)}

    def data_for(self, kind: str, dataset: str) -> Path | None:
        """The --eval-data ("test") / --calib-data ("calib") given for `dataset`, else None
        (then data_path's shipped default)."""
        given = self.eval_data if kind == "test" else self.calib_data
        return given.get(dataset, given.get(None))


def parity_flags(a: argparse.Namespace) -> tuple[str, ...]:
    """--parity-atol/-rtol/-min-agreement -> the export flags --atol/--rtol/--min-agreement."""
    out: list[str] = []
    for flag, export_flag, ok, rule in (
            ("parity_atol", "--atol", lambda v: v > 0, "positive"),
            ("parity_rtol", "--rtol", lambda v: v >= 0, "0 or more"),
            ("parity_min_agreement", "--min-agreement", lambda v: 0 <= v <= 1, "from 0 to 1")):
        v = getattr(a, flag, None)
        if v is None:
            continue
        if not ok(v):
            raise SpecError(f"--{flag.replace('_', '-')} must be {rule}")
        out += [export_flag, repr(float(v))]
    return tuple(out)


def _show_data(given: dict) -> str | None:
    if not given:
        return None
    if list(given) == [None]:
        return str(given[None])
    return ",".join(f"{k}={v}" for k, v in given.items())


def _first(*values: Any) -> Any:
    """The first value that was given (not None): a flag over the sweep over the default."""
    return next((v for v in values if v is not None), None)


def parse_runtimes(text: str | list | tuple, where: str = "--runtimes") -> tuple[str, ...]:
    """`ort,tflite,mnn` (or a sweep's list) -> the runtimes in RUNTIMES order; ort always."""
    if not isinstance(text, (str, list, tuple)):
        raise SpecError(f"{where}: expected a comma-separated list such as ort,executorch")
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(r).strip().lower() for r in items if str(r).strip()]
    bad = [r for r in names if r not in RUNTIMES]
    if bad:
        raise SpecError(f"{where}: unknown runtime '{bad[0]}' (known: {', '.join(RUNTIMES)})")
    return tuple(r for r in RUNTIMES if r in names or r == "ort")


class Planned:
    """A model spec resolved against the zoo: its variant and file tag."""

    def __init__(self, spec: ModelSpec, variant, parity_args: tuple[str, ...] = ()):
        self.spec = spec
        self.variant = variant
        self.tag = variant.tag
        self.parity_args = parity_args   # Settings.parity_args: every export gets them

    @property
    def dataset(self) -> str:
        return self.variant.dataset

    @property
    def foreign(self) -> bool:
        """The user's own model (export/source.py), not the zoo's."""
        return self.spec.source is not None

    @property
    def embedded_weights(self) -> bool:
        """A .pt2 / TorchScript / ONNX file: the weights are in the model file."""
        from export.source import SourceKind, parse_source

        return self.foreign and parse_source(str(self.spec.source)).kind in (
            SourceKind.ONNX, SourceKind.EXPORTED_PROGRAM, SourceKind.TORCHSCRIPT)

    def no_tflite_reason(self) -> str | None:
        """Why the TFLite stages cannot run for this model (litert-torch needs torch.export)."""
        from export.source import SourceError, parse_source, require_traceable

        if not self.foreign:
            return None
        try:
            require_traceable(parse_source(str(self.spec.source)), "litert-torch")
        except SourceError as e:
            return str(e)
        return None

    @property
    def source_arg(self) -> str | None:
        """The --source a stage that rebuilds the torch model is given (None: a zoo model).
        It comes from the run's own spec, never from a card."""
        return str(self.spec.source) if self.foreign else None

    def export_args(self) -> list[str]:
        """The export flags that select this model (zoo.cli.variant_argv for the zoo's)."""
        from zoo.cli import variant_argv

        if not self.foreign:
            return [*variant_argv(self.variant), *self.parity_args]
        args = ["--source", str(self.source_arg), "--model", self.spec.name,
                "--dataset", self.variant.dataset]
        if self.spec.input_size:
            args += ["--input-size", str(self.spec.input_size)]
        if self.spec.num_classes:
            args += ["--num-classes", str(self.spec.num_classes)]
        return [*args, *self.parity_args]


def resolve_all(settings: Settings) -> list[Planned]:
    """Every spec -> zoo Variant (one-line error on an unknown model or knob)."""
    import zoo

    out: list[Planned] = []
    for s in settings.models:
        ds = s.dataset or settings.dataset
        if s.source is not None:
            # export names a --source model by this Variant's tag (export/foreign.py)
            from dataclasses import replace

            from zoo._registry import Variant
            v = Variant(s.name, ds, s.input_size, s.num_classes, {})
            if s.weights and not Path(s.weights).is_file():
                raise SpecError(f"model spec '{s.text}': weights {s.weights} not found")
            # The stages run in other folders: they get absolute paths.
            out.append(Planned(replace(s, source=_absolute_source(s.source),
                                       weights=str(Path(s.weights).resolve()) if s.weights else None), v,
                               settings.parity_args))
            continue
        try:
            v = zoo.resolve_variant(s.name, ds, s.input_size, s.num_classes, **s.params)
        except ArmqError as e:
            raise SpecError(f"model spec '{s.text}': {e}") from None
        if s.weights and not Path(s.weights).is_file():
            raise SpecError(f"model spec '{s.text}': weights {s.weights} not found")
        out.append(Planned(s, v, settings.parity_args))
    tags = [p.tag for p in out]
    dup = next((t for t in tags if tags.count(t) > 1), None)
    if dup:
        raise SpecError(f"two model specs give the same model {dup}")
    return out


def _absolute_source(spec: str) -> str:
    from export.source import parse_source

    src = parse_source(spec)
    if src.path is None:
        return spec
    tail = spec[len(str(src.path)):] if spec.startswith(str(src.path)) else ""
    return str(src.path.resolve()) + tail


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
    from zoo.assets import assets_dir  # the checkout's assets/, or the copy in an installed wheel

    assets = assets_dir() / "data"
    p = assets / f"{dataset}_{kind}.tar.gz"
    if p.is_file():
        return p, None
    if kind == "calib":
        alt = assets / "cifar10_calib.tar.gz"
        if alt.is_file():
            return alt, (f"no {dataset} calibration images shipped: calibrated on the CIFAR-10 "
                         f"ones, resized as the model expects")
    return None, f"no {dataset} {kind} images shipped"
