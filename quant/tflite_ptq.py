"""TFLite backend: full-integer INT8 (int8 weights, activations, input and output)
through litert-torch's PT2E flow.

    torch model (card['source']) -> torch.export -> prepare_pt2e(ArmqPT2EQuantizer)
    -> calibration images -> convert_pt2e -> litert_torch.convert -> .tflite

The torch model is rebuilt from the checkpoint named in the card (its sha256
must still match: the training run rewrites checkpoints) or, for random-init
exports, from the recorded seed; it is checked against the float ONNX model.

litert-torch's PT2EQuantizer annotates conv(+relu), linear, add(+relu), mul,
cat, max/adaptive-avg pool and a few shape ops. Everything else is left
unannotated, and a converter keeps an unannotated op in float between a
DEQUANTIZE and a QUANTIZE: a float island. ArmqPT2EQuantizer adds the ops the
zoo needs: the channel shuffle (transpose / index_select), avg_pool2d (the
ShuffleNet V1 shortcut), pad (TF SAME padding), standalone relu/relu6/hardtanh,
clone/contiguous share their input's quantization (TFLite requires equal
input/output parameters for these int8 kernels), and hardswish / hardsigmoid /
sigmoid / silu get their own output observer (TFLite has int8 kernels for them).

Fused activations: conv -> relu6 (hardtanh 0..6, MobileNet V2 / EfficientNet-Lite)
and add -> relu / relu6 are annotated as one op with the observer after the
activation, as TFLite runs them (one kernel with a fused activation); litert's
own patterns only fuse conv + relu, so a ReLU6 shared the conv's pre-clamp range
(efficientnet_lite0: SQNR 3 dB, 81% top-1 agreement). Residual adds are
annotated here too: litert finds adds through `source_fn_stack`, which
torch.export no longer records, so they were left to the converter and every
add that feeds another add stayed in float.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from zoo.util import captured_native_output
from .common import Method, ModelRef, PERCENTILE, QuantError
from .ranges import kl_range

REPO = Path(__file__).resolve().parents[1]


_IMPORTED = False


def _quiet_env() -> None:
    """Import torchao / litert-torch once with their import-time noise (missing CUDA
    kernels, absl/oneDNN banners, pytree deprecations) kept off the terminal."""
    global _IMPORTED
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    if _IMPORTED:
        return
    import logging
    import warnings

    for name in ("torchao", "torch.utils._pytree", "absl", "jax", "tensorflow", "litert_torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with captured_native_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchao.quantization.pt2e  # noqa: F401
        try:
            import litert_torch
            litert_torch.config.show_progress = False
        except ImportError:
            pass
    _IMPORTED = True


def available() -> str | None:
    """None when the TFLite backend can run, else why not (one line)."""
    import importlib.util

    for mod, pkg in (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert"),
                     ("torchao", "torchao")):
        if importlib.util.find_spec(mod) is None:
            return f"the TFLite backend needs {pkg} (pip install 'armq[tflite]')"
    return None


# ---- the float torch model --------------------------------------------------------------------


def _find_checkpoint(ref: ModelRef, name: str) -> Path:
    p = Path(name)
    for cand in ([p] if p.is_absolute() else [ref.card_path.parent / p, REPO / p, Path.cwd() / p]):
        if cand.is_file():
            return cand
    raise QuantError(f"{ref.name}: checkpoint {name} named in the card does not exist")


def build_torch_model(ref: ModelRef):
    """The float torch model the card's ONNX/TFLite models were exported from."""
    import torch

    import zoo
    from zoo._registry import Variant, create_model
    from zoo.checkpoint import load_weights, read_checkpoint

    zoo._load_families()
    src = ref.card.source
    try:
        variant = Variant.from_dict(ref.card.variant)
    except (KeyError, TypeError) as e:
        raise QuantError(f"{ref.name}: card variant unusable ({e})") from None
    if src.get("checkpoint"):
        ck = _find_checkpoint(ref, str(src["checkpoint"]))
        raw = ck.read_bytes()
        import hashlib
        digest = hashlib.sha256(raw).hexdigest()
        if src.get("sha256") and src["sha256"] != digest:
            raise QuantError(f"{ref.name}: checkpoint {ck} changed since export (sha256 "
                             f"{digest[:12]} != card {str(src['sha256'])[:12]}); re-export the model")
        with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
            tmp.write(raw)
            tmp.flush()
            state = read_checkpoint(tmp.name)["state_dict"]
        torch.manual_seed(0)
        model = create_model(variant)
        load_weights(model, state, f"checkpoint {ck}")
    elif src.get("weights") == "random" and "seed" in src and not src.get("builder"):
        torch.manual_seed(int(src["seed"]))
        model = create_model(variant)
        if "BatchNorm" in str(src.get("init", "")):
            from export.common import randomize_norms  # export's random-init recipe
            randomize_norms(model, int(src["seed"]))
    else:
        raise QuantError(f"{ref.name}: the card's source {sorted(src)} names no checkpoint to "
                         "rebuild the torch model from (the TFLite backend starts from torch)")
    return model.eval()


