"""MNN backend: offline INT8 of the FP32 `.mnn` model with MNN's own quantizer.

MNN's quantizer (`_tools.mnnquant`, the compiled extension; never MNN.tools, see
export/runtime.py) reads calibration *images* from a folder and preprocesses them
itself (RGB, dst = (src - mean) * normal, resized to width x height). To calibrate
on exactly the tensors every other backend sees, the card's preprocessing (resize,
centre crop) is done here: the calibration batch is turned back into its uint8
pixels (normalization is exact to invert: the round trip gives the same floats) and
written as PNGs of the model's input size, so MNN's resize is the identity and its
normalization is the card's: mean = 255 * mean, normal = 1 / (255 * std).

Methods: entropy -> MNN's "KL" (its default and the better one on the zoo: 97.8 %
top-1 agreement on 500 CIFAR-10 images for ShuffleNet V1 g=3, against 82.8 % for
"EMA"), minmax -> "EMA" (exponential moving min/max). Percentile has no MNN
counterpart; MNN's "ADMM" crashed MNN 3.6.1 (free(): invalid next size) and is not
offered. Weights: MAX_ABS, symmetric per output channel (MNN has no per-tensor mode).

`MnnBackend` is this format's side of quant.policy. MNN cannot rank layers; layers a
caller keeps in float (exclusions) are passed as MNN op names (`skip_quant_op_names`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import Method, ModelRef, QuantError, data_config
from .config import QuantConfig
from .policy import Holdout, Outcome

# MNN's feature (activation) methods for armq's methods.
FEATURE_METHOD = {Method.ENTROPY: "KL", Method.MINMAX: "EMA"}
SUPPORTED_METHODS = tuple(FEATURE_METHOD)
DEFAULT_METHOD = Method.ENTROPY
WEIGHT_METHOD = "MAX_ABS"
# MNN op types that do the arithmetic of a CNN: in float without int8 scales they are
# float islands of the INT8 model.
COMPUTE_OPS = ("Convolution", "ConvolutionDepthwise", "Deconvolution", "InnerProduct",
               "MatMul", "ADD", "BinaryOp", "Eltwise", "Pooling", "Pooling3D")
DEPTHWISE = "ConvolutionDepthwise"


def check_config(config: QuantConfig) -> None:
    """One-line errors for what MNN's quantizer cannot do, before any work."""
    bad = [m for m in config.methods if m not in SUPPORTED_METHODS]
    if bad and config.method is not Method.AUTO:
        raise QuantError(f"--backend mnn: method {bad[0].value} has no MNN counterpart "
                         f"(use {' or '.join(m.value for m in SUPPORTED_METHODS)})")
    if not config.per_channel:
        raise QuantError("--backend mnn quantizes weights per output channel only "
                         "(drop --per-tensor)")


