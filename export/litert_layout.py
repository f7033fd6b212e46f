"""Fewer layout ops in litert-torch's NHWC graphs: rewrites applied before conversion.

litert-torch keeps a graph NHWC (TFLite's layout) op by op; an op it has no NHWC rule
for is wrapped in NCHW<->NHWC TRANSPOSEs. Two such patterns, found in the zoo and in any
user model that has them (measured in README, "TFLite layout rewrites"):

- the channel shuffle `reshape(N, g, C/g, H, W) -> transpose(1, 2) -> reshape(N, C, H, W)`
  (ShuffleNet, torchvision's `channel_shuffle`): a view over the channel axis, so the
  converter emits TRANSPOSE-RESHAPE-TRANSPOSE-RESHAPE-TRANSPOSE. `rewrite_channel_shuffles`
  writes the same permutation on an explicitly NHWC view (permute to NHWC, reshape
  (N, H, W, g, C/g), swap the last two axes, reshape, permute back); the outer permutes
  cancel against the layout pass's own transposes, leaving one TRANSPOSE per shuffle.
- a constant pad (`F.pad`, `nn.ZeroPad2d`: TF 'SAME' padding): litert-torch 0.10 has no
  NHWC rule for `constant_pad_nd`. In FP32 the converter folds the wrapped pad into the
  next conv anyway, but in INT8 the quantize/dequantize pair between pad and conv stops
  that fold: TRANSPOSE-PAD-TRANSPOSE before every stride-2 conv. `nhwc_pad_rule`
  gives litert's layout pass that rule (the pad widths permuted to NHWC); the INT8
  converter then folds the pad into the conv's SAME padding like the FP32 one.

Both are exact (data movement only); the export's parity check still compares the
TFLite model with torch. Fewer ops is not less work, though: under XNNPACK the NHWC
shuffle's one TRANSPOSE over small inner axes (N*H*W, g, C/g) costs more instructions
than the three it replaces, which move whole H*W planes (ShuffleNet V1 g=3 CIFAR INT8,
QEMU cortex-a76: 9.24 M -> 10.21 M per inference). So only the pad rule is on by default;
`--litert-rewrites` (export.tflite, quant.ptq, deploy) or else `ARMQ_LITERT_REWRITES` picks
them: a comma list of `pad`, `shuffle`, or `none`.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Iterator

from zoo.util import ArmqError

ENV_SWITCH = "ARMQ_LITERT_REWRITES"


class Rewrite(str, Enum):
    PAD = "pad"          # NHWC rule for constant pads (INT8: no TRANSPOSE-PAD-TRANSPOSE)
    SHUFFLE = "shuffle"  # channel shuffle in its NHWC form (fewer ops, more instructions)


DEFAULT_REWRITES = frozenset({Rewrite.PAD})
_OFF = ("", "0", "none", "off")
_VIEWS = ("reshape.default", "view.default", "_unsafe_view.default")
_COPIES = ("clone.default", "contiguous.default")


@dataclass
class Rewrites:
    """What was rewritten in one model (recorded in the card)."""

    active: list[str]             # the Rewrite values asked for
    channel_shuffles: int = 0     # shuffles rewritten to the NHWC form
    nhwc_pad_rule: bool = False   # litert's layout pass knows constant pads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FLAG = "--litert-rewrites"


def parse(raw: str, where: str = ENV_SWITCH) -> frozenset[Rewrite]:
    """A comma list of Rewrite values, or none / off / 0 / empty: no rewrite."""
    if raw.strip().lower() in _OFF:
        return frozenset()
    try:
        return frozenset(Rewrite(p.strip().lower()) for p in raw.split(",") if p.strip())
    except ValueError:
        raise ArmqError(f"{where}={raw!r}: expected a comma list of "
                        f"{', '.join(r.value for r in Rewrite)}, or none") from None


def active(choice: frozenset[Rewrite] | None = None) -> frozenset[Rewrite]:
    """The rewrites to apply: `choice` (the --litert-rewrites flag) when given, else
    $ARMQ_LITERT_REWRITES, else DEFAULT_REWRITES."""
    if choice is not None:
        return choice
    raw = os.environ.get(ENV_SWITCH)
    return DEFAULT_REWRITES if raw is None else parse(raw)


def _flag_value(raw: str) -> frozenset[Rewrite]:
    import argparse

    try:
        return parse(raw, FLAG)
    except ArmqError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"{FLAG}=")) from None


def add_flag(parser) -> None:
    """--litert-rewrites on a parser or argument group (export.tflite, quant.ptq, deploy)."""
    parser.add_argument(FLAG, type=_flag_value, default=None, metavar="LIST",
                        help="TFLite: graph rewrites before litert-torch conversion, a comma "
                        "list of pad (NHWC rule for constant pads), shuffle (channel shuffle "
                        f"in NHWC form), or none (default: ${ENV_SWITCH}, else pad)")


def to_argv(choice: frozenset[Rewrite] | None) -> list[str]:
    """The flag that asks a stage's command for `choice` (nothing for None: its default)."""
    if choice is None:
        return []
    return [FLAG, ",".join(sorted(r.value for r in choice)) or "none"]


def _is(node, *names: str) -> bool:
    """node calls one of the aten ops `names` ('reshape.default', ...)."""
    import torch

    if getattr(node, "op", None) != "call_function":
        return False
    for name in names:
        packet, overload = name.split(".")
        if node.target is getattr(getattr(torch.ops.aten, packet), overload):
            return True
    return False


