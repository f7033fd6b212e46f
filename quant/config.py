"""What to quantize and how: one config object shared by both backends and the policy.

The CLI (quant.ptq) builds a `QuantConfig` once from its flags; the policy
(quant.policy) and the format-specific backends (quant.onnx_ptq,
quant.tflite_ptq) read only this object, never the argparse namespace, so a
caller (deploy, a test) can drive them without a command line.

Torch-free and onnxruntime-free, like quant.common.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Sequence

from .common import CONCRETE_METHODS, Method


class Scheme(str, Enum):
    """How an activation's float range maps onto int8."""

    ASYMMETRIC = "asymmetric"  # [lo, hi] -> [-128, 127] with a zero point: ReLU outputs keep 256 levels
    SYMMETRIC = "symmetric"    # [-t, t], zero point 0


class ActivationType(str, Enum):
    """ONNX Runtime activation type (TFLite full-integer is always int8)."""

    INT8 = "int8"    # S8S8: what ORT's ARM64 kernels run natively
    UINT8 = "uint8"  # U8S8: what ORT fuses completely on x86 servers


class Layout(str, Enum):
    """Input layout of the TFLite model."""

    NHWC = "nhwc"  # TFLite's native layout: no transpose at the input
    NCHW = "nchw"


class Annotations(str, Enum):
    """Which PT2E quantizer annotates the torch graph for TFLite."""

    ARMQ = "armq"      # litert-torch's quantizer plus the ops the zoo needs (no float island)
    LITERT = "litert"  # litert-torch's PT2EQuantizer as shipped, for comparison


# Weights are always int8 symmetric (zero point 0), per output channel unless
# per_channel is off: TFLite's int8 spec requires it, and ORT's S8S8 ARM64
# kernels are written for it, so it is not a choice.
WEIGHTS = "int8 symmetric"


@dataclass(frozen=True)
class FallbackBudget:
    """Greedy float fallback: keep up to `max_layers` of the most sensitive layers in
    float until the held-out accuracy drop is at most `max_drop` points."""

    max_layers: int = 0
    max_drop: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.max_layers > 0

    def fits(self, drop: float) -> bool:
        return drop <= self.max_drop


@dataclass(frozen=True)
class QuantConfig:
    """Everything that decides the bytes of an INT8 model (besides model and images)."""

    method: Method = Method.MINMAX
    per_channel: bool = True
    activation_scheme: Scheme = Scheme.ASYMMETRIC
    activations: ActivationType = ActivationType.INT8
    # layers kept in float whatever the fallback decides (backend names: ONNX nodes or
    # torch modules); the fallback adds its own after these
    exclusions: tuple[str, ...] = ()
    fallback: FallbackBudget = field(default_factory=FallbackBudget)
    tflite_layout: Layout = Layout.NHWC
    pt2e_annotations: Annotations = Annotations.ARMQ
    # the concrete methods the backend has (`auto` tries these): MNN has no percentile
    supported_methods: tuple[Method, ...] = CONCRETE_METHODS

    @property
    def methods(self) -> tuple[Method, ...]:
        """The concrete methods to calibrate with: all the backend has for `auto`."""
        if self.method is Method.AUTO:
            return tuple(m for m in CONCRETE_METHODS if m in self.supported_methods)
        return (self.method,)

    @property
    def needs_holdout(self) -> bool:
        """Held-out images are needed to choose a method or to measure the fallback."""
        return self.method is Method.AUTO or self.fallback.enabled

    @property
    def symmetric_activations(self) -> bool:
        return self.activation_scheme is Scheme.SYMMETRIC

    def excluding(self, layers: Sequence[str]) -> tuple[str, ...]:
        """The config's own exclusions followed by `layers`, without repeats."""
        return tuple(dict.fromkeys((*self.exclusions, *layers)))

    def with_layout(self, layout: Layout) -> "QuantConfig":
        return replace(self, tflite_layout=layout)

    def for_mnn(self, method_given: bool) -> "QuantConfig":
        """MNN's view: its methods only, and its default (entropy = MNN's KL) when no
        --method was given (quant/mnn_ptq.py says why)."""
        from .mnn_ptq import DEFAULT_METHOD, SUPPORTED_METHODS

        return replace(self, supported_methods=SUPPORTED_METHODS,
                       method=self.method if method_given else DEFAULT_METHOD)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "QuantConfig":
        """The config of `python -m quant.ptq`'s parsed flags."""
        return cls(method=args.method or Method.MINMAX, per_channel=not args.per_tensor,
                   activations=ActivationType(args.activations),
                   fallback=FallbackBudget(args.fallback, args.max_drop),
                   tflite_layout=Layout(args.tflite_layout),
                   pt2e_annotations=Annotations(args.pt2e_annotations))
