"""Helpers shared by the export test files (not a conftest: nothing here is automatic)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ARMQ_SHARED_DATA", REPO.parent / "shared" / "data"))
IMAGES = {"cifar10": SHARED_DATA / "cifar10" / "test.tar",
          "imagenet": SHARED_DATA / "imagenet-1k-samples.tar"}
SMALL_SIZES = (64, 96, 128, 160, 224)   # ImageNet configs: the smallest the model allows


def run_module(module: str, *args, env: dict | None = None, timeout: float = 900):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def all_files(folder: Path) -> set[str]:
    """Every entry under folder, hidden temp files included."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@lru_cache(maxsize=None)
def small_input_size(model: str) -> int:
    """Smallest of SMALL_SIZES at which the ImageNet config runs a forward pass."""
    import torch

    import zoo

    for s in SMALL_SIZES:
        try:
            m = zoo.create_model(model, dataset="imagenet", input_size=s).eval()
            with torch.no_grad():
                m(torch.zeros(1, 3, s, s))
            return s
        except Exception:  # noqa: BLE001 - too small for this architecture: try the next
            continue
    return 224


def configs(model: str) -> list[tuple[str, int | None]]:
    """(dataset, input_size) pairs to export a model at: CIFAR at 32, ImageNet small."""
    return [("cifar10", None), ("imagenet", small_input_size(model))]


def real_batch(card: dict, n: int) -> np.ndarray:
    """Images of the card's dataset, preprocessed the way the card says (NCHW float32)."""
    from zoo.config import DataConfig
    from zoo.data import load_images, normalize

    pre = card["preprocessing"]
    cfg = DataConfig.from_dict({**pre, "class_names": card["class_names"]})
    li = load_images(IMAGES[cfg.dataset], cfg.resize, cfg.input_size, cfg.interpolation,
                     class_names=tuple(cfg.class_names), limit=n)
    return normalize(li.images, cfg)


def random_trained_like(model: str, dataset: str, input_size: int | None, seed: int = 1,
                        **params):
    """A zoo model with non-trivial random weights (every tensor, BN stats included)."""
    import torch

    import zoo

    torch.manual_seed(seed)
    m = zoo.create_model(model, dataset=dataset, input_size=input_size, **params)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                # Trained-like scales: activations neither vanish nor blow up with depth,
                # so logits stay O(10) as a trained net's do (the 1e-4 parity is absolute).
                if mod.weight is not None:
                    mod.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                    mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
                if mod.running_mean is not None:
                    mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                    mod.running_var.copy_(torch.rand(n, generator=g) + 1.0)
    return m.eval()


def load_json(p: Path) -> dict:
    return json.loads(Path(p).read_text())


HEAVY_PARAMS = 30_000_000  # sweep cases above this many parameters run only with -m slow


@lru_cache(maxsize=None)
def param_count(model: str, dataset: str) -> int:
    """Parameters of a zoo model's default variant, counted on the meta device (no memory)."""
    import torch

    import zoo

    try:
        with torch.device("meta"):
            m = zoo.create_model(model, dataset=dataset)
        return int(sum(p.numel() for p in m.parameters()))
    except Exception:  # noqa: BLE001 - a builder that cannot go on meta: treat as light
        return 0


def sweep_params(models, datasets=("cifar10", "imagenet")):
    """pytest.param cases for every (model, dataset); heavy ones are marked slow."""
    import pytest

    return [pytest.param(m, d, id=f"{m}-{d}",
                         marks=[pytest.mark.slow] if param_count(m, d) > HEAVY_PARAMS else [])
            for m in models for d in datasets]
