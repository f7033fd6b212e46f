"""armq: one command for every stage; each subcommand runs a stage CLI's main(argv).

    armq --version
    armq list                                   # = python -m zoo.list
    armq export-onnx --model shufflenet_v1 --groups 3 --out artifacts/
    armq ptq --model artifacts/<name>.onnx --calib calib.tar.gz
    armq bench --model artifacts/<name>.onnx --target local --json b.json
    armq <subcommand> --help                    # that stage's own options

A subcommand may also be named by its module (`armq export.onnx ...`). The
`python -m <module>` forms stay and take the same arguments.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

PROG = "armq"

# subcommand -> (module whose main(argv) it runs, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("zoo.list", "every model and its variants"),
    "cost": ("export.cost", "parameters and MACs of the model export builds from the same flags"),
    "train": ("zoo.train", "train a variant (writes an armq checkpoint)"),
    "float-eval": ("zoo.evaluate", "top-1 of a float checkpoint on labelled images"),
    "pretrained": ("zoo.pretrained", "published weights as an armq checkpoint"),
    "export-onnx": ("export.onnx", "torch -> ONNX, parity-checked, with a model card"),
    "export-tflite": ("export.tflite", "torch -> TFLite (needs armq[tflite])"),
    "export-mnn": ("export.mnn", "ONNX -> MNN, parity-checked against ORT (needs armq[mnn])"),
    "export-executorch": ("export.executorch", "torch -> ExecuTorch .pte, XNNPACK (make venv-executorch)"),
    "audit": ("export.audit", "op census and layout audit of an exported graph"),
    "ptq": ("quant.ptq", "post-training INT8 quantization with calibration images"),
    "ptq-executorch": ("quant.et_ptq", "ExecuTorch INT8 (XNNPACK PT2E) with calibration images"),
    "evaluate": ("quant.evaluate", "float-vs-INT8 accuracy on labelled images"),
    "bench": ("android_bench", "latency on a target: local, qemu, ssh, adb"),
    "compare": ("android_bench.compare", "speed-ups from bench JSON files"),
    "profile": ("android_bench.profile", "per-op time of a model on a target"),
    "guidelines": ("android_bench.guidelines", "ShuffleNet V2's guideline micro-benchmarks"),
    "latency-model": ("quant.latency_model", "predicted vs measured cost, gap by cause"),
    "qemu-setup": ("android_bench.qemu_setup", "prepare the QEMU aarch64 target"),
    "deploy": ("deploy", "the whole pipeline and its report"),
    "report": ("deploy.report", "rewrite a run's report from its results.json"),
}
# `armq export.onnx` = `armq export-onnx`; `armq android_bench` = `armq bench`.
BY_MODULE = {mod: name for name, (mod, _) in COMMANDS.items()}
# Modules whose main lives in a submodule (`python -m <package>` runs <package>.cli).
MAIN_MODULE = {"android_bench": "android_bench.cli", "deploy": "deploy.cli"}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {n:<{width}}  {d}  (python -m {m})" for n, (m, d) in COMMANDS.items())
    return (f"usage: {PROG} [--version] <command> [options]\n\n"
            f"Trained PyTorch CNNs to ARM CPUs in INT8, measured.\n\ncommands:\n{rows}\n\n"
            f"`{PROG} <command> --help` shows a command's options.")


def main(argv: Sequence[str] | None = None) -> int:
    from armq import version

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"{PROG} {version()}")
        return 0
    name = BY_MODULE.get(args[0], args[0])
    if name not in COMMANDS:
        print(f"{PROG}: error: unknown command '{args[0]}' (one of: {', '.join(COMMANDS)}; "
              f"`{PROG} --help` lists them)", file=sys.stderr)
        return 2
    module = COMMANDS[name][0]
    mod = importlib.import_module(MAIN_MODULE.get(module, module))
    from zoo.util import cli_entry

    cli_entry(mod.main, f"{PROG} {name}", args[1:])  # exits with the stage's status
    return 0


def entry() -> None:
    """The console script `armq` (pyproject.toml [project.scripts])."""
    try:
        rc = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `armq --help | head`: the reader left, nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 0
    sys.exit(rc)


if __name__ == "__main__":
    entry()
