"""litert-torch's PT2E quantizer for the TFLite backend, with armq's annotations
and observers (the format-specific "quantizer" of quant.tflite_ptq).

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
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from zoo.util import captured_native_output
from .common import Method, PERCENTILE
from .config import Annotations, QuantConfig
from .ranges import kl_range

_IMPORTED = False


def quiet_env() -> None:
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


# ---- observers -------------------------------------------------------------------------------


def _observer_classes():
    """Histogram observers picking the range by percentile or by KL divergence."""
    quiet_env()
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


def quantization_config(method: Method, config: QuantConfig):
    quiet_env()
    import torch
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    # weights: int8 symmetric, per channel unless per-tensor (quant.config.WEIGHTS)
    base = get_symmetric_quantization_config(is_per_channel=config.per_channel)
    if method is Method.MINMAX:
        ctr = MinMaxObserver.with_args(eps=2 ** -12)
    else:
        pct, kl = _observer_classes()
        ctr = (kl if method is Method.ENTROPY else pct).with_args(eps=2 ** -12)
    act = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                           qscheme=torch.per_tensor_symmetric if config.symmetric_activations
                           else torch.per_tensor_affine, is_dynamic=False,
                           observer_or_fake_quant_ctr=ctr)
    import dataclasses
    return dataclasses.replace(base, input_activation=act, output_activation=act)


# ---- the quantizer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSets:
    """The aten ops each annotation rule of ArmqPT2EQuantizer applies to."""

    relu: frozenset        # relu, relu_ (fused into a conv or an add)
    relu6: frozenset       # relu6 where this torch has it
    clamp: frozenset       # hardtanh: relu6 when its range is 0..6
    conv: frozenset
    shared: frozenset      # share their input's quantization (int8 kernels need equal params)
    own_range: frozenset   # get their own output observer (TFLite has int8 kernels)
    add: object            # aten.add.Tensor: annotated with its fused activation


def op_sets() -> OpSets:
    import torch

    aten = torch.ops.aten
    relu6 = {aten.relu6.default} if hasattr(aten, "relu6") else set()
    relu = {aten.relu.default, aten.relu_.default}
    clamp = {aten.hardtanh.default, aten.hardtanh_.default}
    shared = {aten.transpose.int, aten.transpose_copy.int, aten.index_select.default,
              aten.avg_pool2d.default, aten.constant_pad_nd.default, aten.pad.default,
              *relu, *clamp, aten.clone.default, aten.contiguous.default,
              aten.reshape.default, aten.view.default, aten.flatten.using_ints,
              aten.permute.default, aten.squeeze.dim, aten.unsqueeze.default,
              aten.max_pool2d.default, aten.adaptive_avg_pool2d.default, aten.mean.dim,
              aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default,
              aten.slice.Tensor, getattr(aten, "_unsafe_view").default}
    own_range = {aten.hardswish.default, aten.hardswish_.default, aten.hardsigmoid.default,
                 aten.hardsigmoid_.default, aten.sigmoid.default, aten.silu.default,
                 aten.silu_.default, *relu6}
    conv = {aten.conv1d.default, aten.conv2d.default, aten.convolution.default}
    return OpSets(frozenset(relu), frozenset(relu6), frozenset(clamp), frozenset(conv),
                  frozenset(shared), frozenset(own_range), aten.add.Tensor)


# ---- reading a node's annotation ---------------------------------------------------------------

def annotation(n):
    return n.meta.get("quantization_annotation") if hasattr(n, "meta") else None


def is_annotated(n) -> bool:
    a = annotation(n)
    return a is not None and a._annotated


def annotated_output(n) -> bool:
    a = annotation(n)
    return a is not None and a.output_qspec is not None


def in_skipped(n, skip: set[str]) -> bool:
    """n belongs to one of the modules kept in float; the fqn may carry a wrapper prefix
    ('module.' of the channel-last wrapper)."""
    stack = n.meta.get("nn_module_stack") or {}
    for fqn, _ in stack.values():
        f = "." + fqn + "."
        if any(("." + s + ".") in f for s in skip):
            return True
    return False


def shares_with_float(n) -> bool:
    """n shares the quantization of a node (or an edge) that has none."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    a = annotation(n)
    if a is None:
        return False
    for spec in (a.output_qspec, *a.input_qspec_map.values()):
        if not isinstance(spec, SharedQuantizationSpec):
            continue
        src = spec.edge_or_node
        if isinstance(src, tuple):  # edge (producer, consumer): the consumer's input spec
            ca = annotation(src[1])
            if ca is None or src[0] not in ca.input_qspec_map:
                return True
        elif not annotated_output(src):
            return True
    return False


