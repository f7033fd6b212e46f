"""The Target interface: how the host harness gets `runner.py` run somewhere.

The harness (android_bench.cli) is kept apart from the system under test
(runner.py + a runtime on some CPU) and from the transport (a Target), as
MLPerf's LoadGen is: a Target only moves files, starts the runner with the
arguments `runner_argv` builds, fetches the result JSON back and adds what it
knows about where it ran.

Contract for a target module `android_bench/targets/<kind>.py`:

    def make_target(options: TargetOptions) -> Target

A Target subclass implements `run_model` (one model, one runner process); the
base class's `run` loops over models and keeps the results of finished models
when a later one fails (PartialResults carries them). Errors a user can fix
are ArmqError subclasses below, printed as one line by zoo.util.cli_entry.

Result dicts are the runner's JSON (format RESULT_FORMAT, see runner.py) with
a "target" section added by `finish_result`:
    {"kind": "local"|"qemu"|"ssh"|"adb", "emulated": bool, ...transport details}
Emulated targets (qemu) set emulated=True; their milliseconds are not board
latency and every report must say so.

Runner exit codes (runner.py): 0 ok, 2 user error (bad model/inputs/args),
3 runtime missing on the target, 1 internal error; the last stderr line is the
runner's one-line message.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from zoo.util import ArmqError

RUNNER_PATH = Path(__file__).resolve().parent.parent / "runner.py"
RESULT_FORMAT = "armq-bench/1"
MODEL_SUFFIXES = (".onnx", ".tflite", ".mnn", ".pte")

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_NO_RUNTIME = 0, 1, 2, 3

# Keys every finished result has (checked by finish_result).
REQUIRED_RESULT_KEYS = ("format", "model", "runtime", "input", "outputs", "timing_ms",
                        "system", "config", "warnings")


# ---- errors ------------------------------------------------------------------------------

class BenchError(ArmqError):
    """Any benchmark problem a user can act on."""


class TargetUnavailable(BenchError):
    """The target itself cannot be used (transport, emulator, board down): stop."""


class RunnerFailed(BenchError):
    """One model's run failed; other models may still run."""


class RuntimeMissing(RunnerFailed):
    """The model's runtime (onnxruntime / LiteRT) is not installed on the target."""


class RunnerTimeout(RunnerFailed):
    """The runner did not finish within the time limit (hung or far too slow)."""


class PartialResults(BenchError):
    """Some models failed. `results` holds the finished ones, `failures` the others."""

    def __init__(self, message: str, results: list[dict], failures: list[dict]):
        super().__init__(message)
        self.results = results
        self.failures = failures


# ---- configuration ---------------------------------------------------------------------

