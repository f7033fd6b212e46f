"""The ShuffleNet V2 guideline micro-networks as numbers: widths, MACs, memory access.

One Case per cell of the paper's Tables 1-4 (see guidelines.py for how each table
is built and what its rows and columns are). Pure arithmetic with zoo.cost's
formulas -- no torch here; guideline_models.py builds and exports the networks.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from zoo.util import ArmqError

GUIDELINES = ("G1", "G2", "G3", "G4")
G1_RATIOS = {"1:1": (128, 128), "1:2": (90, 180), "1:6": (52, 312), "1:12": (36, 432)}
G2_GROUPS = {1: 128, 2: 180, 4: 256, 8: 360}
G3_STRUCTURES = ("1-fragment", "2-fragment-series", "4-fragment-series",
                 "2-fragment-parallel", "4-fragment-parallel")
G4_VARIANTS = ((True, True), (False, True), (True, False), (False, False))  # (relu, shortcut)


class GuidelineError(ArmqError):
    pass


def _ch(c: float, multiple: int = 1) -> int:
    """A channel count >= multiple, rounded to a multiple of `multiple`."""
    return max(multiple, int(round(c / multiple)) * multiple)


@dataclass
class Conv:
    """One convolution of a micro-network: in/out channels, kernel, groups."""
    cin: int
    cout: int
    k: int = 1
    groups: int = 1

    def macs(self, hw: int) -> int:
        from zoo.cost import conv_macs
        return conv_macs((1, self.cout, hw, hw), (self.cout, self.cin // self.groups, self.k, self.k))

    def memory_access(self, hw: int) -> int:
        from zoo.cost import memory_access
        w = self.cout * (self.cin // self.groups) * self.k * self.k
        return memory_access([(1, self.cin, hw, hw)], (1, self.cout, hw, hw), w)


@dataclass
class Case:
    guideline: str
    row: str                  # the paper's row label ("1:6", "g=4", "2-fragment-series", ...)
    scale: int                # column scale s
    column: str               # the paper's column label ("x2", "c=128")
    in_channels: int
    size: int
    blocks: int
    spec: dict                # what build_model needs
    convs: list[Conv] = field(default_factory=list)   # one block's convolutions
    extra_mem: int = 0        # one block's element-wise/concat memory access (elements)
    macs: int = 0
    memory_access: int = 0

    @property
    def file_stem(self) -> str:
        safe = re.sub(r"[^a-z0-9]+", "_", self.row.lower()).strip("_")
        return f"{self.guideline.lower()}_{safe}_s{self.scale}"

    def finish(self) -> "Case":
        hw = self.size
        self.macs = self.blocks * sum(c.macs(hw) for c in self.convs)
        self.memory_access = self.blocks * (sum(c.memory_access(hw) for c in self.convs)
                                            + self.extra_mem)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["convs"] = [asdict(c) for c in self.convs]
        d["file_stem"] = self.file_stem
        return d


def g1_cases(scale: int, width: float, size: int, blocks: int) -> list[Case]:
    out = []
    for row, (c1, c2) in G1_RATIOS.items():
        a, b = _ch(c1 * scale * width), _ch(c2 * scale * width)
        out.append(Case("G1", row, scale, f"x{scale}", a, size, blocks,
                        {"kind": "g1", "c1": a, "c2": b},
                        [Conv(a, b), Conv(b, a)]).finish())
    return out


def g2_cases(scale: int, width: float, size: int, blocks: int) -> list[Case]:
    out = []
    for g, c in G2_GROUPS.items():
        ch = _ch(c * scale * width, g)
        out.append(Case("G2", f"g={g}", scale, f"x{scale}", ch, size, blocks,
                        {"kind": "g2", "c": ch, "groups": g}, [Conv(ch, ch, 1, g)]).finish())
    return out


def g3_cases(scale: int, width: float, size: int, blocks: int) -> list[Case]:
    c = _ch(64 * scale * width, 4)
    out = []
    for row in G3_STRUCTURES:
        k = int(row[0])
        if "parallel" in row:
            convs = [Conv(c, c // k) for _ in range(k)]
            extra = 2 * c * size * size     # concat: read the branches, write the block output
            cin = c
        elif k > 1:
            cs = _ch(c / math.sqrt(k))
            convs, extra, cin = [Conv(cs, cs) for _ in range(k)], 0, cs
        else:
            convs, extra, cin = [Conv(c, c)], 0, c
        out.append(Case("G3", row, scale, f"c={c}", cin, size, blocks,
                        {"kind": "g3", "c": cin, "k": k, "parallel": "parallel" in row},
                        convs, extra).finish())
    return out


def g4_cases(scale: int, width: float, size: int, blocks: int) -> list[Case]:
    c = _ch(32 * scale * width)
    out = []
    for relu, shortcut in G4_VARIANTS:
        hw = size * size
        convs = [Conv(4 * c, c), Conv(c, c, 3), Conv(c, 4 * c)]
        # ReLU after each conv reads and writes its output; the shortcut add reads two
        # tensors and writes one (zoo.cost counts them the same way when not fused).
        extra = (2 * (c + c + 4 * c) * hw if relu else 0) + (3 * 4 * c * hw if shortcut else 0)
        row = f"ReLU {'yes' if relu else 'no'}, shortcut {'yes' if shortcut else 'no'}"
        out.append(Case("G4", row, scale, f"c={c}", 4 * c, size, blocks,
                        {"kind": "g4", "c": c, "relu": relu, "shortcut": shortcut},
                        convs, extra).finish())
    return out


CASE_BUILDERS: dict[str, Callable[[int, float, int, int], list[Case]]] = {
    "G1": g1_cases, "G2": g2_cases, "G3": g3_cases, "G4": g4_cases}


def make_cases(only: Sequence[str] = GUIDELINES, scales: Sequence[int] = (1,), width: float = 1.0,
               size: int = 56, blocks: int = 10) -> list[Case]:
    if size < 1 or blocks < 1 or width <= 0:
        raise GuidelineError("--size, --blocks and --width must be positive")
    bad = [g for g in only if g not in GUIDELINES]
    if bad:
        raise GuidelineError(f"unknown guideline {bad[0]} (G1, G2, G3, G4)")
    bad_s = [s for s in scales if s < 1]
    if bad_s:
        raise GuidelineError("--scales must be positive integers (the paper's 1,2,4)")
    return [c for g in only for s in scales for c in CASE_BUILDERS[g](s, width, size, blocks)]
