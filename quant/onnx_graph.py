"""Exact rewrites of ONNX graphs around quantization (pure data movement: the
model computes the same numbers, the runtime does less work).

  * `nhwc_channel_shuffle` (before quantization): NCHW channel shuffles become one
    transpose each in ORT's NHWC int8 graph instead of three;
  * `avgpool_as_depthwise` (before quantization): AveragePool becomes a depthwise Conv
    with weights 1/(kh*kw), since ORT's int8 average pool is a slow generic kernel;
  * `rewire_shape_queries` (after quantization): a Shape node reading a
    DequantizeLinear output is rewired to the int8 tensor, removing a whole-tensor
    DQ that only fed a shape query.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def nhwc_channel_shuffle(path: Path) -> int:
    """Rewrite NCHW channel shuffles so they cost one transpose in an NHWC int8 graph.

    Reshape(N,g,C/g,H,W) -> Transpose(0,2,1,3,4) -> Reshape(N,C,H,W) becomes
    Transpose(to NHWC) -> Reshape(N,H,W,g,C/g) -> Transpose(0,1,2,4,3) ->
    Reshape(N,H,W,C) -> Transpose(to NCHW): the same permutation of channels. ORT
    runs QLinearConv in NHWC and brackets NCHW-only ops with layout transposes; the
    outer pair here cancels against those, so each shuffle keeps just its own
    transpose instead of three. Exact (pure data movement). Returns the count."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}

    def const(name):
        return numpy_helper.to_array(inits[name]).tolist() if name in inits else None

    def only_consumer(t):
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and t not in outputs else None

    done = 0
    new_nodes, drop = [], set()
    for a in g.node:
        if a.op_type != "Reshape" or a.name in drop:
            continue
        s5 = const(a.input[1])
        t = only_consumer(a.output[0])
        if not s5 or len(s5) != 5 or t is None or t.op_type != "Transpose":
            continue
        perm = next((list(x.ints) for x in t.attribute if x.name == "perm"), None)
        b = only_consumer(t.output[0])
        if perm != [0, 2, 1, 3, 4] or b is None or b.op_type != "Reshape":
            continue
        s4 = const(b.input[1])
        n_, grp, cpg, h, w = s5
        if not s4 or len(s4) != 4 or s4[1] != grp * cpg or s4[2:] != [h, w] or min(s5[1:]) <= 0:
            continue
        k = f"armq_nhwc_shuffle_{done}"
        shp5 = numpy_helper.from_array(np.array([n_, h, w, grp, cpg], np.int64), f"{k}_s5")
        shp4 = numpy_helper.from_array(np.array([n_, h, w, grp * cpg], np.int64), f"{k}_s4")
        g.initializer.extend([shp5, shp4])
        new_nodes.append((a, [
            helper.make_node("Transpose", [a.input[0]], [f"{k}_nhwc"], f"{k}_to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"{k}_nhwc", shp5.name], [f"{k}_split"], f"{k}_split"),
            helper.make_node("Transpose", [f"{k}_split"], [f"{k}_shuf"], f"{k}_shuffle", perm=[0, 1, 2, 4, 3]),
            helper.make_node("Reshape", [f"{k}_shuf", shp4.name], [f"{k}_merged"], f"{k}_merge"),
            helper.make_node("Transpose", [f"{k}_merged"], [b.output[0]], f"{k}_to_nchw", perm=[0, 3, 1, 2]),
        ]))
        drop.update({a.name, t.name, b.name})
        done += 1
    if not done:
        return 0
    by_anchor = {id(a): nodes for a, nodes in new_nodes}
    rebuilt = []
    for n in g.node:
        if id(n) in by_anchor:
            rebuilt.extend(by_anchor[id(n)])
        elif n.name not in drop:
            rebuilt.append(n)
    del g.node[:]
    g.node.extend(rebuilt)
    used = {i for n in g.node for i in n.input}
    for init in list(g.initializer):
        if init.name not in used:
            g.initializer.remove(init)
    keep = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for vi in list(g.value_info):
        if vi.name not in keep:
            g.value_info.remove(vi)
    onnx.save(m, str(path))
    return done


def avgpool_as_depthwise(path: Path) -> int:
    """AveragePool (2-D, padding counted in the mean, no ceil mode) becomes a depthwise
    Conv with every weight 1/(kh*kw): the same sums, computed by a kernel ORT has fast.

    Why: ORT's QLinearAveragePool is a generic per-element kernel; on x86 it took 11 % of
    the U8S8 ShuffleNet's time for 3 of its 70 ops (0.28 ms vs 0.03 ms for the float
    pool), while an int8 depthwise conv of the same shape is a tuned kernel. The weight
    1/(kh*kw) is exact in int8 per-channel (127 times its scale), so quantization adds
    no error the pool's own Q/DQ did not. Returns the count."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    channels = {vi.name: vi.type.tensor_type.shape.dim[1].dim_value
                for vi in [*g.value_info, *g.input]
                if len(vi.type.tensor_type.shape.dim) == 4}
    done = 0
    for n in g.node:
        if n.op_type != "AveragePool":
            continue
        at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        k = list(at.get("kernel_shape", []))
        pads = list(at.get("pads", [0] * 2 * len(k)))
        auto = at.get("auto_pad", b"NOTSET")
        c = channels.get(n.input[0], 0)
        plain = len(k) == 2 and not at.get("ceil_mode", 0) and auto in (b"NOTSET", "NOTSET") \
            and c > 0 and list(at.get("dilations", [1, 1])) == [1, 1]
        if not plain or (any(pads) and not at.get("count_include_pad", 0)):
            continue  # borders would divide by fewer than kh*kw: not a fixed-weight conv
        w = numpy_helper.from_array(np.full((c, 1, *k), 1.0 / (k[0] * k[1]), np.float32),
                                    f"armq_avgpool_{done}_w")
        g.initializer.append(w)
        conv = helper.make_node("Conv", [n.input[0], w.name], list(n.output), n.name + "_dw",
                                group=c, kernel_shape=k, strides=list(at.get("strides", [1, 1])),
                                pads=pads)
        n.CopyFrom(conv)
        done += 1
    if done:
        onnx.save(m, str(path))
    return done


def rewire_shape_queries(path: Path) -> int:
    """Shape(DequantizeLinear(q)) == Shape(q): read shapes from the int8 tensor and
    drop DQ nodes left without consumers. Returns the number of DQs removed."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    changed = False
    for n in g.node:
        if n.op_type == "Shape" and n.input and n.input[0] in producer:
            p = producer[n.input[0]]
            if p.op_type == "DequantizeLinear":
                n.input[0] = p.input[0]
                changed = True
    if not changed:
        return 0
    outputs = {o.name for o in g.output}
    removed = 0
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
            removed += 1
    used = {i for n in g.node for i in n.input}
    for init in list(g.initializer):
        if init.name not in used and init.name not in outputs:
            g.initializer.remove(init)
    onnx.save(m, str(path))
    return removed