@dataclass
class BenchConfig:
    """What to measure; identical for every target."""
    threads: int = 1
    warmup: int = 10
    runs: int = 100
    profile: bool = False
    inputs: str | None = None          # host .npy of preprocessed inputs (N x input shape)
    save_outputs: bool = False         # bring the outputs back as .npy next to out_dir
    out_dir: str | None = None         # host folder for fetched outputs/profiles (temp if None)
    runtime: str = "auto"              # runner --runtime
    seed: int = 0                      # runner --seed (random inputs)
    timeout_s: float | None = None     # per model; None: the target's default
    markers: bool = False              # runner --markers (qemu sets it itself)

    def validate(self) -> "BenchConfig":
        if self.threads < 1:
            raise BenchError("--threads must be at least 1")
        if self.warmup < 0:
            raise BenchError("--warmup must be 0 or more")
        if self.runs < 1:
            raise BenchError("--runs must be at least 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise BenchError("--timeout must be positive")
        if self.inputs is not None:
            p = Path(self.inputs)
            if not p.is_file():
                raise BenchError(f"inputs file {p} not found")
            if p.suffix != ".npy":
                raise BenchError(f"inputs file {p} must be a .npy array")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TargetOptions:
    """Everything the CLI knows about where to run; each target reads what it needs."""
    cpu: str | None = None             # qemu: emulated CPU model
    host: str | None = None            # ssh: user@board
    serial: str | None = None          # adb: device serial
    python: str | None = None          # remote interpreter (default python3)
    remote_dir: str | None = None      # scratch folder on the target
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """A model file on the host and its card (None if there is none)."""
    path: Path
    card: Path | None

    @property
    def name(self) -> str:
        return self.path.name


def card_for(model_path: Path) -> Path | None:
    """`x.int8.onnx` -> `x.json` beside it, as export.card does; None if absent. A card that
    is there is validated now (export.card's one validator), before any benchmark runs."""
    from export.card import card_path_for, load_card

    c = card_path_for(model_path)
    if not c.is_file():
        return None
    load_card(c)
    return c


def resolve_models(model_paths: Sequence[str | os.PathLike]) -> list[ModelSpec]:
    """Check every model exists before anything starts; find the cards."""
    if not model_paths:
        raise BenchError("no model given (--model artifacts/x.onnx)")
    specs = []
    for m in model_paths:
        p = Path(m)
        if not p.is_file():
            raise BenchError(f"model file {p} not found")
        if p.suffix.lower() not in MODEL_SUFFIXES:
            raise BenchError(f"{p}: not an .onnx, .tflite, .mnn or .pte model")
        specs.append(ModelSpec(p.resolve(), card_for(p.resolve())))
    return specs


# ---- the runner command line ---------------------------------------------------------

def runner_argv(config: BenchConfig, model: str, *, card: str | None = None,
                json_out: str = "-", inputs: str | None = None,
                outputs_npy: str | None = None, markers: bool | None = None) -> list[str]:
    """Arguments for runner.py (without the interpreter and script), with paths as the
    target sees them. `inputs` is the target-side copy of config.inputs."""
    argv = ["--model", model, "--threads", str(config.threads), "--warmup", str(config.warmup),
            "--runs", str(config.runs), "--runtime", config.runtime, "--seed", str(config.seed),
            "--json", json_out]
    if card:
        argv += ["--card", card]
    if config.profile:
        argv.append("--profile")
    if inputs:
        argv += ["--inputs", inputs]
    if outputs_npy:
        argv += ["--outputs-npy", outputs_npy]
    if config.markers if markers is None else markers:
        argv.append("--markers")
    return argv


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def check_runner_exit(rc: int, stderr: str, model: str, where: str) -> None:
    """Turn a runner exit status into the right error (nothing when rc == 0)."""
    if rc == EXIT_OK:
        return
    msg = last_line(stderr)
    if msg.startswith("runner: error: "):
        msg = msg[len("runner: error: "):]
    if rc == EXIT_NO_RUNTIME:
        raise RuntimeMissing(f"{model} on {where}: {msg or 'runtime missing'}")
    if rc < 0 or rc >= 128:
        sig = -rc if rc < 0 else rc - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        raise RunnerFailed(f"{model} on {where}: runner killed by {name}"
                           + (f" ({msg})" if msg else ""))
    raise RunnerFailed(f"{model} on {where}: runner failed (exit {rc})"
                       + (f": {msg}" if msg else ""))


def run_process(argv: Sequence[str], timeout_s: float, *, what: str,
                env: dict | None = None, cwd: str | os.PathLike | None = None,
                on_timeout: Callable[[], None] | None = None,
                preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """Run a host process (the runner, ssh, adb, qemu) with a hard time limit.

    The child gets its own process group, so a hang kills it and its children.
    Raises RunnerTimeout with a one-line message; FileNotFoundError of the
    program becomes TargetUnavailable.
    """
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd, text=True,
                                errors="replace", start_new_session=True,
                                preexec_fn=preexec_fn)
    except FileNotFoundError:
        raise TargetUnavailable(f"{argv[0]} not found (needed for {what})") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with _suppress():
            os.killpg(proc.pid, signal.SIGKILL)
        with _suppress():
            proc.communicate(timeout=10)
        if on_timeout:
            on_timeout()
        raise RunnerTimeout(f"{what}: no result after {timeout_s:.0f} s (hung or too slow; "
                            f"raise --timeout or lower --runs)") from None
    except BaseException:
        with _suppress():
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, subprocess.SubprocessError))


