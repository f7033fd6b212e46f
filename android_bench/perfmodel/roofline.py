"""The roofline arithmetic: fit a target's constants, predict a graph's cost, split the gap.

A node costs  per_op[precision] + max(macs * cost[class, precision], bytes * cost[elementwise, precision])
for convolutions and Gemm (compute term vs memory term: element-wise ops stream
their bytes, so their rate is the target's bandwidth), bytes * cost[class, precision]
for the other classes, and nothing but per_op for reshapes. An inference adds
per_inference (the runtime call). Costs are in the target's unit: milliseconds
locally, guest instructions under QEMU.

The constants are fitted by non-negative least squares on relative error over the
micro-benchmarks only, never on the models they then predict. Pure functions: no
runtime, no files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np

from ..compare import bit_width_ratio
from .graph import COMPUTE, NodeWork, OpClass, Precision, is_int8_model

Key = tuple[OpClass, Precision]
FIT_PASSES = 3  # roofline re-assignment passes (a memory-bound micro-benchmark moves its work)


def key_str(k: Key) -> str:
    return f"{k[0].value}/{k[1].value}"


def key_of(s: str) -> Key:
    c, _, p = s.partition("/")
    return OpClass(c), Precision(p)


@dataclass
class Constants:
    """One target's fitted constants (cost per unit of work, in the target's unit)."""
    unit: str
    per_inference: float = 0.0
    # the runtime's dispatch cost per node: INT8 kernels (requantization set-up) and
    # FP32 ones differ, so one per precision
    per_op: dict[Precision, float] = field(default_factory=dict)
    cost: dict[Key, float] = field(default_factory=dict)
    # GEMM edges (graph.NodeWork.outputs / .patches): cost per output / patch element
    per_output: dict[Precision, float] = field(default_factory=dict)
    per_patch: dict[Precision, float] = field(default_factory=dict)
    # per channel of a depthwise convolution (graph.NodeWork.channels)
    per_channel: dict[Precision, float] = field(default_factory=dict)

    def rate(self, cls: OpClass, prec: Precision) -> float:
        """Cost per MAC (compute classes) or per byte; falls back to the nearest class
        measured (depthwise for its im2col path, dense for convolutions, element-wise for
        the rest, then the other
        precision) so a graph with an op class no micro-benchmark has still predicts."""
        chain = [(cls, prec)]
        if cls is OpClass.DEPTHWISE_IM2COL:
            chain.append((OpClass.DEPTHWISE, prec))
        if cls in COMPUTE:
            chain.append((OpClass.DENSE, prec))
        else:
            chain.append((OpClass.ELEMENTWISE, prec))
        other = Precision.FP32 if prec is Precision.INT8 else Precision.INT8
        chain += [(c, other) for c, _ in chain]
        for k in chain:
            if k in self.cost:
                return self.cost[k]
        return 0.0

    def throughput(self, k: Key) -> float | None:
        """Work per unit: MACs (compute classes) or bytes per ms / per instruction."""
        c = self.cost.get(k)
        return None if not c else 1.0 / c

    def to_dict(self) -> dict:
        return {"unit": self.unit, "per_inference": self.per_inference,
                "per_op": {p.value: v for p, v in self.per_op.items()},
                "cost": {key_str(k): v for k, v in sorted(self.cost.items(), key=lambda kv:
                                                          key_str(kv[0]))},
                "per_output": {p.value: v for p, v in self.per_output.items()},
                "per_patch": {p.value: v for p, v in self.per_patch.items()},
                "per_channel": {p.value: v for p, v in self.per_channel.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Constants":
        return cls(str(d["unit"]), float(d["per_inference"]),
                   {Precision(k): float(v) for k, v in (d.get("per_op") or {}).items()},
                   {key_of(k): float(v) for k, v in d["cost"].items()},
                   {Precision(k): float(v) for k, v in (d.get("per_output") or {}).items()},
                   {Precision(k): float(v) for k, v in (d.get("per_patch") or {}).items()},
                   {Precision(k): float(v) for k, v in (d.get("per_channel") or {}).items()})

    def overhead(self, works: Sequence[NodeWork]) -> float:
        """The per-inference call plus every node's dispatch."""
        return self.per_inference + sum(self.per_op.get(w.precision, 0.0) for w in works)

    def edges(self, w: NodeWork) -> float:
        """The GEMM-edge part of a compute node's cost (im2col patches, per-output work,
        per-channel work of a depthwise convolution)."""
        return (w.outputs * self.per_output.get(w.precision, 0.0)
                + w.patches * self.per_patch.get(w.precision, 0.0)
                + w.channels * self.per_channel.get(w.precision, 0.0))

    def compute(self, w: NodeWork) -> float:
        return w.macs * self.rate(w.op_class, w.precision) + self.edges(w)


