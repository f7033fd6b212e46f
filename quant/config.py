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


class RecipeName(str, Enum):
    """The integer format of an ONNX Runtime INT8 model (weights always int8)."""

    S8S8 = "s8s8"  # int8 activations: ORT's ARM64 kernels with dot-product (SDOT) run it natively
    U8S8 = "u8s8"  # uint8 activations: x86 with VNNI (VPDPBUSD) and ARM cores without SDOT
    # uint8 activations, weights in 7 bits (ORT's reduce_range): x86 without VNNI, whose
    # PMADDUBSW adds two u8*s8 products into a saturating int16 (2*255*127 > 32767).
    # Measured on this AVX2 host, shipped ShuffleNet V1 g3, 10k CIFAR-10 test images:
    # 8-bit weights 92.1 % top-1 agreement with FP32 (SQNR 11.2 dB), 7-bit 98.9 % (28.0 dB).
    U8S8_REDUCED = "u8s8r"


@dataclass(frozen=True)
class Recipe:
    """Which integer format suits one CPU, and why (the card records both)."""

    name: RecipeName
    reason: str

    @property
    def activations(self) -> "ActivationType":
        return ActivationType.INT8 if self.name is RecipeName.S8S8 else ActivationType.UINT8

    @property
    def reduce_range(self) -> bool:
        """7-bit weights (ORT's reduce_range), against PMADDUBSW's int16 saturation."""
        return self.name is RecipeName.U8S8_REDUCED

    @property
    def tag(self) -> str:
        """The recipe's tag in file names and card keys (export.card.RECIPE_TAGS)."""
        return self.name.value

    def to_dict(self) -> dict:
        return {"name": self.name.value, "activations": self.activations.value,
                "weights": WEIGHTS_REDUCED if self.reduce_range else WEIGHTS,
                "reason": self.reason}


class RecipeError(ValueError):
    """A --for target that names no CPU this module knows."""


# Arm cores with the dot-product extension (SDOT/UDOT, Armv8.2 DotProd): the cores' TRMs.
# A53/A57/A72/A73 lack it; the emulated cores are android_bench.qemu_cpus.CPUS.
DOTPROD_CORES = {"cortex-a55": True, "cortex-a75": True, "cortex-a76": True, "cortex-a77": True,
                 "cortex-a78": True, "cortex-x1": True, "neoverse-n1": True, "max": True,
                 "cortex-a53": False, "cortex-a57": False, "cortex-a72": False,
                 "cortex-a73": False}
X86_MACHINES = ("x86_64", "amd64", "i686", "i386")
ARM_DOTPROD_FLAGS = ("asimddp", "dotprod")       # /proc/cpuinfo name, android_bench's name
X86_VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def recipe_for(machine: str, features: Sequence[str]) -> Recipe:
    """The one rule: CPU architecture + feature flags -> integer format.

    x86: U8S8. ORT's x86 kernels multiply uint8 by int8 (VNNI VPDPBUSD, or PMADDUBSW
    without it); an S8S8 model is rewritten to U8 only where a Q feeds one DQ, so convs on
    fan-out tensors stay float (quant/onnx_ptq.py; measured 0.43x FP32 vs U8S8 0.83x).
    Without VNNI the weights take 7 bits (U8S8_REDUCED): PMADDUBSW saturates int16 sums.
    ARM with dot-product: S8S8, which SDOT runs natively (1-7 % fewer a76 instructions).
    ARM without: U8S8 (6-8 % fewer a72 instructions: ORT's widening-multiply kernels).
    """
    m = machine.lower()
    flags = {f.lower() for f in features}
    if m in X86_MACHINES:
        vnni = sorted(flags & set(X86_VNNI_FLAGS))
        if vnni:
            return Recipe(RecipeName.U8S8, "x86: ORT's int8 kernels take uint8 activations "
                          f"({vnni[0]}: VPDPBUSD sums in int32)")
        return Recipe(RecipeName.U8S8_REDUCED, "x86: ORT's int8 kernels take uint8 activations; "
                      "no VNNI: PMADDUBSW saturates int16 pair sums, so weights use 7 bits")
    if m in ("aarch64", "arm64", "armv8l", "armv7l"):
        if flags & set(ARM_DOTPROD_FLAGS):
            return Recipe(RecipeName.S8S8, "ARM with dot-product (asimddp): SDOT runs int8 x int8")
        return Recipe(RecipeName.U8S8, "ARM without dot-product: widening-multiply kernels "
                      "run uint8 activations with fewer instructions")
    raise RecipeError(f"no INT8 recipe for machine '{machine}' (x86_64 or aarch64)")


