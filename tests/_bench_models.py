"""Tiny real models for the android_bench tests: a narrow CIFAR-10 ShuffleNet v1
exported to ONNX (FP32), statically quantized to INT8 (QDQ) with real CIFAR
images, a model card beside them, and an inputs .npy of preprocessed images.

Usable as a script too: `python tests/_bench_models.py OUT_DIR`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CIFAR_TEST = ROOT.parent / "shared" / "data" / "cifar10" / "test.tar"


def _images(n: int, cfg) -> np.ndarray:
    """n preprocessed CIFAR-10 test images (NCHW float32); seeded noise if the data is absent."""
    from zoo.data import load_images, normalize
    if CIFAR_TEST.is_file():
        imgs = load_images(CIFAR_TEST, cfg.resize, cfg.input_size, cfg.interpolation, limit=n)
        return normalize(imgs.images, cfg)
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, 3, cfg.input_size, cfg.input_size)).astype(np.float32)


def build(out: Path) -> dict[str, Path]:
    """Write shufflenet_tiny.onnx, shufflenet_tiny.int8.onnx, shufflenet_tiny.json and
    inputs.npy (4 images) to `out`; return their paths. Reuses what is already there
    (a completed build leaves a stamp), so several test modules can share one folder."""
    names = {"fp32": out / "shufflenet_tiny.onnx", "int8": out / "shufflenet_tiny.int8.onnx",
             "card": out / "shufflenet_tiny.json", "inputs": out / "inputs.npy"}
    if (out / ".complete").is_file():
        return names
    import torch
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import zoo
    from zoo.cost import measure

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = zoo.create_model("shufflenet_v1", dataset="cifar10", width=0.5).eval()
    cfg = model.default_cfg
    size = cfg.input_size
    fp32 = out / "shufflenet_tiny.onnx"
    int8 = out / "shufflenet_tiny.int8.onnx"
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(fp32), input_names=["input"], output_names=["logits"],
                          opset_version=17, dynamo=False)
    calib = _images(16, cfg)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    pre = out / "shufflenet_tiny.pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    pre.unlink()
    inputs = out / "inputs.npy"
    np.save(inputs, _images(4, cfg)[:4])
    rep = measure(model, size)
    cost = {"macs": rep.macs, "params": rep.params, "memory_access": rep.memory_access}
    card = {"format": "armq-card/1", "name": "shufflenet_tiny",
            "variant": {"model": "shufflenet_v1", "dataset": "cifar10", "params": {"width": 0.5}},
            "input": {"name": "input", "shape": [1, 3, size, size], "layout": "NCHW",
                      "dtype": "float32"},
            "output": {"name": "logits", "shape": [1, cfg.num_classes]},
            "preprocessing": cfg.to_dict(), "class_names": list(cfg.class_names),
            "cost": cost, "source": {"weights": "random"}, "artifacts": {}, "accuracy": {}}
    card_path = out / "shufflenet_tiny.json"
    card_path.write_text(json.dumps(card, indent=2))
    (out / ".complete").touch()
    return names


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for k, v in build(Path(sys.argv[1])).items():
        print(k, v)


def shared_models(tmp_path_factory) -> dict[str, Path]:
    """The models in one folder per pytest session (built by whichever test needs them first)."""
    return build(tmp_path_factory.getbasetemp() / "bench_models")
