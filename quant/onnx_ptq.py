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
  * exact graph rewrites around quantization live in quant.onnx_graph, the
    per-layer error ranking and float exclusions in quant.onnx_layers;
  * `OrtBackend` is this format's side of quant.policy (method choice and
    float fallback are decided there, once for both backends).
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

from .common import Method, ModelRef, QuantError
from .config import WEIGHTS, WEIGHTS_REDUCED, ActivationType, QuantConfig
from .onnx_graph import avgpool_as_depthwise, nhwc_channel_shuffle, rewire_shape_queries
from .onnx_layers import LAYER_OPS, exclusion_for, layer_errors
from .policy import Holdout, Outcome, progress_bar

ORT_METHOD_NAMES = {Method.MINMAX: "MinMax", Method.ENTROPY: "Entropy",
                    Method.PERCENTILE: "Percentile"}
# Ops that do arithmetic; in float after ORT's optimizer they are float islands.
COMPUTE_OPS = {"Conv", "FusedConv", "ConvTranspose", "Gemm", "MatMul", "FusedGemm", "FusedMatMul",
               "Add", "Sub", "Mul", "Div", "AveragePool", "GlobalAveragePool", "MaxPool",
               "Concat", "Sigmoid", "HardSigmoid", "HardSwish", "Relu", "Clip", "Softmax",
               "ReduceMean", "Resize", "LeakyRelu", "Tanh", "Gelu", "QuickGelu", "Erf"}
INT8_OPS_PREFIX = ("QLinear", "QGemm", "QAttention", "QEmbed", "MatMulInteger", "ConvInteger",
                   "DynamicQuantize")
CHUNK_BYTES = 64 << 20  # activations kept at once while calibrating (approx.)
DEBUG_IMAGES = 32        # calibration images for the per-layer SQNR ranking


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


# QuantizeLinear/DequantizeLinear exist from opset 10; their per-channel 'axis' from 13.
MIN_QDQ_OPSET = {False: 10, True: 13}


def check_float_model(src: Path, sample_shape: Sequence[int], per_channel: bool = True) -> None:
    """Before quantizing: onnxruntime can load the float model (no truncated file, no op
    the runtime lacks), its input takes the card's samples, and its weights are finite."""
    import onnx
    from onnx import numpy_helper

    from .runners import check_input_shape, ort_session

    sess = ort_session(src, arm=False, threads=1)
    inp = sess.get_inputs()[0]
    check_input_shape(src, inp.name, inp.shape, sample_shape, ort_type=inp.type)
    m = onnx.load(str(src))
    # An older opset reaches onnxruntime only as an invalid QDQ model in a temp folder
    # with a deleted temp file's name: say so here, about the user's file.
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    need = MIN_QDQ_OPSET[per_channel]
    if opset is not None and opset < need:
        raise QuantError(f"{src.name}: ONNX opset {opset} is too old for "
                         f"{'per-channel ' if per_channel else ''}INT8 QDQ models (needs >= {need}); "
                         f"re-export with --opset 17, or upgrade it with "
                         f"onnx.version_converter.convert_version(model, {need})")
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


def quantize(pre: Path, ranges, method: Method, out: Path, config: QuantConfig = QuantConfig(),
             nodes_to_exclude: Sequence[str] = ()) -> None:
    """Write the QDQ model for precomputed ranges (no calibration pass)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="armq-ort-") as td:
        cache = Path(td) / "ranges.json"
        save_tensors_data(copy.deepcopy(ranges), cache)
        act = QuantType.QInt8 if config.activations is ActivationType.INT8 else QuantType.QUInt8
        quantize_static(
            str(pre), str(out), None,
            quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=act, weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=getattr(CalibrationMethod, ORT_METHOD_NAMES[method]),
            calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": config.symmetric_activations,
                           "WeightSymmetric": True, "ForceQuantizeNoInputCheck": True},
        )
    rewire_shape_queries(out)


# ---- what really runs ------------------------------------------------------------------


def runtime_audit(path: Path, arm: bool = True) -> dict:
    """Count what the CPU EP executes: int8 kernels vs float compute left over."""
    from onnx import helper, numpy_helper

    from export.runtime import runtime_graph

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


# ---- the policy's backend ------------------------------------------------------------


class OrtBackend:
    """quant.policy's backend for ONNX Runtime: ranges from ORT's calibrators, computed
    once per method (the fallback re-quantizes them), QDQ models from quantize_static,
    layers ranked by per-layer SQNR. Candidates are QDQ files in `work`."""

    name = "ort"
    exclusion_key = "excluded_nodes"

    def __init__(self, ref: ModelRef, calib: np.ndarray, config: QuantConfig, work: Path):
        src = ref.artifact("onnx")
        if src is None:
            raise QuantError(f"{ref.name}: the card has no float ONNX model (run `python -m export.onnx`)")
        check_float_model(src, calib.shape[1:], config.per_channel)
        self.model, self.calib, self.config, self.work = ref.name, calib, config, work
        self.pre = work / "pre.onnx"
        preprocess(src, self.pre)
        self.shuffles = nhwc_channel_shuffle(self.pre)
        self.pools = avgpool_as_depthwise(self.pre)
        self.input_name, self.batch, _ = model_input(self.pre)

    def float_logits(self, x: np.ndarray) -> np.ndarray:
        from .evaluate import run_model
        return run_model(self.pre, x, "float holdout", arm=False)

    def calibrate(self, method: Method):
        with progress_bar(len(self.calib), f"{self.model} ort calibrate {method.value}") as bar:
            return calibrate(self.pre, self.calib, method, self.input_name, self.batch, self.work,
                             bar.update)

    def quantize(self, ranges, method: Method, exclusions: Sequence[str], tag: str) -> Path:
        out = self.work / f"q_{tag}.onnx"
        nodes = sorted({n for e in exclusions for n in exclusion_for(self.pre, e)})
        quantize(self.pre, ranges, method, out, self.config, nodes)
        return out

    def logits(self, candidate: Path, x: np.ndarray) -> np.ndarray:
        from .evaluate import run_model
        return run_model(candidate, x, f"holdout {candidate.stem}", arm=False)

    def rank_layers(self, candidate: Path) -> list[dict]:
        # a spread-out subset: the SQNR of every activation is kept in memory
        x = self.calib[:: max(1, len(self.calib) // DEBUG_IMAGES)][:DEBUG_IMAGES]
        return layer_errors(self.pre, candidate, x, self.input_name, self.batch, self.work)

    def fallback_layers(self, ranking: Sequence[dict]) -> list[str]:
        return [r["node"] for r in ranking if r["op"] in LAYER_OPS]

    def finish(self, outcome: Outcome, hold: Holdout | None) -> tuple[Path, dict]:
        import onnxruntime
        return outcome.candidate, {
            "nhwc_channel_shuffles": self.shuffles, "avgpools_as_depthwise": self.pools,
            "format": "QDQ",
            "activations": self.config.activations.value,
            "weights": WEIGHTS_REDUCED if self.config.reduce_range else WEIGHTS,
            "runtime": f"onnxruntime {onnxruntime.__version__}"}
