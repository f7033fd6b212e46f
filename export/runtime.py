"""The one place that opens ONNX Runtime sessions and TFLite interpreters.

ONNX models run in onnxruntime's CPU provider; TFLite models in LiteRT's
interpreter (`ai_edge_litert`), or `tflite_runtime` where that is what is
installed; MNN models in MNN's CPU module (`MNN.nn.load_module_from_file`, the
`mnn` extra). No import happens before it is needed.

Every stage (export parity, quant calibration and evaluation, op profiling) opens
its runtimes here, so they all follow one thread rule (`resolve_threads`):

    an explicit count (a --threads flag, a caller's threads=N) wins; else the
    ARMQ_THREADS environment variable; else min(4, CPU count).

Four is where intra-op scaling of these small CNNs flattens out; deploy runs
parallel jobs with ARMQ_THREADS=1 so they do not oversubscribe the cores.

android_bench/runner.py is the one exception: it is copied alone to devices and may
import nothing from armq, so it builds its own session and interpreter. It mirrors
the options set here (intra-op threads as asked, inter-op 1, sequential execution,
log level 3) but takes its thread count only from its --threads flag (default 1):
a benchmark fixes the thread count in its config and records it. Keep the two in
step when changing either.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.util import ArmqError, captured_native_output

THREADS_ENV = "ARMQ_THREADS"
MAX_DEFAULT_THREADS = 4

# Make ORT build the graph an ARM64 CPU builds: on x86 ORT otherwise rewrites
# S8 Q/DQ pairs to U8 (QDQS8ToU8Transformer) and leaves the convs next to
# fan-out tensors in float (see quant/onnx_ptq.py).
ARM_INT8_CONFIG = {"session.qdqisint8allowed": "1"}


class RuntimeMissing(ArmqError):
    pass


def env_threads() -> int | None:
    """ARMQ_THREADS as a thread count, None when unset or empty.

    Checked wherever a runtime opens, so a typo fails the command in one line
    instead of being ignored (or ending in int()'s traceback)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ArmqError(f"{THREADS_ENV}={raw!r}: expected a whole number of threads >= 1 "
                        f"(or unset it for the default, min({MAX_DEFAULT_THREADS}, CPU count))")
    return n


def default_threads() -> int:
    """The thread count when none is asked for: ARMQ_THREADS, else min(4, CPU count)."""
    n = env_threads()
    return n if n is not None else max(1, min(MAX_DEFAULT_THREADS, os.cpu_count() or 1))


def resolve_threads(threads: int | None = None) -> int:
    """threads when given (> 0), else the default; 0 and None both mean "the default"
    (that is what --threads 0 has always meant)."""
    env_threads()  # a bad ARMQ_THREADS is an error even when a caller overrides it
    if threads is None or threads == 0:
        return default_threads()
    if threads < 0:
        raise ArmqError(f"threads must be >= 1 (or 0 for the default), got {threads}")
    return int(threads)


