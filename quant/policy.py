"""The PTQ policy, written once for every backend: which calibration method to keep
(`--method auto`) and which layers to keep in float (`--fallback N --max-drop D`).

The shape follows ONNX Runtime's own tool (calibrator -> ranges -> format-specific
quantizer): a backend (`QuantBackend`) calibrates a method into ranges, quantizes
those ranges with some layers excluded into a candidate model, runs a candidate on
images and ranks the layers of a candidate by sensitivity. The policy on top:

  1. calibrate + quantize with each method of the config; with held-out images,
     score each candidate against the float model and keep the best (ties: the
     first of minmax, entropy, percentile);
  2. with a held-out drop above the budget (or a fallback asked for), rank the
     layers, or take a ranking saved by an earlier run (the TFLite backend cannot
     rank; it uses the ONNX backend's ranking, from the card);
  3. greedy float fallback: walk the ranking worst first, re-quantize the kept
     ranges with one more layer in float, keep that layer only if the held-out
     drop goes down, stop as soon as the drop fits or N layers were tried.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

import numpy as np

from .common import Method
from .config import QuantConfig

REPORT_LAYERS = 8   # layers of the ranking recorded (and at least --fallback of them)
SHOWN_LAYERS = 5    # worst layers named in the over-budget message

Ranges = TypeVar("Ranges")        # a backend's calibration result for one method
Candidate = TypeVar("Candidate")  # a backend's quantized (simulated) model


def progress_bar(total: int, desc: str):
    """A tqdm bar on an interactive stderr, silent otherwise (logs, tests, -q)."""
    from tqdm import tqdm

    from zoo.clikit import progress_disabled   # -q: none
    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=progress_disabled())


@dataclass
class Holdout:
    """Images split off the calibration source (never the --eval set) to choose a
    method and measure the fallback; scored by top-1 when labelled, else by top-1
    agreement with the float model."""

    x: np.ndarray
    labels: np.ndarray | None          # None: score by agreement with the float model

    @property
    def metric(self) -> str:
        return "top1" if self.labels is not None else "agreement"

    def score(self, logits: np.ndarray, ref: np.ndarray) -> dict:
        from .metrics import agreement, sqnr_db, topk
        s = {"agreement": round(agreement(logits, ref), 3), "sqnr_db": round(sqnr_db(ref, logits), 2)}
        if self.labels is not None:
            s["top1"] = round(topk(logits, self.labels, 1), 3)
        s["metric"] = s[self.metric]
        return s

    def float_metric(self, ref: np.ndarray) -> float:
        from .metrics import topk
        return topk(ref, self.labels, 1) if self.labels is not None else 100.0


def better(a: dict, b: dict | None) -> bool:
    """Is score `a` better than `b`: the metric, then agreement, then SQNR."""
    return b is None or (a["metric"], a["agreement"], a["sqnr_db"]) > \
        (b["metric"], b["agreement"], b["sqnr_db"])


class QuantBackend(Protocol[Ranges, Candidate]):
    """What the policy needs from a format (ONNX Runtime QDQ, TFLite PT2E)."""

    name: str            # in messages: "ort", "tflite"
    exclusion_key: str   # card field of the layers kept in float: "excluded_nodes", ...

    def float_logits(self, x: np.ndarray) -> np.ndarray:
        """The float model's logits: the reference of every held-out score."""

    def calibrate(self, method: Method) -> Ranges:
        """Activation ranges of the calibration images for one concrete method."""

    def quantize(self, ranges: Ranges, method: Method, exclusions: Sequence[str],
                 tag: str) -> Candidate:
        """A quantized model from `ranges`, the `exclusions` layers left in float
        (`tag` names the attempt: work files, progress)."""

    def logits(self, candidate: Candidate, x: np.ndarray) -> np.ndarray:
        """The candidate's logits on images (its simulation, for TFLite)."""

    def rank_layers(self, candidate: Candidate) -> list[dict] | None:
        """Layers by sensitivity, worst first ({"node", "op", "score", ...}), or None when
        the backend cannot measure it."""

    def fallback_layers(self, ranking: Sequence[dict]) -> list[str]:
        """The ranking's layers this backend can keep in float, worst first, in its names."""

    def finish(self, outcome: "Outcome", hold: Holdout | None) -> tuple[Path, dict]:
        """Write the chosen candidate as the format's file; returns it and the
        backend's own card fields."""


