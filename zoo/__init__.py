"""armq model zoo: architectures, registry, default configs, cost model, training.

`zoo.config`, `zoo.data` and `zoo.util` are torch-free; the registry names below
are imported lazily so that importing those modules never loads torch.
"""
from __future__ import annotations

import importlib

from .config import DataConfig, Dataset, default_data_config  # noqa: F401 (torch-free)

# Family modules: importing one registers its builders.
FAMILIES = ("shufflenet", "mobilenet", "ghostnet", "mobilenext", "shiftnet", "hetconv",
            "classic", "efficientnet_lite")

_REGISTRY_NAMES = {"ModelEntry", "Param", "Variant", "ZooError", "create_model",
                   "data_config_for", "get_entry", "list_models", "register_model",
                   "resolve_variant"}


def _load_families() -> None:
    for fam in FAMILIES:
        importlib.import_module(f"{__name__}.{fam}")


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        reg = importlib.import_module(f"{__name__}._registry")
        _load_families()
        return getattr(reg, name)
    raise AttributeError(f"module 'zoo' has no attribute '{name}'")
