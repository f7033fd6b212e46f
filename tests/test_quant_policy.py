"""quant.policy against a fake backend: the method choice of --method auto and the
greedy float fallback (stops when the drop fits, respects the layer budget, keeps a
layer only when it helps, walks a saved ranking when one is given); quant.config."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
import pytest

from quant.common import Method
from quant.config import (ActivationType, Annotations, FallbackBudget, Layout, QuantConfig,
                          Scheme)
from quant.policy import REPORT_LAYERS, Holdout, Policy

N = 200  # held-out images: one image is 0.5 point


@dataclass
class FakeBackend:
    """Held-out top-1 of a candidate = the method's accuracy + the gain of each layer kept
    in float. Records every call, so tests can see what the policy asked for."""

    accuracy: dict[Method, float]
    gain: dict[str, float] = field(default_factory=dict)
    ranking: list[dict] | None = None
    name: str = "fake"
    calls: list[tuple] = field(default_factory=list)

    def float_logits(self, x):
        return _logits(100.0)

    def calibrate(self, method):
        self.calls.append(("calibrate", method))
        return f"ranges-{method.value}"

    def quantize(self, ranges, method, exclusions, tag):
        assert ranges == f"ranges-{method.value}"  # the kept method's ranges, never another's
        self.calls.append(("quantize", method, tuple(exclusions)))
        return method, tuple(exclusions)

    def logits(self, candidate, x):
        method, excl = candidate
        return _logits(self.accuracy[method] + sum(self.gain.get(e, 0.0) for e in excl))

    def rank_layers(self, candidate):
        self.calls.append(("rank",))
        return self.ranking

    def fallback_layers(self, ranking):
        return [r["node"] for r in ranking if r["op"] == "Conv"]

    def tried_exclusions(self) -> list[tuple]:
        return [c[2] for c in self.calls if c[0] == "quantize" and c[2]]


def _logits(top1: float) -> np.ndarray:
    """Logits whose top-1 on all-zero labels is `top1` percent."""
    right = int(round(top1 / 100.0 * N))
    out = np.zeros((N, 3), np.float32)
    out[:right, 0] = 1.0
    out[right:, 1] = 1.0
    return out


def _hold() -> Holdout:
    return Holdout(np.zeros((N, 3, 4, 4), np.float32), np.zeros(N, np.int64))


def _rank(*nodes: str) -> list[dict]:
    return [{"node": n, "op": "Conv", "score": 10.0 + i} for i, n in enumerate(nodes)]


def _policy(method=Method.MINMAX, layers=0, max_drop=0.5, **kw) -> tuple[Policy, list[str]]:
    said: list[str] = []
    cfg = QuantConfig(method=method, fallback=FallbackBudget(layers, max_drop), **kw)
    return Policy(cfg, "quant.ptq", "m", say=said.append), said


ACC = {Method.MINMAX: 96.0, Method.ENTROPY: 98.0, Method.PERCENTILE: 97.0}


def test_auto_keeps_the_best_method_on_holdout():
    b = FakeBackend(ACC)
    pol, _ = _policy(Method.AUTO)
    out = pol.run(b, _hold())
    assert out.method is Method.ENTROPY and out.candidate == (Method.ENTROPY, ())
    assert set(out.tried) == {"minmax", "entropy", "percentile"}
    assert out.tried["entropy"]["metric"] == 98.0 and out.tried["minmax"]["top1"] == 96.0
    assert [c[1] for c in b.calls if c[0] == "calibrate"] == [Method.MINMAX, Method.ENTROPY,
                                                           Method.PERCENTILE]
    assert out.holdout_drop == pytest.approx(2.0)


def test_auto_ties_keep_the_first_method_and_no_holdout_keeps_the_only_one():
    b = FakeBackend({m: 97.0 for m in ACC})
    out = _policy(Method.AUTO)[0].run(b, _hold())
    assert out.method is Method.MINMAX
    b = FakeBackend(ACC)
    out = _policy(Method.PERCENTILE, layers=3)[0].run(b, None)
    assert out.method is Method.PERCENTILE and set(out.tried) == {"percentile"}
    assert "top1" not in out.tried["percentile"]  # nothing to score on
    assert out.holdout_drop is None and out.excluded == []
    assert ("rank",) not in b.calls
    assert out.details("excluded_nodes") == {"excluded_nodes": []}


def test_fallback_stops_when_the_drop_fits():
    b = FakeBackend(ACC, gain={"a": 1.0, "b": 3.0, "c": 1.0, "d": 1.0}, ranking=_rank("a", "b", "c", "d"))
    pol, said = _policy(layers=4, max_drop=0.5)
    out = pol.run(b, _hold())
    # 4 -> 3 (a kept) -> 0 (b kept): fits, c and d are never tried
    assert b.tried_exclusions() == [("a",), ("a", "b")]
    assert out.excluded == ["a", "b"] and out.candidate == (Method.MINMAX, ("a", "b"))
    assert out.holdout_drop == pytest.approx(0.0) and out.holdout_drop_before_fallback == pytest.approx(4.0)
    d = out.details("excluded_nodes")
    assert d == {"holdout_drop": 0.0, "holdout_drop_before_fallback": 4.0, "excluded_nodes": ["a", "b"]}
    assert any("worst layers" in s for s in said) and sum("in float" in s for s in said) == 2


def test_fallback_respects_the_budget_and_keeps_only_helpful_layers():
    gain = {"a": 0.5, "b": -1.0, "c": 0.5, "d": 0.5}
    b = FakeBackend(ACC, gain=gain, ranking=_rank("a", "b", "c", "d"))
    out = _policy(layers=3, max_drop=0.5)[0].run(b, _hold())
    # three layers tried (the budget), b made it worse and stays int8, d never tried
    assert b.tried_exclusions() == [("a",), ("a", "b"), ("a", "c")]
    assert out.excluded == ["a", "c"] and out.holdout_drop == pytest.approx(3.0)
    assert out.ranking == b.ranking  # computed here: recorded


def test_fallback_keeps_the_configs_own_exclusions():
    b = FakeBackend(ACC, gain={"a": 4.0}, ranking=_rank("a"))
    out = _policy(layers=1, exclusions=("stem",))[0].run(b, _hold())
    assert all(e[0] == "stem" for e in b.tried_exclusions())
    assert b.tried_exclusions()[-1] == ("stem", "a") and out.excluded == ["stem", "a"]


def test_saved_ranking_is_used_instead_of_ranking_here():
    b = FakeBackend(ACC, gain={"x": 4.0, "a": 4.0}, ranking=_rank("a"))
    out = _policy(layers=2)[0].run(b, _hold(), saved_ranking=_rank("x", "a"))
    assert ("rank",) not in b.calls
    assert b.tried_exclusions() == [("x",)] and out.excluded == ["x"]
    assert out.ranking is None  # saved by an earlier run: not recorded again


def test_no_ranking_warns_and_keeps_everything_int8():
    b = FakeBackend(ACC, ranking=None)
    pol, said = _policy(layers=2)
    out = pol.run(b, _hold())
    assert out.excluded == [] and out.holdout_drop == pytest.approx(4.0)
    assert any("warning" in s and "no per-layer ranking" in s for s in said)


def test_within_budget_ranks_only_when_a_fallback_is_asked_for():
    b = FakeBackend({Method.MINMAX: 99.75}, ranking=_rank(*"abcdefghijk"))
    out = _policy(layers=0, max_drop=0.5)[0].run(b, _hold())
    assert ("rank",) not in b.calls and out.ranking is None
    out = _policy(layers=2, max_drop=0.5)[0].run(b, _hold())
    assert ("rank",) in b.calls and len(out.ranking) == REPORT_LAYERS
    assert b.tried_exclusions() == []  # the drop fits: nothing kept in float


def test_config_from_cli_flags():
    args = argparse.Namespace(method=Method.AUTO, per_tensor=True, activations="uint8",
                              fallback=2, max_drop=0.25, tflite_layout="nchw",
                              pt2e_annotations="litert")
    c = QuantConfig.from_args(args)
    assert c.methods == (Method.MINMAX, Method.ENTROPY, Method.PERCENTILE)
    assert not c.per_channel and c.activations is ActivationType.UINT8
    assert c.fallback == FallbackBudget(2, 0.25) and c.fallback.enabled and c.needs_holdout
    assert c.tflite_layout is Layout.NCHW and c.pt2e_annotations is Annotations.LITERT
    assert c.activation_scheme is Scheme.ASYMMETRIC and not c.symmetric_activations
    d = QuantConfig()
    assert d.methods == (Method.MINMAX,) and not d.needs_holdout and not d.fallback.enabled
    assert QuantConfig(exclusions=("a", "b")).excluding(["b", "c"]) == ("a", "b", "c")
    assert d.with_layout(Layout.NCHW).tflite_layout is Layout.NCHW