def _where(model: str | os.PathLike | bytes) -> str:
    return "model" if isinstance(model, (bytes, bytearray)) else str(model)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def ort_session(model: str | os.PathLike | bytes, threads: int | None = None, *,
                arm_int8: bool = False, optimized_path: str | os.PathLike | None = None,
                profile: bool | str | os.PathLike = False):
    """An onnxruntime CPU session.

    threads: intra-op threads (see resolve_threads); inter-op is always 1 and the
    execution sequential, as on the devices. arm_int8: build the graph ARM64 builds
    for S8 QDQ models (ARM_INT8_CONFIG). optimized_path: also save the graph ORT
    optimized, without the x86-only NCHWc rewrite. profile: enable ORT's profiler
    (True: its default file prefix; a path: that prefix), read back with
    `session.end_profiling()`.
    A model ORT cannot load is a one-line ArmqError "onnxruntime cannot load ...".
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = resolve_threads(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if arm_int8:
        for k, v in ARM_INT8_CONFIG.items():
            so.add_session_config_entry(k, v)
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
        # The NCHWc layout rewrite is x86-only; keep the saved graph portable.
        so.add_session_config_entry("optimization.disable_specified_optimizers", "NchwcTransformer")
    if profile is not False:
        so.enable_profiling = True
        if profile is not True:
            so.profile_file_prefix = str(profile)
    src = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        raise ArmqError(f"onnxruntime cannot load {_where(model)}: {_first_line(e)}") from None


def runtime_graph(path: str | os.PathLike, arm: bool = True):
    """The graph onnxruntime builds for `path` (ARM64 rules unless arm=False), as an
    onnx ModelProto: what the INT8 audit (quant.onnx_ptq.runtime_audit) and the latency
    model's op classes (android_bench/perfmodel/graph.py) read. Here, beside the session
    it comes from, so both reach it without importing upward."""
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory(prefix="armq-ortopt-") as td:
        opt = Path(td) / "optimized.onnx"
        ort_session(path, 1, arm_int8=arm, optimized_path=opt)
        return onnx.load(str(opt))


def session_threads(sess) -> int:
    """The intra-op thread count a session from ort_session was built with."""
    return int(sess.get_session_options().intra_op_num_threads)


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
    """An interpreter with tensors allocated, `threads` as in resolve_threads.

    delegates=False keeps the graph as stored (no XNNPACK rewrite), which is what
    inspecting ops needs. A file that is not a loadable TFLite model is a one-line
    ArmqError naming it ("... not a loadable TFLite model (LiteRT cannot load it: ...)").
    """
    mod, name = tflite_module()
    kw: dict[str, Any] = {"num_threads": resolve_threads(threads)}
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
        raise ArmqError(f"{_where(model)}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        with captured_native_output():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
            it = mod.Interpreter(**kw)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        shown = "LiteRT" if name == "ai_edge_litert" else name
        raise ArmqError(f"{_where(model)}: not a loadable TFLite model ({shown} cannot load it: "
                        f"{_first_line(e)})") from None
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


# ---- MNN ---------------------------------------------------------------------------------
# Safety rule: never import MNN.tools nor run the mnnconvert/mnnquant console commands.
# Their logging module pip-installs a package into the Python on PATH and sends usage
# telemetry; armq calls the compiled `_tools` extension the wheel ships beside MNN
# directly (tests/test_mnn.py proves no socket, subprocess or pip call happens).

def mnn_module():
    """The MNN package (its import prints the CPU features on fd 1: captured)."""
    try:
        with captured_native_output():
            import MNN
    except ImportError:
        raise RuntimeMissing("MNN is not installed: pip install 'armq[mnn]' (MNN==3.6.1)") from None
    return MNN


def mnn_tools():
    """MNN's compiled converter/quantizer extension (`_tools.mnnconvert`, `_tools.mnnquant`),
    never through MNN.tools (see above)."""
    mnn_module()
    try:
        with captured_native_output():
            import _tools  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeMissing("MNN's converter extension (_tools) is missing: pip install "
                             "'armq[mnn]' (MNN==3.6.1)") from None
    return _tools


def mnn_version() -> str:
    from importlib import metadata

    try:
        return f"MNN {metadata.version('MNN')}"
    except metadata.PackageNotFoundError:
        return "MNN"


class MnnSession:
    """An MNN module loaded for CPU inference, fed one NCHW image at a time (exported
    graphs carry batch-1 reshapes, so a batch dimension is not free to change)."""

    def __init__(self, module, info: dict, threads: int, runtime_manager=None):
        # the runtime manager lives as long as the module that runs on it
        self.module, self.threads, self.runtime_manager = module, threads, runtime_manager
        self.input_names = list(info.get("inputNames") or [])
        self.output_names = list(info.get("outputNames") or [])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a float32 NCHW batch, image by image."""
        F = mnn_module().expr
        outs = []
        for x in batch:
            x = np.ascontiguousarray(x[None], np.float32)
            try:
                y = self.module.forward(F.const(x, list(x.shape), F.NCHW))
            except Exception as e:  # noqa: BLE001 - MNN raises SystemError/RuntimeError alike
                raise ArmqError(f"MNN inference failed on input {list(x.shape)}: "
                                f"{_first_line(e)}") from None
            outs.append(np.array(y.read(), np.float32).reshape(1, -1))
        return np.concatenate(outs, 0) if outs else np.zeros((0, 0), np.float32)


def mnn_session(model: str | os.PathLike, threads: int | None = None) -> MnnSession:
    """An MNN CPU session of a .mnn file; `threads` as in resolve_threads. A file MNN cannot
    load is a one-line ArmqError "... not a loadable MNN model"."""
    mnn = mnn_module()
    path = Path(model)
    if not path.is_file():
        raise ArmqError(f"{path}: no such MNN model file")
    n = resolve_threads(threads)
    try:
        with captured_native_output() as lines:  # MNN prints its load errors on fd 1
            # An explicit runtime manager: with only thread_num, MNN runs the module on its
            # default executor, which keeps 4 worker threads whatever thread_num says (2.5x
            # slower on a busy 2-core host, and other threads' instructions under QEMU).
            rm = mnn.nn.create_runtime_manager(({"backend": "CPU", "numThread": n},))
            module = mnn.nn.load_module_from_file(str(path), [], [], runtime_manager=rm)
            info = module.get_info()
    except Exception as e:  # noqa: BLE001 - MNN reports a bad file as SystemError
        why = next((ln for ln in lines if ln.strip()), "") or _first_line(e)
        raise ArmqError(f"{path}: not a loadable MNN model (MNN cannot load it: "
                        f"{why.strip()[:120]})") from None
    return MnnSession(module, info, n, rm)


