"""Graph audit of an exported model: what a converter or quantizer made of it.

    python -m export.audit artifacts/<name>.onnx|.tflite [--json]

`audit(path) -> dict` is a pure function of the file (later stages call it on
their INT8 models). It reports

- `ops`: the op histogram, and `transpose_count` (layout shuffles cost real
  time on ARM, and TFLite adds them around NCHW-minded graphs);
- `float_ops`: ops that still compute in float inside a quantized model. A
  tensor is "float" when it comes out of a DequantizeLinear / DEQUANTIZE, or out
  of an op that is itself float. An op fed such a tensor is float, except (ONNX
  QDQ only) when it sits in a DQ -> op -> Q sandwich, which runtimes execute as
  an integer kernel. Weight-only DQs count too: their convs run in float. An
  FP32 model has no DQ and so no float ops; `quantized` tells the two apart.
  `float_compute_ops` leaves out pure data-movement ops (reshape, transpose, ...);
- `depthwise`: how depthwise convolutions came out. TFLite: DEPTHWISE_CONV_2D
  count, and CONV_2D ops that are depthwise in disguise (filter with one input
  channel on a wider input), which run much slower. ONNX: Conv with group == C_in.
  Grouped (non-depthwise) convs are counted separately.

TFLite files are read through the LiteRT interpreter with the default delegates
off, so the graph is seen as stored, not as XNNPACK rewrote it.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, cli_entry

PROG = "export.audit"

# Ops that only move or re-index data: float there costs bandwidth, not arithmetic.
ONNX_MOVEMENT = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Gather",
                 "Slice", "Split", "Concat", "Pad", "Expand", "Tile", "DepthToSpace",
                 "SpaceToDepth", "MaxPool"}
TFLITE_MOVEMENT = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "GATHER_ND",
                   "SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "CONCATENATION", "PAD", "PADV2",
                   "TILE", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "MAX_POOL_2D"}
ONNX_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                  "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd",
                  "QLinearMul", "QLinearGlobalAveragePool", "QLinearConcat", "QGemm"}


class AuditError(ArmqError):
    pass


def _summary(fmt: str, path: Path, ops: Counter, transpose: int, quantized: bool,
             float_ops: list[dict], movement: set[str], depthwise: dict, inputs: list,
             outputs: list, **extra: Any) -> dict:
    return {
        "format": fmt,
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "num_ops": int(sum(ops.values())),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "transpose_count": int(transpose),
        "quantized": bool(quantized),
        "float_ops": float_ops,
        "float_op_histogram": dict(Counter(f["op"] for f in float_ops)),
        "float_compute_ops": [f for f in float_ops if f["op"] not in movement],
        "depthwise": depthwise,
        "inputs": inputs,
        "outputs": outputs,
        **extra,
    }


# ---- ONNX ----------------------------------------------------------------------------------

def _onnx_shape(t) -> list:
    dims = t.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _load_onnx(p: Path):
    """The ONNX model at `p`, shapes inferred where possible; AuditError if it is none."""
    import onnx

    try:
        model = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise AuditError(f"{p}: not a readable ONNX model ({type(e).__name__})") from None
    # Protobuf parses almost anything (an empty file is a valid empty message): a model
    # without IR version, nodes or outputs is no model, not a "0 ops" one.
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise AuditError(f"{p}: not a readable ONNX model (no graph: empty or not ONNX)")
    for v in list(model.graph.input) + list(model.graph.output):
        try:
            onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
        except (KeyError, ValueError, TypeError):
            raise AuditError(f"{p}: not a readable ONNX model (graph input/output "
                             f"'{v.name[:40]}' has no valid element type)") from None
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - audit what we can without inferred types
        pass
    return model


def audit_onnx(path: str | os.PathLike) -> dict:
    import onnx
    from onnx import TensorProto

    p = Path(path)
    model = _load_onnx(p)
    g = model.graph
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    etype: dict[str, int] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        etype[vi.name] = vi.type.tensor_type.elem_type
    init_shape = {i.name: list(i.dims) for i in g.initializer}
    for i in g.initializer:
        etype[i.name] = i.data_type
    producer: dict[str, Any] = {}
    consumers: dict[str, list] = {}
    for n in g.node:
        for o in n.output:
            producer[o] = n
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_out = {o.name for o in g.output}

    def is_float(name: str) -> bool:
        return etype.get(name, TensorProto.FLOAT) in floats

    ops = Counter(n.op_type for n in g.node)
    tainted: set[str] = set()
    flagged: list[dict] = []
    for idx, n in enumerate(g.node):
        if n.op_type == "DequantizeLinear":
            tainted.update(o for o in n.output if o)
            continue
        if n.op_type in ("QuantizeLinear", "Shape", "Size"):
            continue
        hit = [i for i in n.input if i in tainted]
        if not hit:
            continue
        from_dq = all(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                      for i in hit)
        outs = [o for o in n.output if o]
        requant = bool(outs) and all(
            o not in graph_out and consumers.get(o)
            and all(c.op_type == "QuantizeLinear" for c in consumers[o]) for o in outs)
        if from_dq and requant:
            continue  # DQ -> op -> Q: an integer kernel
        flagged.append({"index": idx, "op": n.op_type, "name": n.name})
        tainted.update(o for o in outs if is_float(o))

    def weight_shape(name: str) -> list | None:
        if name in init_shape:
            return init_shape[name]
        prod = producer.get(name)
        if prod is not None and prod.op_type == "DequantizeLinear":
            return init_shape.get(prod.input[0])
        return None

    dw = grouped = 0
    for n in g.node:
        if n.op_type not in ("Conv", "QLinearConv", "ConvInteger"):
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = weight_shape(n.input[3] if n.op_type == "QLinearConv" else n.input[1])
        if group > 1 and w is not None and len(w) >= 2 and w[1] == 1:
            dw += 1
        elif group > 1:
            grouped += 1
    quantized = any(op in ONNX_QUANT_OPS for op in ops)
    return _summary(
        "onnx", p, ops, ops.get("Transpose", 0), quantized, flagged, ONNX_MOVEMENT,
        {"depthwise_convs": dw, "grouped_convs": grouped},
        [{"name": i.name, "shape": _onnx_shape(i), "dtype": onnx.helper.tensor_dtype_to_np_dtype(
            i.type.tensor_type.elem_type).name} for i in g.input if i.name not in init_shape],
        [{"name": o.name, "shape": _onnx_shape(o), "dtype": onnx.helper.tensor_dtype_to_np_dtype(
            o.type.tensor_type.elem_type).name} for o in g.output],
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        producer=f"{model.producer_name} {model.producer_version}".strip())


# ---- TFLite --------------------------------------------------------------------------------

def _np_name(dtype) -> str:
    import numpy as np

    return np.dtype(dtype).name


def audit_tflite(path: str | os.PathLike) -> dict:
    import numpy as np

    from .runtime import tflite_interpreter

    p = Path(path)
    if not p.is_file():
        raise AuditError(f"{p}: no such file")
    it = tflite_interpreter(p, threads=1, delegates=False)
    ops_details = it._get_ops_details()
    tensors = {t["index"]: t for t in it.get_tensor_details()}

    def dtype(i: int):
        return tensors[i]["dtype"] if i in tensors else None

    def shape(i: int) -> list[int]:
        return [int(s) for s in tensors[i]["shape"]] if i in tensors else []

    ops = Counter(op["op_name"] for op in ops_details)
    tainted: set[int] = set()
    flagged: list[dict] = []
    low_bits = {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)}
    quantized = False
    for op in ops_details:
        name = op["op_name"]
        outs = [int(o) for o in op["outputs"] if o >= 0]
        if any(dtype(o) is not None and np.dtype(dtype(o)) in low_bits for o in outs):
            quantized = True
        if name == "DEQUANTIZE":
            tainted.update(outs)
            continue
        if name == "QUANTIZE":
            continue
        if not any(int(i) in tainted for i in op["inputs"] if i >= 0):
            continue
        first_out = tensors.get(outs[0], {}).get("name", "") if outs else ""
        flagged.append({"index": int(op["index"]), "op": name, "name": first_out})
        tainted.update(o for o in outs if dtype(o) is not None and np.issubdtype(dtype(o), np.floating))

    dw_as_conv = grouped = 0
    for op in ops_details:
        if op["op_name"] != "CONV_2D":
            continue
        ins = [int(i) for i in op["inputs"]]
        x, w = shape(ins[0]), shape(ins[1])
        if len(x) != 4 or len(w) != 4:
            continue
        cin, fin, cout = x[-1], w[-1], w[0]
        if fin == 1 and cin > 1 and cout % cin == 0:
            dw_as_conv += 1
        elif cin != fin:
            grouped += 1
    n_dw = ops.get("DEPTHWISE_CONV_2D", 0)
    depthwise = {"depthwise_convs": n_dw, "depthwise_as_conv2d": dw_as_conv,
                 "grouped_convs": grouped, "preserved": dw_as_conv == 0}

    def io(d: dict) -> dict:
        q = d.get("quantization") or (0.0, 0)
        r = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": _np_name(d["dtype"])}
        if q and q[0]:
            r["quantization"] = {"scale": float(q[0]), "zero_point": int(q[1])}
        return r

    return _summary("tflite", p, ops, ops.get("TRANSPOSE", 0), quantized, flagged, TFLITE_MOVEMENT,
                    depthwise, [io(d) for d in it.get_input_details()],
                    [io(d) for d in it.get_output_details()])


def audit(path: str | os.PathLike) -> dict:
    """Audit an .onnx or .tflite file (see the module doc for the fields)."""
    p = Path(path)
    if not p.exists():
        raise AuditError(f"{p}: no such file")
    if p.is_dir():
        raise AuditError(f"{p} is a directory, not a model file")
    if p.stat().st_size == 0:
        raise AuditError(f"{p} is empty (0 bytes), not a model file")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return audit_onnx(p)
    if suffix == ".tflite":
        return audit_tflite(p)
    raise AuditError(f"{p}: expected an .onnx or .tflite file")


def format_report(rep: dict) -> str:
    lines = [f"{rep['file']} ({rep['format']}, {rep['size_bytes'] / 1e6:.2f} MB): "
             f"{rep['num_ops']} ops, {rep['transpose_count']} transpose, "
             f"{'quantized' if rep['quantized'] else 'float'}"]
    for io_key in ("inputs", "outputs"):
        for t in rep[io_key]:
            lines.append(f"  {io_key[:-1]:<6} {t['name']}: {t['shape']} {t['dtype']}")
    lines.append("  op histogram:")
    for op, n in rep["ops"].items():
        lines.append(f"    {op:<24} {n:>5}")
    d = rep["depthwise"]
    lines.append("  depthwise: " + ", ".join(f"{k}={v}" for k, v in d.items()))
    if rep["quantized"] or rep["float_ops"]:
        lines.append(f"  ops left in float: {len(rep['float_ops'])} "
                     f"({len(rep['float_compute_ops'])} compute)")
        for op, n in rep["float_op_histogram"].items():
            lines.append(f"    {op:<24} {n:>5}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG,
                    description="Op histogram, transposes, float ops and depthwise check of a model.")
    p.add_argument("model", type=Path, help=".onnx or .tflite file")
    p.add_argument("--json", action="store_true", help="print the audit dict as JSON")
    args = p.parse_args(argv)
    rep = audit(args.model)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
