"""armq: trained PyTorch CNNs to ARM CPUs in INT8, measured.

The stages live in the top-level packages zoo, export, quant, android_bench and deploy
(each CLI runs as `python -m <module>`); this package holds the `armq` command that
dispatches to them (armq/cli.py), the one place that says where the shipped assets
are (`assets_dir()`), and the Python API (docs/api.md): `armq.export`, `armq.quantize`,
`armq.evaluate`, `armq.benchmark`, `armq.deploy` with their option and result types,
each re-exported from its stage's `api` module.
"""
from __future__ import annotations

from pathlib import Path

# The API's names -> the stage module that holds them. Loaded on first use (PEP 562):
# zoo and export import this package for assets_dir(), so importing the stages here
# eagerly would import them from inside themselves.
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
    """The shipped assets: `weights/` (checkpoints) and `data/` (small real data sets).

    In a checkout this is the repository's `assets/` (armq/assets is a symlink to it:
    every shipped checkpoint). An installed wheel carries a copy of the small ones only
    (pyproject.toml, [tool.setuptools.package-data]): the default ShuffleNet V1 g=3
    CIFAR-10 checkpoint and the CIFAR-10 calibration and test archives.
    """
    return Path(__file__).resolve().parent / "assets"
