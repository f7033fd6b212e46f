"""Registry, variants, ShuffleNet, the cost model against an independent count, zoo CLIs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxsim
import pytest
import torch
from onnx import numpy_helper, shape_inference

import zoo
from zoo.cost import cost_of, measure
from zoo.layers import ChannelShuffle, ShuffleImpl

from _zoo_util import last_stage_hw
from conftest import REPO, run_cli

# Every model the product promises (issue: foundation).
REQUIRED = {
    "mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2", "ghostnet", "mobilenext",
    "shiftnet", "hetconv_vgg16", "mobilenet_v1_hetconv", "alexnet", "vgg16", "resnet18",
    "resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_lite0",
}


def test_every_required_model_is_registered():
    assert REQUIRED <= set(zoo.list_models())


# ShuffleNet V1 complexities, MFLOPs (= mult-adds). Table 1 of Zhang et al. 2018
# (1x, per group count) and Tables 2/8 (g=3 at other scales).
SHUFFLENET_V1_MFLOPS = {
    (1.0, 1): 143, (1.0, 2): 140, (1.0, 3): 137, (1.0, 4): 133, (1.0, 8): 137,
    (0.25, 3): 13, (0.5, 3): 38, (1.5, 3): 292, (2.0, 3): 524,
}
# ShuffleNet V2, Table 8 of Ma et al. 2018 (MFLOPs) and params from the official
# repository's model table (megvii-model/ShuffleNet-Series): 0.5x 1.4M, 1x 2.3M, 1.5x 3.5M, 2x 7.4M.
SHUFFLENET_V2 = {0.5: (41, 1.4), 1.0: (146, 2.3), 1.5: (299, 3.5), 2.0: (591, 7.4)}


@pytest.mark.parametrize("width,groups", sorted(SHUFFLENET_V1_MFLOPS))
def test_shufflenet_v1_matches_paper(width, groups):
    rep = cost_of(zoo.resolve_variant("shufflenet_v1", width=width, groups=groups))
    paper = SHUFFLENET_V1_MFLOPS[(width, groups)] * 1e6
    assert abs(rep.macs - paper) / paper < 0.03, rep.macs


@pytest.mark.parametrize("width", sorted(SHUFFLENET_V2))
def test_shufflenet_v2_matches_paper(width):
    rep = cost_of(zoo.resolve_variant("shufflenet_v2", width=width))
    mflops, mparams = SHUFFLENET_V2[width]
    assert abs(rep.macs - mflops * 1e6) / (mflops * 1e6) < 0.03, rep.macs
    assert abs(rep.params - mparams * 1e6) / (mparams * 1e6) < 0.05, rep.params


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("width", [0.25, 0.5, 1.0, 1.5, 2.0])
def test_shufflenet_v1_every_variant_builds(width, groups):
    m = zoo.create_model("shufflenet_v1", dataset="cifar10", width=width, groups=groups).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_channel_shuffle_impls_agree_and_match_definition():
    x = torch.arange(2 * 12 * 2 * 2, dtype=torch.float32).view(2, 12, 2, 2)
    a = ChannelShuffle(12, 3, ShuffleImpl.TRANSPOSE)(x)
    b = ChannelShuffle(12, 3, ShuffleImpl.GATHER)(x)
    assert torch.equal(a, b)
    # Channel k*g + i of the output is channel i*(C/g) + k of the input.
    assert torch.equal(a[:, 1], x[:, 4]) and torch.equal(a[:, 3], x[:, 1])


def test_shuffle_impl_switch_keeps_weights_and_outputs():
    v = zoo.resolve_variant("shufflenet_v2", dataset="cifar10", width=0.5)
    m1 = zoo.create_model(v).eval()
    m2 = zoo.create_model(zoo.resolve_variant("shufflenet_v2", dataset="cifar10", width=0.5,
                                              shuffle="gather")).eval()
    m2.load_state_dict(m1.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m1(x), m2(x))


@pytest.mark.parametrize("bad", [
    dict(name="shufflenet_v1", width=0.3), dict(name="shufflenet_v1", groups=5),
    dict(name="nope"), dict(name="shufflenet_v2", groups=3),
    dict(name="shufflenet_v1", dataset="mnist"),
])
def test_bad_variants_raise_zoo_error(bad):
    with pytest.raises(zoo.ZooError):
        zoo.resolve_variant(bad.pop("name"), **bad)


@pytest.mark.parametrize("name", zoo.list_models())
def test_knobs_a_model_does_not_take_are_refused(name):
    """Every declared knob a model does not register is refused by its CLI flag (was
    repeated per family for --width / --groups)."""
    from zoo._registry import KNOBS

    taken = zoo.get_entry(name).params
    for k, p in KNOBS.items():
        if k in taken:
            continue
        value = p.choices[0] if p.choices else p.type("2")
        with pytest.raises(zoo.ZooError, match=f"does not take {p.cli_flag} "):
            zoo.resolve_variant(name, "imagenet", **{k: value})

# Families whose networks are a features/stages trunk + head (was one copy per family file).
TRUNK_MODELS = [m for m in zoo.list_models() if zoo.get_entry(m).family in ("classic", "mobilenet")]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", TRUNK_MODELS)
def test_cifar_forward_backward(name):
    torch.manual_seed(0)
    model = zoo.create_model(name, "cifar10")
    assert model.default_cfg.input_size == 32 and model.default_cfg.num_classes == 10
    model.train()
    out, hw = last_stage_hw(model, torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert min(hw) >= 4, f"{name}: last stage at {hw} on CIFAR"
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())

# ---- the cost model against an independent count: the exported ONNX graph -----------------

def onnx_macs(model: torch.nn.Module, size: int, tmp_path) -> int:
    """MACs of Conv and Gemm/MatMul nodes read off the exported, shape-inferred ONNX graph."""
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                      opset_version=17, do_constant_folding=True)
    # onnxsim folds the shape arithmetic of explicit pads, which ONNX shape inference
    # alone leaves unknown; it fuses BN into Conv, which keeps every Conv's shape.
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    g = shape_inference.infer_shapes(simplified, data_prop=True).graph
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(g.value_info) + list(g.output) + list(g.input)}
    inits = {i.name: numpy_helper.to_array(i).shape for i in g.initializer}
    for n in g.node:  # folded weights may be Constant nodes rather than initializers
        if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims:
            inits[n.output[0]] = tuple(n.attribute[0].t.dims)
        elif n.op_type == "Identity" and n.input[0] in inits:  # deduplicated equal weights
            inits[n.output[0]] = inits[n.input[0]]
    total = 0
    for n in g.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            total += int(np.prod(shapes[n.output[0]])) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in inits:
            w = inits[n.input[1]]
            rows = int(np.prod(shapes[n.input[0]][:-1])) if shapes.get(n.input[0]) else 1
            total += rows * int(np.prod(w))
    return total


def _all_variants():
    for name in sorted(REQUIRED & set(zoo.list_models())):
        yield name


@pytest.mark.parametrize("name", list(_all_variants()))
def test_cost_model_equals_onnx_graph_count(name, tmp_path):
    torch.set_num_threads(1)
    model = zoo.create_model(name, dataset="cifar10").eval()
    rep = measure(model, 32)
    assert rep.macs == onnx_macs(model, 32, tmp_path)
    assert rep.params == sum(p.numel() for p in model.parameters())
    assert rep.memory_access > rep.params  # weights are read at least once
    assert all(layer.macs >= 0 and layer.memory_access >= 0 for layer in rep.layers)


def test_memory_access_of_a_pointwise_conv_is_shufflenet_v2_formula():
    # G1: MAC = hw(c1 + c2) + c1*c2 for a 1x1 conv (Ma et al. 2018, Sec. 2).
    h = w = 8
    c1, c2 = 16, 48
    m = torch.nn.Sequential(torch.nn.Conv2d(3, c1, 1, bias=False), torch.nn.Conv2d(c1, c2, 1, bias=False))
    rep = measure(m, h)
    pw = rep.layers[1]
    assert pw.memory_access == h * w * (c1 + c2) + c1 * c2
    assert pw.macs == h * w * c1 * c2


# ---- CLIs ------------------------------------------------------------------------------------

def test_cost_cli_json():
    r = run_cli("zoo.cost", "--model", "shufflenet_v1", "--groups", "3", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"macs", "params", "memory_access", "layers"} <= set(d)
    assert 137e6 <= d["macs"] <= 140e6
    assert d["layers"] and {"name", "op", "macs"} <= set(d["layers"][0])


def test_cost_cli_table_lists_layers_and_total():
    r = run_cli("zoo.cost", "--model", "shufflenet_v1", "--dataset", "cifar10")
    assert r.returncode == 0
    assert "dwconv" in r.stdout and "shuffle" in r.stdout and "total:" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--model", "nosuch"], "unknown model"),
    (["--model", "shufflenet_v1", "--width", "0.3"], "--width"),
    (["--model", "mobilenet_v2", "--groups", "3"], "--groups"),
])
def test_cost_cli_user_errors_are_one_line(args, needle):
    r = run_cli("zoo.cost", *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_list_cli_shows_every_model():
    r = run_cli("zoo.list")
    assert r.returncode == 0
    for name in zoo.list_models():
        assert name in r.stdout
    d = json.loads(run_cli("zoo.list", "--json").stdout)
    assert {row["model"] for row in d} == set(zoo.list_models())


def test_help_answers():
    for mod in ("zoo.cost", "zoo.train", "zoo.list"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and "usage" in r.stdout
