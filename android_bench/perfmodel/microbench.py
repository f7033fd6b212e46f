"""Single-op micro-benchmarks per op class, FP32 and INT8 (ORT QDQ), and their table.

Each micro-model is one op of a class at one size (built with onnx.helper; the
INT8 twin goes through armq's own ORT PTQ with the default QuantConfig, so it is
quantized as the models are: quant.latency_model.quantize_micro, passed in as
`quantize` because quant sits above this package). android_bench's runner measures
it on a target: median milliseconds locally, guest instructions per inference under
QEMU. Each row keeps the runtime nodes of its file (graph.onnx_work) beside the
measured cost, so the constants can be refitted from the table alone.
"""
from __future__ import annotations

import datetime as _dt
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .graph import NodeWork, OpClass, Precision, onnx_work
from .roofline import Constants, fit, mean_abs_error, explain

TABLE_FORMAT = "armq-latency-microbench/1"
OPSET = 17
CALIB_SAMPLES = 8


@dataclass(frozen=True)
class Micro:
    """One micro-benchmark: an op class at one size (channels, spatial size)."""
    op_class: OpClass
    channels: int
    size: int
    kernel: int = 1
    groups: int = 1
    repeat: int = 1  # a chain of this many ops: separates per-op overhead from work
    stride: int = 1

    @property
    def name(self) -> str:
        if self.repeat > 1:
            return f"{Micro(self.op_class, self.channels, self.size, self.kernel).name}_x{self.repeat}"
        if self.op_class is OpClass.ACTIVATION:
            return f"{'sigmoid' if self.kernel == 2 else 'hardswish'}_c{self.channels}_s{self.size}"
        extra = f"_k{self.kernel}" if self.kernel > 1 else ""
        extra += f"_g{self.groups}" if self.groups > 1 else ""
        extra += f"_st{self.stride}" if self.stride > 1 else ""
        return f"{self.op_class.value}_c{self.channels}_s{self.size}{extra}"


# Sizes of the layers of the zoo's CIFAR models (32, 16, 8 px; 16-512 channels).
MICROS: tuple[Micro, ...] = (
    Micro(OpClass.DENSE, 16, 32, 3), Micro(OpClass.DENSE, 64, 16, 3),
    Micro(OpClass.DENSE, 128, 8, 3),
    Micro(OpClass.POINTWISE, 32, 32), Micro(OpClass.POINTWISE, 128, 16),
    Micro(OpClass.POINTWISE, 256, 8), Micro(OpClass.POINTWISE, 16, 32),
    Micro(OpClass.DEPTHWISE, 32, 32, 3), Micro(OpClass.DEPTHWISE, 128, 16, 3),
    Micro(OpClass.DEPTHWISE, 256, 8, 3),
    # off MLAS's ARM64 direct depthwise kernel (graph.DEPTHWISE_IM2COL in FP32): stride 2
    # (every down-sampling unit) and 5x5 (MobileNet V3, EfficientNet)
    Micro(OpClass.DEPTHWISE, 32, 32, 3, stride=2), Micro(OpClass.DEPTHWISE, 128, 16, 3, stride=2),
    Micro(OpClass.DEPTHWISE, 256, 8, 3, stride=2), Micro(OpClass.DEPTHWISE, 64, 16, 5),
    Micro(OpClass.DEPTHWISE, 128, 8, 5), Micro(OpClass.DEPTHWISE, 96, 16, 5, stride=2),
    Micro(OpClass.GROUPED, 240, 16, 1, 3), Micro(OpClass.GROUPED, 480, 8, 1, 3),
    Micro(OpClass.GROUPED, 64, 16, 3, 4),
    # ShuffleNet's bottlenecks: 5 to 20 channels per group, where GEMM edges dominate
    Micro(OpClass.GROUPED, 15, 32, 1, 3), Micro(OpClass.GROUPED, 30, 16, 1, 3),
    Micro(OpClass.GROUPED, 60, 8, 1, 3),
    Micro(OpClass.ELEMENTWISE, 64, 32), Micro(OpClass.ELEMENTWISE, 128, 16),
    Micro(OpClass.ELEMENTWISE, 256, 8),
    Micro(OpClass.ACTIVATION, 64, 32), Micro(OpClass.ACTIVATION, 128, 16),
    Micro(OpClass.ACTIVATION, 256, 8, kernel=2),
    Micro(OpClass.TRANSPOSE, 120, 32, 1, 3), Micro(OpClass.TRANSPOSE, 240, 16, 1, 3),
    Micro(OpClass.TRANSPOSE, 480, 8, 1, 3),
    Micro(OpClass.POOL, 128, 16), Micro(OpClass.POOL, 512, 8),
    Micro(OpClass.QDQ, 64, 32), Micro(OpClass.QDQ, 128, 16), Micro(OpClass.QDQ, 256, 8),
    # chains of tiny layers: almost nothing but the per-op cost of the runtime
    Micro(OpClass.POINTWISE, 16, 4, repeat=8), Micro(OpClass.POINTWISE, 16, 4, repeat=32),
    Micro(OpClass.ELEMENTWISE, 16, 4, repeat=16),
)


