"""What an ONNX model file runs, node by node: op class, precision, MACs and bytes.

The nodes are those of the graph onnxruntime builds (export.runtime.runtime_graph:
ARM64 rules for the QEMU targets, the host's rules locally), not the file's: fused
QLinearConv, the Q/DQ and Transpose nodes the optimizer leaves, and the float
islands of an INT8 model are what the CPU pays for. Shapes come from running that
graph once with every tensor exposed as an output (onnxruntime knows the shapes of
its contrib ops; onnx's shape inference does not). MACs use zoo.cost's conv_macs;
bytes are what the runtime reads and writes (inputs, weights, outputs at their
element sizes), zoo.cost's memory access counted in bytes instead of elements.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from export.formats import Precision   # the one precision enum (export.formats)
from zoo.cost import conv_macs


class OpClass(str, Enum):
    DENSE = "dense"              # k x k convolutions with groups=1, Gemm/MatMul
    POINTWISE = "pointwise"      # 1x1 convolutions, groups=1
    DEPTHWISE = "depthwise"      # groups == input channels
    # FP32 depthwise on ARM64 off MLAS's direct kernel (3x3, stride 1, dilation 1, pads <= 1):
    # im2col and a one-row GEMM per channel, 3-3.5x the direct kernel's cost per MAC at
    # stride 2 and 2x at 5x5 (QEMU cortex-a76 instruction counts of single-op models)
    DEPTHWISE_IM2COL = "depthwise_im2col"
    GROUPED = "grouped"          # 1 < groups < channels
    ELEMENTWISE = "elementwise"  # add, mul, relu, clip, concat/slice/pad copies
    ACTIVATION = "activation"    # sigmoid-like activations: several instructions per element
    TRANSPOSE = "transpose"      # layout and channel-shuffle permutations
    QDQ = "qdq"                  # QuantizeLinear / DequantizeLinear left in the graph
    POOL = "pool"
    FREE = "free"                # reshape/flatten: metadata only, per-op overhead


COMPUTE = (OpClass.DENSE, OpClass.POINTWISE, OpClass.DEPTHWISE, OpClass.DEPTHWISE_IM2COL,
           OpClass.GROUPED)
DEPTHWISE_CLASSES = (OpClass.DEPTHWISE, OpClass.DEPTHWISE_IM2COL)
FLOAT_CONV_OPS = {"Conv", "FusedConv"}  # the convolutions MLAS runs in FP32 (NCHW)
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv"}
GEMM_OPS = {"Gemm", "FusedGemm", "QGemm", "MatMul", "FusedMatMul", "MatMulInteger",
            "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
TRANSPOSE_OPS = {"Transpose", "Gather", "DepthToSpace", "SpaceToDepth", "ReorderInput",
                 "ReorderOutput"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
ACTIVATION_OPS = {"Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Erf", "Softmax",
                  "LeakyRelu", "Elu", "Selu", "Swish", "QuickGelu", "QLinearSigmoid",
                  "QLinearLeakyRelu", "QLinearSoftmax"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
            "QLinearAveragePool", "QLinearGlobalAveragePool"}
FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant"}
INT8_PREFIX = ("QLinear", "QGemm", "ConvInteger", "MatMulInteger")


@dataclass(frozen=True)
class NodeWork:
    """One runtime node: its class and precision, and the work the roofline charges."""
    name: str
    op_type: str
    op_class: OpClass
    precision: Precision
    macs: int
    bytes: int
    # GEMM edges of a convolution lowered to matrix products (im2col + GEMM): output
    # elements (bias, activation, requantization: one each) and im2col patch elements
    # (each copied once per group). Both 0 for depthwise convolutions and non-compute ops.
    outputs: int = 0
    patches: int = 0
    # channels of a depthwise convolution: its kernels run channel by channel (a call and
    # set-up each, a one-row GEMM on the im2col path), a cost no MAC or byte count shows
    channels: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "op_class": self.op_class.value,
                "precision": self.precision.value}

    @classmethod
    def from_dict(cls, d: dict) -> "NodeWork":
        return cls(str(d["name"]), str(d["op_type"]), OpClass(d["op_class"]),
                   Precision(d["precision"]), int(d["macs"]), int(d["bytes"]),
                   int(d.get("outputs", 0)), int(d.get("patches", 0)), int(d.get("channels", 0)))


def conv_class(weight_shape: tuple[int, ...], group: int) -> OpClass:
    """The class of a convolution from its weight (Cout, Cin/g, kh, kw) and group."""
    if group <= 1:
        return OpClass.DENSE if math.prod(weight_shape[2:]) > 1 else OpClass.POINTWISE
    if weight_shape[1] == 1:
        return OpClass.DEPTHWISE
    return OpClass.GROUPED


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _with_all_outputs(model):
    """A copy of `model` whose every node output is also a graph output."""
    from onnx import helper

    m = type(model)()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in have:
                m.graph.output.append(helper.ValueInfoProto(name=o))
                have.add(o)
    return m


def tensor_info(model) -> dict[str, tuple[tuple[int, ...], int]]:
    """{tensor: (shape, element bytes)} for initializers and every node output, from
    one run of `model` on a zero input (batch 1)."""
    from onnx import numpy_helper

    from export.runtime import ort_session

    info = {}
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        info[t.name] = (tuple(a.shape), a.dtype.itemsize)
    sess = ort_session(_with_all_outputs(model).SerializeToString(), 1)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dtype = np.float32 if "float" in i.type else np.int8 if "int8" in i.type else np.int64
        feeds[i.name] = np.zeros(shape, dtype)
        info[i.name] = (tuple(shape), np.dtype(dtype).itemsize)
    names = [o.name for o in sess.get_outputs()]
    for name, arr in zip(names, sess.run(None, feeds)):
        arr = np.asarray(arr)
        info[name] = (tuple(arr.shape), arr.dtype.itemsize)
    return info


def _weight_shape(node, info, producer) -> tuple[int, ...] | None:
    idx = 3 if node.op_type == "QLinearConv" else 1
    if len(node.input) <= idx:
        return None
    name = node.input[idx]
    if name in producer and producer[name].op_type == "DequantizeLinear":
        name = producer[name].input[0]  # a float conv fed by dequantized int8 weights
    return info[name][0] if name in info else None


def gemm_edges(op_class: OpClass, macs: int, out_numel: int, cout_per_group: int
               ) -> tuple[int, int]:
    """(output elements, im2col patch elements) of a convolution or Gemm with `macs`:
    a patch (one output pixel's receptive field) is built once per group, so there
    are macs / (Cout / groups) patch elements."""
    if op_class not in COMPUTE or op_class in DEPTHWISE_CLASSES or not macs:
        return 0, 0
    return out_numel, macs // max(1, cout_per_group)


def _cout_per_group(node, info, producer) -> int:
    if node.op_type in CONV_OPS:
        w = _weight_shape(node, info, producer)
        return (w[0] // max(1, int(_attr(node, "group", 1)))) if w else 1
    out = info.get(node.output[0], ((1,), 4))[0]
    return out[-1] if out else 1


def mlas_direct_depthwise(node, weight_shape: tuple[int, ...]) -> bool:
    """Does MLAS's ARM64 direct depthwise kernel take this float convolution? It covers
    3x3 kernels at stride 1, dilation 1, padding <= 1; others go to im2col + GEMM."""
    return tuple(weight_shape[2:]) == (3, 3) and \
        all(v == 1 for v in _attr(node, "strides", [1, 1])) and \
        all(v == 1 for v in _attr(node, "dilations", [1, 1])) and \
        all(v <= 1 for v in _attr(node, "pads", [0, 0, 0, 0]))


def classify(node, info, producer, arm: bool = False) -> tuple[OpClass, int]:
    """(op class, MACs) of one runtime node (arm: of ORT's ARM64 graph)."""
    op = node.op_type
    out = info.get(node.output[0], ((), 4))[0] if node.output else ()
    if op in CONV_OPS:
        w = _weight_shape(node, info, producer)
        if w is None or len(w) < 3:
            return OpClass.DENSE, 0
        cls = conv_class(w, int(_attr(node, "group", 1)))
        if cls is OpClass.DEPTHWISE and arm and op in FLOAT_CONV_OPS and \
                not mlas_direct_depthwise(node, w):
            cls = OpClass.DEPTHWISE_IM2COL
        return cls, conv_macs(out, w)
    if op in GEMM_OPS:
        a = info.get(node.input[0], ((), 4))[0]
        # batch-1 Gemm: every input element meets every output column once
        return OpClass.DENSE, math.prod(a) * (out[-1] if out else 0)
    if op in TRANSPOSE_OPS:
        return OpClass.TRANSPOSE, 0
    if op in QDQ_OPS:
        return OpClass.QDQ, 0
    if op in POOL_OPS:
        return OpClass.POOL, 0
    if op in ACTIVATION_OPS:
        return OpClass.ACTIVATION, 0
    if op in FREE_OPS:
        return OpClass.FREE, 0
    return OpClass.ELEMENTWISE, 0


def precision_of(node, op_class: OpClass, info) -> Precision:
    if node.op_type.startswith(INT8_PREFIX) or op_class is OpClass.QDQ:
        return Precision.INT8
    if op_class in COMPUTE:
        return Precision.FP32
    # the rest (copies, moves, pools) run at the element size of what they write
    size = info.get(node.output[0], ((), 4))[1] if node.output else 4
    return Precision.INT8 if size == 1 else Precision.FP32


def graph_work(model, arm: bool = False) -> list[NodeWork]:
    """Every node of an (already optimized) ONNX graph as NodeWork (arm: ORT's ARM64
    graph, whose kernels differ where classify says so)."""
    info = tensor_info(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    works = []
    for n in model.graph.node:
        cls, macs = classify(n, info, producer, arm)
        nbytes = 0
        if cls is not OpClass.FREE:
            for t in [*n.input, *n.output]:
                if t in info:
                    shape, size = info[t]
                    nbytes += math.prod(shape) * size
        out_numel = math.prod(info[n.output[0]][0]) if n.output and n.output[0] in info else 0
        edges = gemm_edges(cls, int(macs), out_numel, _cout_per_group(n, info, producer)) \
            if cls in COMPUTE else (0, 0)
        out_shape = info[n.output[0]][0] if n.output and n.output[0] in info else ()
        channels = int(out_shape[1]) if cls in DEPTHWISE_CLASSES and len(out_shape) > 1 else 0
        works.append(NodeWork(n.name or n.output[0], n.op_type, cls,
                              precision_of(n, cls, info), int(macs), int(nbytes), *edges,
                              channels))
    return works


def onnx_work(path: str | Path, arm: bool) -> list[NodeWork]:
    """The runtime nodes of an ONNX file as ORT builds it (arm=True: an ARM64 CPU)."""
    from export.runtime import runtime_graph

    return graph_work(runtime_graph(Path(path), arm), arm)


def is_int8_model(works: list[NodeWork]) -> bool:
    return any(w.precision is Precision.INT8 and w.op_class in COMPUTE for w in works)
