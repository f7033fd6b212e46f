"""Convert a zoo model to a float32 TFLite model with litert-torch and check it.

    python -m export.tflite --model shufflenet_v1 --groups 3 [--weights ckpt.pt]
        [--layout nhwc|nchw] [--images DIR|tar] [--out artifacts/]

Writes `<out>/<name>.tflite` and adds `artifacts['tflite']` to the model card
`<out>/<name>.json` (creating the card when the ONNX export has not run).

Layout: by default the model takes NHWC input (litert-torch's channel-last
wrapper), TFLite's native layout: the converter then needs no transpose at the
input, and camera frames arrive as HWC anyway. The card records it in
artifacts['tflite']['layout'] and ['input']['shape'], so benchmark and
quantizer feed the same layout. The logits output is layout-free.

Parity: the LiteRT interpreter (default delegates, i.e. XNNPACK, what devices
run) against PyTorch on real images, max |diff| of the logits within --atol.
Needs the `tflite` extra (litert-torch, ai-edge-litert).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.util import ArmqError, atomic_path, cli_entry

from . import build
from . import common
from .litert_layout import add_flag
from .parity import Tolerance, compare, torch_reference

PROG = "export.tflite"
LAYOUTS = ("nhwc", "nchw")


def _import_litert_torch():
    """litert_torch, quietly: its import drags in TF/JAX/torchao log spam."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    for name in ("torchao", "torch.utils._pytree", "absl", "jax", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import litert_torch
    except ImportError as e:
        raise ArmqError(f"export.tflite needs the tflite extra: pip install 'armq[tflite]' "
                        f"({e.name or e} is missing)") from None
    litert_torch.config.show_progress = False
    return litert_torch


def convert(prep: build.Prepared, example_nchw: np.ndarray, layout: str = "nhwc",
            rewrites: dict | None = None, choice: frozenset | None = None) -> bytes:
    """The .tflite flatbuffer of a prepared model (batch 1, float32). `choice`: the
    export.litert_layout rewrites to apply (None: its default); `rewrites`, when given,
    receives what they changed before conversion."""
    import torch

    from .litert_layout import Rewrite, nhwc_pad_rule, prepare

    lt = _import_litert_torch()
    module = prep.model
    sample = torch.from_numpy(np.ascontiguousarray(example_nchw[:1]))
    if layout == "nhwc":
        module = lt.to_channel_last_io(module, args=[0]).eval()
        sample = sample.permute(0, 2, 3, 1).contiguous()
    try:
        with warnings.catch_warnings(), common.quiet_fds(), torch.no_grad():
            warnings.simplefilter("ignore")
            module, done = prepare(module, (sample,), choice)
            if rewrites is not None:
                rewrites.update(done.to_dict())
            with nhwc_pad_rule(Rewrite.PAD.value in done.active):
                edge = lt.convert(module, (sample,))
            return bytes(edge.model_content())
    except ArmqError:
        raise
    except Exception as e:  # noqa: BLE001 - say which model failed, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ArmqError(f"{prep.name}: litert-torch conversion failed: {type(e).__name__}: "
                        f"{first[:200]}") from None


def to_layout(x_nchw: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)) if layout == "nhwc" else x_nchw


def export_tflite(prep: build.Prepared, x: np.ndarray, data: dict, out_dir: Path, *,
                  layout: str = "nhwc", atol: float | Tolerance = common.DEFAULT_ATOL,
                  expected_dw: int | None = None, threads: int | None = None,
                  rewrites_choice: frozenset | None = None) -> tuple[Path, dict]:
    """Convert, check and write `<out_dir>/<name>.tflite`; returns (path, card details).
    threads: of the parity interpreter (None: export.runtime's default); rewrites_choice:
    --litert-rewrites (None: export.litert_layout's default)."""
    from .audit import audit
    from .runtime import run_tflite, tflite_interpreter, tflite_runtime_version

    ref = torch_reference(prep.model, x)
    t0 = time.time()
    rewrites: dict = {}
    flat = convert(prep, x, layout, rewrites, rewrites_choice)
    it = tflite_interpreter(flat, threads)
    got = run_tflite(it, to_layout(x, layout))
    parity = compare(ref, got, atol, "tflite", data)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    with tempfile.TemporaryDirectory(prefix="armq-tflite-") as td:
        tmp_model = Path(td) / f"{prep.name}.tflite"
        tmp_model.write_bytes(flat)
        rep = audit(tmp_model)
        dest = out_dir / f"{prep.name}.tflite"
        with atomic_path(dest) as tmp:
            shutil.copyfile(tmp_model, tmp)
            common.share_mode(tmp)
    dw = rep["depthwise"]
    preserved = dw["depthwise_as_conv2d"] == 0 and (expected_dw is None
                                                    or dw["depthwise_convs"] == expected_dw)
    details = {
        "converter": "litert-torch " + common.versions("litert-torch").get("litert-torch", "?"),
        "layout": layout.upper(),
        "input": {"name": inp["name"], "shape": [int(s) for s in inp["shape"]],
                  "layout": layout.upper(), "dtype": np.dtype(inp["dtype"]).name,
                  "index": int(inp["index"])},
        "output": {"name": out["name"], "shape": [int(s) for s in out["shape"]],
                   "dtype": np.dtype(out["dtype"]).name, "index": int(out["index"])},
        "parity": {**parity, "runtime": tflite_runtime_version(), "delegates": "default (XNNPACK)"},
        "ops": rep["ops"],
        "layout_rewrites": rewrites,
        "depthwise_preserved": bool(preserved),
        "audit": {k: v for k, v in rep.items() if k not in ("file", "ops")},
        "versions": common.versions("torch", "litert-torch", "ai-edge-litert"),
        "seconds": round(time.time() - t0, 1),
    }
    if expected_dw is not None:
        details["depthwise_expected"] = expected_dw
    return dest, details


def main(argv: Sequence[str] | None = None) -> int:
    p = common.make_parser("python -m export.tflite", __doc__.split("\n\n")[0])
    t = p.add_argument_group("TFLite")
    t.add_argument("--layout", choices=LAYOUTS, default="nhwc",
                   help="input layout of the .tflite model (default nhwc)")
    add_flag(t)
    args = common.parse(p, argv)
    from .api import ExportOptions, to_tflite

    to_tflite(build.ModelConfig.from_args(args), ExportOptions(
        out=args.out, num_images=args.num_images, atol=args.atol, rtol=args.rtol,
        min_agreement=args.min_agreement, threads=args.threads,
        layout=args.layout, litert_rewrites=args.litert_rewrites))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