def check_parity(model, ref_onnx: Path | None, x: np.ndarray, name: str) -> float | None:
    """Max |torch - float ONNX| on a few images: the rebuilt model must be the exported one."""
    if ref_onnx is None:
        return None
    import torch

    from .runners import OrtRunner

    with torch.no_grad():
        t = model(torch.from_numpy(x)).numpy()
    o = OrtRunner(ref_onnx, arm=False)(x)
    diff = float(np.abs(t - o).max())
    scale = float(np.abs(o).max()) or 1.0
    if diff > 1e-3 * max(1.0, scale):
        raise QuantError(f"{name}: the rebuilt torch model disagrees with {ref_onnx.name} "
                         f"(max |diff| {diff:.3g}); re-export the model")
    return diff


# ---- observers -------------------------------------------------------------------------------


def _observer_classes():
    """Histogram observers picking the range by percentile or by KL divergence."""
    _quiet_env()
    import torch
    from torchao.quantization.pt2e.observer import HistogramObserver

    class _RangeFromHistogram(HistogramObserver):
        def _edges(self):
            n = self.histogram.numel()
            lo, hi = float(self.min_val), float(self.max_val)
            return np.linspace(lo, hi, n + 1), self.histogram.detach().cpu().double().numpy()

        def _non_linear_param_search(self):
            edges, hist = self._edges()
            lo, hi = self._pick(edges, hist)
            return (torch.tensor(lo, dtype=self.min_val.dtype),
                    torch.tensor(hi, dtype=self.max_val.dtype))

    class PercentileObserver(_RangeFromHistogram):
        """Clip (100 - PERCENTILE)/2 percent of the values on each side."""

        def _pick(self, edges, hist):
            total = hist.sum()
            if total <= 0:
                return edges[0], edges[-1]
            cdf = np.cumsum(hist) / total
            cut = (100.0 - PERCENTILE) / 200.0
            lo = edges[int(np.searchsorted(cdf, cut))]
            hi = edges[min(len(edges) - 1, int(np.searchsorted(cdf, 1.0 - cut)) + 1)]
            return min(lo, 0.0) if edges[0] < 0 else edges[0], max(hi, 0.0)

    class KLObserver(_RangeFromHistogram):
        """TensorRT-style entropy calibration for asymmetric int8: shrink the range
        around zero and keep the one whose 256-level quantization of the clipped
        histogram loses the least information (KL divergence)."""

        def _pick(self, edges, hist):
            return kl_range(edges, hist)

    return PercentileObserver, KLObserver


def quantization_config(method: Method, per_channel: bool):
    _quiet_env()
    import torch
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    base = get_symmetric_quantization_config(is_per_channel=per_channel)
    if method is Method.MINMAX:
        ctr = MinMaxObserver.with_args(eps=2 ** -12)
    else:
        pct, kl = _observer_classes()
        ctr = (kl if method is Method.ENTROPY else pct).with_args(eps=2 ** -12)
    act = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                           qscheme=torch.per_tensor_affine, is_dynamic=False,
                           observer_or_fake_quant_ctr=ctr)
    import dataclasses
    return dataclasses.replace(base, input_activation=act, output_activation=act)


# ---- the quantizer -----------------------------------------------------------------------------


