"""Theoretical cost of a zoo model: MACs, parameters and memory access.

    python -m zoo.cost --model shufflenet_v1 --groups 3 [--width 1.0] [--json]

The count follows the papers' conventions:
- `macs`: multiply-accumulates of convolutions and fully-connected layers, the
  "FLOPs"/"mult-adds" of the MobileNet and ShuffleNet tables;
- `params`: every trainable parameter, BatchNorm included, as torch counts them;
- `memory_access`: ShuffleNet V2's MAC in elements, inputs + outputs + weights
  of each layer that touches memory in a deployed graph. BatchNorm and
  activations are folded into the preceding convolution at deployment, so they
  add nothing; element-wise adds/muls, concats, pools, pads and channel
  shuffles move data and are counted (guideline G4 of ShuffleNet V2).

The network is run once on a zero input under a dispatch mode that sees every
aten op, so functional adds, concats and shuffles are counted where they are,
and each op is charged to the innermost module that issued it. The arithmetic
itself lives in small pure functions below.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from .cli import add_model_args, variant_from_args
from .clikit import make_parser
from .util import cli_entry


# ---- pure cost functions (shapes in, counts out) -------------------------------------------

def conv_macs(out_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """N*Cout*Hout*Wout * (Cin/groups)*kh*kw: weight_shape is (Cout, Cin/groups, kh, kw)."""
    return math.prod(out_shape) * math.prod(weight_shape[1:])


def linear_macs(in_shape: Sequence[int], weight_numel: int, out_features: int) -> int:
    rows = math.prod(in_shape[:-1])
    return rows * weight_numel if out_features else 0


def memory_access(inputs: Sequence[Sequence[int]], output: Sequence[int], weights: int = 0) -> int:
    """ShuffleNet V2's MAC: every input element read, output written, weight read."""
    return sum(math.prod(s) for s in inputs) + math.prod(output) + weights


# ---- the report ----------------------------------------------------------------------------

@dataclass
class LayerCost:
    name: str
    op: str
    in_shape: list[int]
    out_shape: list[int]
    macs: int
    params: int
    memory_access: int
    groups: int = 1