# ---- ExecuTorch (.pte, XNNPACK delegate): only inside the ET venv (export/et_venv.py) --------


class EtMethod:
    """The `forward` method of a loaded ExecuTorch program, run one NCHW image at a time.

    Inputs are always handed over NCHW-contiguous: a program lowered from a
    channels-last example expects that layout, and a contiguous tensor then either
    fails inside XNNPACK or returns wrong logits silently. The export refuses such
    programs; this keeps armq's side of the contract."""

    def __init__(self, method, shape: tuple[int, ...]):
        self.method, self.shape = method, shape

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        res = []
        for x in batch:
            x = np.ascontiguousarray(x[None], np.float32)
            if self.shape and tuple(x.shape) != self.shape:
                raise ArmqError(f"ExecuTorch program input is {list(self.shape)}, got "
                                f"{list(x.shape)} (wrong input size for this program)")
            out = self.method.execute([torch.from_numpy(x).contiguous()])
            res.append(np.asarray(out[0].detach().numpy(), np.float32).reshape(1, -1))
        return np.concatenate(res, 0) if res else np.zeros((0, 0), np.float32)


def et_method(model: str | os.PathLike | bytes, threads: int | None = None) -> EtMethod:
    """`forward` of a .pte file or buffer with XNNPACK's thread pool at `threads`
    (resolve_threads). A file that is not a loadable program is a one-line ArmqError."""
    try:
        with captured_native_output():
            from executorch.runtime import Runtime
    except ImportError as e:
        from .et_venv import DEFAULT_VENV, install_hint
        raise RuntimeMissing(f"executorch is not installed for this Python ({e.name or e}): "
                             f"{install_hint()}; then use {DEFAULT_VENV}/bin/python") from None
    with captured_native_output():      # cpuinfo / threadpool banners
        _et_threads(resolve_threads(threads))
    if not isinstance(model, (bytes, bytearray)):
        try:
            with open(model, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise ArmqError(f"{model}: cannot read ({e.strerror or e})") from None
        if head[4:6] != b"ET":   # flatbuffer identifier "ET12" at offset 4
            raise ArmqError(f"{model}: not an ExecuTorch program (no ET file identifier)")
    data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    order = et_input_dim_order(data)
    if order is not None and order != list(range(len(order))):
        raise ArmqError(f"{_where(model)}: the program takes its input in dim order {order} "
                        "(exported from a channels-last example), not NCHW: it would misread "
                        "NCHW images; re-export it with an NCHW-contiguous example")
    try:
        with captured_native_output():
            prog = Runtime.get().load_program(model if isinstance(model, (bytes, bytearray))
                                              else Path(model))
            method = prog.load_method("forward")
    except (ValueError, RuntimeError) as e:
        raise ArmqError(f"{_where(model)}: not a loadable ExecuTorch program "
                        f"({_first_line(e)})") from None
    shape: tuple[int, ...] = ()
    try:
        shape = tuple(int(s) for s in method.metadata.input_tensor_meta(0).sizes())
    except Exception:  # noqa: BLE001 - metadata API differs across releases: skip the check
        pass
    return EtMethod(method, shape)


def et_input_dim_order(data: bytes) -> list[int] | None:
    """The dim order the program's first input is stored in ([0, 1, 2, 3] = NCHW); None when
    the program cannot be read this way (the runtime's own load then reports it)."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        prog = deserialize_pte_binary(data)
        plan = getattr(prog, "program", prog).execution_plan[0]
        return [int(d) for d in plan.values[plan.inputs[0]].val.dim_order]
    except Exception:  # noqa: BLE001 - a private API: a change there must not block running
        return None


def _et_threads(n: int) -> None:
    """XNNPACK's pool in the ExecuTorch pybindings is process-wide; resize it once."""
    try:
        from executorch.extension.pybindings import portable_lib
        reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        if reset is not None:
            reset(n)
    except ImportError:
        pass
