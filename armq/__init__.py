"""armq: trained PyTorch CNNs to ARM CPUs in INT8, measured.

The stages live in the top-level packages zoo, export, quant, android_bench and deploy
(each CLI runs as `python -m <module>`); this package holds the `armq` command that
dispatches to them (armq/cli.py), and re-exports where the shipped assets are
(`assets_dir()`, at home in zoo/assets.py).
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
    """The shipped assets (`weights/`, `data/`); its home is `zoo.assets.assets_dir`, so
    the lower packages can ask without importing armq."""
    from zoo.assets import assets_dir as _assets_dir

    return _assets_dir()
