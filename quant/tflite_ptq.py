"""TFLite backend: full-integer INT8 (int8 weights, activations, input and output)
through litert-torch's PT2E flow.

    torch model (card['source']) -> torch.export -> prepare_pt2e(ArmqPT2EQuantizer)
    -> calibration images -> convert_pt2e -> litert_torch.convert -> .tflite

The torch model is rebuilt from the checkpoint named in the card (its sha256
must still match: the training run rewrites checkpoints) or, for random-init
exports, from the recorded seed; it is checked against the float ONNX model. A model
that is not the zoo's is rebuilt from the `--source` the user gives again, checked
against the card's record (a card never picks code to run).

The quantizer (armq's annotations and observers) is quant.pt2e; `TfliteBackend`
is this format's side of quant.policy. The TFLite backend cannot rank layers
itself: its float fallback walks the ONNX backend's ranking, from this run or
from the card (quant.ptq --backend ort records it), mapped to torch modules.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from export import litert_layout
from zoo.util import captured_native_output
from .common import Method, ModelRef, QuantError
from .config import Layout, QuantConfig
from .policy import Holdout, Outcome, progress_bar
from .pt2e import make_quantizer, quiet_env

if TYPE_CHECKING:
    from export.source import ModelSource

REPO = Path(__file__).resolve().parents[1]

def available() -> str | None:
    """None when the TFLite backend can run, else why not (one line)."""
    import importlib.util

    for mod, pkg in (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert"),
                     ("torchao", "torchao")):
        if importlib.util.find_spec(mod) is None:
            return f"the TFLite backend needs {pkg} (pip install 'armq[tflite]')"
    return None


# ---- the float torch model --------------------------------------------------------------------


def _find_checkpoint(ref: ModelRef, name: str) -> Path:
    p = Path(name)
    for cand in ([p] if p.is_absolute() else [ref.card_path.parent / p, REPO / p, Path.cwd() / p]):
        if cand.is_file():
            return cand
    raise QuantError(f"{ref.name}: checkpoint {name} named in the card does not exist")


def _foreign_model(ref: ModelRef, given: ModelSource | None):
    """A --source card's torch module, built from the --source the user gave (checked
    against the card's record: the card itself never picks the file)."""
    from export.source import SourceError, confirm_record, load_torch_model, require_traceable

    from .common import data_config

    src = ref.card.source
    try:
        origin = confirm_record(src["model_source"], given, ref.name)
        require_traceable(origin, "the TFLite backend (litert-torch PT2E)")
        return load_torch_model(origin, data_config(ref.card),
                                dict(ref.card.variant.get("params") or {}))
    except SourceError as e:
        raise QuantError(str(e)) from None


def build_torch_model(ref: ModelRef, source: ModelSource | None = None):
    """The float torch model the card's ONNX/TFLite models were exported from (`source`: the
    user's --source, required for a model that is not the zoo's)."""
    import torch

    import zoo
    from zoo._registry import Variant, create_model
    from zoo.checkpoint import load_weights, read_checkpoint

    from export.source import eval_mode

    zoo._load_families()
    src = ref.card.source
    foreign = "model_source" in src
    try:
        variant = Variant.from_dict(ref.card.variant)
    except (KeyError, TypeError) as e:
        raise QuantError(f"{ref.name}: card variant unusable ({e})") from None
    if foreign and src.get("weights") == "embedded":
        return eval_mode(_foreign_model(ref, source))  # the file holds the weights
    if src.get("checkpoint"):
        ck = _find_checkpoint(ref, str(src["checkpoint"]))
        raw = ck.read_bytes()
        import hashlib
        digest = hashlib.sha256(raw).hexdigest()
        if src.get("sha256") and src["sha256"] != digest:
            raise QuantError(f"{ref.name}: checkpoint {ck} changed since export (sha256 "
                             f"{digest[:12]} != card {str(src['sha256'])[:12]}); re-export the model")
        with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
            tmp.write(raw)
            tmp.flush()
            state = read_checkpoint(tmp.name)["state_dict"]
        torch.manual_seed(0)
        model = _foreign_model(ref, source) if foreign else create_model(variant)
        load_weights(model, state, f"checkpoint {ck}")
    elif src.get("weights") == "random" and "seed" in src and not src.get("builder"):
        torch.manual_seed(int(src["seed"]))
        model = _foreign_model(ref, source) if foreign else create_model(variant)
        if "BatchNorm" in str(src.get("init", "")):
            from export.common import randomize_norms  # export's random-init recipe
            randomize_norms(model, int(src["seed"]))
    else:
        raise QuantError(f"{ref.name}: the card's source {sorted(src)} names no checkpoint to "
                         "rebuild the torch model from (the TFLite backend starts from torch)")
    return eval_mode(model)