def _shape(node) -> tuple[int, ...] | None:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    try:
        return tuple(int(s) for s in val.shape)
    except (AttributeError, TypeError):  # no value, or symbolic sizes
        return None


def _swaps_1_2(node) -> bool:
    """transpose(1, 2) or permute([0, 2, 1, 3, 4]) of a 5-D tensor."""
    if _is(node, "transpose.int"):
        return sorted(int(d) % 5 for d in node.args[1:3]) == [1, 2]
    if _is(node, "permute.default"):
        return [int(d) % 5 for d in node.args[1]] == [0, 2, 1, 3, 4]
    return False


def _sole_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _match_shuffle(first) -> tuple[Any, Any, int] | None:
    """(input, last node, groups) when `first` starts a channel shuffle, else None."""
    if not _is(first, *_VIEWS) or not hasattr(first.args[0], "meta"):
        return None
    src, mid = first.args[0], _shape(first)
    x = _shape(src)
    if x is None or mid is None or len(x) != 4 or len(mid) != 5:
        return None
    n, c, h, w = x
    g = mid[1]
    if mid != (n, g, c // g, h, w) or g * (c // g) != c or g in (1, c):
        return None
    swap = _sole_user(first)
    if swap is None or not _swaps_1_2(swap):
        return None
    last = _sole_user(swap)
    while last is not None and _is(last, *_COPIES):
        last = _sole_user(last)
    if last is None or not _is(last, *_VIEWS) or _shape(last) != x:
        return None
    return src, last, g


def rewrite_channel_shuffles(gm) -> int:
    """Rewrite every channel shuffle of an exported (aten) GraphModule in place to its NHWC
    form; returns how many. Each new node gets the value and module stack of the node it
    replaces (PT2E annotation and the float fallback read them)."""
    import torch

    aten = torch.ops.aten
    count = 0
    for first in list(gm.graph.nodes):
        if first.graph is not gm.graph:  # erased by an earlier rewrite
            continue
        found = _match_shuffle(first)
        if found is None:
            continue
        src, last, g = found
        n, c, h, w = _shape(src)
        steps = [(aten.permute.default, [0, 2, 3, 1]),
                 (aten.reshape.default, [n, h, w, g, c // g]),
                 (aten.permute.default, [0, 1, 2, 4, 3]),
                 (aten.reshape.default, [n, h, w, c]),
                 (aten.permute.default, [0, 3, 1, 2])]
        cur, val = src, src.meta.get("val")
        with gm.graph.inserting_before(last):
            for op, arg in steps:
                cur = gm.graph.call_function(op, (cur, arg))
                cur.meta.update({k: v for k, v in last.meta.items() if k != "val"})
                if val is not None:  # a FakeTensor: shape propagation without data
                    val = op(val, arg)
                    cur.meta["val"] = val
        last.replace_all_uses_with(cur)
        dead, node = [], first
        while node is not last:
            dead.append(node)
            node = next(iter(node.users))
        for node in [last, *reversed(dead)]:
            gm.graph.erase_node(node)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


def _layout_rewriters():
    """litert-torch's registry of NHWC rules (a dict: aten op -> node rewriter), or None
    when this litert-torch has none where 0.10 keeps it."""
    try:
        from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import \
            layout_rewrite
    except ImportError:
        return None
    registry = getattr(layout_rewrite, "rewriters", None)
    return registry if isinstance(registry, dict) else None


def _nhwc_pad_rewriter(node) -> None:
    import torch

    pad = torch.ops.aten.constant_pad_nd.default

    def constant_pad_nhwc(x, widths, value=0.0):
        # NCHW widths come last-dim first: (W, H, C, N) pairs; NHWC's are (C, W, H, N)
        p = [*widths, *[0] * (8 - len(widths))]
        return pad(x, [p[4], p[5], p[0], p[1], p[2], p[3], p[6], p[7]], value)

    node.target = constant_pad_nhwc


@contextlib.contextmanager
def nhwc_pad_rule(active: bool = True) -> Iterator[bool]:
    """While converting: litert-torch's layout pass keeps constant pads NHWC. Yields whether
    the rule is in place; it is taken out again afterwards (the registry is process-wide)."""
    import torch

    registry = _layout_rewriters() if active else None
    pad = torch.ops.aten.constant_pad_nd.default
    if registry is None or pad in registry:  # off, unavailable, or litert's own rule
        yield registry is not None
        return
    registry[pad] = _nhwc_pad_rewriter
    try:
        yield True
    finally:
        registry.pop(pad, None)


def prepare(module, sample: tuple,
            choice: frozenset[Rewrite] | None = None) -> tuple[Any, Rewrites]:
    """(module to convert, what was done) for the rewrites `active(choice)`: with the shuffle
    rewrite, the exported graph with its shuffles rewritten when there were any; else
    `module` itself. Convert it inside `nhwc_pad_rule(Rewrite.PAD.value in done.active)`."""
    rules = active(choice)
    done = Rewrites(active=sorted(r.value for r in rules),
                    nhwc_pad_rule=Rewrite.PAD in rules and _layout_rewriters() is not None)
    if Rewrite.SHUFFLE not in rules:
        return module, done
    import torch

    gm = module if isinstance(module, torch.fx.GraphModule) else \
        torch.export.export(module, sample).module()
    done.channel_shuffles = rewrite_channel_shuffles(gm)
    return (gm if done.channel_shuffles or gm is module else module), done
