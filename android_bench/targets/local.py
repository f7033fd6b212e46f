"""The `local` target: runner.py in a subprocess of this machine's Python.

The runner never shares a process with the harness (no torch, no armq imports in
the measured process), exactly as on a board. `--remote-python` picks another
interpreter (e.g. a venv with a different onnxruntime).
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

from .base import (RUNNER_PATH, BenchConfig, ModelSpec, Target, TargetOptions, TargetUnavailable,
                   check_runner_exit, finish_result, load_result, run_process, runner_argv)


def host_cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def outputs_path(config: BenchConfig, model: ModelSpec, tag: str) -> Path | None:
    """Where fetched outputs land on the host: <out_dir>/<model file>.<tag>.outputs.npy."""
    if not config.save_outputs:
        return None
    base = Path(config.out_dir) if config.out_dir else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    return (base / f"{model.name}.{tag}.outputs.npy").resolve()


class LocalTarget(Target):
    kind: ClassVar[str] = "local"

    def __init__(self, options: TargetOptions | None = None):
        options = options or TargetOptions()
        self.python = options.python or sys.executable

    def describe(self) -> dict:
        return {"kind": self.kind, "emulated": False, "host": platform.node(),
                "host_cpu": host_cpu_model(), "python": self.python}

    def check(self) -> None:
        if not (shutil.which(self.python) or Path(self.python).is_file()):
            raise TargetUnavailable(f"python interpreter {self.python} not found")

    # Hooks for subclasses (qemu) ------------------------------------------------------
    def tag(self) -> str:
        return self.kind

    def command(self, runner_args: list[str], config: BenchConfig, workdir: Path) -> list[str]:
        return [self.python, str(RUNNER_PATH), *runner_args]

    def environment(self, config: BenchConfig) -> dict:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)       # the runner must stand alone
        return env

    def preexec(self):
        return None

    def post(self, result: dict, workdir: Path, config: BenchConfig) -> dict:
        result["timing_ms"]["clock"] = "wall"
        return result

    # ----------------------------------------------------------------------------------
    def run_model(self, model: ModelSpec, config: BenchConfig) -> dict:
        where = self.tag()
        with tempfile.TemporaryDirectory(prefix="armq-bench-") as tmp:
            work = Path(tmp)
            json_out = work / "result.json"
            outputs = outputs_path(config, model, where)
            args = runner_argv(config, str(model.path),
                               card=str(model.card) if model.card else None,
                               json_out=str(json_out),
                               inputs=str(Path(config.inputs).resolve()) if config.inputs else None,
                               outputs_npy=str(outputs) if outputs else None)
            argv = self.command(args, config, work)
            proc = run_process(argv, self.timeout_for(config), what=f"{model.name} on {where}",
                               env=self.environment(config), cwd=work,
                               preexec_fn=self.preexec())
            self.check_exit(proc, model, where)
            raw = load_result(json_out, model.name, where)
            result = finish_result(raw, self.describe(), model)
            if outputs:
                result["outputs_npy"] = str(outputs)
            return self.post(result, work, config)

    def check_exit(self, proc, model: ModelSpec, where: str) -> None:
        check_runner_exit(proc.returncode, proc.stderr, model.name, where)


def make_target(options: TargetOptions) -> Target:
    return LocalTarget(options)
