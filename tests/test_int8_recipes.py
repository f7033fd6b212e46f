"""Per-target INT8 recipes (quant.config.recipe_for, the one rule), the file names and card
keys they give (export.card), quant.ptq --for on a real model, deploy's plan (one INT8
file per recipe, each target runs its own) and the report's best-per-target table."""
from __future__ import annotations

import argparse
import json
import platform

import pytest

from conftest import run_cli
from test_cli_contract import TINY, image_bytes, tiny_model

from android_bench.qemu_cpus import CPUS
from deploy.spec import parse_target_list
from export.card import (RECIPE_TAGS, artifact_key, card_path_for, int8_filename, int8_key,
                         key_format, key_is_int8, key_recipe, load_card, ordered_keys)
from quant.config import (DOTPROD_CORES, ActivationType, RecipeError, RecipeName, recipe_for,
                          recipe_for_cpu, recipe_for_target)

S8S8, U8S8, U8S8R = RecipeName.S8S8, RecipeName.U8S8, RecipeName.U8S8_REDUCED


# ---- the rule --------------------------------------------------------------------------------

@pytest.mark.parametrize("target,want", [
    ("qemu:cortex-a76", S8S8), ("cortex-a76", S8S8), ("qemu:neoverse-n1", S8S8),
    ("qemu:cortex-a72", U8S8), ("qemu:cortex-a53", U8S8), ("QEMU:Cortex-A72", U8S8),
    ("aarch64:asimd+asimddp", S8S8), ("arm64:asimd,dotprod", S8S8), ("aarch64:asimd", U8S8),
    ("x86_64:avx512_vnni", U8S8), ("x86_64:avx_vnni", U8S8), ("x86_64:avx2", U8S8R),
    ("x86_64", U8S8R), ("aarch64", U8S8),
])
def test_recipe_per_target(target, want):
    r = recipe_for_target(target)
    assert r.name is want and r.reason
    assert r.activations is (ActivationType.INT8 if want is S8S8 else ActivationType.UINT8)
    assert r.to_dict()["name"] == want.value and r.tag in RECIPE_TAGS
    # 7-bit weights exactly where int16 pair sums saturate: x86 without VNNI
    assert r.reduce_range is (want is U8S8R)
    assert ("7-bit" in r.to_dict()["weights"]) is r.reduce_range


def test_card_recipe_tags_are_the_recipes():
    assert set(RECIPE_TAGS) == {n.value for n in RecipeName}


def test_every_emulated_cpu_and_this_host_have_a_recipe():
    for cpu in CPUS:                        # every CPU android_bench can emulate
        assert cpu in DOTPROD_CORES, cpu
        recipe_for_target(f"qemu:{cpu}")
    host = recipe_for_target("local")
    if platform.machine().lower() in ("x86_64", "amd64"):
        # ORT's x86 kernels take uint8; 7-bit weights unless VNNI sums in int32
        vnni = {"avx512_vnni", "avx_vnni"} & set(open("/proc/cpuinfo").read().split())
        assert host.name is (U8S8 if vnni else U8S8R)
    assert "(avx512_vnni" in recipe_for("x86_64", ["avx512_vnni"]).reason


# A probe (android_bench.runner.cpu_info) lists every feature it asks about, present or not.
X86_KEYS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_KEYS = ("asimd", "dotprod", "i8mm", "sve", "sve2", "fphp", "bf16", "sme")


def _probe(machine: str, *present: str) -> dict:
    keys = X86_KEYS if machine == "x86_64" else ARM_KEYS
    return {"machine": machine, "features": {k: k in present for k in keys}}


@pytest.mark.parametrize("cpu,want", [
    (_probe("x86_64", "avx2"), U8S8R),                       # a Haswell..Skylake client
    (_probe("x86_64", "avx2", "avx512f"), U8S8R),            # Skylake-SP: AVX-512, no VNNI
    (_probe("x86_64", "avx2", "avx512f", "avx512_vnni"), U8S8),
    (_probe("x86_64", "avx2", "avx_vnni"), U8S8),
    (_probe("x86_64"), U8S8R),
    (_probe("aarch64", "asimd"), U8S8),                      # Cortex-A72 (Raspberry Pi 4)
    (_probe("aarch64", "asimd", "fphp"), U8S8),
    (_probe("aarch64", "asimd", "dotprod"), S8S8),           # Cortex-A76 (Raspberry Pi 5)
    (_probe("aarch64", "asimd", "dotprod", "i8mm", "sve"), S8S8),
], ids=["avx2", "avx512-no-vnni", "avx512-vnni", "avx-vnni", "bare-x86", "a72", "a72-fphp",
        "a76", "neoverse-v1"])