@dataclass
class CostReport:
    model: str
    variant: dict
    input_size: int
    macs: int
    params: int
    memory_access: int
    layers: list[LayerCost] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def by_op(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for layer in self.layers:
            d = out.setdefault(layer.op, {"count": 0, "macs": 0, "memory_access": 0})
            d["count"] += 1
            d["macs"] += layer.macs
            d["memory_access"] += layer.memory_access
        return out


def _shape(t) -> list[int]:
    return [int(s) for s in t.shape]


def _conv_kind(weight_shape: Sequence[int], groups: int, cin: int) -> str:
    if groups == 1:
        return "conv" if math.prod(weight_shape[2:]) > 1 else "pwconv"
    if groups == cin and weight_shape[1] == 1:
        return "dwconv"
    return "gconv" if math.prod(weight_shape[2:]) > 1 else "gpwconv"


def _op_cost(pk, args: tuple, out, where: str) -> LayerCost | None:
    """The cost of one aten op issued in module `where` (None: not costed)."""
    import torch

    aten = torch.ops.aten
    if pk is aten.convolution:
        x, w = args[0], args[1]
        groups = int(args[8]) if len(args) > 8 else 1
        params = w.numel() + (args[2].numel() if args[2] is not None else 0)
        return LayerCost(where, _conv_kind(w.shape, groups, x.shape[1]), _shape(x), _shape(out),
                         conv_macs(out.shape, w.shape), params,
                         memory_access([x.shape], out.shape, w.numel()), groups)
    if pk in (aten.addmm, aten.mm, aten.linear):
        if pk is aten.addmm:
            bias, x, wt = args[0], args[1], args[2]
        elif pk is aten.mm:
            bias, (x, wt) = None, args[:2]
        else:
            x, wt, bias = args[0], args[1], (args[2] if len(args) > 2 else None)
        params = wt.numel() + (bias.numel() if bias is not None else 0)
        return LayerCost(where, "linear", _shape(x), _shape(out),
                         math.prod(x.shape[:-1]) * wt.numel(), params,
                         memory_access([x.shape], out.shape, wt.numel()))
    if pk in (aten.add, aten.sub, aten.mul, aten.div):
        tensors = [a for a in args[:2] if isinstance(a, torch.Tensor) and a.dim() > 0]
        if len(tensors) == 2:
            return LayerCost(where, pk.__name__, _shape(tensors[0]), _shape(out), 0, 0,
                             memory_access([t.shape for t in tensors], out.shape))
        return None
    if pk in (aten.avg_pool2d, aten.max_pool2d, aten.max_pool2d_with_indices,
              aten._adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten.mean):
        x = args[0]
        o = out[0] if isinstance(out, tuple) else out
        return LayerCost(where, "pool", _shape(x), _shape(o), 0, 0,
                         memory_access([x.shape], o.shape))
    if pk in (aten.cat, aten.constant_pad_nd, aten.index_select, aten.clone,
              aten._unsafe_view, aten.roll, aten.gather):
        ins = args[0] if pk is aten.cat else [args[0]]
        return LayerCost(where, "concat" if pk is aten.cat else "copy", _shape(ins[0]),
                         _shape(out), 0, 0, memory_access([t.shape for t in ins], out.shape))
    return None


def measure(model, input_size: int, name: str = "", variant: dict | None = None) -> CostReport:
    """Run `model` once (batch 1) and cost every aten op it issues."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from .layers import ChannelShuffle

    stack: list[str] = []
    layers: list[LayerCost] = []
    shuffle_modules: set[str] = set()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            where = stack[-1] if stack else ""
            if where in shuffle_modules:
                return out  # charged once, as a whole, by the module hook
            cost = _op_cost(func.overloadpacket, args, out, where)
            if cost is not None:
                layers.append(cost)
            return out

    def pre(mod_name):
        def hook(mod, inp):
            stack.append(mod_name)
        return hook

    def post(mod_name):
        def hook(mod, inp, out):
            stack.pop()
            if mod_name in shuffle_modules and mod.groups > 1:
                layers.append(LayerCost(mod_name, "shuffle", _shape(inp[0]), _shape(out), 0, 0,
                                        memory_access([inp[0].shape], out.shape), mod.groups))
        return hook

    handles = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, ChannelShuffle):
            shuffle_modules.add(mod_name)
        handles.append(mod.register_forward_pre_hook(pre(mod_name)))
        handles.append(mod.register_forward_hook(post(mod_name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Recorder():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return CostReport(name, variant or {}, input_size, sum(layer.macs for layer in layers), params,
                      sum(layer.memory_access for layer in layers), layers)


def cost_of(variant) -> CostReport:
    """Cost of a registered variant (builds the model; no weights needed)."""
    from ._registry import create_model

    model = create_model(variant)
    return measure(model, model.default_cfg.input_size, variant.model, variant.to_dict())


def _fmt(n: int) -> str:
    return f"{n / 1e6:.3f}M" if n >= 1e5 else str(n)


def format_table(rep: CostReport) -> str:
    head = f"{'#':>3}  {'layer':<34} {'op':<8} {'output':<16} {'MACs':>10} {'params':>9} {'mem.acc':>10}"
    lines = [head, "-" * len(head)]
    for i, layer in enumerate(rep.layers):
        out = "x".join(str(s) for s in layer.out_shape[1:])
        lines.append(f"{i:>3}  {layer.name[-34:]:<34} {layer.op:<8} {out:<16} {_fmt(layer.macs):>10} "
                     f"{_fmt(layer.params):>9} {_fmt(layer.memory_access):>10}")
    lines.append("-" * len(head))
    lines.append(f"total: {rep.macs / 1e6:.2f} M MACs, {rep.params / 1e6:.3f} M params, "
                 f"{rep.memory_access / 1e6:.2f} M elements of memory access "
                 f"({rep.input_size}x{rep.input_size} input)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser("zoo.cost",
                    description="Per-layer MACs, parameters and memory access of a zoo model.")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    rep = cost_of(variant_from_args(args))
    print(json.dumps(rep.to_dict()) if args.json else format_table(rep))
    return 0


if __name__ == "__main__":
    cli_entry(main, "zoo.cost")
