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

from zoo.util import check_not_input

from .base import (RUNNER_PATH, BenchConfig, ModelSpec, RunnerFailed, Target, TargetOptions,
                   TargetUnavailable, check_runner_exit, finish_result, load_result, run_process,
                   runner_argv)


def host_cpu_model() -> str:
    """This machine's CPU model (runner.cpu_info: /proc/cpuinfo, ARM part names)."""
    from ..runner import cpu_info

    model = cpu_info()["model"]
    return model if model != "unknown" else platform.machine()


def outputs_path(config: BenchConfig, model: ModelSpec, tag: str) -> Path | None:
    """Where fetched outputs land on the host: <out_dir>/<model file>.<tag>.outputs.npy."""
    if not config.save_outputs:
        return None
    base = Path(config.out_dir) if config.out_dir else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    dest = (base / f"{model.name}.{tag}.outputs.npy").resolve()
    check_not_input(dest)   # --outputs-dir beside the models: never over an input
    return dest


class LocalTarget(Target):
    kind: ClassVar[str] = "local"

    def __init__(self, options: TargetOptions | None = None):
        options = options or TargetOptions()
        self.python = options.python or sys.executable
        self.python_given = bool(options.python)

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
        return [self.python_for(runner_args), str(RUNNER_PATH), *runner_args]

    def python_for(self, runner_args: list[str]) -> str:
        """ExecuTorch programs run in the ExecuTorch venv (its dependencies conflict with
        the main venv's) unless --remote-python names an interpreter."""
        model = runner_args[runner_args.index("--model") + 1] if "--model" in runner_args else ""
        if model.lower().endswith(".pte") and not self.python_given:
            from export import et_venv
            try:
                return str(et_venv.et_python())
            except et_venv.EtUnavailable as e:
                raise RunnerFailed(str(e)) from None   # this model only: the others run
        return self.python

    def environment(self, config: BenchConfig) -> dict:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)       # the runner must stand alone
        return env

    def preexec(self):
        return None

    def post(self, result: dict, workdir: Path, config: BenchConfig) -> dict:
        result["timing_ms"]["clock"] = "wall"
        return result

    def stage(self, model: ModelSpec, config: BenchConfig, work: Path) -> dict:
        """Runner-side paths: model, card, inputs, json, outputs (None where unused)."""
        return {"model": str(model.path), "card": str(model.card) if model.card else None,
                "inputs": str(Path(config.inputs).resolve()) if config.inputs else None,
                "json": str(work / "result.json"),
                "outputs": str(work / "outputs.npy") if config.save_outputs else None}

    def workdir(self):
        return tempfile.TemporaryDirectory(prefix="armq-bench-")

    # ----------------------------------------------------------------------------------
    def run_model(self, model: ModelSpec, config: BenchConfig) -> dict:
        where = self.tag()
        with self.workdir() as tmp:
            work = Path(tmp)
            paths = self.stage(model, config, work)
            args = runner_argv(config, paths["model"], card=paths["card"], json_out=paths["json"],
                               inputs=paths["inputs"], outputs_npy=paths["outputs"])
            argv = self.command(args, config, work)
            proc = run_process(argv, self.timeout_for(config), what=f"{model.name} on {where}",
                               env=self.environment(config), cwd=work,
                               preexec_fn=self.preexec())
            self.check_exit(proc, model, where)
            raw = load_result(work / "result.json", model.name, where)
            result = finish_result(raw, self.describe(), model)
            dest = outputs_path(config, model, where)
            if dest:
                if not (work / "outputs.npy").is_file():
                    raise RunnerFailed(f"{model.name} on {where}: the runner saved no outputs")
                shutil.move(str(work / "outputs.npy"), dest)
                result["outputs_npy"] = str(dest)
            return self.post(result, work, config)

    def check_exit(self, proc, model: ModelSpec, where: str) -> None:
        check_runner_exit(proc.returncode, proc.stderr, model.name, where)


def make_target(options: TargetOptions) -> Target:
    return LocalTarget(options)