def memory_bound(w: NodeWork, c: Constants) -> bool:
    return w.op_class in COMPUTE and \
        w.bytes * c.rate(OpClass.ELEMENTWISE, w.precision) > c.compute(w)


def node_cost(w: NodeWork, c: Constants) -> float:
    """The roofline time of one node, without the per-op overhead."""
    if w.op_class is OpClass.FREE:
        return 0.0
    if w.op_class in COMPUTE:
        return max(c.compute(w), w.bytes * c.rate(OpClass.ELEMENTWISE, w.precision))
    return w.bytes * c.rate(w.op_class, w.precision)


def predict(works: Sequence[NodeWork], c: Constants) -> float:
    return c.overhead(works) + sum(node_cost(w, c) for w in works)


# ---- fitting -------------------------------------------------------------------------------

# ("ops", Precision) | ("cost", Key) | ("outputs" | "patches" | "channels", Precision)
Column = tuple[str, object]


def _features(works: Sequence[NodeWork], cols: list[Column], c: Constants | None) -> np.ndarray:
    """[1, work per column]: a memory-bound compute node (under the previous pass's
    constants) is charged as element-wise bytes, as predict() charges it."""
    row = np.zeros(1 + len(cols))
    row[0] = 1.0

    def add(col: Column, amount: float) -> None:
        if col in cols:
            row[1 + cols.index(col)] += amount

    for w in works:
        add(("ops", w.precision), 1)
        if w.op_class is OpClass.FREE:
            continue
        if w.op_class in COMPUTE and not (c is not None and memory_bound(w, c)):
            add(("cost", (w.op_class, w.precision)), w.macs)
            add(("outputs", w.precision), w.outputs)
            add(("patches", w.precision), w.patches)
            add(("channels", w.precision), w.channels)
        else:
            cls = w.op_class if w.op_class not in COMPUTE else OpClass.ELEMENTWISE
            add(("cost", (cls, w.precision)), w.bytes)
    return row


def _columns(samples: Sequence[tuple[Sequence[NodeWork], float]]) -> list[Column]:
    nodes = [w for works, _ in samples for w in works if w.op_class is not OpClass.FREE]
    keys = {(w.op_class, w.precision) for w in nodes} | \
        {(OpClass.ELEMENTWISE, w.precision) for w in nodes if w.op_class in COMPUTE}
    cols: list[Column] = [("ops", p) for p in Precision if any(w.precision is p for w in nodes)]
    cols += [("cost", k) for k in sorted(keys, key=key_str)]
    for prec in Precision:
        if any(w.outputs for w in nodes if w.precision is prec):
            cols += [("outputs", prec), ("patches", prec)]
        if any(w.channels for w in nodes if w.precision is prec):
            cols.append(("channels", prec))
    return cols


def fit(samples: Sequence[tuple[Sequence[NodeWork], float]], unit: str) -> Constants:
    """Constants that minimise the relative error over (nodes, measured cost) samples."""
    from scipy.optimize import nnls

    if not samples:
        raise ValueError("no micro-benchmark samples to fit")
    cols = _columns(samples)
    y = np.array([m for _, m in samples], float)
    c: Constants | None = None
    for _ in range(FIT_PASSES):
        a = np.array([_features(works, cols, c) for works, _ in samples])
        # columns scaled to unit norm so nnls sees comparable magnitudes
        scale = np.linalg.norm(a / y[:, None], axis=0)
        scale[scale == 0] = 1.0
        coef, _ = nnls(a / y[:, None] / scale, np.ones(len(y)))
        coef = coef / scale
        c = Constants(unit, float(coef[0]))
        for (kind, k), v in zip(cols, coef[1:]):
            if v <= 0:
                continue
            if kind == "ops":
                c.per_op[k] = float(v)  # type: ignore[index]
            elif kind == "cost":
                c.cost[k] = float(v)  # type: ignore[index]
            else:
                {"outputs": c.per_output, "patches": c.per_patch,
                 "channels": c.per_channel}[kind][k] = float(v)  # type: ignore[index]
    assert c is not None
    return c


