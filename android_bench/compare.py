"""Theoretical vs measured speed-up, from android_bench result files.

    python -m android_bench.compare results.json [more.json ...] [--baseline NAME] [--json]

Pairs it compares, within one setting (same target, board/CPU, runtime and threads):
  * INT8 vs FP32 of the same model (same card name): the bit-width bound, 4x,
    the ratio of operand widths (32 / 8 bits) -- what INT8 arithmetic could buy
    at best;
  * every model vs a baseline (--baseline: a card name, file name or stem): the
    MAC-ratio theory, baseline MACs / model MACs from the model cards' cost.macs
    (times the bit-width ratio when the precisions differ).
For each pair:
  speed-up   = the measured figure: baseline / model median latency on real
               CPUs (with the range the two medians' 95% confidence intervals
               allow); on QEMU the ratio of guest instructions per inference,
               since emulated milliseconds are emulation time and say little
               about a board (their ratio is kept as `measured`, never shown as
               a speed-up);
  efficiency = speed-up / theoretical.

Two different 4x: ShuffleNet v1 (Zhang et al., CVPR 2018, Sec. 4.5 and Table 8,
"Actual inference time on mobile device") found on an ARM phone that "every 4x
theoretical complexity reduction usually results in ~2.6x actual speedup" --
4x fewer MACs, an efficiency of about 0.65, because memory access and other
overheads do not shrink with the MACs. INT8's 4x is the bit-width bound, the
same MACs on operands a quarter as wide; it falls short for related reasons.

This module is the one implementation of the speed-up arithmetic: `python -m
deploy` builds its report's pairs with `make_pair` too (deploy/speedups.py).

Accepted inputs: one runner result per file, a list of them, or an object with a
"results" list (what `python -m android_bench --json` writes).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, cli_entry, load_json, shown

INT8_THEORETICAL = 32 / 8   # the bit-width bound: operand width ratio FP32 : INT8


class CompareError(ArmqError):
    pass


# ---- pure math --------------------------------------------------------------------------

def ratio(base: float | None, model: float | None) -> float | None:
    """base / model, or None when either is missing or not positive."""
    if base is None or model is None:
        return None
    try:
        base, model = float(base), float(model)
    except (TypeError, ValueError):
        return None
    if not (base > 0 and model > 0) or math.isinf(base) or math.isinf(model):
        return None
    return base / model


def bit_width_ratio(base_int8: bool = False, model_int8: bool = False) -> float:
    """Operand-width ratio: 4 for INT8 vs FP32, 1/4 the other way, else 1."""
    return (8 if base_int8 else 32) / (8 if model_int8 else 32)


def theoretical_speedup(base_macs: float | None, model_macs: float | None,
                        base_int8: bool = False, model_int8: bool = False) -> float | None:
    """MAC ratio times the bit-width ratio (4 for INT8 vs FP32, 1/4 the other way)."""
    r = ratio(base_macs, model_macs)
    return None if r is None else r * bit_width_ratio(base_int8, model_int8)


def measured_speedup(base_ms: float | None, model_ms: float | None) -> float | None:
    """Latency ratio: how many times faster the model ran than the baseline."""
    return ratio(base_ms, model_ms)


def speedup_range(base_ci: Sequence[float] | None, model_ci: Sequence[float] | None
                  ) -> tuple[float, float] | None:
    """The latency ratio's range allowed by both medians' confidence intervals."""
    if not base_ci or not model_ci or len(base_ci) != 2 or len(model_ci) != 2:
        return None
    lo, hi = ratio(base_ci[0], model_ci[1]), ratio(base_ci[1], model_ci[0])
    return None if lo is None or hi is None else (lo, hi)


def efficiency(measured: float | None, theoretical: float | None) -> float | None:
    """measured / theoretical: 1.0 means the whole theoretical gain arrived."""
    return ratio(measured, theoretical)


# ---- results -> entries ---------------------------------------------------------------

@dataclass
class Entry:
    name: str                       # the model (card name, else file stem)
    file: str
    int8: bool
    setting: str                    # target + board/CPU + runtime + threads
    latency_ms: float | None        # median
    latency_ci: list[float] | None
    instructions: float | None      # per inference (QEMU)
    macs: float | None
    emulated: bool
    source: str = ""

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"


def instructions_per_inference(result: dict) -> float | None:
    """QEMU results: `instructions` is a number per inference, or a dict of statistics."""
    v = result.get("instructions")
    if isinstance(v, dict):
        for k in ("per_inference", "median", "mean", "timed_median", "timed_mean"):
            if isinstance(v.get(k), (int, float)):
                return float(v[k])
        return None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def setting_of(result: dict) -> str:
    t = result.get("target") or {}
    rt = result.get("runtime") or {}
    where = t.get("kind", "?")
    detail = t.get("host") or t.get("cpu") or t.get("serial") or t.get("device")
    if detail:
        where += f" {detail}"
    threads = rt.get("threads", (result.get("config") or {}).get("threads", "?"))
    return f"{where}, {rt.get('name', '?')} {rt.get('version', '')}".rstrip() + \
        f", {threads} thread{'s' if threads != 1 else ''}"


def _section(result: dict, key: str, source: str) -> dict:
    """result[key] as a dict ({} when absent/null): the one shape check of every section
    the arithmetic reads, so a hand-edited file is one line, not an internal error."""
    v = result.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise CompareError(f"{shown(source or 'input')}: '{key}' is a {type(v).__name__}, "
                           f"not an object (not an android_bench result)")
    return v


def _number(v: Any, what: str, source: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CompareError(f"{shown(source or 'input')}: {what} is not a number ({shown(repr(v)[:40])})")
    return float(v)


def entry_of(result: dict, source: str = "") -> Entry:
    if not isinstance(result, dict) or "timing_ms" not in result or "model" not in result:
        raise CompareError(f"{shown(source or 'input')}: not an android_bench result "
                           f"(no model/timing_ms)")
    m = _section(result, "model", source)
    tm = _section(result, "timing_ms", source)
    for key in ("target", "runtime", "config"):
        _section(result, key, source)
    file = str(m.get("file") or Path(str(m.get("host_path", "?"))).name)
    name = m.get("card_name") or file.split(".")[0]
    cost = m.get("cost") or {}
    macs = cost.get("macs") if isinstance(cost, dict) else None
    ci = tm.get("median_ci95")
    median = _number(tm.get("median"), "timing_ms.median", source)
    return Entry(name=shown(name), file=shown(file), int8=bool(m.get("int8")),
                 setting=shown(setting_of(result)),
                 # benchmark_model (adb) results have a mean but no median
                 latency_ms=median if median is not None else _number(tm.get("mean"),
                                                                      "timing_ms.mean", source),
                 latency_ci=list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None,
                 instructions=instructions_per_inference(result),
                 macs=float(macs) if isinstance(macs, (int, float)) else None,
                 emulated=bool((result.get("target") or {}).get("emulated")), source=source)


def load_results(paths: Iterable[str | Path]) -> list[tuple[dict, str]]:
    """(result, source) for every result in the files."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise CompareError(f"results file {shown(p)} not found")
        doc = load_json(p, "results file")   # bounded size and depth, one-line errors
        if isinstance(doc, dict) and isinstance(doc.get("results"), list):
            items = doc["results"]
        elif isinstance(doc, list):
            items = doc
        else:
            items = [doc]
        out += [(r, f"{p}[{i}]" if len(items) > 1 else str(p)) for i, r in enumerate(items)]
    return out