def load_result(path: str | os.PathLike, model: str, where: str) -> dict:
    """Read a runner JSON written on the target and fetched back."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunnerFailed(f"{model} on {where}: the runner wrote no result") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunnerFailed(f"{model} on {where}: result is not valid JSON ({e})") from None
    return d


def parse_result(text: str, model: str, where: str) -> dict:
    """Read a runner JSON printed on stdout (`--json -`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunnerFailed(f"{model} on {where}: result is not valid JSON ({e})") from None


def finish_result(raw: dict, target: dict, model: ModelSpec) -> dict:
    """Check a runner result and add the target section and host-side model path."""
    if not isinstance(raw, dict) or raw.get("format") != RESULT_FORMAT:
        raise RunnerFailed(f"{model.name}: result is not an {RESULT_FORMAT} document "
                           f"(runner.py on the target out of date?)")
    missing = [k for k in REQUIRED_RESULT_KEYS if k not in raw]
    if missing:
        raise RunnerFailed(f"{model.name}: result lacks '{missing[0]}'")
    out = dict(raw)
    out["target"] = dict(target)
    out["model"] = dict(raw["model"], host_path=str(model.path),
                        card=str(model.card) if model.card else None)
    return out


# ---- the interface ------------------------------------------------------------------

class Target(ABC):
    """Where the runner runs. Subclasses: LocalTarget, QemuTarget, SshTarget, AdbTarget."""

    kind: ClassVar[str] = "?"
    emulated: ClassVar[bool] = False
    default_timeout_s: ClassVar[float] = 900.0
    # What the CLI uses when the user gives no --warmup/--runs (emulation is slow).
    default_warmup: ClassVar[int] = 10
    default_runs: ClassVar[int] = 100
    # Set by run(): progress messages (setup steps, copies) go here; None = quiet.
    progress: Callable[[str], None] | None = None

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    def describe(self) -> dict:
        """The "target" section of every result: kind, emulated, and transport details."""
        return {"kind": self.kind, "emulated": self.emulated}

    def check(self) -> None:
        """Fail early (TargetUnavailable) when the target cannot be used at all."""

    def timeout_for(self, config: BenchConfig) -> float:
        return config.timeout_s if config.timeout_s is not None else self.default_timeout_s

    @abstractmethod
    def run_model(self, model: ModelSpec, config: BenchConfig) -> dict:
        """Run one model; return finish_result(...). Raise RunnerFailed (model-level)
        or TargetUnavailable (stop everything)."""

    def run(self, model_paths: Sequence[str | os.PathLike], config: BenchConfig,
            progress: Callable[[str], None] | None = None) -> list[dict]:
        """Run every model in order. A model-level failure does not stop the others;
        a TargetUnavailable does. Raises PartialResults (with the finished results)
        if anything failed."""
        config.validate()
        models = resolve_models(model_paths)
        self.progress = progress
        self.check()
        results: list[dict] = []
        failures: list[dict] = []
        for i, m in enumerate(models):
            if progress:
                progress(f"[{i + 1}/{len(models)}] {m.name} on {self.kind} ...")
            t0 = time.monotonic()
            try:
                results.append(self.run_model(m, config))
            except RunnerFailed as e:
                failures.append({"model": str(m.path), "error": str(e)})
            except TargetUnavailable as e:
                failures.append({"model": str(m.path), "error": str(e)})
                failures += [{"model": str(x.path), "error": "not run"} for x in models[i + 1:]]
                break
            else:
                self.say(f"    done in {time.monotonic() - t0:.1f} s")
        if failures:
            first = next(f for f in failures if f["error"] != "not run")
            n_ok = len(results)
            tail = (f"{n_ok} of {len(models)} models finished, their results kept" if n_ok
                    else "no model finished") if len(models) > 1 else ""
            raise PartialResults(first["error"] + (f" ({tail})" if tail else ""),
                                 results, failures)
        return results
