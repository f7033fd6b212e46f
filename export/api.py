"""The export stage as a library: a model (zoo variant, the user's own model file, or a
torch module in this process) to ONNX, TFLite or MNN, parity-checked, with its model card.

`python -m export.onnx`, `export.tflite` and `export.mnn` parse their flags into a
`ModelConfig` (which model, which weights) and `ExportOptions` (where, which checks) and
make one call here. Errors are `ArmqError`s: one line naming the problem.

    from export.api import ExportOptions, ModelConfig, to_onnx
    res = to_onnx(ModelConfig("shufflenet_v1", {"groups": 3}, dataset="cifar10"),
                  ExportOptions(out=Path("artifacts")))
    res.path, res.card, res.parity["max_abs_diff"]

ExecuTorch exports run in their own virtual environment (export/et_venv.py): use
`python -m export.executorch` for them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zoo.util import ArmqError, atomic_path, atomic_paths, check_writable_dir, declare_inputs

from . import build, common
from .build import ModelConfig, Prepared
from .card import card_lock, load_card, save_card
from .parity import Tolerance, parity_inputs
from .source import SourceKind, require_traceable

__all__ = ["ExportOptions", "ExportResult", "ModelConfig", "export", "to_mnn", "to_onnx",
           "to_tflite"]

FORMATS = ("onnx", "tflite", "mnn")


@dataclass(frozen=True)
class ExportOptions:
    """Where an export goes and how it is checked (the exporters' flags, same names)."""

    out: Path = Path("artifacts")
    num_images: int = common.DEFAULT_NUM_IMAGES   # images in the parity check
    atol: float = common.DEFAULT_ATOL             # parity: |exported - reference| within
    rtol: float = 0.0                             # atol + rtol x max |reference logit|,
    min_agreement: float = 0.0                    # and at least this top-1 agreement
    threads: int = 0                              # 0: $ARMQ_THREADS, else up to 4
    # ONNX
    opset: int = 17
    exporter: str = "torchscript"
    dynamic_batch: bool = False
    simplify: bool = True
    # TFLite
    layout: str = "nhwc"
    litert_rewrites: frozenset | None = None


@dataclass(frozen=True)
class ExportResult:
    """One exported file: its model name, format, path, card and the card's record of it."""

    name: str
    format: str
    path: Path
    card: Path | None
    details: dict = field(repr=False)

    @property
    def parity(self) -> dict:
        """The parity check: n, data, max_abs_diff, top1_agreement (see export/parity.py)."""
        return self.details.get("parity", {})


def model_config(model: Any, **kw: Any) -> ModelConfig:
    """A ModelConfig from what a caller has: a ModelConfig, a zoo model name, a source
    spec (FILE.py:FN, MODULE:FN, a .pt2/.pt/.onnx path, torchvision:NAME) or a torch
    module; `kw`: more ModelConfig fields (e.g. dataset="cifar10")."""
    if isinstance(model, ModelConfig):
        return replace(model, **kw) if kw else model
    if callable(getattr(model, "state_dict", None)):   # a torch module
        return ModelConfig(module=model, **kw)
    spec = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if spec is None:
        raise ArmqError(f"model: expected a ModelConfig, a zoo name, a source spec or a torch "
                        f"module, not {type(model).__name__}")
    if ":" in spec or "/" in spec or Path(spec).suffix:
        return ModelConfig(model_py=spec, **kw)
    return ModelConfig(model=spec, **kw)


def _check(cfg: ModelConfig, opts: ExportOptions) -> None:
    """The exporters' shared flag rules (export.common), also for a library call."""
    ns = types.SimpleNamespace(**vars(cfg), num_images=opts.num_images, atol=opts.atol,
                               rtol=opts.rtol, min_agreement=opts.min_agreement,
                               threads=opts.threads)
    if cfg.module is not None:
        common.check_parity_args(ns)
        return
    common.check_common_args(ns)
    model_py = str(cfg.model_py).split(":")[0] if cfg.model_py else None
    declare_inputs(cfg.weights, model_py, cfg.images)


def _module_prepared(cfg: ModelConfig) -> Prepared:
    """A Prepared of a torch module built in this process: its size and normalisation from
    `cfg` (input_size + mean/std, or dataset), its class count from its output. The card
    records the module's class and a hash of its weights; stages that rebuild the model
    from its source (the TFLite INT8 backend) cannot, and say so."""
    import hashlib

    from zoo._registry import Variant

    from .foreign import base_config, output_classes, with_classes
    from .source import eval_mode

    module = cfg.module
    base = base_config(cfg, cfg.dataset, None)
    model = eval_mode(module)
    n_out = output_classes(model, base.input_size, type(module).__name__)
    data = with_classes(base, n_out, (), cfg.num_classes, None)
    name = cfg.model or type(module).__name__.lower()
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    source = {"weights": "in-process", "sha256": h.hexdigest(),
              "module": f"{type(module).__module__}.{type(module).__qualname__}"}
    variant = Variant(name, data.dataset, cfg.input_size, cfg.num_classes, {})
    print(f"weights: in-process module {source['module']} (sha256 {source['sha256'][:12]}); "
          f"config: {name} ({data.dataset}, {data.input_size} px, {data.num_classes} classes)",
          flush=True)
    return Prepared(model, variant, data, source)


def _prepare(model: Any, opts: ExportOptions, prog: str,
             images: Path | None) -> tuple[Prepared, Path, int, Path | None]:
    """(the model ready to export, the checked output folder, the thread count, the parity
    images: `images`, else the ModelConfig's)."""
    cfg = model_config(model)
    if images is not None:
        cfg = replace(cfg, images=Path(images))
    _check(cfg, opts)
    out_dir = check_writable_dir(opts.out)
    threads = common.set_threads(opts.threads)
    prep = _module_prepared(cfg) if cfg.module is not None else build.prepare(cfg, prog)
    return prep, out_dir, threads, cfg.images


def to_onnx(model: Any, options: ExportOptions = ExportOptions(),
            images: Path | None = None) -> ExportResult:
    """Export to `<out>/<name>.onnx` (simplified, checked, parity-checked against torch) and
    write its card. model: a ModelConfig, zoo name, source spec or torch.nn.Module (a
    module's input size and normalisation: `model_config(net, dataset="cifar10")`);
    `images`: real images for the parity check (default: the dataset's shipped ones)."""
    from .onnx import OPSET_RANGE, PROG, export_onnx, import_onnx

    lo, hi = OPSET_RANGE[options.exporter]
    if not lo <= options.opset <= hi:
        raise ArmqError(f"--opset {options.opset}: the {options.exporter} exporter supports {lo}..{hi}")
    prep, out_dir, threads, images = _prepare(model, options, PROG, images)
    x, data = parity_inputs(prep.data, images, options.num_images, PROG)
    if prep.origin is not None and prep.origin.kind is SourceKind.ONNX:
        path, details = import_onnx(prep, x, data, out_dir, threads)
        return _finish(prep, {}, out_dir, "onnx", path, details, PROG, "Transpose",
                       f"copied from {prep.origin.spec}")
    if prep.origin is not None and options.exporter == "dynamo":
        require_traceable(prep.origin, "the dynamo ONNX exporter")
    cost = common.cost_of(prep, PROG)
    path, details = export_onnx(prep, x, data, out_dir, opset=options.opset,
                                exporter=options.exporter, dynamic_batch=options.dynamic_batch,
                                simplify=options.simplify, atol=Tolerance.of(options),
                                threads=threads)
    return _finish(prep, cost, out_dir, "onnx", path, details, PROG, "Transpose",
                   f"opset {options.opset} via {options.exporter}")


def to_tflite(model: Any, options: ExportOptions = ExportOptions(),
              images: Path | None = None) -> ExportResult:
    """Convert with litert-torch to `<out>/<name>.tflite` (parity-checked against torch)
    and record it in the card. Needs armq[tflite]."""
    from .runtime import tflite_module
    from .tflite import PROG, export_tflite

    check_writable_dir(options.out)
    tflite_module()  # fail early, in one line, without the runtime
    prep, out_dir, threads, images = _prepare(model, options, PROG, images)
    if prep.origin is not None:
        require_traceable(prep.origin, "litert-torch (export.tflite)")
    x, data = parity_inputs(prep.data, images, options.num_images, PROG)
    cost = common.cost_of(prep, PROG)
    path, details = export_tflite(prep, x, data, out_dir, layout=options.layout,
                                  atol=Tolerance.of(options), expected_dw=cost.get("dwconv"),
                                  threads=threads, rewrites_choice=options.litert_rewrites)
    if not details["depthwise_preserved"]:
        common.warn(PROG, f"depthwise convolutions did not all stay DEPTHWISE_CONV_2D: "
                    f"{details['audit']['depthwise']}")
    return _finish(prep, cost, out_dir, "tflite", path, details, PROG, "TRANSPOSE",
                   f"{details['layout']} input {details['input']['shape']}")


def _finish(prep: Prepared, cost: dict, out_dir: Path, key: str, path: Path, details: dict,
            prog: str, transpose_op: str, what: str) -> ExportResult:
    card = common.write_and_report(prep, cost, out_dir, key, path, details, prog,
                                   transpose_op, what)
    return ExportResult(prep.name, key, path, card, details)


def to_mnn(model: Any = None, options: ExportOptions = ExportOptions(),
           images: Path | None = None, out: Path | None = None, *,
           card: Path | None = None) -> ExportResult:
    """ONNX -> `<name>.mnn` with MNN's converter, parity-checked against ONNX Runtime.
    model: an FP32 .onnx file, a card (.json) or an ExportResult of `to_onnx` (or give
    `card`); `out`: default beside the card / ONNX (with a card: only its folder).
    Needs armq[mnn]."""
    from .mnn import FORMAT, PROG, export_mnn, parity_images, resolve_input
    from .runtime import mnn_tools, resolve_threads

    common.check_parity_args(types.SimpleNamespace(num_images=options.num_images,
                                                   atol=options.atol, threads=options.threads))
    if card is None and isinstance(model, ExportResult):
        card = model.card
    elif card is None and model is not None and Path(model).suffix.lower() == ".json":
        card = Path(model)
    onnx_arg = None if card is not None else Path(model)
    declare_inputs(onnx_arg, images, outputs=[out])
    if card is not None and out is not None and out.resolve() != Path(card).resolve().parent:
        raise ArmqError("--out applies to --onnx only (with --card the .mnn goes beside the card)")
    mnn_tools()  # fail early, in one line, without the runtime
    threads = resolve_threads(options.threads)
    onnx_path, card_doc, card_path, out_dir = resolve_input(card, onnx_arg, out)
    check_writable_dir(out_dir)
    name = card_doc.name if card_doc is not None else onnx_path.stem
    dest = out_dir / f"{name}.{FORMAT}"
    x, data = parity_images(card_doc, onnx_path, images, options.num_images)
    recorded = None
    with tempfile.TemporaryDirectory(prefix="armq-mnn-") as td:
        tmp_model, details = export_mnn(onnx_path, Path(td) / dest.name, x, data, options.atol,
                                        threads)
        if card_doc is None or card_path is None or card_path.parent.resolve() != out_dir.resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(tmp_model, tmp)
            common.share_mode(dest)
            common.warn(PROG, f"no model card beside {onnx_path.name} in {out_dir}: {dest.name} "
                        "is not recorded in any card")
        else:
            # The model and the card that records its hash change together (quant.ptq's rule).
            with card_lock(card_path), atomic_paths(dest, card_path) as (tmp_dest, tmp_card):
                shutil.copyfile(tmp_model, tmp_dest)
                doc = load_card(card_path)   # re-read: another stage may have added to it
                doc.record_artifact(card_path, "mnn", tmp_dest, installed_as=dest, **details)
                doc.accuracy.pop("mnn", None)  # a new model: old numbers are stale
                save_card(doc, tmp_card)
            common.share_mode(dest)
            recorded = card_path
    par = details["parity"]
    print(f"{dest}: {sum(details['ops'].values())} MNN ops, FP32; parity vs ORT on {par['n']} "
          f"images ({par['data']}): max |diff| {par['max_abs_diff']:.2e}, top-1 agreement "
          f"{par['top1_agreement']:.3f}" + (f"; card {card_path}" if card_path else ""))
    return ExportResult(name, FORMAT, dest, recorded, details)


def export(model: Any, fmt: str = "onnx", options: ExportOptions = ExportOptions(),
           images: Path | None = None) -> ExportResult:
    """Export `model` to `fmt` (onnx, tflite; mnn: from the ONNX export's card)."""
    if fmt == "onnx":
        return to_onnx(model, options, images)
    if fmt == "tflite":
        return to_tflite(model, options, images)
    if fmt == "mnn":
        return to_mnn(model, options, images)
    raise ArmqError(f"format {fmt!r}: one of {', '.join(FORMATS)} (ExecuTorch: "
                    "python -m export.executorch, in its own venv)")
