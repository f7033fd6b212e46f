"""armq: trained PyTorch CNNs to ARM CPUs in INT8, measured.

The stages live in the top-level packages zoo, export, quant, android_bench and deploy
(each CLI runs as `python -m <module>`); this package holds the `armq` command that
dispatches to them (armq/cli.py), re-exports where the shipped assets are
(`assets_dir()`, at home in zoo/assets.py), and the Python API (docs/api.md):
`armq.export`, `armq.quantize`, `armq.evaluate`, `armq.benchmark`, `armq.deploy` with
their option and result types, each re-exported from its stage's `api` module.
"""
from __future__ import annotations

from pathlib import Path

# The API's names -> the stage module that holds them. Loaded on first use (PEP 562), so
# `import armq` (the armq command, `armq --version`) does not import torch and every stage.
_API = {
    "ArmqError": "zoo.util",
    "ModelConfig": "export.api", "ExportOptions": "export.api", "ExportResult": "export.api",
    "export": "export.api", "to_onnx": "export.api", "to_tflite": "export.api",
    "to_mnn": "export.api",
    "PtqOptions": "quant.api", "QuantResult": "quant.api", "QuantizedFile": "quant.api",
    "QuantError": "quant.api", "Backend": "quant.api", "Method": "quant.api",
    "quantize": "quant.api",
    "EvalOptions": "quant.api", "EvalResult": "quant.api", "evaluate": "quant.api",
    "BenchOptions": "android_bench.api", "BenchResult": "android_bench.api",
    "BenchError": "android_bench.api", "TargetOptions": "android_bench.api",
    "benchmark": "android_bench.api",
    "DeployConfig": "deploy.api", "DeployResult": "deploy.api", "deploy": "deploy.api",
}

__all__ = ["assets_dir", "version", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'armq' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


def version() -> str:
    """The installed distribution's version ("unknown" when armq is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("armq")
    except PackageNotFoundError:
        return "unknown"


def assets_dir() -> Path:
    """The shipped assets (`weights/`, `data/`); its home is `zoo.assets.assets_dir`, so
    the lower packages can ask without importing armq."""
    from zoo.assets import assets_dir as _assets_dir

    return _assets_dir()