def check_parity(model, ref_onnx: Path | None, x: np.ndarray, name: str) -> float | None:
    """Max |torch - float ONNX| on a few images: the rebuilt model must be the exported one."""
    if ref_onnx is None:
        return None
    import torch

    from .runners import OrtRunner

    with torch.no_grad():
        t = model(torch.from_numpy(x)).numpy()
    o = OrtRunner(ref_onnx, arm=False)(x)
    diff = float(np.abs(t - o).max())
    scale = float(np.abs(o).max()) or 1.0
    if diff > 1e-3 * max(1.0, scale):
        raise QuantError(f"{name}: the rebuilt torch model disagrees with {ref_onnx.name} "
                         f"(max |diff| {diff:.3g}); re-export the model")
    return diff


# ---- calibrate, convert ---------------------------------------------------------------------


def with_layout(model, layout: Layout):
    """NHWC: wrap with litert-torch's channel-last IO (TFLite's native input layout)."""
    if layout is not Layout.NHWC:
        return model
    quiet_env()
    import litert_torch
    return litert_torch.to_channel_last_io(model, args=[0]).eval()


def to_layout(x: np.ndarray, layout: Layout) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout is Layout.NHWC else x


def calibrate(model, x: np.ndarray, method: Method, config: QuantConfig,
              float_modules: Sequence[str] = (), progress=None):
    """(quantizer, PT2E-converted GraphModule): the simulated INT8 model.
    `model` takes NCHW; with layout nhwc the graph takes NHWC (x stays NCHW here)."""
    quiet_env()
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    layout = config.tflite_layout
    xl = to_layout(x, layout)
    sample = (torch.from_numpy(xl[:1]),)
    quantizer = make_quantizer(method, config, float_modules)
    with torch.no_grad():
        exported = torch.export.export(with_layout(model, layout), sample).module()
        # before annotation, so the NHWC shuffle's ops share their input's quantization
        exported, rewrites = litert_layout.prepare(exported, sample, config.litert_rewrites)
        prepared = prepare_pt2e(exported, quantizer)
        for i in range(len(xl)):  # batch 1: the exported graph is static
            prepared(torch.from_numpy(xl[i:i + 1]))
            if progress:
                progress(1)
        converted = convert_pt2e(prepared, fold_quantize=False)
    converted.armq_layout = layout
    converted.armq_rewrites = rewrites.to_dict()
    return quantizer, converted


def run_simulated(converted, x: np.ndarray) -> np.ndarray:
    """Logits of a PT2E model (or of the float torch model) on NCHW images."""
    import torch

    xl = to_layout(x, getattr(converted, "armq_layout", Layout.NCHW))
    with torch.no_grad():
        return np.concatenate([converted(torch.from_numpy(xl[i:i + 1])).numpy()
                               for i in range(len(xl))]).reshape(len(xl), -1)


def to_tflite(converted, quantizer, x: np.ndarray, out: Path) -> None:
    """litert_torch.convert the PT2E model and write the flatbuffer to `out`."""
    quiet_env()
    import torch
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig as LitertQuantConfig

    xl = to_layout(x, getattr(converted, "armq_layout", Layout.NCHW))
    sample = (torch.from_numpy(xl[:1]),)
    with captured_native_output() as log:
        try:
            # the pad rule lets the INT8 pads fold into their convs
            done = getattr(converted, "armq_rewrites", None)
            rule = (litert_layout.Rewrite.PAD.value in done["active"] if done
                    else litert_layout.Rewrite.PAD in litert_layout.active())
            with litert_layout.nhwc_pad_rule(rule):
                edge = litert_torch.convert(
                    converted, sample, quant_config=LitertQuantConfig(pt2e_quantizer=quantizer))
            edge.export(str(out))
            err = None
        except Exception as e:  # noqa: BLE001 - the converter raises many kinds
            err = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if err:
        tail = next((ln for ln in reversed(log) if "error" in ln.lower()), "")
        raise QuantError(f"litert_torch.convert failed: {err[:200]}{' | ' + tail[:160] if tail else ''}")


# ---- what really runs -----------------------------------------------------------------------

TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL",
                  "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "HARD_SWISH", "LOGISTIC", "RELU",
                  "RELU6", "SOFTMAX", "CONCATENATION", "PAD", "BATCH_MATMUL", "TRANSPOSE_CONV"}