def calib_pixels(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NHWC pixels of a normalized float NCHW batch (zoo.data.normalize inverted)."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return np.clip(np.round((x.transpose(0, 2, 3, 1) * s + m) * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class MnnCalibration:
    """What MNN calibrates from: the image folder and the method (MNN's quantizer
    calibrates and quantizes in one call, so the ranges are computed in `quantize`)."""

    method: Method
    images: Path
    count: int


class MnnBackend:
    """quant.policy's QuantBackend for MNN."""

    name = "mnn"
    exclusion_key = "skipped_ops"

    def __init__(self, ref: ModelRef, calib: np.ndarray, config: QuantConfig, work: Path):
        check_config(config)
        fp = ref.artifact("mnn")
        if fp is None:
            raise QuantError(f"{ref.name}: no FP32 MNN model in the card "
                             f"(run `python -m export.mnn --card {ref.card_path}`)")
        self.fp, self.config, self.work = fp, config, work
        cfg = data_config(ref.card)
        self.preprocess = {"format": "RGB", "mean": [255.0 * v for v in cfg.mean],
                           "normal": [1.0 / (255.0 * v) for v in cfg.std]}
        self.images = self._write_images(calib, cfg.mean, cfg.std)
        self.count = int(len(calib))
        self.size = (int(calib.shape[3]), int(calib.shape[2]))   # width, height
        self.last_config: dict = {}

    def _write_images(self, calib: np.ndarray, mean, std) -> Path:
        from PIL import Image

        folder = self.work / "calib_images"
        folder.mkdir(parents=True, exist_ok=True)
        for i, px in enumerate(calib_pixels(calib, mean, std)):
            Image.fromarray(px, "RGB").save(folder / f"{i:06d}.png")
        return folder

    # ---- QuantBackend --------------------------------------------------------------------

    def float_logits(self, x: np.ndarray) -> np.ndarray:
        from export.runtime import mnn_session

        return mnn_session(self.fp).run(x)

    def calibrate(self, method: Method) -> MnnCalibration:
        if method not in FEATURE_METHOD:
            raise QuantError(f"--backend mnn: method {method.value} has no MNN counterpart")
        return MnnCalibration(method, self.images, self.count)

    def quantize(self, ranges: MnnCalibration, method: Method, exclusions: Sequence[str],
                 tag: str) -> Path:
        from export.runtime import mnn_tools
        from zoo.util import captured_native_output

        width, height = self.size
        cfg = {**self.preprocess, "width": width, "height": height,
               "path": str(ranges.images) + "/", "used_image_num": ranges.count,
               "feature_quantize_method": FEATURE_METHOD[method],
               "weight_quantize_method": WEIGHT_METHOD,
               "skip_quant_op_names": list(exclusions)}
        cfg_path = self.work / f"{tag}.config.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        dest = self.work / f"{tag}.int8.mnn"
        with captured_native_output() as lines:
            ok = mnn_tools().mnnquant(["mnnquant", str(self.fp), str(dest), str(cfg_path)])
        if not ok or not dest.is_file() or dest.stat().st_size == 0:
            why = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
            raise QuantError(f"MNN's quantizer failed on {self.fp.name}: {why[:160]}")
        self.last_config = {k: v for k, v in cfg.items() if k != "path"}
        return dest

    def logits(self, candidate: Path, x: np.ndarray) -> np.ndarray:
        from export.runtime import mnn_session

        return mnn_session(candidate).run(x)

    def rank_layers(self, candidate: Path) -> list[dict] | None:
        return None   # MNN exposes no per-layer float-vs-int8 comparison to Python

    def fallback_layers(self, ranking: Sequence[dict]) -> list[str]:
        return []     # the ranking names ONNX nodes; MNN's ops are named differently

    def finish(self, outcome: Outcome, hold: Holdout | None) -> tuple[Path, dict]:
        return outcome.candidate, {"mnn_config": self.last_config,
                                   "quantizer": "MNN _tools.mnnquant (offline, calibration "
                                   "images)", "source": self.fp.name}


def runtime_audit(path: Path) -> dict:
    """What stayed in float, from the tensor table MNN's quantizer writes beside the INT8
    model (`<file>.json`: every op it saw with its output scales; scale 0 = no int8
    output, i.e. the op runs in float), op types from MNN's graph. Without that table
    (a file quantized elsewhere) only the op histogram is known."""
    from export.runtime import mnn_module
    from zoo.util import captured_native_output

    F = mnn_module().expr
    with captured_native_output():
        ops = {k: v.op_type for k, v in F.load_as_dict(str(path)).items()}
    table = path.with_name(path.name + ".json")
    res: dict = {"runtime": "MNN", "ops": dict(sorted(Counter(ops.values()).items()))}
    if not table.is_file():
        res["float_islands"] = None
        res["note"] = "no quantizer tensor table beside the model: int8 coverage unknown"
        return res
    entries = [e for e in json.loads(table.read_text()) if isinstance(e, dict) and "name" in e]

    def int8(e: dict) -> bool:
        return any(any(s != 0 for s in o.get("scales", [])) for o in e.get("outputs", []))

    # Grouped convs are split by the quantizer into per-group convs ("<op>__group__<i>"):
    # their type is their parent's.
    def op_type(name: str) -> str:
        return ops.get(name) or ops.get(name.split("__group__")[0], "?")

    floats = [e["name"] for e in entries if not int8(e) and op_type(e["name"]) in COMPUTE_OPS]
    # The table names ops as the quantizer's graph does; where MNN's converter fused an
    # activation into a conv, the loaded graph names it after the activation instead, so
    # some table entries have no type: they are counted, and listed when in float.
    untyped = [e for e in entries if op_type(e["name"]) == "?"]
    res.update({
        "untyped_entries": len(untyped),
        "untyped_float": [e["name"] for e in untyped if not int8(e)][:20],
        "int8_ops": sum(1 for e in entries if int8(e)),
        "float_ops": sum(1 for e in entries if not int8(e)),
        "depthwise_int8": sum(1 for e in entries if int8(e) and op_type(e["name"]) == DEPTHWISE),
        "depthwise_float": sum(1 for e in entries
                               if not int8(e) and op_type(e["name"]) == DEPTHWISE),
        "float_compute": len(floats),
        "float_islands": dict(Counter(op_type(n) for n in floats)),
        "float_compute_ops": floats[:20],
    })
    return res