def float_tensor(a) -> bool:
    import torch

    v = a.meta.get("val") if hasattr(a, "meta") else None
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def fusable_act(n, ops: OpSets) -> bool:
    """relu or relu6 (hardtanh 0..6): activations TFLite fuses into a conv or an add."""
    if n.op != "call_function" or is_annotated(n):
        return False
    if n.target in ops.relu | ops.relu6:
        return True
    if n.target in ops.clamp:
        lo = n.args[1] if len(n.args) > 1 else n.kwargs.get("min_val", -1.0)
        hi = n.args[2] if len(n.args) > 2 else n.kwargs.get("max_val", 1.0)
        return (float(lo), float(hi)) == (0.0, 6.0)
    return False


# ---- the annotation passes ---------------------------------------------------------------------

def leave_in_float(model, skip: set[str]) -> None:
    """Remove the annotations of the skipped modules, then of whatever shared their
    quantization (a flatten after a pool kept in float): PT2E's prepare fails on a
    shared spec whose source has no quantization (KeyError in _find_root_edge_or_node)."""
    for n in model.graph.nodes:
        if n.op == "call_function" and in_skipped(n, skip):
            n.meta.pop("quantization_annotation", None)
    orphans = True
    while orphans:
        orphans = [n for n in model.graph.nodes if shares_with_float(n)]
        for n in orphans:
            n.meta.pop("quantization_annotation", None)


def _conv_qmap(n, qconfig) -> dict:
    """Input, weight and bias specs of a conv whose fused activation litert does not know
    (conv + relu is litert's own "conv_relu" pattern); the weights marked annotated."""
    from litert_torch.quantize.pt2e_quantizer_utils import (get_bias_qspec, get_input_act_qspec,
                                                           get_weight_qspec)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    qmap = {n.args[0]: get_input_act_qspec(qconfig), n.args[1]: get_weight_qspec(qconfig)}
    bias = n.args[2] if len(n.args) > 2 else None
    if hasattr(bias, "meta"):
        qmap[bias] = get_bias_qspec(qconfig)
    for w in qmap:
        if w is not n.args[0] and "quantization_annotation" not in w.meta:
            w.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
    return qmap


def annotate_fused(model, qconfig, ops: OpSets) -> None:
    """conv + relu6 and add (+ relu/relu6): observer after the activation only."""
    from litert_torch.quantize.pt2e_quantizer_utils import (get_input_act_qspec,
                                                           get_output_act_qspec)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for n in model.graph.nodes:
        if n.op != "call_function" or is_annotated(n):
            continue
        users = list(n.users)
        act = users[0] if len(users) == 1 and fusable_act(users[0], ops) else None
        if n.target in ops.conv and act is not None and act.target not in ops.relu | ops.relu6:
            qmap = _conv_qmap(n, qconfig)
        elif (n.target is ops.add and len(n.args) == 2
              and n.kwargs.get("alpha", 1) == 1 and all(float_tensor(a) for a in n.args)):
            qmap = {a: get_input_act_qspec(qconfig) for a in n.args}
        else:
            continue
        out_spec = get_output_act_qspec(qconfig)
        n.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=qmap, output_qspec=None if act is not None else out_spec,
            _annotated=True)
        if act is not None:
            act.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=out_spec, _annotated=True)


def annotate_rest(model, qconfig, ops: OpSets) -> None:
    """After litert's own patterns: shape and pooling ops share their input's quantization,
    hardswish / sigmoid / ... get their own output observer."""
    from torchao.quantization.pt2e.quantizer import (QuantizationAnnotation,
                                                     SharedQuantizationSpec)

    for n in model.graph.nodes:
        if n.op != "call_function" or not n.args or not hasattr(n.args[0], "meta"):
            continue
        if is_annotated(n):
            continue
        prev = n.args[0]
        if n.target in ops.shared and annotated_output(prev):
            spec = SharedQuantizationSpec(prev)
            n.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={prev: spec}, output_qspec=spec, _annotated=True)
        elif n.target in ops.own_range and annotated_output(prev):
            n.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={prev: qconfig.input_activation},
                output_qspec=qconfig.output_activation, _annotated=True)


# ---- the quantizer -----------------------------------------------------------------------------

def make_quantizer(method: Method, config: QuantConfig = QuantConfig(),
                   float_modules: Iterable[str] = ()):
    """The PT2E quantizer for `method` and `config`, `float_modules` left unannotated
    (float). Annotations.LITERT: litert-torch's PT2EQuantizer as shipped (for comparison)."""
    quiet_env()
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    qconfig = quantization_config(method, config)
    if config.pt2e_annotations is Annotations.LITERT:
        return PT2EQuantizer().set_global(qconfig)
    skip, ops = set(float_modules), op_sets()

    class ArmqPT2EQuantizer(PT2EQuantizer):
        """litert-torch's quantizer plus the ops the zoo needs (see module docstring)."""

        def annotate(self, model):
            annotate_fused(model, qconfig, ops)
            model = super().annotate(model)
            annotate_rest(model, qconfig, ops)
            if skip:
                leave_in_float(model, skip)
            return model

    return ArmqPT2EQuantizer().set_global(qconfig)