def test_recipe_from_a_probe_counts_only_present_features(cpu, want):
    """`--targets local` picks from this host's probe: a feature probed absent must not
    count (every x86 probe has the VNNI keys; a host with VNNI would hide it)."""
    assert recipe_for_cpu(cpu).name is want


def test_local_recipe_is_the_probes(monkeypatch):
    import android_bench.runner as runner

    assert recipe_for_target("local") == recipe_for_cpu(runner.cpu_info())
    for cpu, want in ((_probe("x86_64", "avx2"), U8S8R), (_probe("aarch64", "asimd"), U8S8),
                      (_probe("aarch64", "asimd", "dotprod"), S8S8)):
        monkeypatch.setattr(runner, "cpu_info", lambda cpu=cpu: cpu)
        assert recipe_for_target("local").name is want


@pytest.mark.parametrize("bad", ["android", "qemu:cortex-z9", "riscv64:v", "ssh:board", ""])
def test_unknown_target_is_refused(bad):
    with pytest.raises(RecipeError, match="not a target|no INT8 recipe"):
        recipe_for_target(bad)


# ---- names and keys ----------------------------------------------------------------------------

def test_file_names_and_keys_round_trip():
    for stem in ("m", "mobilenet_v1_w0.25_cifar10"):
        for tag in RECIPE_TAGS:
            f = int8_filename(stem, "onnx", tag)
            assert artifact_key(f) == int8_key("onnx", tag)
            assert card_path_for(f"/x/{f}").name == f"{stem}.json"
    # the default recipe keeps the names every earlier card and file used
    assert int8_filename("m", "onnx", "s8s8") == "m.int8.onnx" and int8_key("onnx") == "onnx_int8"
    assert artifact_key("m.u8s8.int8.onnx") == "onnx_int8_u8s8"
    assert (key_format("onnx_int8_u8s8"), key_is_int8("onnx_int8_u8s8")) == ("onnx", True)
    assert key_recipe("onnx_int8") == "s8s8" and key_recipe("onnx") is None
    assert key_recipe("tflite_int8") is None          # TFLite full-integer: no recipe choice
    assert (key_format("mnn_int8"), key_is_int8("mnn_int8"), key_is_int8("pte")) == \
        ("mnn", True, False)
    assert ordered_keys(["onnx_int8_u8s8", "mnn_int8", "tflite", "onnx", "mnn"]) == \
        ["onnx", "onnx_int8_u8s8", "tflite", "mnn", "mnn_int8"]
    assert ordered_keys(["pte_int8", "onnx_int8", "onnx_int8_u8s8", "pte", "onnx"]) == \
        ["onnx", "onnx_int8", "onnx_int8_u8s8", "pte", "pte_int8"]


# ---- quant.ptq --for (the hand-made torch-free model of the contract tests) ---------------------

def _tiny(tmp_path):
    onnx = tiny_model(tmp_path / "m")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        (calib / f"{i}.png").write_bytes(image_bytes("RGB", (12, 10), i))
    return onnx, calib