def make_quantizer(method: Method, per_channel: bool, float_modules: Iterable[str] = (),
                   annotations: str = "armq"):
    """annotations="litert": litert-torch's PT2EQuantizer as shipped (for comparison)."""
    _quiet_env()
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from torchao.quantization.pt2e.quantizer import (QuantizationAnnotation,
                                                     SharedQuantizationSpec)

    aten = torch.ops.aten
    relu6 = {aten.relu6.default} if hasattr(aten, "relu6") else set()
    relu_ops = {aten.relu.default, aten.relu_.default}
    clamp_ops = {aten.hardtanh.default, aten.hardtanh_.default}
    shared = {aten.transpose.int, aten.transpose_copy.int, aten.index_select.default,
              aten.avg_pool2d.default, aten.constant_pad_nd.default, aten.pad.default,
              *relu_ops, *clamp_ops, aten.clone.default, aten.contiguous.default,
              aten.reshape.default, aten.view.default, aten.flatten.using_ints,
              aten.permute.default, aten.squeeze.dim, aten.unsqueeze.default,
              aten.max_pool2d.default, aten.adaptive_avg_pool2d.default, aten.mean.dim,
              aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default,
              aten.slice.Tensor, getattr(aten, "_unsafe_view").default}
    own_range = {aten.hardswish.default, aten.hardswish_.default, aten.hardsigmoid.default,
                 aten.hardsigmoid_.default, aten.sigmoid.default, aten.silu.default,
                 aten.silu_.default, *relu6}
    config = quantization_config(method, per_channel)
    skip = set(float_modules)

    def annotation(n):
        return n.meta.get("quantization_annotation") if hasattr(n, "meta") else None

    def is_annotated(n) -> bool:
        a = annotation(n)
        return a is not None and a._annotated

    def annotated_output(n) -> bool:
        a = annotation(n)
        return a is not None and a.output_qspec is not None

    def in_skipped(n) -> bool:
        # fqn may carry a wrapper prefix ('module.' of the channel-last wrapper)
        stack = n.meta.get("nn_module_stack") or {}
        for fqn, _ in stack.values():
            f = "." + fqn + "."
            if any(("." + s + ".") in f for s in skip):
                return True
        return False

    if annotations == "litert":
        return PT2EQuantizer().set_global(config)

    conv_ops = {aten.conv1d.default, aten.conv2d.default, aten.convolution.default}
    fused_relu_ops = relu_ops | relu6

    def fusable_act(n) -> bool:
        """relu or relu6 (hardtanh 0..6): activations TFLite fuses into a conv or an add."""
        if n.op != "call_function" or is_annotated(n):
            return False
        if n.target in fused_relu_ops:
            return True
        if n.target in clamp_ops:
            lo = n.args[1] if len(n.args) > 1 else n.kwargs.get("min_val", -1.0)
            hi = n.args[2] if len(n.args) > 2 else n.kwargs.get("max_val", 1.0)
            return (float(lo), float(hi)) == (0.0, 6.0)
        return False

    def float_tensor(a) -> bool:
        v = a.meta.get("val") if hasattr(a, "meta") else None
        return isinstance(v, torch.Tensor) and v.is_floating_point()

    def annotate_fused(model) -> None:
        """conv + relu6 and add (+ relu/relu6): observer after the activation only."""
        from litert_torch.quantize.pt2e_quantizer_utils import (
            get_bias_qspec, get_input_act_qspec, get_output_act_qspec, get_weight_qspec)

        for n in model.graph.nodes:
            if n.op != "call_function" or is_annotated(n):
                continue
            users = list(n.users)
            act = users[0] if len(users) == 1 and fusable_act(users[0]) else None
            if n.target in conv_ops and act is not None and act.target not in fused_relu_ops:
                # conv + relu is litert's own "conv_relu" pattern
                qmap = {n.args[0]: get_input_act_qspec(config), n.args[1]: get_weight_qspec(config)}
                bias = n.args[2] if len(n.args) > 2 else None
                if hasattr(bias, "meta"):
                    qmap[bias] = get_bias_qspec(config)
                for w in qmap:
                    if w is not n.args[0] and "quantization_annotation" not in w.meta:
                        w.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            elif (n.target is aten.add.Tensor and len(n.args) == 2
                  and n.kwargs.get("alpha", 1) == 1 and all(float_tensor(a) for a in n.args)):
                qmap = {a: get_input_act_qspec(config) for a in n.args}
            else:
                continue
            out_spec = get_output_act_qspec(config)
            n.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=qmap, output_qspec=None if act is not None else out_spec,
                _annotated=True)
            if act is not None:
                act.meta["quantization_annotation"] = QuantizationAnnotation(
                    output_qspec=out_spec, _annotated=True)

    class ArmqPT2EQuantizer(PT2EQuantizer):
        """litert-torch's quantizer plus the ops the zoo needs (see module docstring)."""

        def annotate(self, model):
            annotate_fused(model)
            model = super().annotate(model)
            for n in model.graph.nodes:
                if n.op != "call_function" or not n.args or not hasattr(n.args[0], "meta"):
                    continue
                if is_annotated(n):
                    continue
                prev = n.args[0]
                if n.target in shared and annotated_output(prev):
                    spec = SharedQuantizationSpec(prev)
                    n.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={prev: spec}, output_qspec=spec, _annotated=True)
                elif n.target in own_range and annotated_output(prev):
                    n.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={prev: config.input_activation},
                        output_qspec=config.output_activation, _annotated=True)
            if skip:
                for n in model.graph.nodes:
                    if n.op == "call_function" and in_skipped(n):
                        n.meta.pop("quantization_annotation", None)
            return model

    return ArmqPT2EQuantizer().set_global(config)


# ---- calibrate, convert ---------------------------------------------------------------------


def with_layout(model, layout: str):
    """NHWC: wrap with litert-torch's channel-last IO (TFLite's native input layout)."""
    if layout.lower() != "nhwc":
        return model
    _quiet_env()
    import litert_torch
    return litert_torch.to_channel_last_io(model, args=[0]).eval()


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout.lower() == "nhwc" else x


