"""Export a zoo model to ONNX, simplify it, check it and prove it computes the same.

    python -m export.onnx --model shufflenet_v1 --groups 3 [--weights ckpt.pt] [--opset 17]
        [--dynamic-batch] [--no-simplify] [--images DIR|tar] [--out artifacts/]

Writes `<out>/<name>.onnx` and the model card `<out>/<name>.json` (name = the
variant's tag). Steps: torch.onnx.export -> onnxsim -> onnx.checker (full) ->
onnxruntime vs PyTorch on real images of the model's dataset (max |diff| of
the logits must stay within --atol, 1e-4 by default) -> audit. Nothing lands in
the output folder unless every step passed.

Weights: --weights, else the shipped checkpoint of the variant (assets/weights),
else random init (with a warning, and source {"weights": "random"} in the card).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.util import ArmqError, atomic_path, cli_entry

from . import build, common
from .parity import Tolerance, compare, torch_reference

PROG = "export.onnx"
DEFAULT_OPSET = 17
# Exporter choice (tested on the zoo with torch 2.13, see the card's `exporter`):
# the TorchScript-based exporter (dynamo=False) is the default because
#  - it emits exactly the opset asked for; the dynamo exporter builds opset 18 and
#    its down-conversion to 17 fails on these graphs (onnx's version converter
#    asserts on Reshape/ReduceMean axes) and silently leaves the model at 18;
#  - it keeps GlobalAveragePool (dynamo lowers it to ReduceMean, which fewer INT8
#    paths handle as well) and needs no onnxscript, which armq does not depend on;
#  - it is 2-5x faster on these models; after onnxsim both give the same Conv/
#    Transpose/Gather counts and parity (<1e-6 on random inits).
# It is deprecated upstream but present in the pinned torch; --exporter dynamo
# remains available (opset >= 18).
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_EXPORTER = "torchscript"
OPSET_RANGE = {"torchscript": (11, 20), "dynamo": (18, 23)}


class _PoolAsMatmul:
    """Factory for an exact stand-in of an AdaptiveAvgPool2d whose output size does not
    divide its input size (e.g. VGG's 7x7 pool on a 2x2 map at 64 px), which the
    TorchScript exporter refuses: adaptive average pooling is linear, y = Ph @ x @ Pw^T,
    with Ph/Pw the (out x in) averaging matrices of PyTorch's start/end window rule."""

    @staticmethod
    def matrix(n_in: int, n_out: int):
        import torch

        m = torch.zeros(n_out, n_in)
        for i in range(n_out):
            lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    @classmethod
    def module(cls, h_in: int, w_in: int, h_out: int, w_out: int):
        import torch

        class PoolAsMatmul(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("ph", cls.matrix(h_in, h_out))
                self.register_buffer("pwt", cls.matrix(w_in, w_out).t().contiguous())

            def forward(self, x):
                return torch.matmul(torch.matmul(self.ph, x), self.pwt)

        return PoolAsMatmul()


def _swap_awkward_pools(model, example) -> list:
    """Replace non-divisible AdaptiveAvgPool2d modules in place; returns what to restore."""
    import torch

    seen: dict[str, tuple[int, int, int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.AdaptiveAvgPool2d):
            def hook(m, inp, out, name=name):
                h, w = inp[0].shape[-2:]
                oh, ow = out.shape[-2:]
                if h % oh or w % ow:
                    seen[name] = (int(h), int(w), int(oh), int(ow))
            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    swapped = []
    for name, dims in seen.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        swapped.append((parent, attr, getattr(parent, attr)))
        setattr(parent, attr, _PoolAsMatmul.module(*dims))
    return swapped


def _export(prep: build.Prepared, example, path: Path, exporter: str, opset: int,
            dynamic_batch: bool) -> list[str]:
    """Export; returns the graph rewrites made for the exporter (recorded in the card)."""
    if exporter == "torchscript":
        swapped = _swap_awkward_pools(prep.model, example)
        try:
            _export_with(prep, example, path, exporter, opset, dynamic_batch)
        finally:
            for parent, attr, orig in swapped:
                setattr(parent, attr, orig)
        return [f"{type(parent).__name__}.{attr}: AdaptiveAvgPool2d({orig.output_size}) as MatMul"
                for parent, attr, orig in swapped]
    _export_with(prep, example, path, exporter, opset, dynamic_batch)
    return []


def _export_with(prep: build.Prepared, example, path: Path, exporter: str, opset: int,
                 dynamic_batch: bool) -> None:
    import torch

    axes = {"input": {0: "N"}, "logits": {0: "N"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(prep.model, (example,), str(path), dynamo=False,
                              opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_axes=axes,
                              do_constant_folding=True)
        else:
            import importlib.util
            import contextlib
            import io

            if importlib.util.find_spec("onnxscript") is None:
                raise ArmqError("--exporter dynamo needs onnxscript (pip install onnxscript)")
            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(prep.model, (example,), str(path), dynamo=True,
                                  opset_version=opset, input_names=["input"],
                                  output_names=["logits"], dynamic_axes=axes,
                                  external_data=False, verbose=False)


def _simplify(model, prog: str):
    from onnxsim import simplify

    try:
        simp, ok = simplify(model)
    except Exception as e:  # noqa: BLE001 - onnxsim failing is not fatal: keep the raw graph
        common.warn(prog, f"onnxsim failed ({type(e).__name__}: {str(e)[:120]}); keeping "
                    "the unsimplified graph")
        return model, False
    if not ok:
        common.warn(prog, "onnxsim could not validate the simplified graph; keeping the raw one")
        return model, False
    return simp, True


def _details(prep: build.Prepared, exporter: str, opset: int, dynamic_batch: bool,
             simplified: bool, n_raw: int, rewrites: list[str], parity: dict, rep: dict) -> dict:
    """The card's record of an ONNX export."""
    import onnxruntime

    return {
        "exporter": exporter,
        "exporter_note": ("torch.onnx.export(dynamo=False): exact opset, GlobalAveragePool kept, "
                          "no onnxscript needed" if exporter == "torchscript" else
                          "torch.onnx.export(dynamo=True)"),
        "opset": opset,
        "dynamic_batch": dynamic_batch,
        "simplified": simplified,
        "nodes_before_simplify": n_raw,
        "rewrites": rewrites,
        "input": {"name": "input", "shape": ["N" if dynamic_batch else 1, 3, prep.input_size,
                                              prep.input_size], "layout": "NCHW", "dtype": "float32"},
        "output": {"name": "logits", "shape": ["N" if dynamic_batch else 1, prep.data.num_classes]},
        "parity": {**parity, "runtime": f"onnxruntime {onnxruntime.__version__}"},
        "ops": rep["ops"],
        "audit": {k: v for k, v in rep.items() if k not in ("file", "ops")},
        "versions": common.versions("torch", "onnx", "onnxsim", "onnxruntime"),
    }


def export_onnx(prep: build.Prepared, x: np.ndarray, data: dict, out_dir: Path, *,
                opset: int = DEFAULT_OPSET, exporter: str = DEFAULT_EXPORTER,
                dynamic_batch: bool = False, simplify: bool = True,
                atol: float | Tolerance = common.DEFAULT_ATOL, prog: str = PROG,
                threads: int | None = None) -> tuple[Path, dict]:
    """Export, check and write `<out_dir>/<name>.onnx`; returns (path, card details).
    threads: of the parity session (None: export.runtime's default)."""
    import onnx
    import torch

    from .audit import audit
    from .runtime import ort_session, run_onnx

    ref = torch_reference(prep.model, x)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="armq-onnx-") as td:
        raw = Path(td) / "raw.onnx"
        try:
            with common.quiet_fds():
                rewrites = _export(prep, torch.from_numpy(x[:1]), raw, exporter, opset,
                                   dynamic_batch)
        except ArmqError:
            raise
        except Exception as e:  # noqa: BLE001 - report which model did not export, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ArmqError(f"{prep.name}: torch.onnx.export ({exporter}) failed: "
                            f"{type(e).__name__}: {first[:200]}") from None
        model = onnx.load(str(raw))
        n_raw = len(model.graph.node)
        simplified = False
        if simplify:
            model, simplified = _simplify(model, prog)
        meta = {"armq_name": prep.name, "armq_variant": json.dumps(prep.variant.to_dict()),
                "armq_preprocessing": json.dumps({k: v for k, v in prep.data.to_dict().items()
                                                  if k != "class_names"})}
        del model.metadata_props[:]
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as e:
            raise ArmqError(f"{prep.name}: exported graph fails onnx.checker: "
                            f"{str(e).strip().splitlines()[0][:200]}") from None
        final = Path(td) / f"{prep.name}.onnx"
        onnx.save(model, str(final))
        sess = ort_session(final, threads)
        got = run_onnx(sess, x)
        parity = compare(ref, got, atol, "onnx", data)
        if dynamic_batch and len(x) > 1:
            # A dynamic graph must also agree image by image (batch 1).
            single = np.concatenate([run_onnx(sess, x[i:i + 1]) for i in range(2)])
            parity["batch1_max_abs_diff"] = float(np.abs(single - got[:2]).max())
        rep = audit(final)
        opset_out = rep.get("opset")
        if opset_out != opset:
            raise ArmqError(f"{prep.name}: asked for opset {opset}, the exporter produced {opset_out}")
        dest = out_dir / f"{prep.name}.onnx"
        with atomic_path(dest) as tmp:
            shutil.copyfile(final, tmp)
            common.share_mode(tmp)
    details = _details(prep, exporter, opset, dynamic_batch, simplified, n_raw, rewrites,
                       parity, rep)
    details["seconds"] = round(time.time() - t0, 1)
    return dest, details


def import_onnx(prep: build.Prepared, x: np.ndarray, data: dict, out_dir: Path,
                threads: int | None) -> tuple[Path, dict]:
    """An ONNX file as the start point: checked, run once on the parity images (it is its
    own reference: nothing to compare with) and copied as `<out_dir>/<name>.onnx`."""
    import onnx
    import onnxruntime

    from .audit import audit
    from .runtime import ort_session, run_onnx

    src = prep.origin.path
    try:
        onnx.checker.check_model(str(src), full_check=True)
    except Exception as e:  # noqa: BLE001 - checker raises several types
        raise ArmqError(f"{src}: fails onnx.checker: {str(e).strip().splitlines()[0][:200]}") from None
    sess = ort_session(src, threads)
    got = run_onnx(sess, x)
    if got.shape != (len(x), prep.data.num_classes):
        raise ArmqError(f"{src}: outputs {list(got.shape)} on {len(x)} images, not "
                        f"[{len(x)}, {prep.data.num_classes}]; check --input-size")
    rep = audit(src)
    dest = out_dir / f"{prep.name}.onnx"
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        common.share_mode(tmp)
    shape_in = [1, 3, prep.input_size, prep.input_size]
    details = {
        "exporter": "none (ONNX source)", "opset": rep.get("opset"),
        "input": {"name": sess.get_inputs()[0].name, "shape": shape_in, "layout": "NCHW",
                  "dtype": "float32"},
        "output": {"name": sess.get_outputs()[0].name, "shape": [1, prep.data.num_classes]},
        "parity": {"data": data["data"], "n": data["n"], "note": "the ONNX file is the reference",
                   "runtime": f"onnxruntime {onnxruntime.__version__}"},
        "ops": rep["ops"], "audit": {k: v for k, v in rep.items() if k not in ("file", "ops")},
        "versions": common.versions("onnx", "onnxruntime"),
    }
    return dest, details


def main(argv: Sequence[str] | None = None) -> int:
    p = common.make_parser("python -m export.onnx", __doc__.split("\n\n")[0])
    o = p.add_argument_group("ONNX")
    o.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"default {DEFAULT_OPSET}")
    o.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension N")
    o.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    o.add_argument("--exporter", choices=EXPORTERS, default=DEFAULT_EXPORTER,
                   help=f"torch.onnx exporter (default {DEFAULT_EXPORTER}; see the module source)")
    args = common.parse(p, argv)
    from .api import ExportOptions, to_onnx

    to_onnx(build.ModelConfig.from_args(args), ExportOptions(
        out=args.out, num_images=args.num_images, atol=args.atol, rtol=args.rtol,
        min_agreement=args.min_agreement, threads=args.threads,
        opset=args.opset, exporter=args.exporter, dynamic_batch=args.dynamic_batch,
        simplify=not args.no_simplify))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
