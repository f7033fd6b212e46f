"""Where an INT8 file's predicted cost goes, per op class, beside its FP32 twin.

The per-node costs are roofline.node_cost and Constants.overhead (the latency model's
own arithmetic, not a second cost model); this module only sums them by row:
the op classes of graph.OpClass, the per-op overhead (every node's dispatch plus the
per-inference call) and the float islands of the INT8 file (its nodes that stayed in
float, transposes and Q/DQ aside, as roofline.explain counts them). Each column sums
to predict() of its file exactly. Pure functions: no runtime, no files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .graph import NodeWork, OpClass, Precision, is_int8_model
from .roofline import Constants, node_cost, predict

BREAKDOWN_FORMAT = "armq-int8-breakdown/1"
OVERHEAD = "per-op overhead"
FLOAT_ISLANDS = "float islands"
# A class's row where it is not its own: the FP32 depthwise im2col path is the depthwise
# row (its INT8 twin runs the INT8 depthwise kernel), reshapes are pure overhead.
ROW_OF = {OpClass.DEPTHWISE_IM2COL: OpClass.DEPTHWISE.value}
ROWS: tuple[str, ...] = tuple(c.value for c in OpClass
                              if c is not OpClass.FREE and c not in ROW_OF) + \
    (OVERHEAD, FLOAT_ISLANDS)


def row_of(cls: OpClass) -> str:
    return ROW_OF.get(cls, cls.value)


def is_island(w: NodeWork, int8_model: bool) -> bool:
    """A node of an INT8 file that still computes in float (roofline.explain's rule)."""
    return int8_model and w.precision is Precision.FP32 and \
        w.op_class not in (OpClass.TRANSPOSE, OpClass.QDQ, OpClass.FREE)


def class_costs(works: Sequence[NodeWork], c: Constants) -> dict[str, float]:
    """{row: predicted cost} of one file; the values sum to predict(works, c)."""
    int8 = is_int8_model(works)
    out = dict.fromkeys(ROWS, 0.0)
    out[OVERHEAD] = c.overhead(works)
    for w in works:
        if w.op_class is OpClass.FREE:
            continue
        out[FLOAT_ISLANDS if is_island(w, int8) else row_of(w.op_class)] += node_cost(w, c)
    return out


def _island_costs(works: Sequence[NodeWork], c: Constants) -> dict[str, float]:
    """{op class: cost of the INT8 file's float islands of that class}."""
    int8 = is_int8_model(works)
    out: dict[str, float] = {}
    for w in works:
        if is_island(w, int8):
            out[row_of(w.op_class)] = out.get(row_of(w.op_class), 0.0) + node_cost(w, c)
    return out


@dataclass(frozen=True)
class Row:
    name: str
    fp32: float
    int8: float
    share: float  # of the INT8 file's predicted cost

    @property
    def speedup(self) -> float | None:
        """FP32 / INT8 cost of this row; None where either side costs nothing."""
        return self.fp32 / self.int8 if self.fp32 > 0 and self.int8 > 0 else None

    def to_dict(self) -> dict:
        return {"class": self.name, "fp32": self.fp32, "int8": self.int8,
                "int8_share": self.share, "speedup": self.speedup}


@dataclass(frozen=True)
class Breakdown:
    unit: str
    fp32_total: float
    int8_total: float
    rows: tuple[Row, ...]

    @property
    def speedup(self) -> float | None:
        return self.fp32_total / self.int8_total if self.int8_total > 0 else None

    def to_dict(self) -> dict:
        return {"unit": self.unit, "fp32_predicted": self.fp32_total,
                "int8_predicted": self.int8_total, "predicted_speedup": self.speedup,
                "classes": [r.to_dict() for r in self.rows]}


def breakdown(fp32: Sequence[NodeWork], int8: Sequence[NodeWork], c: Constants) -> Breakdown:
    """Per row: the FP32 file's cost, the INT8 file's, the INT8 share and the speed-up.

    A float island runs the same float kernel in both files, so its FP32 figure is its
    own cost, taken out of its class's FP32 figure (at most what that class has): the
    class's speed-up then compares the nodes INT8 did quantize, the island row reads
    1.0x, and both columns still sum to their file's predicted cost."""
    f, q = class_costs(fp32, c), class_costs(int8, c)
    moved = {k: min(v, f.get(k, 0.0)) for k, v in _island_costs(int8, c).items()}
    for k, v in moved.items():
        f[k] -= v
    f[FLOAT_ISLANDS] += sum(moved.values())
    total = predict(int8, c)
    rows = tuple(Row(k, f[k], q[k], q[k] / total if total else 0.0) for k in ROWS)
    return Breakdown(c.unit, predict(fp32, c), total, rows)