def recipe_for_cpu(cpu: dict) -> Recipe:
    """A probed CPU (android_bench.runner.cpu_info: `machine`, `features` name -> present)
    -> its recipe. Only the features marked present count: every x86 probe lists the VNNI
    keys, present or not."""
    flags = [k for k, v in cpu["features"].items() if v]
    flags = ["asimddp" if f == "dotprod" else f for f in flags]
    return recipe_for(cpu["machine"], flags)


def recipe_for_target(target: str) -> Recipe:
    """`local` (this host's probed CPU), `qemu:<cpu>` / `<cpu>` (a known Arm core), or
    `<machine>:<flag>+<flag>` (a board's probed features, e.g. aarch64:asimd+asimddp).
    The target forms are android_bench/targets/spec.py's; the bare core and the probed
    machine:flags forms are what --for adds."""
    from android_bench.targets.spec import TargetSpec, TargetSpecError

    t = target.strip().lower()
    try:
        spec: TargetSpec | None = TargetSpec.parse(t, "--for", devices=False)
    except TargetSpecError:
        spec = None     # a bare core, a core QEMU does not emulate, or machine:flags
    if spec is not None and spec.kind == "local":
        from android_bench.runner import cpu_info
        return recipe_for_cpu(cpu_info())
    core = spec.cpu if spec is not None and spec.emulated else t.removeprefix("qemu:")
    if core in DOTPROD_CORES:
        return recipe_for("aarch64", ["asimd"] + (["asimddp"] if DOTPROD_CORES[core] else []))
    machine, _, flags = t.partition(":")
    if machine in (*X86_MACHINES, "aarch64", "arm64", "armv8l", "armv7l"):
        return recipe_for(machine, [f for f in flags.replace(",", "+").split("+") if f])
    raise RecipeError(f"--for '{target}': not a target (local, qemu:<cpu> or <cpu> with cpu one "
                      f"of {', '.join(sorted(DOTPROD_CORES))}, or <machine>:<flag>+<flag> such "
                      "as aarch64:asimd+asimddp or x86_64:avx512_vnni)")


# Weights are always int8 symmetric (zero point 0), per output channel unless
# per_channel is off: TFLite's int8 spec requires it, and ORT's S8S8 ARM64
# kernels are written for it, so it is not a choice.
WEIGHTS = "int8 symmetric"
WEIGHTS_REDUCED = "int8 symmetric, 7-bit range (reduce_range)"


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
    reduce_range: bool = False   # 7-bit weights (RecipeName.U8S8_REDUCED says when and why)
    # layers kept in float whatever the fallback decides (backend names: ONNX nodes or
    # torch modules); the fallback adds its own after these
    exclusions: tuple[str, ...] = ()
    fallback: FallbackBudget = field(default_factory=FallbackBudget)
    tflite_layout: Layout = Layout.NHWC
    pt2e_annotations: Annotations = Annotations.ARMQ
    # TFLite: export.litert_layout rewrites before conversion (None: its default)
    litert_rewrites: frozenset | None = None
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

    @property
    def recipe_tag(self) -> str:
        """The ONNX INT8 file's recipe tag (export.card names the file and key with it)."""
        if self.activations is ActivationType.INT8:   # quant.ptq refuses int8 + reduce range
            return RecipeName.S8S8.value
        return (RecipeName.U8S8_REDUCED if self.reduce_range else RecipeName.U8S8).value

    @classmethod
    def from_args(cls, args: argparse.Namespace, recipe: Recipe | None = None) -> "QuantConfig":
        """The config of `python -m quant.ptq`'s parsed flags (`recipe`: from --for)."""
        acts = recipe.activations if recipe is not None else ActivationType(args.activations)
        reduce = recipe.reduce_range if recipe is not None else bool(getattr(args, "reduce_range", False))
        return cls(method=args.method or Method.MINMAX, per_channel=not args.per_tensor,
                   activations=acts, reduce_range=reduce,
                   fallback=FallbackBudget(args.fallback, args.max_drop),
                   tflite_layout=Layout(args.tflite_layout),
                   pt2e_annotations=Annotations(args.pt2e_annotations),
                   litert_rewrites=getattr(args, "litert_rewrites", None))
