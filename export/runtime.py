"""Runtimes the export stage checks its files with (and later stages reuse).

ONNX models run in onnxruntime's CPU provider; TFLite models in LiteRT's
interpreter (`ai_edge_litert`), or `tflite_runtime` where that is what is
installed. Neither import happens before it is needed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.util import ArmqError


class RuntimeMissing(ArmqError):
    pass


def default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def ort_session(model: str | os.PathLike | bytes, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def tflite_module():
    """(interpreter module, runtime name): ai_edge_litert first, then tflite_runtime."""
    try:
        from ai_edge_litert import interpreter as mod
        return mod, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod  # type: ignore[import-not-found]
        return mod, "tflite_runtime"
    except ImportError:
        raise RuntimeMissing("no TFLite runtime installed: pip install 'armq[tflite]' "
                             "(ai-edge-litert) or tflite-runtime") from None


def tflite_runtime_version() -> str:
    mod, name = tflite_module()
    from importlib import metadata

    for dist in (("ai-edge-litert",) if name == "ai_edge_litert" else ("tflite-runtime",)):
        try:
            return f"{name} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            pass
    return name


def tflite_interpreter(model: str | os.PathLike | bytes, threads: int | None = None,
                       delegates: bool = True):
    """An interpreter with tensors allocated. delegates=False keeps the graph as stored
    (no XNNPACK rewrite), which is what inspecting ops needs."""
    mod, _ = tflite_module()
    kw: dict[str, Any] = {"num_threads": threads or default_threads()}
    if not delegates and hasattr(mod, "OpResolverType"):
        kw["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model, (bytes, bytearray)):
        kw["model_content"] = bytes(model)
        head = bytes(model[:8])
    else:
        kw["model_path"] = str(Path(model))
        try:
            with open(model, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise ArmqError(f"{model}: cannot read ({e.strerror or e})") from None
    if head[4:8] != b"TFL3":
        # Checked here: the interpreter would print its own error lines first.
        where = "model" if isinstance(model, (bytes, bytearray)) else str(model)
        raise ArmqError(f"{where}: not a TFLite flatbuffer (no TFL3 identifier)")
    from .common import quiet_fds

    try:
        with quiet_fds():  # the runtime's own INFO/ERROR lines
            it = mod.Interpreter(**kw)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        where = "model" if isinstance(model, (bytes, bytearray)) else str(model)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArmqError(f"{where}: not a loadable TFLite model ({first})") from None
    return it


def run_tflite(it, batch: np.ndarray) -> np.ndarray:
    """Run a batch-1 interpreter image by image; `batch` is already in the model's layout."""
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    shape = tuple(int(s) for s in inp["shape"])
    res = []
    for x in batch:
        x = x[None].astype(inp["dtype"], copy=False)
        if x.shape != shape:
            raise ArmqError(f"TFLite input is {shape}, got {x.shape}")
        it.set_tensor(inp["index"], x)
        it.invoke()
        res.append(np.array(it.get_tensor(out["index"])))
    return np.concatenate(res, 0)


def run_onnx(sess, batch: np.ndarray) -> np.ndarray:
    """Run an ORT session on a batch, one image at a time when the batch dim is fixed."""
    inp = sess.get_inputs()[0]
    fixed = isinstance(inp.shape[0], int) and inp.shape[0] > 0
    if fixed and inp.shape[0] != len(batch):
        return np.concatenate([sess.run(None, {inp.name: batch[i:i + 1]})[0]
                               for i in range(len(batch))], 0)
    return sess.run(None, {inp.name: batch})[0]
