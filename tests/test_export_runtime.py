"""One thread rule for every runtime armq opens (export.runtime).

An explicit count wins, else ARMQ_THREADS, else min(4, CPU count); both the export
parity check and quant's runners must follow it, and a bad ARMQ_THREADS must stop a
CLI with one line naming the variable.
"""
from __future__ import annotations

import importlib.util
import textwrap

import pytest
import torch

from export import onnx as export_onnx
from export import runtime
from quant.runners import OrtRunner, TfliteRunner, ort_session, tflite_interpreter
from zoo.util import ArmqError

from _export_util import run_module
from test_export_errors import assert_one_line_error

HAS_TFLITE = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert"))
TINY_NET = """
    from torch import nn

    def build(data):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, data.num_classes))
"""


@pytest.fixture
def keep_torch_threads():
    """The export CLIs set torch's thread count for the whole process: restore it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def eight_cpus(monkeypatch):
    """A machine with more cores than the default cap, so the cap is what is seen."""
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 8)
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)


@pytest.fixture
def tiny_builder(tmp_path):
    src = tmp_path / "tinynet.py"
    src.write_text(textwrap.dedent(TINY_NET))
    return f"{src}:build"


@pytest.fixture
def seen_threads(monkeypatch):
    """Thread counts of every ORT session and TFLite interpreter opened from here on,
    read back from the session's options / the interpreter's constructor call (with
    "run" or "inspect": an interpreter without the default delegates only lists ops)."""
    seen: dict[str, list] = {"ort": [], "tflite": []}
    real_session = runtime.ort_session

    def session(*a, **kw):
        sess = real_session(*a, **kw)
        seen["ort"].append(runtime.session_threads(sess))
        return sess

    monkeypatch.setattr(runtime, "ort_session", session)
    if importlib.util.find_spec("ai_edge_litert"):
        mod, _ = runtime.tflite_module()

        class Recording(mod.Interpreter):
            def __init__(self, *a, **kw):
                kind = "inspect" if "experimental_op_resolver_type" in kw else "run"
                seen["tflite"].append((kw["num_threads"], kind))
                super().__init__(*a, **kw)

        monkeypatch.setattr(mod, "Interpreter", Recording)
    return seen


@pytest.mark.parametrize("cpus,expected", [(8, 4), (4, 4), (2, 2), (1, 1), (None, 1)])
def test_default_is_min_4_cpus(monkeypatch, cpus, expected):
    monkeypatch.delenv("ARMQ_THREADS", raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: cpus)
    assert runtime.default_threads() == expected
    assert runtime.resolve_threads(None) == runtime.resolve_threads(0) == expected


def test_env_overrides_the_default_and_an_explicit_count_overrides_the_env(monkeypatch, eight_cpus):
    monkeypatch.setenv("ARMQ_THREADS", "3")
    assert runtime.default_threads() == 3 and runtime.resolve_threads(None) == 3
    assert runtime.resolve_threads(2) == 2
    monkeypatch.setenv("ARMQ_THREADS", " 6 ")  # above the default cap: the user asked for it
    assert runtime.resolve_threads(None) == 6
    monkeypatch.setenv("ARMQ_THREADS", "")    # empty = unset
    assert runtime.resolve_threads(None) == 4


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5", "4x"])
def test_bad_env_is_a_one_line_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("ARMQ_THREADS", value)
    for call in (runtime.default_threads, lambda: runtime.resolve_threads(2)):
        with pytest.raises(ArmqError) as e:
            call()
        msg = str(e.value)
        assert "ARMQ_THREADS" in msg and repr(value) in msg and len(msg.splitlines()) == 1


def test_negative_explicit_count_is_an_error(eight_cpus):
    with pytest.raises(ArmqError, match="threads must be >= 1"):
        runtime.resolve_threads(-2)


@pytest.mark.parametrize("env,flag,expected", [(None, None, 4), ("3", None, 3), ("3", "2", 2)])
def test_export_parity_and_quant_runners_follow_the_rule(
        tmp_path, monkeypatch, keep_torch_threads, eight_cpus, tiny_builder, seen_threads,
        env, flag, expected):
    """Default (4 of 8 cores), ARMQ_THREADS, and --threads over ARMQ_THREADS: the same count
    reaches torch, the ONNX (and TFLite) parity runtime and quant's runners."""
    if env is not None:
        monkeypatch.setenv("ARMQ_THREADS", env)
    out = tmp_path / "art"
    args = ["--model-py", tiny_builder, "--model", "tiny", "--dataset", "cifar10",
            "--random-weights", "--num-images", "2", "--out", str(out)]
    if flag is not None:
        args += ["--threads", flag]
    assert export_onnx.main(args) == 0
    assert seen_threads["ort"] == [expected]          # the parity session
    assert torch.get_num_threads() == expected
    onnx_path = out / "tiny_cifar10.onnx"
    # quant's runners take no --threads: the default / ARMQ_THREADS part of the rule.
    quant_expected = int(env) if env is not None else 4
    runner = OrtRunner(onnx_path)
    assert runtime.session_threads(runner.sess) == quant_expected
    assert runtime.session_threads(ort_session(onnx_path, arm=False)) == quant_expected
    assert runtime.session_threads(ort_session(onnx_path, threads=1)) == 1
    if not HAS_TFLITE:
        return
    from export import tflite as export_tflite

    assert export_tflite.main(args) == 0
    # The parity interpreter, then the audit's op listing (threads=1 on purpose).
    assert seen_threads["tflite"] == [(expected, "run"), (1, "inspect")]
    tfl_path = out / "tiny_cifar10.tflite"
    TfliteRunner(tfl_path)
    tflite_interpreter(tfl_path, delegates=False)
    assert seen_threads["tflite"][2:] == [(quant_expected, "run"), (quant_expected, "inspect")]


@pytest.mark.parametrize("value", ["two", "0", "-3"])
def test_export_cli_bad_env(tmp_path, value):
    out = tmp_path / "out"
    r = run_module("export.onnx", "--model", "shufflenet_v1", "--dataset", "cifar10",
                   "--random-weights", "--out", out, env={"ARMQ_THREADS": value})
    assert_one_line_error(r, "export.onnx", f"ARMQ_THREADS={value!r}", "whole number")
    assert not out.exists() or not any(out.iterdir())


def test_quant_evaluate_cli_bad_env(tmp_path, keep_torch_threads, tiny_builder):
    out = tmp_path / "art"
    assert export_onnx.main(["--model-py", tiny_builder, "--model", "tiny", "--dataset",
                             "cifar10", "--random-weights", "--num-images", "2",
                             "--out", str(out)]) == 0
    r = run_module("quant.evaluate", "--model", out / "tiny_cifar10.onnx",
                   "--data", "assets/data/cifar10_test.tar.gz", "--limit", "4",
                   env={"ARMQ_THREADS": "two"})
    assert_one_line_error(r, "quant.evaluate", "ARMQ_THREADS='two'", "whole number")
    ok = run_module("quant.evaluate", "--model", out / "tiny_cifar10.onnx",
                    "--data", "assets/data/cifar10_test.tar.gz", "--limit", "4",
                    env={"ARMQ_THREADS": "1"})
    assert ok.returncode == 0, ok.stderr