@dataclass
class Outcome(Generic[Candidate]):
    """What the policy chose, and the record of how (for the model card)."""

    method: Method
    candidate: Candidate
    tried: dict[str, dict]                  # method -> seconds (+ held-out score)
    excluded: list[str] = field(default_factory=list)
    ranking: list[dict] | None = None       # computed here (None: not computed, or saved)
    holdout_drop: float | None = None
    holdout_drop_before_fallback: float | None = None
    reference: np.ndarray | None = None     # the float model's held-out logits

    def details(self, exclusion_key: str) -> dict[str, Any]:
        """The card fields of the outcome (drops only with held-out images)."""
        d: dict[str, Any] = {}
        if self.holdout_drop is not None:
            d["holdout_drop"] = round(self.holdout_drop, 3)
            d["holdout_drop_before_fallback"] = round(self.holdout_drop_before_fallback, 3)
        d[exclusion_key] = self.excluded
        return d


@dataclass
class Policy:
    """Method choice + greedy float fallback over any `QuantBackend`."""

    config: QuantConfig
    prog: str                    # message prefix, e.g. "quant.ptq"
    model: str                   # model name, in messages
    say: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr))

    def run(self, backend: QuantBackend, hold: Holdout | None,
            saved_ranking: Sequence[dict] | None = None) -> Outcome:
        """Choose the method, then fall back to float where the budget asks for it.
        `saved_ranking`: a ranking from an earlier run, used instead of ranking here."""
        ref = backend.float_logits(hold.x) if hold is not None else None
        ranges, out = self.choose_method(backend, hold, ref)
        out.reference = ref
        if hold is None:
            return out
        budget = self.config.fallback
        drop = hold.float_metric(ref) - out.tried[out.method.value]["metric"]
        out.holdout_drop = out.holdout_drop_before_fallback = drop
        if budget.fits(drop) and not budget.enabled:
            return out
        ranking = list(saved_ranking) if saved_ranking is not None else None
        if ranking is None:
            ranking = backend.rank_layers(out.candidate)
            if ranking is not None:
                out.ranking = ranking[:max(REPORT_LAYERS, budget.max_layers)]
        if not budget.fits(drop) and ranking:
            self.say(f"{self.prog}: {self.model} {backend.name}: held-out drop {drop:.2f} pt > "
                     f"{budget.max_drop}; worst layers (SQNR dB): " + ", ".join(
                         f"{r['node']} {r['score']}" for r in ranking[:SHOWN_LAYERS]))
        if not budget.fits(drop) and budget.enabled:
            layers = backend.fallback_layers(ranking or [])
            if not layers:
                self.say(f"{self.prog}: warning: {self.model} {backend.name}: no per-layer ranking "
                         "(needs the ONNX backend's analysis); no layer kept in float")
            self.fallback(backend, hold, ref, ranges, out, layers)
        return out

    def choose_method(self, backend: QuantBackend, hold: Holdout | None,
                      ref: np.ndarray | None) -> tuple[Any, Outcome]:
        """Calibrate and quantize with each method; keep the best on the held-out images
        (the only one, without them). Returns the kept method's ranges and the outcome."""
        tried: dict[str, dict] = {}
        best: Method | None = None
        kept: tuple[Any, Any] | None = None
        for m in self.config.methods:
            t0 = time.perf_counter()
            ranges = backend.calibrate(m)
            cand = backend.quantize(ranges, m, self.config.exclusions, m.value)
            info: dict = {"seconds": round(time.perf_counter() - t0, 1)}
            if hold is not None:
                info.update(hold.score(backend.logits(cand, hold.x), ref))
            tried[m.value] = info
            if best is None or (hold is not None and better(info, tried[best.value])):
                best, kept = m, (ranges, cand)
        assert best is not None and kept is not None
        return kept[0], Outcome(best, kept[1], tried, excluded=list(self.config.exclusions))

    def fallback(self, backend: QuantBackend, hold: Holdout, ref: np.ndarray, ranges: Any,
                 out: Outcome, layers: Sequence[str]) -> None:
        """Greedy: try the worst layers in order, keep each one in float if that lowers
        the held-out drop, stop when the drop fits or the budget's N layers were tried."""
        budget = self.config.fallback
        drop = out.holdout_drop
        fallen: list[str] = []
        for i, layer in enumerate(layers[:budget.max_layers]):
            cand = backend.quantize(ranges, out.method, self.config.excluding(fallen + [layer]),
                                    f"fallback_{i}")
            s = hold.score(backend.logits(cand, hold.x), ref)
            new_drop = hold.float_metric(ref) - s["metric"]
            kept = new_drop < drop
            self.say(f"{self.prog}: {self.model} {backend.name}: {layer} in float: held-out drop "
                     f"{drop:.2f} -> {new_drop:.2f} pt ({'kept' if kept else 'no gain, stays int8'})")
            if kept:
                fallen.append(layer)
                out.candidate, drop = cand, new_drop
            if budget.fits(drop):
                break
        out.excluded = list(self.config.excluding(fallen))
        out.holdout_drop = drop
