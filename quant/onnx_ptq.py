"""ONNX Runtime backend: static QDQ INT8 with onnxruntime.quantization.

Format: QDQ, int8 activations (asymmetric, zero point free) and int8 weights
(symmetric, per output channel by default): "S8S8", the combination ORT's
ARM64 kernels run natively.

Why an S8S8 model can be slower than FP32 on an x86 host (and how this
module avoids being fooled by it): ORT's CPU graph optimizer fuses
DQ -> Conv -> Q into QLinearConv only when input and output have the same
8-bit type. On x86 it first runs QDQS8ToU8Transformer (int8 is "not allowed"
there, `session.qdqisint8allowed` defaults to 0), which rewrites each S8 Q->DQ
*pair* to U8, but only where the Q feeds exactly one DQ. A tensor that fans out
(a residual/shortcut input, a stride-2 unit feeding both the pooled shortcut and
the branch, the stem) keeps an S8 Q with two DQs after EnsureUniqueDQForNodeUnit,
so the conv producing it sees U8 in / S8 out and stays a float Conv wrapped in
Q/DQ: on a small ShuffleNet 17 of 49 convs, with two extra memory passes each.
On ARM64 int8 is allowed, nothing is rewritten and every conv, depthwise
included, becomes QLinearConv. So:

  * the audit and the evaluation build the session with
    `session.qdqisint8allowed=1`, i.e. the graph an ARM64 CPU runs;
  * `--activations uint8` writes a U8S8 model for x86 servers, which ORT
    fuses completely and runs faster than FP32 there.

Other details:
  * quant_pre_process (symbolic shape inference + ORT basic optimization,
    which folds BatchNorm) runs first;
  * calibration runs in chunks through ORT's own calibrators (MinMax /
    Entropy / Percentile) so that memory stays bounded, and is computed once
    per method: the fallback loop re-quantizes from the cached ranges;
  * Entropy uses a 512-bin histogram (ORT's default 128 bins leaves the KL
    search a single candidate) and its symmetric threshold is clipped to the
    observed range, so ReLU outputs keep all 256 levels;
  * a Shape node reading a DequantizeLinear output is rewired to the int8
    tensor, removing a whole-tensor DQ that only fed a shape query.
"""
from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .common import Method, QuantError

ORT_METHOD_NAMES = {Method.MINMAX: "MinMax", Method.ENTROPY: "Entropy",
                    Method.PERCENTILE: "Percentile"}
# Ops that do arithmetic; in float after ORT's optimizer they are float islands.
COMPUTE_OPS = {"Conv", "FusedConv", "ConvTranspose", "Gemm", "MatMul", "FusedGemm", "FusedMatMul",
               "Add", "Sub", "Mul", "Div", "AveragePool", "GlobalAveragePool", "MaxPool",
               "Concat", "Sigmoid", "HardSigmoid", "HardSwish", "Relu", "Clip", "Softmax",
               "ReduceMean", "Resize", "LeakyRelu", "Tanh", "Gelu", "QuickGelu", "Erf"}
INT8_OPS_PREFIX = ("QLinear", "QGemm", "QAttention", "QEmbed", "MatMulInteger", "ConvInteger",
                   "DynamicQuantize")
LAYER_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
CHUNK_BYTES = 64 << 20  # activations kept at once while calibrating (approx.)