# ---- pairing ---------------------------------------------------------------------------

@dataclass
class Pair:
    kind: str                       # "int8 vs fp32" | "vs baseline"
    setting: str
    model: Entry
    base: Entry
    theoretical: float | None
    measured: float | None
    measured_range: tuple[float, float] | None
    instr_ratio: float | None
    efficiency: float | None
    emulated: bool
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        """The measured speed-up: instruction ratio when emulated, else latency ratio."""
        return self.instr_ratio if self.emulated else self.measured

    @property
    def basis(self) -> str:
        return "instructions" if self.emulated else "latency"

    @property
    def mac_ratio(self) -> float | None:
        """The MAC-ratio theory alone (1 for INT8 vs FP32 of one model)."""
        return 1.0 if self.kind == "int8 vs fp32" else ratio(self.base.macs, self.model.macs)

    @property
    def bit_width(self) -> float:
        """The bit-width factor alone (4 for INT8 vs FP32)."""
        return bit_width_ratio(self.base.int8, self.model.int8)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(speedup=self.speedup, basis=self.basis, mac_ratio=self.mac_ratio,
                 bit_width=self.bit_width)
        d["model"] = {"name": self.model.name, "file": self.model.file,
                      "precision": self.model.precision, "latency_ms": self.model.latency_ms,
                      "instructions": self.model.instructions, "macs": self.model.macs}
        d["base"] = {"name": self.base.name, "file": self.base.file,
                     "precision": self.base.precision, "latency_ms": self.base.latency_ms,
                     "instructions": self.base.instructions, "macs": self.base.macs}
        return d


def make_pair(model: Entry, base: Entry, kind: str) -> Pair:
    if kind == "int8 vs fp32":
        theo = INT8_THEORETICAL
    else:
        theo = theoretical_speedup(base.macs, model.macs, base.int8, model.int8)
    meas = measured_speedup(base.latency_ms, model.latency_ms)
    instr = ratio(base.instructions, model.instructions)
    emulated = model.emulated or base.emulated
    notes = []
    if theo is None:
        notes.append("no MACs in the model cards (run with --card)")
    if emulated:
        notes.append("emulated: latency is emulation time; efficiency from instruction counts")
        eff = efficiency(instr, theo)
    else:
        eff = efficiency(meas, theo)
    return Pair(kind=kind, setting=model.setting, model=model, base=base, theoretical=theo,
                measured=meas, measured_range=speedup_range(base.latency_ci, model.latency_ci),
                instr_ratio=instr, efficiency=eff, emulated=emulated, notes=notes)


