"""Per-layer view of an ONNX QDQ model: how much error each layer's quantization
adds (the ranking the float fallback walks, worst first) and which nodes must be
excluded from quantization to keep one layer in float."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

# Ops that are "layers" for the fallback: the ones carrying weights.
LAYER_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def layer_errors(pre: Path, qdq: Path, x: np.ndarray, input_name: str, batch: int | None,
                 workdir: Path) -> list[dict]:
    """Per-node SQNR between float and quantized activations (and weights), worst first.

    For each node of the float graph whose output is quantized in the QDQ model:
    `act_sqnr`: the float model's activation against the same activation through the
    QDQ model's Q/DQ (scale, zero point): the noise this one quantization adds, free
    of upstream error. (qdq_loss_debug's own pre-/post-QDQ error is wrong where the
    quantizer folded a Relu into the Q: its "pre" tensor still holds the negatives.)
    `xmodel_sqnr`: float vs QDQ model activation (accumulated error, qdq_loss_debug),
    `weight_sqnr`: the node's weight (qdq_loss_debug), `score`: the smaller local one.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from .calib import make_reader

    fa, qa = workdir / "float_aug.onnx", workdir / "qdq_aug.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        dbg.modify_model_output_intermediate_tensors(str(pre), str(fa))
        dbg.modify_model_output_intermediate_tensors(str(qdq), str(qa))
        f_act = dbg.collect_activations(str(fa), make_reader(input_name, x, batch or 8))
        q_act = dbg.collect_activations(str(qa), make_reader(input_name, x, batch or 8))
        match = dbg.create_activation_matching(q_act, f_act)
        match = {k: v for k, v in match.items() if "float" in v}
        xmodel = {k: dbg.compute_signal_to_quantization_noice_ratio(v["float"], v["post_qdq"])
                  for k, v in match.items()}
        w_err = dbg.compute_weight_error(dbg.create_weight_matching(str(pre), str(qdq)))
    qparams = _activation_qparams(qdq)
    act_err: dict[str, dict] = {}
    for name, vals in f_act.items():
        if name in qparams:
            f = np.concatenate([v.ravel() for v in vals])
            act_err[name] = {"qdq_err": _sqnr(f, _fake_quant(f, *qparams[name])),
                             "xmodel_err": xmodel.get(name)}
    g = onnx.load(str(pre), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # The QDQ quantizer drops a Relu/Clip that follows a Conv and quantizes the
    # activation's output instead: charge that tensor's error to the Conv.
    act_of: dict[str, str] = {}
    for n in g.node:
        out = n.output[0] if n.output else None
        if out is None:
            continue
        act_of.setdefault(n.name, out)
        if n.op_type in ("Relu", "Clip") and n.input and n.input[0] in producer:
            p = producer[n.input[0]]
            if p.op_type in LAYER_OPS and len(consumers.get(n.input[0], [])) == 1:
                act_of[p.name] = out
    rows = []
    for n in g.node:
        out = act_of.get(n.name)
        a = act_err.get(out, {}) if out else {}
        w = [w_err[i] for i in n.input if i in w_err]
        if not a and not w:
            continue
        local = [v for v in (a.get("qdq_err"), min(w) if w else None) if v is not None]
        rows.append({"node": n.name, "op": n.op_type, "tensor": out,
                     "act_sqnr": _r(a.get("qdq_err")), "xmodel_sqnr": _r(a.get("xmodel_err")),
                     "weight_sqnr": _r(min(w)) if w else None,
                     "score": _r(min(local)) if local else None})
    rows.sort(key=lambda r: (r["score"] is None, r["score"] if r["score"] is not None else 0))
    return rows


def _activation_qparams(qdq: Path) -> dict[str, tuple[float, int, int, int]]:
    """tensor -> (scale, zero point, qmin, qmax) of each per-tensor QuantizeLinear."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(qdq), load_external_data=False).graph
    inits = {i.name: i for i in g.initializer}
    out = {}
    for n in g.node:
        if n.op_type != "QuantizeLinear" or len(n.input) < 3 or n.input[1] not in inits:
            continue
        s = numpy_helper.to_array(inits[n.input[1]])
        z = numpy_helper.to_array(inits[n.input[2]]) if n.input[2] in inits else None
        if s.size != 1 or z is None:
            continue
        info = np.iinfo(z.dtype)
        out[n.input[0]] = (float(s.ravel()[0]), int(z.ravel()[0]), int(info.min), int(info.max))
    return out


def _fake_quant(x: np.ndarray, scale: float, zp: int, qmin: int, qmax: int) -> np.ndarray:
    return (np.clip(np.round(x / scale) + zp, qmin, qmax) - zp) * scale


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - test) ** 2))
    sig = float(np.sum(ref.astype(np.float64) ** 2))
    return 200.0 if noise == 0 else (10 * np.log10(max(sig, 1e-30) / noise))


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 2)


def exclusion_for(pre: Path, node_name: str) -> list[str]:
    """Nodes to exclude from quantization so that `node_name`'s output stays float.

    Excluding a Conv alone is not enough: when its input and output are still
    quantized, ORT's optimizer quantizes the float weight itself (weight/bias
    quantization transformer) and fuses a QLinearConv anyway. So the output tensor
    loses its Q/DQ: the node (with a Relu/Clip that follows it alone) and every
    consumer of that tensor are excluded; they run in float."""
    import onnx

    g = onnx.load(str(pre), load_external_data=False).graph
    nodes = {n.name: n for n in g.node}
    if node_name not in nodes:
        return [node_name]
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names = [node_name]
    outs = list(nodes[node_name].output)
    nxt = consumers.get(outs[0], []) if outs else []
    if len(nxt) == 1 and nxt[0].op_type in ("Relu", "Clip"):
        names.append(nxt[0].name)
        outs = list(nxt[0].output)
    for o in outs:
        names += [c.name for c in consumers.get(o, []) if c.name not in names]
    return names