def test_ptq_for_target_records_the_recipe(tmp_path):
    onnx, calib = _tiny(tmp_path)
    out = onnx.parent
    r = run_cli("quant.ptq", "--calib", calib, "--model", onnx, "--backend", "ort",
                "--num-calib", "4", "--for", "qemu:cortex-a72", "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr
    q = out / f"{TINY}.u8s8.int8.onnx"
    assert q.is_file() and not (out / f"{TINY}.int8.onnx").exists()
    art = load_card(out / f"{TINY}.json").artifacts["onnx_int8_u8s8"]
    assert art["path"] == q.name and art["activations"] == "uint8"
    assert art["recipe"]["name"] == "u8s8" and art["recipe"]["target"] == "qemu:cortex-a72"
    assert "dot-product" in art["recipe"]["reason"]
    import onnx as onnx_lib                       # the bytes really are uint8 activations
    m = onnx_lib.load(str(q))
    zp = {i.name: i.data_type for i in m.graph.initializer}
    q_nodes = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes and all(zp[n.input[2]] == onnx_lib.TensorProto.UINT8 for n in q_nodes)


@pytest.mark.parametrize("args,needle", [
    (["--for", "qemu:cortex-z9"], "--for 'qemu:cortex-z9': not a target"),
    (["--for", "local", "--activations", "uint8"], "give --for or --activations/--reduce-range, not both"),
    (["--reduce-range"], "--reduce-range goes with --activations uint8"),
])
def test_ptq_for_errors_are_one_line(tmp_path, args, needle):
    onnx, calib = _tiny(tmp_path)
    r = run_cli("quant.ptq", "--calib", calib, "--model", onnx, "--backend", "ort", *args,
                "--out", onnx.parent, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and needle in lines[0], r.stderr
    assert sorted(p.name for p in onnx.parent.iterdir()) == sorted([onnx.name, f"{TINY}.json"])


# ---- deploy: one file per recipe, each target runs its own --------------------------------------

def _plan(tmp_path, targets: str):
    from deploy.plan import Plan
    from deploy.settings import Settings
    from deploy.stages import Results
    from deploy.settings import resolve_all

    a = argparse.Namespace(sweep=None, models="shufflenet_v1:groups=3", dataset=None,
                           targets=targets, runs=None, warmup=None, limit_eval=None,
                           skip_tflite=True, baseline=None, num_calib=None, num_calib_tflite=None,
                           jobs=None, title=None, eval_data=None, calib_data=None)
    s = Settings(a)
    planned = resolve_all(s)
    res = Results(tmp_path / "results.json", {"format": "armq-deploy/1", "models": {},
                                              "stages": []})
    return Plan(s, planned, tmp_path, res, None), planned[0].tag


def test_deploy_quantizes_once_per_recipe_and_benchmarks_each_targets_file(tmp_path):
    plan, tag = _plan(tmp_path, "local,qemu:cortex-a76,qemu:cortex-a72")
    stages = [st for group, _ in plan.stages() for st in group]
    quants = [st for st in stages if st.kind == "quant_ort"]
    want = {recipe_for_target(t).tag for t in ("local", "qemu:cortex-a76", "qemu:cortex-a72")}
    # one file per distinct recipe: x86 with VNNI and a72 share U8S8 (x86 without VNNI: U8S8R)
    assert len(quants) == len(want) and want >= {"s8s8", "u8s8"}
    plan.results.model(tag)["weights"] = {"kind": "shipped"}
    fors = set()
    for st in quants:
        st.prepare(st)
        fors.add(recipe_for_target(st.argv[st.argv.index("--for") + 1]).tag)
    assert fors == want
    # a card with both INT8 files: each target's bench stage runs the FP32 file and its own
    art = tmp_path / "artifacts"
    art.mkdir()
    arts = {}
    for key, f in [("onnx", f"{tag}.onnx")] + [(int8_key("onnx", t), int8_filename(tag, "onnx", t))
                                               for t in want]:
        (art / f).write_bytes(b"x")
        arts[key] = {"path": f}
    (art / f"{tag}.json").write_text(json.dumps({"artifacts": arts}))
    for st in (st for st in stages if st.kind == "bench"):
        st.prepare(st)
        files = [a.split("/")[-1] for a in st.argv if a.endswith(".onnx")]
        mine = int8_filename(tag, "onnx", recipe_for_target(st.target).tag)
        assert files == [f"{tag}.onnx", mine], (st.target, files)


# ---- the report's best-per-target table (synthetic results.json) --------------------------------

def _b(ms, instr=None):
    return {"file": "x", "median_ms": ms, "ci95_ms": [ms * 0.9, ms * 1.1], "instructions": instr,
            "features": {}}


def test_best_per_target_table_over_every_runtime(tmp_path):
    from deploy.analysis import best_per_target, int8_speedups
    from deploy.tables import best_table

    tag = "mobilenet_v2_w1_imagenet"
    doc = {"format": "armq-deploy/1", "run": {"id": "x", "status": "complete"},
           "targets": [{"id": "local", "kind": "local", "emulated": False},
                       {"id": "qemu:cortex-a76", "kind": "qemu", "emulated": True}],
           "models": {tag: {"variant": {"model": "mobilenet_v2", "params": {}}, "bench": {
               # x86: ORT U8S8 is the fastest INT8, LiteRT the fastest FP32
               "local": {"onnx": _b(10.0), "onnx_int8_u8s8": _b(6.0), "tflite": _b(8.0),
                         "tflite_int8": _b(7.0)},
               # a76: a runtime the table has never heard of wins INT8 (generic over keys)
               "qemu:cortex-a76": {"onnx": _b(900, 2.4e8), "onnx_int8": _b(400, 5.5e7),
                                   "tflite": _b(700, 1.21e8), "tflite_int8": _b(300, 5.61e7),
                                   "mnn": _b(800, 1.3e8), "mnn_int8": _b(200, 4.4e7)}}}},
           "stages": []}
    best = {b["target"]: b for b in best_per_target(doc)}
    loc, a76 = best["local"], best["qemu:cortex-a76"]
    assert (loc["fp32_key"], loc["int8_key"], loc["recipe"]) == ("tflite", "onnx_int8_u8s8", "u8s8")
    assert loc["speedup"] == pytest.approx(8.0 / 6.0) and loc["basis"] == "latency"
    assert (a76["fp32_key"], a76["int8_key"]) == ("tflite", "mnn_int8")
    assert a76["speedup"] == pytest.approx(1.21e8 / 4.4e7) and a76["basis"] == "instructions"
    assert a76["runtimes"] == 3
    # the same-runtime ratio (ORT 2.4e8 / 5.5e7 = 4.36x) flatters ORT; best vs best does not
    ort = next(s for s in int8_speedups(doc) if s["key"] == "onnx_int8")
    assert ort["speedup"] == pytest.approx(2.4e8 / 5.5e7) and ort["speedup"] > a76["speedup"]
    head, body = best_table(doc)
    row = next(r for r in body if r[1].startswith("qemu:cortex-a76"))
    assert row[4] == "TFLite" and row[6] == "MNN INT8" and row[8] == "2.75x"
    assert row[2] == "MNN INT8" and row[3].startswith("INT8 2.75x the best FP32 file")
    assert next(r for r in body if r[1] == "local")[6] == "ONNX Runtime INT8 U8S8"
    p = tmp_path / "results.json"
    p.write_text(json.dumps(doc))
    r = run_cli("deploy.report", p, timeout=300)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report.md").read_text()
    assert "## Which configuration to ship" in md and "| MNN INT8 |" in md
    much = next(ln for ln in md.splitlines() if ln.startswith("**By how much:**"))
    assert "best INT8 vs best FP32: " in much and "2.75x on qemu:cortex-a76 (MNN INT8 vs TFLite FP32)" in much


# ---- export-time op removal: AveragePool as a depthwise conv (quant.onnx_graph) --------------

@pytest.mark.parametrize("include_pad,pads,rewritten", [(1, [1, 1, 1, 1], True),
                                                        (0, [0, 0, 0, 0], True),
                                                        (0, [1, 1, 1, 1], False)])
def test_avgpool_as_depthwise_computes_the_same(tmp_path, include_pad, pads, rewritten):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from export.runtime import ort_session
    from quant.onnx_graph import avgpool_as_depthwise

    pool = helper.make_node("AveragePool", ["x"], ["y"], "pool", kernel_shape=[3, 3],
                            strides=[2, 2], pads=pads, count_include_pad=include_pad)
    g = helper.make_graph([pool], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 6, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    src = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    dst = tmp_path / "dw.onnx"
    dst.write_bytes(src.read_bytes())
    assert avgpool_as_depthwise(dst) == int(rewritten)
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert ops == (["Conv"] if rewritten else ["AveragePool"])
    x = np.random.default_rng(0).standard_normal((1, 6, 9, 9)).astype(np.float32)
    a, b = (ort_session(f, 1).run(None, {"x": x})[0] for f in (src, dst))
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-5