def runtime_audit(path: Path) -> dict:
    """Ops of the flatbuffer as the interpreter sees them (no delegate), by dtype."""
    from collections import Counter

    from .runners import tflite_interpreter

    it = tflite_interpreter(path, threads=1, delegates=False)
    td = {t["index"]: t for t in it.get_tensor_details()}
    ops = Counter()
    islands = []
    dw_int8 = dw_float = quant = dequant = 0
    for o in it._get_ops_details():
        name = o["op_name"]
        ops[name] += 1
        ins = [np.dtype(td[i]["dtype"]).name for i in o["inputs"] if i >= 0 and i in td]
        outs = [np.dtype(td[i]["dtype"]).name for i in o["outputs"] if i in td]
        first = ins[0] if ins else ""
        if name == "QUANTIZE":
            quant += first.startswith("float")
        elif name == "DEQUANTIZE":
            dequant += 1
        elif name in TFLITE_COMPUTE and (first.startswith("float") or
                                          (outs and outs[0].startswith("float"))):
            islands.append(name)
        if name == "DEPTHWISE_CONV_2D":
            if first == "int8":
                dw_int8 += 1
            else:
                dw_float += 1
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    return {"graph": "tflite builtin ops (no delegate)",
            "float_compute": len(islands), "float_islands": dict(Counter(islands)),
            "depthwise_int8": dw_int8, "depthwise_float": dw_float,
            "quantize_from_float": quant, "dequantize": dequant,
            "transposes": ops.get("TRANSPOSE", 0),
            "io": {"input": np.dtype(inp["dtype"]).name, "output": np.dtype(out["dtype"]).name},
            "ops": dict(sorted(ops.items()))}


def onnx_node_to_module(node_name: str) -> str | None:
    """'/features/features.3/pw1/pw1.0/Conv' (torchscript export scopes) -> 'features.3.pw1.0'.

    A scope component that repeats the previous one plus '.k' is that
    container's child k, so it replaces the previous component."""
    comps = [p for p in node_name.split("/") if p][:-1]  # the last one is the op
    full, prev = "", ""
    for comp in comps:
        if prev and comp.startswith(prev + "."):
            full = full[: len(full) - len(prev)] + comp
        else:
            full = f"{full}.{comp}" if full else comp
        prev = comp
    return full or None


# ---- the policy's backend ------------------------------------------------------------


class TfliteBackend:
    """quant.policy's backend for TFLite: a PT2E calibration is both the ranges and the
    candidate (quantizer, simulated INT8 GraphModule); excluding layers means calibrating
    again with those modules unannotated. It cannot rank layers (see the docstring)."""

    name = "tflite"
    exclusion_key = "excluded_modules"

    def __init__(self, ref: ModelRef, torch_model, calib: np.ndarray, config: QuantConfig,
                 work: Path):
        self.parity = check_parity(torch_model, ref.artifact("onnx"), calib[:4], ref.name)
        # The INT8 model takes the input as the card's float TFLite model does, if any.
        card_layout = ref.card.artifacts.get("tflite", {}).get("layout")
        if card_layout:
            try:
                config = config.with_layout(Layout(str(card_layout).lower()))
            except ValueError:
                raise QuantError(f"{ref.name}: the card's TFLite layout '{card_layout}' is "
                                 "neither NHWC nor NCHW") from None
        self.model, self.torch_model, self.calib = ref.name, torch_model, calib
        self.config, self.work = config, work

    def float_logits(self, x: np.ndarray) -> np.ndarray:
        return run_simulated(self.torch_model, x)

    def calibrate(self, method: Method):
        with progress_bar(len(self.calib), f"{self.model} tflite calibrate {method.value}") as bar:
            return calibrate(self.torch_model, self.calib, method, self.config, (), bar.update)

    def quantize(self, ranges, method: Method, exclusions: Sequence[str], tag: str):
        if not exclusions:
            return ranges
        with progress_bar(len(self.calib), f"{self.model} tflite {tag}") as bar:
            return calibrate(self.torch_model, self.calib, method, self.config, exclusions,
                             bar.update)

    def logits(self, candidate, x: np.ndarray) -> np.ndarray:
        return run_simulated(candidate[1], x)

    def rank_layers(self, candidate) -> None:
        return None

    def fallback_layers(self, ranking: Sequence[dict]) -> list[str]:
        modules = (onnx_node_to_module(r["node"]) for r in ranking)
        return [m for m in dict.fromkeys(modules) if m]

    def finish(self, outcome: Outcome, hold: Holdout | None) -> tuple[Path, dict]:
        from .evaluate import run_model
        from .runners import TfliteRunner

        quantizer, converted = outcome.candidate
        out = self.work / "model.int8.tflite"
        to_tflite(converted, quantizer, self.calib, out)
        details = {"selection": "PT2E simulated INT8 model on the held-out images",
                   "torch_vs_onnx_max_abs_diff": self.parity,
                   "layout": self.config.tflite_layout.value.upper(),
                   "pt2e_annotations": self.config.pt2e_annotations.value,
                   "layout_rewrites": getattr(converted, "armq_rewrites", None)}
        if hold is not None:
            # the converted flatbuffer, not its simulation: what the card's drop promises
            details["holdout_tflite"] = hold.score(run_model(out, hold.x, "holdout tflite"),
                                                   outcome.reference)
        details.update(format="TFLite full integer (PT2E)", io=TfliteRunner(out).io)
        return out, details