def calibrate(model, x: np.ndarray, method: Method, per_channel: bool,
              float_modules: Sequence[str] = (), progress=None, layout: str = "nchw",
              annotations: str = "armq"):
    """(quantizer, PT2E-converted GraphModule): the simulated INT8 model.
    `model` takes NCHW; with layout nhwc the graph takes NHWC (x stays NCHW here)."""
    _quiet_env()
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    xl = to_layout(x, layout)
    sample = (torch.from_numpy(xl[:1]),)
    quantizer = make_quantizer(method, per_channel, float_modules, annotations)
    with torch.no_grad():
        exported = torch.export.export(with_layout(model, layout), sample).module()
        prepared = prepare_pt2e(exported, quantizer)
        for i in range(len(xl)):  # batch 1: the exported graph is static
            prepared(torch.from_numpy(xl[i:i + 1]))
            if progress:
                progress(1)
        converted = convert_pt2e(prepared, fold_quantize=False)
    converted.armq_layout = layout
    return quantizer, converted


def run_simulated(converted, x: np.ndarray) -> np.ndarray:
    """Logits of a PT2E model (or of the float torch model) on NCHW images."""
    import torch

    xl = to_layout(x, getattr(converted, "armq_layout", "nchw"))
    with torch.no_grad():
        return np.concatenate([converted(torch.from_numpy(xl[i:i + 1])).numpy()
                               for i in range(len(xl))]).reshape(len(xl), -1)


def to_tflite(converted, quantizer, x: np.ndarray, out: Path) -> None:
    """litert_torch.convert the PT2E model and write the flatbuffer to `out`."""
    _quiet_env()
    import torch
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    xl = to_layout(x, getattr(converted, "armq_layout", "nchw"))
    sample = (torch.from_numpy(xl[:1]),)
    with captured_native_output() as log:
        try:
            edge = litert_torch.convert(converted, sample,
                                        quant_config=QuantConfig(pt2e_quantizer=quantizer))
            edge.export(str(out))
            err = None
        except Exception as e:  # noqa: BLE001 - the converter raises many kinds
            err = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if err:
        tail = next((ln for ln in reversed(log) if "error" in ln.lower()), "")
        raise QuantError(f"litert_torch.convert failed: {err[:200]}{' | ' + tail[:160] if tail else ''}")


# ---- what really runs -----------------------------------------------------------------------

TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL",
                  "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "HARD_SWISH", "LOGISTIC", "RELU",
                  "RELU6", "SOFTMAX", "CONCATENATION", "PAD", "BATCH_MATMUL", "TRANSPOSE_CONV"}


def runtime_audit(path: Path) -> dict:
    """Ops of the flatbuffer as the interpreter sees them (no delegate), by dtype."""
    from collections import Counter

    from .runners import tflite_interpreter

    it = tflite_interpreter(path, threads=1, delegates=False)
    td = {t["index"]: t for t in it.get_tensor_details()}
    ops = Counter()
    islands = []
    dw_int8 = dw_float = quant = dequant = 0
    for o in it._get_ops_details():
        name = o["op_name"]
        ops[name] += 1
        ins = [np.dtype(td[i]["dtype"]).name for i in o["inputs"] if i >= 0 and i in td]
        outs = [np.dtype(td[i]["dtype"]).name for i in o["outputs"] if i in td]
        first = ins[0] if ins else ""
        if name == "QUANTIZE":
            quant += first.startswith("float")
        elif name == "DEQUANTIZE":
            dequant += 1
        elif name in TFLITE_COMPUTE and (first.startswith("float") or
                                          (outs and outs[0].startswith("float"))):
            islands.append(name)
        if name == "DEPTHWISE_CONV_2D":
            if first == "int8":
                dw_int8 += 1
            else:
                dw_float += 1
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    return {"graph": "tflite builtin ops (no delegate)",
            "float_compute": len(islands), "float_islands": dict(Counter(islands)),
            "depthwise_int8": dw_int8, "depthwise_float": dw_float,
            "quantize_from_float": quant, "dequantize": dequant,
            "transposes": ops.get("TRANSPOSE", 0),
            "io": {"input": np.dtype(inp["dtype"]).name, "output": np.dtype(out["dtype"]).name},
            "ops": dict(sorted(ops.items()))}


def onnx_node_to_module(node_name: str) -> str | None:
    """'/features/features.3/pw1/pw1.0/Conv' (torchscript export scopes) -> 'features.3.pw1.0'.

    A scope component that repeats the previous one plus '.k' is that
    container's child k, so it replaces the previous component."""
    comps = [p for p in node_name.split("/") if p][:-1]  # the last one is the op
    full, prev = "", ""
    for comp in comps:
        if prev and comp.startswith(prev + "."):
            full = full[: len(full) - len(prev)] + comp
        else:
            full = f"{full}.{comp}" if full else comp
        prev = comp
    return full or None


