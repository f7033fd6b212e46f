"""The latency model (android_bench.perfmodel, python -m android_bench.latency_model):
roofline arithmetic on synthetic graphs, the graph reader and one micro-benchmark on
real single-op models, and the CLI's one-line errors. QEMU repeatability is slow."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from android_bench.perfmodel.graph import NodeWork, OpClass, Precision, conv_class, gemm_edges
from android_bench.perfmodel.roofline import (Cause, Constants, explain, fit, memory_bound,
                                              node_cost, predict)
from conftest import run_cli

PROG = "android_bench.latency_model"
F, I = Precision.FP32, Precision.INT8


def node(cls: OpClass, prec: Precision = F, macs: int = 0, nbytes: int = 0, name: str = "n",
         outputs: int = 0, patches: int = 0, channels: int = 0):
    return NodeWork(name, "Op", cls, prec, macs, nbytes, outputs, patches, channels)


TRUE = Constants("instructions", per_inference=5000.0, per_op={F: 800.0, I: 1200.0},
                 cost={(OpClass.DENSE, F): 2.0, (OpClass.DENSE, I): 0.6,
                       (OpClass.DEPTHWISE, F): 5.0, (OpClass.ELEMENTWISE, F): 0.5,
                       (OpClass.ELEMENTWISE, I): 0.4, (OpClass.TRANSPOSE, I): 1.5,
                       (OpClass.QDQ, I): 0.8},
                 per_output={F: 3.0}, per_patch={F: 0.25}, per_channel={F: 40.0})


def synthetic_samples() -> list[tuple[list[NodeWork], float]]:
    """Single-op 'micro-benchmarks' at three sizes each, costed by TRUE (compute-bound)."""
    graphs = []
    for s in (1, 4, 16):
        # as in the real micro-benchmarks, MACs and bytes grow at different rates across
        # sizes, and Q/DQ, transposes and element-wise ops also run alone: identifiable
        graphs += [[node(OpClass.DENSE, F, 100_000 * s * s, 1_000 * s, outputs=1_000 * s,
                         patches=10 * s ** 3)],
                   [node(OpClass.QDQ, I, 0, 2_000 * s), node(OpClass.DENSE, I, 100_000 * s * s, 500 * s),
                    node(OpClass.TRANSPOSE, I, 0, 3_000 * s), node(OpClass.QDQ, I, 0, 2_000 * s)],
                   [node(OpClass.DEPTHWISE, F, 20_000 * s * s, 4_000 * s, channels=8 * s)],
                   [node(OpClass.ELEMENTWISE, F, 0, 30_000 * s), node(OpClass.FREE)],
                   [node(OpClass.QDQ, I, 0, 8_000 * s), node(OpClass.QDQ, I, 0, 8_000 * s)],
                   [node(OpClass.QDQ, I, 0, 8_000 * s), node(OpClass.TRANSPOSE, I, 0, 50_000 * s * s)],
                   [node(OpClass.QDQ, I, 0, 8_000 * s * s), node(OpClass.ELEMENTWISE, I, 0, 9_000 * s)]]
    return [(g, predict(g, TRUE)) for g in graphs]


def test_fit_recovers_the_constants_that_made_the_samples():
    c = fit(synthetic_samples(), "instructions")
    assert c.per_inference == pytest.approx(TRUE.per_inference, rel=1e-3)
    assert c.per_op[F] == pytest.approx(800.0, rel=1e-3)
    assert c.per_op[I] == pytest.approx(1200.0, rel=1e-3)
    for k, v in TRUE.cost.items():
        assert c.cost[k] == pytest.approx(v, rel=1e-3), k
    assert c.per_output[F] == pytest.approx(3.0, rel=1e-3)
    assert c.per_patch[F] == pytest.approx(0.25, rel=1e-3)
    assert c.per_channel[F] == pytest.approx(40.0, rel=1e-3)


def test_roofline_takes_the_memory_term_when_it_dominates():
    c = TRUE
    compute = node(OpClass.DENSE, F, macs=1000, nbytes=100)       # 2000 vs 50
    memory = node(OpClass.DENSE, F, macs=1000, nbytes=100_000)    # 2000 vs 50000 (an FC's weights)
    assert not memory_bound(compute, c) and node_cost(compute, c) == 2000
    assert memory_bound(memory, c) and node_cost(memory, c) == 50_000
    assert node_cost(node(OpClass.FREE, F, 0, 10**9), c) == 0  # reshapes: overhead only
    g = [compute, memory, node(OpClass.FREE)]
    assert predict(g, c) == 5000 + 3 * 800 + 52_000
    assert predict([node(OpClass.QDQ, I, 0, 10)], c) == 5000 + 1200 + 8


def test_rate_falls_back_to_the_nearest_measured_class():
    assert TRUE.rate(OpClass.GROUPED, F) == TRUE.rate(OpClass.DENSE, F)       # conv -> dense
    assert TRUE.rate(OpClass.POOL, I) == TRUE.rate(OpClass.ELEMENTWISE, I)    # memory -> eltwise
    assert TRUE.rate(OpClass.DEPTHWISE, I) == TRUE.rate(OpClass.DENSE, I)      # same precision first
    only_int8 = Constants("ms", cost={(OpClass.DENSE, I): 1.5})
    assert only_int8.rate(OpClass.DEPTHWISE, F) == 1.5                           # then the other one
    assert Constants.from_dict(json.loads(json.dumps(TRUE.to_dict()))) == TRUE


def test_explain_adds_up_to_measured_and_names_each_cause():
    g = [node(OpClass.QDQ, I, 0, 1000), node(OpClass.DENSE, I, 10_000, 100),
         node(OpClass.DENSE, F, 0, 0, outputs=0),  # a float island with no MACs (a Gemm stub)
         node(OpClass.DEPTHWISE, F, 2_000, 100), node(OpClass.TRANSPOSE, I, 0, 400),
         node(OpClass.DENSE, I, 100, 50_000)]
    e = explain(g, TRUE, measured=80_000.0)
    assert e.int8 and e.macs == 12_100 and len(g) == 6
    # theory: every MAC at the dense FP32 rate / 4
    assert e.theory == pytest.approx(12_100 * 2.0 / 4)
    assert e.theory + sum(e.causes.values()) == pytest.approx(80_000.0)
    assert e.predicted == pytest.approx(predict(g, TRUE))
    assert e.causes[Cause.UNEXPLAINED] == pytest.approx(80_000.0 - e.predicted)
    assert e.causes[Cause.QDQ] == pytest.approx(800)
    assert e.causes[Cause.TRANSPOSES] == pytest.approx(600)
    # the FP32 depthwise conv inside an INT8 model is a float island: all of it past theory
    assert e.causes[Cause.FLOAT_ISLANDS] == pytest.approx(2_000 * 5.0 - 2_000 * 0.5)
    # int8 dense at 0.6 / MAC instead of 2.0 / 4 = 0.5
    assert e.causes[Cause.INT8_KERNELS] == pytest.approx((10_000 + 100) * 0.1)
    assert e.causes[Cause.MEMORY_BOUND] == pytest.approx(50_000 * 0.4 - 100 * 0.6)
    assert e.causes[Cause.OVERHEAD] == pytest.approx(5000 + 4 * 1200 + 2 * 800)
    assert e.error == pytest.approx((e.predicted - 80_000) / 80_000)


def test_narrow_layers_pay_their_gemm_edges():
    wide = node(OpClass.DENSE, F, 100_000, 10, outputs=100, patches=1_000)
    e = explain([wide], TRUE)
    assert e.causes[Cause.GEMM_EDGES] == pytest.approx(100 * 3.0 + 1_000 * 0.25)
    assert e.predicted == pytest.approx(5000 + 800 + 200_000 + 550)
    assert e.causes[Cause.OVERHEAD] == pytest.approx(5800)
    assert gemm_edges(OpClass.DEPTHWISE, 9_000, 1_000, 1) == (0, 0)
    # 3x3 conv 16 -> 64 channels, groups 1, 8x8 output: a patch of 16*9 per pixel, once
    macs = 64 * 64 * 16 * 9
    assert gemm_edges(OpClass.DENSE, macs, 64 * 64, 64) == (64 * 64, 64 * 16 * 9)


def test_fp32_dense_graph_has_no_gap_but_overhead():
    e = explain([node(OpClass.DENSE, F, 50_000, 10)], TRUE)
    assert not e.int8 and e.measured is None and e.error is None
    assert e.theory == 100_000
    nonzero = {k for k, v in e.causes.items() if v}
    assert nonzero == {Cause.OVERHEAD}


def test_conv_class_from_weight_shape():
    assert conv_class((64, 64, 3, 3), 1) is OpClass.DENSE
    assert conv_class((64, 32, 1, 1), 1) is OpClass.POINTWISE
    assert conv_class((64, 1, 3, 3), 64) is OpClass.DEPTHWISE
    assert conv_class((240, 80, 1, 1), 3) is OpClass.GROUPED


def test_fp32_depthwise_off_the_direct_kernel_is_its_own_class():
    """MLAS's ARM64 direct depthwise kernel takes 3x3, stride 1, dilation 1, pads <= 1;
    other FP32 depthwise convolutions run im2col + GEMM (their own class and rate). The
    per-op-class breakdown still shows them as depthwise, beside their INT8 twins."""
    from onnx import helper

    from android_bench.perfmodel.breakdown import ROWS, breakdown
    from android_bench.perfmodel.graph import mlas_direct_depthwise

    def conv(**kw):
        return helper.make_node("Conv", ["x", "w"], ["y"], **kw)
    dw3, dw5 = (32, 1, 3, 3), (32, 1, 5, 5)
    assert mlas_direct_depthwise(conv(pads=[1] * 4), dw3)
    assert not mlas_direct_depthwise(conv(pads=[1] * 4, strides=[2, 2]), dw3)
    assert not mlas_direct_depthwise(conv(pads=[2] * 4), dw5)
    assert not mlas_direct_depthwise(conv(dilations=[2, 2], pads=[2] * 4), dw3)
    c = Constants("instructions", 0.0, {F: 100.0, I: 100.0},
                  {(OpClass.DEPTHWISE, F): 2.0, (OpClass.DEPTHWISE_IM2COL, F): 7.0,
                   (OpClass.DEPTHWISE, I): 1.0, (OpClass.ELEMENTWISE, F): 0.01,
                   (OpClass.ELEMENTWISE, I): 0.01, (OpClass.QDQ, I): 0.5})
    fp32 = [node(OpClass.DEPTHWISE, F, 1000), node(OpClass.DEPTHWISE_IM2COL, F, 1000)]
    int8 = [node(OpClass.QDQ, I, 0, 400), node(OpClass.DEPTHWISE, I, 1000),
            node(OpClass.DEPTHWISE, I, 1000)]
    b = breakdown(fp32, int8, c)
    assert "depthwise_im2col" not in ROWS
    rows = {r.name: r for r in b.rows}
    assert rows["depthwise"].fp32 == 9000 and rows["depthwise"].int8 == 2000
    assert rows["depthwise"].speedup == 4.5 and rows["qdq"].speedup is None
    assert sum(r.int8 for r in b.rows) == predict(int8, c) == b.int8_total
    # a table without the im2col class prices it as depthwise (the nearest measured)
    assert Constants("instructions", cost={(OpClass.DEPTHWISE, F): 2.0}).rate(
        OpClass.DEPTHWISE_IM2COL, F) == 2.0


@pytest.fixture(scope="module")
def micro_files(tmp_path_factory):
    from android_bench.perfmodel.microbench import Micro, write_models
    from quant.latency_model import quantize_micro

    out = tmp_path_factory.mktemp("micro")
    return write_models(out, quantize_micro, (Micro(OpClass.DEPTHWISE, 32, 16, 3),))


def test_micro_models_read_back_as_their_op_class(micro_files):
    from android_bench.perfmodel.graph import onnx_work
    from zoo.cost import conv_macs

    (_, p32, f32), (_, p8, f8) = micro_files
    assert (p32, p8) == (F, I) and f8.name.endswith(".int8.onnx")
    [w] = onnx_work(f32, arm=True)
    assert w.op_class is OpClass.DEPTHWISE and w.precision is F
    assert w.macs == conv_macs((1, 32, 16, 16), (32, 1, 3, 3))
    w8 = onnx_work(f8, arm=True)
    convs = [w for w in w8 if w.op_class is OpClass.DEPTHWISE]
    assert len(convs) == 1 and convs[0].precision is I and convs[0].macs == w.macs
    # the INT8 file's float input and output: a quantize and a dequantize stay
    assert {w.op_type for w in w8 if w.op_class is OpClass.QDQ} == {"QuantizeLinear",
                                                                    "DequantizeLinear"}
    # int8 activations: the conv moves fewer bytes than its FP32 twin
    assert convs[0].bytes < w.bytes


def test_one_op_class_measured_locally(micro_files):
    from android_bench.latency_model import bench
    from android_bench.targets.spec import TargetSpec

    measured = bench(TargetSpec.parse("local"), [f for _, _, f in micro_files], quiet=True)
    assert set(measured) == {f.name for _, _, f in micro_files}
    assert all(v > 0 for v in measured.values())


# ---- the CLI's one-line errors ---------------------------------------------------------------

def one_line_error(r, *needles: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith(f"python -m {PROG}: error: "), lines[0]
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_rejects_a_missing_model(tmp_path):
    one_line_error(run_cli(PROG, "--targets", "local", "--model", tmp_path / "nope.onnx"),
                   "nope.onnx not found")


def test_cli_rejects_a_tflite_model(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"x")
    one_line_error(run_cli(PROG, "--targets", "local", "--model", f), "only ONNX files")


def test_cli_rejects_a_bad_target():
    one_line_error(run_cli(PROG, "--targets", "qemu:pentium"), "unknown qemu cpu")


def test_cli_rejects_a_table_of_another_target(tmp_path, micro_files):
    (tmp_path / "local.json").write_text(json.dumps(
        {"format": "armq-latency-microbench/1", "target": "qemu:cortex-a76", "unit": "ms",
         "rows": [{"x": 1}]}))
    one_line_error(run_cli(PROG, "--targets", "local", "--tables", tmp_path),
                   "qemu:cortex-a76, not local", "quant.latency_model --remeasure")


def test_only_quants_cli_measures_tables(tmp_path):
    """android_bench sits below quant: its CLI reads tables and names the one that fits
    them; quant.latency_model is the same CLI with the fitting (its own prog name)."""
    one_line_error(run_cli(PROG, "--targets", "local", "--tables", tmp_path),
                   "local: no micro-benchmark table in", "python -m quant.latency_model")
    one_line_error(run_cli(PROG, "--targets", "local", "--tables", tmp_path, "--remeasure"),
                   "local: --remeasure", "python -m quant.latency_model")
    assert not list(tmp_path.iterdir())
    r = run_cli("quant.latency_model", "--targets", "qemu:pentium")
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "python -m quant.latency_model: error: --targets: 'qemu:pentium': unknown qemu cpu "
        "'pentium' (one of cortex-a53, cortex-a72, cortex-a76, neoverse-n1, max)"], r.stderr


def test_cli_rejects_results_without_the_model(tmp_path, micro_files):
    from android_bench.perfmodel.microbench import refit

    f32 = micro_files[0][2]
    table = refit({"format": "armq-latency-microbench/1", "target": "local", "unit": "ms",
                   "rows": [{"measured": 0.05 * (i + 1), "nodes": [node(
                       OpClass.DENSE, F, 100_000 * (i + 1), 100).to_dict()]} for i in range(3)]})
    (tmp_path / "local.json").write_text(json.dumps(table))
    res = tmp_path / "results.json"
    res.write_text(json.dumps({"models": {"x": {"bench": {"local": {}}}}}))
    one_line_error(run_cli(PROG, "--targets", "local", "--tables", tmp_path, "--model", f32,
                           "--results", res), f"no local measurement of {f32.name}")
    doc = tmp_path / "out.md"
    one_line_error(run_cli(PROG, "--targets", "local", "--tables", tmp_path, "--model", f32,
                           "--results", res, "--doc", res), "is an input")
    assert not doc.exists()


def test_breakdown_cli_on_a_real_pair_with_the_shipped_constants(tmp_path, micro_files):
    """--breakdown measures nothing: the shipped a76 table predicts the real FP32/INT8 pair,
    each column sums to its file's predicted cost; a target without a table is one line."""
    (_, _, f32), (_, _, f8) = micro_files
    out = tmp_path / "why.json"
    r = run_cli(PROG, "--targets", "qemu:cortex-a76,qemu:cortex-a53", "--breakdown", f32, f8,
                "--json", out)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    a76, a53 = doc["targets"]
    assert (doc["fp32"], doc["int8"]) == (f32.name, f8.name) and a76["unit"] == "instructions"
    rows = {x["class"]: x for x in a76["classes"]}
    assert sum(x["int8"] for x in rows.values()) == pytest.approx(a76["int8_predicted"])
    assert sum(x["fp32"] for x in rows.values()) == pytest.approx(a76["fp32_predicted"])
    assert sum(x["int8_share"] for x in rows.values()) == pytest.approx(1.0)
    # one depthwise conv: its INT8 kernel beats FP32; the Q/DQ pair exists only in INT8
    assert rows["depthwise"]["speedup"] > 1 and rows["qdq"]["fp32"] == 0 < rows["qdq"]["int8"]
    assert a76["predicted_speedup"] == pytest.approx(a76["fp32_predicted"] / a76["int8_predicted"])
    assert "no fitted latency-model constants for qemu:cortex-a53" in a53["note"]
    assert "depthwise" in r.stdout and "qemu:cortex-a53" in r.stdout
    swapped = tmp_path / "swapped.json"
    one_line_error(run_cli(PROG, "--targets", "qemu:cortex-a76", "--breakdown", f8, f32,
                           "--json", swapped), "FP32 file first")
    assert not swapped.exists()
    one_line_error(run_cli(PROG, "--targets", "local", "--breakdown", f32, f8, "--json", f8),
                   "is an input")


@pytest.mark.slow
def test_qemu_instruction_counts_of_a_micro_model_repeat(micro_files):
    from android_bench.latency_model import bench
    from android_bench.targets.spec import TargetSpec

    t = TargetSpec.parse("qemu:cortex-a76")
    files = [f for _, _, f in micro_files]
    first, again = bench(t, files, quiet=True), bench(t, files, quiet=True)
    assert first == again and all(v > 0 for v in first.values())