# ---- the gap, by cause ----------------------------------------------------------------------

class Cause(str, Enum):
    INT8_KERNELS = "int8 kernels vs 4x"  # negative: INT8 dense beats 4x the FP32 rate
    OP_CLASSES = "op classes slower than dense"
    GEMM_EDGES = "narrow layers (im2col, per-output and per-channel work)"
    MEMORY_BOUND = "memory-bound layers"
    TRANSPOSES = "layout transposes"
    QDQ = "Q/DQ"
    FLOAT_ISLANDS = "float islands"
    ACTIVATIONS = "sigmoid-like activations"
    ELEMENTWISE = "element-wise, pools, copies"
    OVERHEAD = "per-op overhead"
    UNEXPLAINED = "unexplained"


@dataclass
class Explanation:
    """theory + sum(causes) == measured (predicted == measured - unexplained)."""
    macs: int
    int8: bool
    theory: float
    predicted: float
    measured: float | None
    causes: dict[Cause, float]

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured."""
        if not self.measured:
            return None
        return (self.predicted - self.measured) / self.measured

    def to_dict(self) -> dict:
        return {"macs": self.macs, "int8": self.int8, "theory": self.theory,
                "predicted": self.predicted, "measured": self.measured, "error": self.error,
                "causes": {k.value: v for k, v in self.causes.items()}}


def explain(works: Sequence[NodeWork], c: Constants, measured: float | None = None) -> Explanation:
    """Split measured (or predicted) cost into theory and named causes.

    Theory is the seeds' promise: every MAC at the dense FP32 rate, divided by the
    bit-width ratio (4) in an INT8 model, and nothing else costs anything."""
    int8 = is_int8_model(works)
    dense = c.rate(OpClass.DENSE, Precision.FP32) / bit_width_ratio(False, int8)
    causes = {k: 0.0 for k in Cause}
    macs = sum(w.macs for w in works if w.op_class in COMPUTE)
    theory = macs * dense
    for w in works:
        t = node_cost(w, c)
        if w.op_class in COMPUTE:
            ideal = w.macs * dense
            if int8 and w.precision is Precision.FP32:
                causes[Cause.FLOAT_ISLANDS] += t - ideal
                continue
            at_dense = w.macs * c.rate(OpClass.DENSE, w.precision)
            at_class = w.macs * c.rate(w.op_class, w.precision)
            causes[Cause.INT8_KERNELS] += at_dense - ideal
            causes[Cause.OP_CLASSES] += at_class - at_dense
            causes[Cause.GEMM_EDGES] += c.edges(w)
            causes[Cause.MEMORY_BOUND] += t - at_class - c.edges(w)
        elif w.op_class is OpClass.TRANSPOSE:
            causes[Cause.TRANSPOSES] += t
        elif w.op_class is OpClass.QDQ:
            causes[Cause.QDQ] += t
        elif int8 and w.precision is Precision.FP32:
            causes[Cause.FLOAT_ISLANDS] += t
        elif w.op_class is OpClass.ACTIVATION:
            causes[Cause.ACTIVATIONS] += t
        else:
            causes[Cause.ELEMENTWISE] += t
    causes[Cause.OVERHEAD] = c.overhead(works)
    predicted = predict(works, c)
    causes[Cause.UNEXPLAINED] = (measured - predicted) if measured is not None else 0.0
    return Explanation(macs, int8, theory, predicted, measured, causes)


def mean_abs_error(explanations: Sequence[Explanation]) -> float | None:
    errs = [abs(e.error) for e in explanations if e.error is not None]
    return sum(errs) / len(errs) if errs else None