def _matches(e: Entry, name: str) -> bool:
    return name in (e.name, e.file, e.file.split(".")[0], e.label)


def make_pairs(entries: Sequence[Entry], baseline: str | None = None) -> list[Pair]:
    """INT8-vs-FP32 pairs of each model, and model-vs-baseline pairs if a baseline is
    named; only within one setting. Later duplicates replace earlier ones."""
    by_key: dict[tuple[str, str, bool], Entry] = {}
    for e in entries:
        by_key[(e.setting, e.name, e.int8)] = e
    uniq = list(by_key.values())
    pairs: list[Pair] = []
    for e in uniq:
        if e.int8 and (e.setting, e.name, False) in by_key:
            pairs.append(make_pair(e, by_key[(e.setting, e.name, False)], "int8 vs fp32"))
    if baseline:
        bases = [e for e in uniq if _matches(e, baseline)]
        if not bases:
            known = ", ".join(sorted({e.name for e in uniq}))
            raise CompareError(f"--baseline {baseline}: no such model in the results "
                               f"(have: {known})")
        for e in uniq:
            if any(e is b for b in bases):
                continue
            same = [b for b in bases if b.setting == e.setting]
            if not same:
                continue
            b = next((b for b in same if b.int8 == e.int8), None) or \
                next((b for b in same if not b.int8), same[0])
            pairs.append(make_pair(e, b, "vs baseline"))
    return pairs


# ---- output -----------------------------------------------------------------------------

def _x(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def format_table(pairs: Sequence[Pair]) -> str:
    lines: list[str] = []
    for setting in dict.fromkeys(p.setting for p in pairs):
        group = [p for p in pairs if p.setting == setting]
        emulated = any(p.emulated for p in group)
        lines.append(f"{setting}" + ("  [EMULATED: speed-up = guest instruction ratio; ms are "
                                     "emulation time, not board latency]" if emulated else ""))
        head = ("model", "baseline", "MAC ratio", "bit width", "theoretical", "speed-up",
                "basis", "95% range", "efficiency")
        rows = []
        for p in group:
            rng = "-" if p.measured_range is None or p.emulated else \
                f"{p.measured_range[0]:.2f}-{p.measured_range[1]:.2f}x"
            rows.append((p.model.label, p.base.label, _x(p.mac_ratio), _x(p.bit_width),
                         _x(p.theoretical), _x(p.speedup), p.basis, rng,
                         "-" if p.efficiency is None else f"{p.efficiency:.2f}"))
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths)))
        lines += ["  " + fmt(head), "  " + "  ".join("-" * w for w in widths)]
        lines += ["  " + fmt(r) for r in rows]
        for p in group:
            for n in p.notes:
                lines.append(f"  note ({p.model.label}): {n}")
        lines.append("")
    lines.append("theoretical = MAC ratio x bit-width ratio; efficiency = speed-up / theoretical. "
                 "MAC-ratio theory: ShuffleNet v1 (Zhang et al. 2018, Table 8) reports ~2.6x real "
                 "per 4x fewer MACs on ARM (~0.65). Bit-width bound: INT8 vs FP32 is at most 4x "
                 "(32/8-bit operands, same MACs).")
    return "\n".join(lines)


def compare(paths: Sequence[str | Path], baseline: str | None = None) -> list[Pair]:
    loaded = load_results(paths)
    if not loaded:
        raise CompareError("no results given")
    entries = [entry_of(r, src) for r, src in loaded]
    pairs = make_pairs(entries, baseline)
    if not pairs:
        raise CompareError("nothing to compare: give an INT8 and an FP32 result of the same "
                           "model (same card) on one target, or name a --baseline")
    return pairs


def command(results: Sequence[Path | str], baseline: str | None = None,
            python: str | None = None) -> list[str]:
    """The command line that prints the pairs of `results` as JSON on stdout."""
    return [python or sys.executable, "-m", "android_bench.compare", *map(str, results),
            "--json"] + (["--baseline", baseline] if baseline else [])


def main(argv: Sequence[str] | None = None) -> int:
    ap = make_parser("android_bench.compare", __doc__)
    ap.add_argument("results", nargs="+", help="android_bench result JSON files")
    ap.add_argument("--baseline", help="model to compare every other model with "
                                       "(card name, file name or stem)")
    ap.add_argument("--json", action="store_true", help="print the pairs as JSON")
    a = ap.parse_args(argv)
    pairs = compare(a.results, a.baseline)
    if a.json:
        print(json.dumps({"format": "armq-compare/1", "pairs": [p.to_dict() for p in pairs]},
                         indent=2))
    else:
        print(format_table(pairs))
    return 0


if __name__ == "__main__":
    cli_entry(main, "android_bench.compare")