def model_input(path: str | Path) -> tuple[str, int | None, list]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ins = [i for i in m.graph.input if i.name not in inits]
    if len(ins) != 1:
        raise QuantError(f"{path}: expected one image input, found {len(ins)}")
    dims = ins[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    n = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
    return ins[0].name, n, shape


def check_float_model(src: Path, sample_shape: Sequence[int]) -> None:
    """Before quantizing: onnxruntime can load the float model (no truncated file, no op
    the runtime lacks), its input takes the card's samples, and its weights are finite."""
    import onnx
    from onnx import numpy_helper

    from .runners import check_input_shape, ort_session

    sess = ort_session(src, arm=False, threads=1)
    inp = sess.get_inputs()[0]
    check_input_shape(src, inp.name, inp.shape, sample_shape)
    m = onnx.load(str(src))
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise QuantError(f"{src}: weight tensor '{t.name}' contains NaN or Inf "
                             "(re-export the model from finite weights)")


@contextlib.contextmanager
def _quiet_ort_preprocess(work: Path):
    """quant_pre_process logs tracebacks of the steps it retries, and ORT's symbolic
    shape inference drops `sym_shape_infer_temp.onnx` into the current folder when
    it gives up: run it from a private folder with its logger off."""
    import logging

    log = logging.getLogger("onnxruntime.quantization.shape_inference")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.chdir(work):
            yield
    finally:
        log.setLevel(level)


def preprocess(src: Path, dst: Path) -> dict:
    """quant_pre_process: shape inference + ORT's basic optimizations (BN folding).
    Falls back to shape inference only if the optimizer fails on the graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    with tempfile.TemporaryDirectory(prefix="armq-pre-") as td, _quiet_ort_preprocess(Path(td)):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
            return {"optimized": True}
        except Exception:  # noqa: BLE001 - some graphs defeat symbolic shape inference
            try:
                quant_pre_process(str(src), str(dst), skip_optimization=False,
                                  skip_symbolic_shape=True)
                return {"optimized": True, "symbolic_shape": False}
            except Exception as e:  # noqa: BLE001
                raise QuantError(f"{src}: onnxruntime cannot prepare the model for quantization "
                                 f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def nhwc_channel_shuffle(path: Path) -> int:
    """Rewrite NCHW channel shuffles so they cost one transpose in an NHWC int8 graph.

    Reshape(N,g,C/g,H,W) -> Transpose(0,2,1,3,4) -> Reshape(N,C,H,W) becomes
    Transpose(to NHWC) -> Reshape(N,H,W,g,C/g) -> Transpose(0,1,2,4,3) ->
    Reshape(N,H,W,C) -> Transpose(to NCHW): the same permutation of channels. ORT
    runs QLinearConv in NHWC and brackets NCHW-only ops with layout transposes; the
    outer pair here cancels against those, so each shuffle keeps just its own
    transpose instead of three. Exact (pure data movement). Returns the count."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}

    def const(name):
        return numpy_helper.to_array(inits[name]).tolist() if name in inits else None

    def only_consumer(t):
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and t not in outputs else None

    done = 0
    new_nodes, drop = [], set()
    for a in g.node:
        if a.op_type != "Reshape" or a.name in drop:
            continue
        s5 = const(a.input[1])
        t = only_consumer(a.output[0])
        if not s5 or len(s5) != 5 or t is None or t.op_type != "Transpose":
            continue
        perm = next((list(x.ints) for x in t.attribute if x.name == "perm"), None)
        b = only_consumer(t.output[0])
        if perm != [0, 2, 1, 3, 4] or b is None or b.op_type != "Reshape":
            continue
        s4 = const(b.input[1])
        n_, grp, cpg, h, w = s5
        if not s4 or len(s4) != 4 or s4[1] != grp * cpg or s4[2:] != [h, w] or min(s5[1:]) <= 0:
            continue
        k = f"armq_nhwc_shuffle_{done}"
        shp5 = numpy_helper.from_array(np.array([n_, h, w, grp, cpg], np.int64), f"{k}_s5")
        shp4 = numpy_helper.from_array(np.array([n_, h, w, grp * cpg], np.int64), f"{k}_s4")
        g.initializer.extend([shp5, shp4])
        new_nodes.append((a, [
            helper.make_node("Transpose", [a.input[0]], [f"{k}_nhwc"], f"{k}_to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"{k}_nhwc", shp5.name], [f"{k}_split"], f"{k}_split"),
            helper.make_node("Transpose", [f"{k}_split"], [f"{k}_shuf"], f"{k}_shuffle", perm=[0, 1, 2, 4, 3]),
            helper.make_node("Reshape", [f"{k}_shuf", shp4.name], [f"{k}_merged"], f"{k}_merge"),
            helper.make_node("Transpose", [f"{k}_merged"], [b.output[0]], f"{k}_to_nchw", perm=[0, 3, 1, 2]),
        ]))
        drop.update({a.name, t.name, b.name})
        done += 1
    if not done:
        return 0
    by_anchor = {id(a): nodes for a, nodes in new_nodes}
    rebuilt = []
    for n in g.node:
        if id(n) in by_anchor:
            rebuilt.extend(by_anchor[id(n)])
        elif n.name not in drop:
            rebuilt.append(n)
    del g.node[:]
    g.node.extend(rebuilt)
    used = {i for n in g.node for i in n.input}
    for init in list(g.initializer):
        if init.name not in used:
            g.initializer.remove(init)
    keep = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for vi in list(g.value_info):
        if vi.name not in keep:
            g.value_info.remove(vi)
    onnx.save(m, str(path))
    return done


def _chunk_images(x: np.ndarray, model_path: Path) -> int:
    """Images per calibration chunk: the ORT calibrators keep every activation
    of a chunk in memory, so budget by a rough activation size."""
    per_image = int(np.prod(x.shape[1:])) * 4 * 60  # ~60 input-sized tensors per image
    return int(max(4, min(len(x), CHUNK_BYTES // max(1, per_image))))


def calibrate(pre: Path, x: np.ndarray, method: Method, input_name: str, batch: int | None,
              workdir: Path, progress: Callable[[int], None] | None = None):
    """Ranges of every float tensor, with ORT's calibrator for `method`."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from .calib import make_reader

    opts: dict = {}
    if method is Method.ENTROPY:
        # ORT's collector, armq's KL search (see entropy_ranges)
        opts = {"num_bins": 2048, "num_quantized_bins": 128, "symmetric": False}
    elif method is Method.PERCENTILE:
        from .common import PERCENTILE
        opts = {"num_bins": 2048, "percentile": PERCENTILE, "symmetric": True}
    cal = create_calibrator(str(pre), None, augmented_model_path=str(workdir / "augmented.onnx"),
                            calibrate_method=getattr(CalibrationMethod, ORT_METHOD_NAMES[method]),
                            extra_options=opts)
    step = _chunk_images(x, pre)
    if batch:
        step = max(batch, step // batch * batch)
    for i in range(0, len(x), step):
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints per chunk
            cal.collect_data(make_reader(input_name, x[i:i + step], batch or 16))
        if progress:
            progress(min(step, len(x) - i))
    if method is Method.ENTROPY:
        return entropy_ranges(cal.collector.histogram_dict)
    with contextlib.redirect_stdout(io.StringIO()):
        return cal.compute_data()


def entropy_ranges(histograms: dict):
    """KL-optimal ranges for asymmetric int8 from ORT's histograms.

    ORT's own entropy search models a symmetric 128-level quantizer over (-t, t):
    for a ReLU output (no negatives) that is 64 levels where int8 asymmetric has
    256, so it clips far too much (12.9 dB output SQNR vs 27 dB for MinMax on the
    CIFAR ShuffleNet). Here the histogram is restricted to the observed [min, max]
    and searched for the 256-level quantizer that really runs (quant.ranges.kl_range).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    from .ranges import kl_range

    data = {}
    for name, (hist, edges, lo_seen, hi_seen, _t) in histograms.items():
        edges = np.asarray(edges, np.float64)
        hist = np.asarray(hist, np.float64)
        a = max(0, int(np.searchsorted(edges, float(lo_seen), side="right")) - 1)
        b = min(len(hist), int(np.searchsorted(edges, float(hi_seen), side="left")))
        if b <= a:
            lo, hi = float(lo_seen), float(hi_seen)
        else:
            lo, hi = kl_range(edges[a:b + 1], hist[a:b])
            lo, hi = max(lo, float(lo_seen)), min(hi, float(hi_seen))
        data[name] = TensorData(lowest=np.array(min(lo, 0.0) if lo_seen < 0 else lo, np.float32),
                                highest=np.array(max(hi, 0.0), np.float32))
    return TensorsData(CalibrationMethod.Entropy, data)


def quantize(pre: Path, ranges, method: Method, out: Path, per_channel: bool = True,
             activations: str = "int8", nodes_to_exclude: Sequence[str] = ()) -> None:
    """Write the QDQ model for precomputed ranges (no calibration pass)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="armq-ort-") as td:
        cache = Path(td) / "ranges.json"
        save_tensors_data(copy.deepcopy(ranges), cache)
        act = QuantType.QInt8 if activations == "int8" else QuantType.QUInt8
        quantize_static(
            str(pre), str(out), None,
            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=False,
            activation_type=act, weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=getattr(CalibrationMethod, ORT_METHOD_NAMES[method]),
            calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                           "ForceQuantizeNoInputCheck": True},
        )
    rewire_shape_queries(out)


def rewire_shape_queries(path: Path) -> int:
    """Shape(DequantizeLinear(q)) == Shape(q): read shapes from the int8 tensor and
    drop DQ nodes left without consumers. Returns the number of DQs removed."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    changed = False
    for n in g.node:
        if n.op_type == "Shape" and n.input and n.input[0] in producer:
            p = producer[n.input[0]]
            if p.op_type == "DequantizeLinear":
                n.input[0] = p.input[0]
                changed = True
    if not changed:
        return 0
    outputs = {o.name for o in g.output}
    removed = 0
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
            removed += 1
    used = {i for n in g.node for i in n.input}
    for init in list(g.initializer):
        if init.name not in used and init.name not in outputs:
            g.initializer.remove(init)
    onnx.save(m, str(path))
    return removed


# ---- what really runs ------------------------------------------------------------------


def runtime_graph(path: Path, arm: bool = True):
    """The graph onnxruntime builds for `path` (ARM64 rules unless arm=False)."""
    import onnx

    from .runners import ort_session

    with tempfile.TemporaryDirectory(prefix="armq-ortopt-") as td:
        opt = Path(td) / "optimized.onnx"
        ort_session(path, arm=arm, threads=1, optimized_path=opt)
        return onnx.load(str(opt))


def runtime_audit(path: Path, arm: bool = True) -> dict:
    """Count what the CPU EP executes: int8 kernels vs float compute left over."""
    from onnx import helper, numpy_helper

    m = runtime_graph(path, arm)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    ops = Counter(n.op_type for n in g.node)
    int8 = sum(v for k, v in ops.items() if k.startswith(INT8_OPS_PREFIX))
    float_nodes = [n for n in g.node if n.op_type in COMPUTE_OPS]
    dw_int8 = dw_float = 0
    for n in g.node:
        if n.op_type not in ("QLinearConv", "Conv", "FusedConv"):
            continue
        group = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1)
        w_name = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
        w = inits.get(w_name)
        if w is None and w_name in producer and producer[w_name].op_type == "DequantizeLinear":
            w = inits.get(producer[w_name].input[0])
        if w is None or group <= 1:
            continue
        shape = numpy_helper.to_array(w).shape
        if len(shape) == 4 and shape[1] == 1 and group == shape[0]:
            if n.op_type == "QLinearConv":
                dw_int8 += 1
            else:
                dw_float += 1
    graph_outputs = {o.name for o in g.output}
    dq_feeds = Counter()
    for n in g.node:
        for i in n.input:
            if i in producer and producer[i].op_type == "DequantizeLinear" \
                    and producer[i].input[0] not in inits and n.op_type != "QuantizeLinear":
                dq_feeds[n.op_type] += 1
    return {
        "graph": "arm64 (session.qdqisint8allowed=1)" if arm else "host",
        "int8_kernels": int8,
        "float_compute": len(float_nodes),
        "float_islands": sorted({f"{n.op_type}:{n.name}" for n in float_nodes})[:50],
        "depthwise_int8": dw_int8,
        "depthwise_float": dw_float,
        "quantize_nodes": ops.get("QuantizeLinear", 0),
        "dequantize_to_float": dict(dq_feeds),
        "dequantize_to_output": sum(1 for o in graph_outputs if o in producer
                                    and producer[o].op_type == "DequantizeLinear"),
        "transposes": ops.get("Transpose", 0),
        "ops": dict(sorted(ops.items())),
    }


# ---- per-layer debugging ------------------------------------------------------------------


def layer_errors(pre: Path, qdq: Path, x: np.ndarray, input_name: str, batch: int | None,
                 workdir: Path) -> list[dict]:
    """Per-node SQNR between float and quantized activations (and weights), worst first.

    For each node of the float graph whose output is quantized in the QDQ model:
    `act_sqnr`: the float model's activation against the same activation through the
    QDQ model's Q/DQ (scale, zero point): the noise this one quantization adds, free
    of upstream error. (qdq_loss_debug's own pre-/post-QDQ error is wrong where the
    quantizer folded a Relu into the Q: its "pre" tensor still holds the negatives.)
    `xmodel_sqnr`: float vs QDQ model activation (accumulated error, qdq_loss_debug),
    `weight_sqnr`: the node's weight (qdq_loss_debug), `score`: the smaller local one.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from .calib import make_reader

    fa, qa = workdir / "float_aug.onnx", workdir / "qdq_aug.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        dbg.modify_model_output_intermediate_tensors(str(pre), str(fa))
        dbg.modify_model_output_intermediate_tensors(str(qdq), str(qa))
        f_act = dbg.collect_activations(str(fa), make_reader(input_name, x, batch or 8))
        q_act = dbg.collect_activations(str(qa), make_reader(input_name, x, batch or 8))
        match = dbg.create_activation_matching(q_act, f_act)
        match = {k: v for k, v in match.items() if "float" in v}
        xmodel = {k: dbg.compute_signal_to_quantization_noice_ratio(v["float"], v["post_qdq"])
                  for k, v in match.items()}
        w_err = dbg.compute_weight_error(dbg.create_weight_matching(str(pre), str(qdq)))
    qparams = _activation_qparams(qdq)
    act_err: dict[str, dict] = {}
    for name, vals in f_act.items():
        if name in qparams:
            f = np.concatenate([v.ravel() for v in vals])
            act_err[name] = {"qdq_err": _sqnr(f, _fake_quant(f, *qparams[name])),
                             "xmodel_err": xmodel.get(name)}
    g = onnx.load(str(pre), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # The QDQ quantizer drops a Relu/Clip that follows a Conv and quantizes the
    # activation's output instead: charge that tensor's error to the Conv.
    act_of: dict[str, str] = {}
    for n in g.node:
        out = n.output[0] if n.output else None
        if out is None:
            continue
        act_of.setdefault(n.name, out)
        if n.op_type in ("Relu", "Clip") and n.input and n.input[0] in producer:
            p = producer[n.input[0]]
            if p.op_type in LAYER_OPS and len(consumers.get(n.input[0], [])) == 1:
                act_of[p.name] = out
    rows = []
    for n in g.node:
        out = act_of.get(n.name)
        a = act_err.get(out, {}) if out else {}
        w = [w_err[i] for i in n.input if i in w_err]
        if not a and not w:
            continue
        local = [v for v in (a.get("qdq_err"), min(w) if w else None) if v is not None]
        rows.append({"node": n.name, "op": n.op_type, "tensor": out,
                     "act_sqnr": _r(a.get("qdq_err")), "xmodel_sqnr": _r(a.get("xmodel_err")),
                     "weight_sqnr": _r(min(w)) if w else None,
                     "score": _r(min(local)) if local else None})
    rows.sort(key=lambda r: (r["score"] is None, r["score"] if r["score"] is not None else 0))
    return rows


def _activation_qparams(qdq: Path) -> dict[str, tuple[float, int, int, int]]:
    """tensor -> (scale, zero point, qmin, qmax) of each per-tensor QuantizeLinear."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(qdq), load_external_data=False).graph
    inits = {i.name: i for i in g.initializer}
    out = {}
    for n in g.node:
        if n.op_type != "QuantizeLinear" or len(n.input) < 3 or n.input[1] not in inits:
            continue
        s = numpy_helper.to_array(inits[n.input[1]])
        z = numpy_helper.to_array(inits[n.input[2]]) if n.input[2] in inits else None
        if s.size != 1 or z is None:
            continue
        info = np.iinfo(z.dtype)
        out[n.input[0]] = (float(s.ravel()[0]), int(z.ravel()[0]), int(info.min), int(info.max))
    return out


def _fake_quant(x: np.ndarray, scale: float, zp: int, qmin: int, qmax: int) -> np.ndarray:
    return (np.clip(np.round(x / scale) + zp, qmin, qmax) - zp) * scale


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - test) ** 2))
    sig = float(np.sum(ref.astype(np.float64) ** 2))
    return 200.0 if noise == 0 else (10 * np.log10(max(sig, 1e-30) / noise))


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 2)


def exclusion_for(pre: Path, node_name: str) -> list[str]:
    """Nodes to exclude from quantization so that `node_name`'s output stays float.

    Excluding a Conv alone is not enough: when its input and output are still
    quantized, ORT's optimizer quantizes the float weight itself (weight/bias
    quantization transformer) and fuses a QLinearConv anyway. So the output tensor
    loses its Q/DQ: the node (with a Relu/Clip that follows it alone) and every
    consumer of that tensor are excluded; they run in float."""
    import onnx

    g = onnx.load(str(pre), load_external_data=False).graph
    nodes = {n.name: n for n in g.node}
    if node_name not in nodes:
        return [node_name]
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names = [node_name]
    outs = list(nodes[node_name].output)
    nxt = consumers.get(outs[0], []) if outs else []
    if len(nxt) == 1 and nxt[0].op_type in ("Relu", "Clip"):
        names.append(nxt[0].name)
        outs = list(nxt[0].output)
    for o in outs:
        names += [c.name for c in consumers.get(o, []) if c.name not in names]
    return names
