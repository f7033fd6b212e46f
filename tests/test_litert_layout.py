"""export.litert_layout: channel shuffles and constant pads convert without layout TRANSPOSEs,
in FP32 and INT8, with the same outputs. The block is written the way a user's model (or
torchvision's channel_shuffle) writes it, not with the zoo's ChannelShuffle."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch", reason="the tflite extra is not installed")
pytest.importorskip("ai_edge_litert", reason="the tflite extra is not installed")

from export import litert_layout  # noqa: E402
from export.runtime import run_tflite, tflite_interpreter  # noqa: E402
from quant.common import Method  # noqa: E402
from quant.config import Layout, QuantConfig  # noqa: E402
from quant.tflite_ptq import calibrate, run_simulated, runtime_audit, to_tflite  # noqa: E402
from zoo.util import ArmqError  # noqa: E402

from conftest import run_cli  # noqa: E402


class Block(nn.Module):
    """ShuffleNet-like: grouped 1x1 -> shuffle -> TF-'SAME' pad + stride-2 depthwise -> 1x1."""

    def __init__(self, c: int = 12, g: int = 3):
        super().__init__()
        self.g = g
        self.pw1 = nn.Sequential(nn.Conv2d(c, 2 * c, 1, groups=g), nn.ReLU())
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.dw = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, 2, groups=2 * c), nn.ReLU())
        self.pw2 = nn.Conv2d(2 * c, 10, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def forward(self, x):
        y = self.pw1(x)
        b, c, h, w = y.shape
        y = y.view(b, self.g, c // self.g, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        return self.pool(self.pw2(self.dw(self.pad(y))))


def _block() -> tuple[nn.Module, np.ndarray]:
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((16, 12, 16, 16)).astype(np.float32)
    return Block().eval(), x


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _ops_in_order(it) -> list[str]:
    return [o["op_name"] for o in sorted(it._get_ops_details(), key=lambda o: o["index"])]


def test_shuffle_rewrite_is_exact_and_general():
    """The graph pass finds the user's view/transpose/contiguous/view shuffle and leaves
    other 5-D reshapes alone; the rewritten graph computes the same numbers."""
    model, x = _block()
    sample = (torch.from_numpy(x[:1]),)
    gm = torch.export.export(model, sample).module()
    assert litert_layout.rewrite_channel_shuffles(gm) == 1
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.transpose.int not in targets
    with torch.no_grad():  # the exported graph is batch 1
        for i in range(4):
            xt = torch.from_numpy(x[i:i + 1])
            assert torch.allclose(gm(xt), model(xt), atol=1e-6, rtol=0)

    class NotAShuffle(nn.Module):  # swaps the spatial axes of a 5-D view: no channel shuffle
        def forward(self, x):
            b, c, h, w = x.shape
            return x.view(b, 3, c // 3, h, w).transpose(3, 4).reshape(b, c, w, h)

    other = torch.export.export(NotAShuffle(), sample).module()
    assert litert_layout.rewrite_channel_shuffles(other) == 0


def test_rewrites_switch(monkeypatch):
    monkeypatch.delenv(litert_layout.ENV_SWITCH, raising=False)
    assert litert_layout.active() == {litert_layout.Rewrite.PAD}  # the shuffle form is opt-in
    monkeypatch.setenv(litert_layout.ENV_SWITCH, "Shuffle, pad")
    assert litert_layout.active() == set(litert_layout.Rewrite)
    monkeypatch.setenv(litert_layout.ENV_SWITCH, "none")
    assert litert_layout.active() == set()
    monkeypatch.setenv(litert_layout.ENV_SWITCH, "pads")
    with pytest.raises(ArmqError, match="ARMQ_LITERT_REWRITES='pads': expected"):
        litert_layout.active()
    # the flag's value (parsed by the same rule) wins over the environment
    monkeypatch.setenv(litert_layout.ENV_SWITCH, "pad,shuffle")
    assert litert_layout.active(frozenset()) == set()
    assert litert_layout.active(litert_layout.parse("shuffle", "--x")) == {litert_layout.Rewrite.SHUFFLE}
    for choice in (frozenset(), frozenset(litert_layout.Rewrite), None):
        argv = litert_layout.to_argv(choice)
        assert (argv == []) if choice is None else \
            litert_layout.parse(argv[1], "--x") == choice


def test_rewrites_flag_reaches_every_tflite_stage(tmp_path):
    """--litert-rewrites: one parser rule for export.tflite, quant.ptq and deploy; deploy
    passes it to its TFLite export and TFLite PTQ stages (and nowhere else)."""
    from deploy.cli import build_parser
    from deploy.plan import Plan
    from deploy.settings import Settings, resolve_all
    from deploy.stages import Results

    s = Settings(build_parser().parse_args(["--targets", "local", "--litert-rewrites", "shuffle"]))
    res = Results(tmp_path / "results.json", {"format": "armq-deploy/1", "models": {},
                                              "stages": []})
    plan = Plan(s, resolve_all(s), tmp_path, res, None)
    stages = {st.kind: st for group, _ in plan.stages() for st in group}
    for kind in ("export_tflite", "quant_tflite", "export_onnx", "quant_ort"):
        st = stages[kind]
        st.prepare(st)
        given = st.argv[st.argv.index("--litert-rewrites") + 1:][:1] \
            if "--litert-rewrites" in st.argv else []
        assert given == (["shuffle"] if "tflite" in kind else []), (kind, st.argv)
    for mod in ("deploy", "export.tflite", "quant.ptq"):
        r = run_cli(mod, "--litert-rewrites", "pads", "--out", tmp_path / "never")
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip() == f"python -m {mod}: error: argument --litert-rewrites: " \
            "'pads': expected a comma list of pad, shuffle, or none"
    assert not (tmp_path / "never").exists()


def test_fp32_tflite_keeps_one_transpose_per_shuffle(monkeypatch):
    from export.tflite import convert

    monkeypatch.setenv(litert_layout.ENV_SWITCH, "none")     # the flag's choice wins
    class Prep:  # what convert reads of an export.build.Prepared
        name = "block"

    model, x = _block()
    prep = Prep()
    prep.model = model
    rewrites: dict = {}
    it = tflite_interpreter(convert(prep, x, "nhwc", rewrites,
                                    litert_layout.parse("pad,shuffle")), threads=1)
    assert rewrites == {"active": ["pad", "shuffle"], "channel_shuffles": 1, "nhwc_pad_rule": True}
    ops = _ops_in_order(it)
    assert ops.count("TRANSPOSE") == 1, ",".join(ops)  # the shuffle itself, nothing around it
    with torch.no_grad():
        ref = model(torch.from_numpy(x[:4])).numpy()
    got = np.concatenate([run_tflite(it, _nhwc(x[i:i + 1])) for i in range(4)])
    assert np.abs(got - ref).max() <= 1e-5


def _int8(model, x, tmp_path, name: str, monkeypatch, on: bool):
    # the config's choice (quant.ptq --litert-rewrites) wins over the environment, in
    # calibration and in conversion alike
    monkeypatch.setenv(litert_layout.ENV_SWITCH, "none" if on else "pad,shuffle")
    config = replace(QuantConfig().with_layout(Layout.NHWC),
                     litert_rewrites=litert_layout.parse("pad,shuffle" if on else "none"))
    quantizer, converted = calibrate(model, x, Method.MINMAX, config)
    out = tmp_path / name
    to_tflite(converted, quantizer, x, out)
    return converted, out


def test_int8_tflite_has_no_transpose_pad_transpose(tmp_path, monkeypatch):
    """Without the rewrites the INT8 file runs the pad NCHW between TRANSPOSEs (what the
    rewrites remove); with them the pad folds into the depthwise conv, the shuffle is one TRANSPOSE,
    nothing stays in float, and the logits are the same integers."""
    model, x = _block()
    sim, on = _int8(model, x, tmp_path, "on.tflite", monkeypatch, True)
    _, off = _int8(model, x, tmp_path, "off.tflite", monkeypatch, False)
    ops_on = _ops_in_order(tflite_interpreter(on, threads=1, delegates=False))
    ops_off = _ops_in_order(tflite_interpreter(off, threads=1, delegates=False))
    # off: the pad runs NCHW (the TRANSPOSE before it merges with the shuffle's last one)
    assert "PAD,TRANSPOSE,DEPTHWISE_CONV_2D" in ",".join(ops_off), ops_off
    assert "PAD" not in ops_on and ops_on.count("TRANSPOSE") == 1, ops_on
    assert ops_off.count("TRANSPOSE") > ops_on.count("TRANSPOSE")
    audit = runtime_audit(on)
    assert audit["float_compute"] == 0 and audit["io"] == {"input": "int8", "output": "int8"}
    assert sim.armq_rewrites["channel_shuffles"] == 1

    def logits(path):
        it = tflite_interpreter(path, threads=1)
        inp, outp = it.get_input_details()[0], it.get_output_details()[0]
        s, z = inp["quantization"]
        res = []
        for i in range(len(x)):
            q = np.clip(np.round(_nhwc(x[i:i + 1]) / s + z), -128, 127).astype(np.int8)
            it.set_tensor(inp["index"], q)
            it.invoke()
            res.append(it.get_tensor(outp["index"]).astype(np.int32))
        return np.concatenate(res), outp["quantization"]

    got_on, (scale, zero) = logits(on)
    got_off, _ = logits(off)
    assert np.array_equal(got_on, got_off)
    # and both are the PT2E simulation of the quantized torch model, to rounding
    assert np.abs((got_on - zero) * scale - run_simulated(sim, x)).max() <= 2 * scale
