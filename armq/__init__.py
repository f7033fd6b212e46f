"""armq: trained PyTorch CNNs to ARM CPUs in INT8, measured.

The stages live in the top-level packages zoo, export, quant, android_bench and deploy
(each CLI runs as `python -m <module>`); this package holds the `armq` command that
dispatches to them (armq/cli.py) and the one place that says where the shipped assets
are (`assets_dir()`).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["assets_dir", "version"]


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