def _conv_nodes(m: Micro, rng):
    from onnx import helper, numpy_helper

    cin = cout = m.channels
    p = m.kernel // 2
    nodes, inits, x = [], [], "X"
    for i in range(m.repeat):
        w = rng.standard_normal((cout, cin // m.groups, m.kernel, m.kernel)).astype(np.float32)
        w *= np.sqrt(2.0 / (w[0].size))
        inits += [numpy_helper.from_array(w, f"W{i}"),
                  numpy_helper.from_array(np.zeros(cout, np.float32), f"B{i}")]
        y = "Y" if i == m.repeat - 1 else f"R{i}"
        nodes += [helper.make_node("Conv", [x, f"W{i}", f"B{i}"], [f"C{i}"], group=m.groups,
                                   kernel_shape=[m.kernel] * 2, pads=[p] * 4,
                                   strides=[m.stride] * 2),
                  helper.make_node("Relu", [f"C{i}"], [y])]
        x = y
    out = (m.size + 2 * p - m.kernel) // m.stride + 1
    return nodes, inits, [1, cout, out, out]


def build_model(m: Micro, seed: int = 0):
    """The FP32 ONNX model of one micro-benchmark (QDQ: the Q -> DQ pair itself)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c, s = m.channels, m.size
    shape = [1, c, s, s]
    inits: list = []
    if m.op_class in (OpClass.DENSE, OpClass.POINTWISE, OpClass.DEPTHWISE, OpClass.GROUPED):
        groups = c if m.op_class is OpClass.DEPTHWISE else m.groups
        nodes, inits, out = _conv_nodes(replace(m, groups=groups), rng)
    elif m.op_class is OpClass.ELEMENTWISE:
        # a residual add of two activations (x + relu(x)): what the zoo's blocks do
        nodes, x = [], "X"
        for i in range(m.repeat):
            y = "Y" if i == m.repeat - 1 else f"S{i}"
            nodes += [helper.make_node("Relu", [x], [f"R{i}"]),
                      helper.make_node("Add", [x, f"R{i}"], [y])]
            x = y
        out = shape
    elif m.op_class is OpClass.ACTIVATION:
        # MobileNet V3's exported hard-swish, x * hardsigmoid(x); kernel=2 marks a sigmoid
        act = helper.make_node("Sigmoid", ["X"], ["A"]) if m.kernel == 2 else \
            helper.make_node("HardSigmoid", ["X"], ["A"], alpha=1 / 6, beta=0.5)
        nodes = [act, helper.make_node("Mul", ["X", "A"], ["Y"])]
        out = shape
    elif m.op_class is OpClass.TRANSPOSE:
        # ShuffleNet's channel shuffle: reshape (g, C/g) -> transpose -> reshape
        g = m.groups
        inits = [numpy_helper.from_array(np.array([1, g, c // g, s, s], np.int64), "S1"),
                 numpy_helper.from_array(np.array(shape, np.int64), "S2")]
        nodes = [helper.make_node("Reshape", ["X", "S1"], ["A"]),
                 helper.make_node("Transpose", ["A"], ["T"], perm=[0, 2, 1, 3, 4]),
                 helper.make_node("Reshape", ["T", "S2"], ["Y"])]
        out = shape
    elif m.op_class is OpClass.POOL:
        nodes = [helper.make_node("GlobalAveragePool", ["X"], ["Y"])]
        out = [1, c, 1, 1]
    elif m.op_class is OpClass.QDQ:
        inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                 numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["X", "s", "z"], ["Q"]),
                 helper.make_node("DequantizeLinear", ["Q", "s", "z"], ["Y"])]
        out = shape
    else:
        raise ValueError(f"no micro-benchmark for {m.op_class}")
    graph = helper.make_graph(nodes, m.name,
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


# (float micro-model, INT8 twin to write, work folder): armq's ORT PTQ, which lives in
# quant above this package, so the caller passes it (quant.latency_model.quantize_micro).
Quantize = Callable[[Path, Path, Path], None]


def write_models(out: Path, quantize: Quantize, micros: Sequence[Micro] = MICROS
                 ) -> list[tuple[Micro, Precision, Path]]:
    """Every micro-model file, FP32 and INT8 (QDQ rows are INT8 by construction)."""
    import onnx

    files = []
    for m in micros:
        fp32 = out / f"{m.name}.onnx"
        onnx.save(build_model(m), str(fp32))
        if m.op_class is OpClass.QDQ:
            files.append((m, Precision.INT8, fp32))
            continue
        files.append((m, Precision.FP32, fp32))
        int8 = out / f"{m.name}.int8.onnx"
        quantize(fp32, int8, out)
        files.append((m, Precision.INT8, int8))
    return files


Measure = Callable[[Sequence[Path]], dict[str, float]]


def measure_table(target_id: str, unit: str, arm: bool, measure: Measure, quantize: Quantize,
                  micros: Sequence[Micro] = MICROS, previous: dict | None = None) -> dict:
    """Build, measure and fit: the table document of one target. Rows of `previous`
    (the cached table) keep their measurement; only files it lacks are measured. Every
    row's nodes are read again from the rebuilt file (the models are deterministic)."""
    known = {r["name"]: r["measured"] for r in (previous or {}).get("rows", [])
             if isinstance(r, dict) and "name" in r and "measured" in r}
    with tempfile.TemporaryDirectory(prefix="armq-micro-") as td:
        files = write_models(Path(td), quantize, micros)
        todo = [f for _, _, f in files if f.name not in known]
        measured = {**known, **(measure(todo) if todo else {})}
        rows = []
        for m, prec, f in files:
            if f.name not in measured:
                continue
            rows.append({"name": f.name, "op_class": m.op_class.value, "precision": prec.value,
                         "channels": m.channels, "size": m.size, "kernel": m.kernel,
                         "groups": m.groups, "stride": m.stride, "measured": measured[f.name],
                         "nodes": [w.to_dict() for w in onnx_work(f, arm)]})
    doc = {"format": TABLE_FORMAT, "target": target_id, "unit": unit,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "rows": rows}
    return refit(doc)


def missing_rows(doc: dict, micros: Sequence[Micro] = MICROS) -> list[str]:
    """Micro-benchmarks of this version that a cached table has no row for."""
    have = {r.get("name") for r in doc.get("rows", []) if isinstance(r, dict)}
    want = [f"{m.name}.onnx" for m in micros] + \
        [f"{m.name}.int8.onnx" for m in micros if m.op_class is not OpClass.QDQ]
    return [n for n in want if n not in have]


def samples_of(doc: dict) -> list[tuple[list[NodeWork], float]]:
    return [([NodeWork.from_dict(n) for n in r["nodes"]], float(r["measured"]))
            for r in doc["rows"]]


def refit(doc: dict) -> dict:
    """(Re)fit the constants of a table and record how well they fit its own rows."""
    samples = samples_of(doc)
    c = fit(samples, doc["unit"])
    ex = [explain(works, c, meas) for works, meas in samples]
    doc["constants"] = c.to_dict()
    doc["fit_mae"] = mean_abs_error(ex)
    for r, e in zip(doc["rows"], ex):
        r["predicted"] = e.predicted
    return doc


def constants_of(doc: dict) -> Constants:
    return Constants.from_dict(doc["constants"])
