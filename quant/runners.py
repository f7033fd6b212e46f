"""Run an exported model (ONNX, TFLite, MNN or ExecuTorch, float or INT8) on preprocessed images.

Every runner takes float32 NCHW batches, as the card's preprocessing makes
them, and returns float32 logits: a full-integer TFLite model gets its input
quantized and its output dequantized with the model's own parameters, an NHWC
model gets a transpose. Fixed-batch models are fed in slices.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from export import runtime

from .common import Backend, QuantError, backend_for_path

# Sessions and interpreters come from export.runtime, the one place that sets their
# threads (ARMQ_THREADS, validated), ORT's options and the one-line load errors;
# these wrappers keep the quant stage's call signatures.


def ort_session(path: str | Path, arm: bool = True, threads: int | None = None,
                optimized_path: str | Path | None = None):
    """A session that builds the graph an ARM64 CPU builds (unless arm=False)."""
    return runtime.ort_session(path, threads, arm_int8=arm, optimized_path=optimized_path)


def check_input_shape(path: str | Path, name: str, shape, sample, layout: str = "NCHW",
                      ort_type: str | None = None) -> None:
    """The model's declared input (batch aside; symbolic dims match anything) must take
    the samples the card's preprocessing makes: a one-line error here, not the runtime's.
    `ort_type` (an ORT session input's type, e.g. 'tensor(float16)') must be float32: the
    samples are float32 and ORT does not convert them."""
    if ort_type is not None and ort_type != "tensor(float)":
        dtype = ort_type.removeprefix("tensor(").removesuffix(")")
        raise QuantError(f"{Path(path).name}: input '{name}' is {dtype}, but the model card's "
                         f"preprocessing makes float32 samples (export the model with a float32 "
                         f"input; a Cast inside the graph keeps {dtype} compute)")
    dims = list(shape)[1:]
    sample = [int(v) for v in sample]
    if len(dims) != len(sample) or any(isinstance(d, int) and d > 0 and d != s
                                       for d, s in zip(dims, sample)):
        raise QuantError(f"{Path(path).name}: input '{name}' is {list(shape)}, but the model "
                         f"card's preprocessing makes {['N', *sample]} {layout} samples (wrong "
                         "input size or layout for this card)")


class OrtRunner:
    def __init__(self, path: str | Path, arm: bool = True, threads: int | None = None):
        self.path = Path(path)
        self.sess = ort_session(path, arm, threads)
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.input_type = inp.type
        n = inp.shape[0]
        self.batch = n if isinstance(n, int) and n > 0 else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        check_input_shape(self.path, self.input_name, self.input_shape, x.shape[1:],
                          ort_type=self.input_type)
        step = self.batch or 64
        outs = []
        for i in range(0, len(x), step):
            xb = np.ascontiguousarray(x[i:i + step], np.float32)
            if self.batch and len(xb) < self.batch:  # pad the last slice of a fixed batch
                pad = np.zeros((self.batch - len(xb),) + xb.shape[1:], np.float32)
                y = self.sess.run(None, {self.input_name: np.concatenate([xb, pad])})[0][:len(xb)]
            else:
                y = self.sess.run(None, {self.input_name: xb})[0]
            outs.append(np.asarray(y, np.float32).reshape(len(xb), -1))
        return np.concatenate(outs)


def tflite_interpreter(path: str | Path, threads: int | None = None, delegates: bool = True):
    return runtime.tflite_interpreter(path, threads, delegates)


class TfliteRunner:
    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.it = tflite_interpreter(path, threads)
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        shape = list(self.inp["shape"])
        self.nhwc = len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3)
        self.batch = int(shape[0])

    @staticmethod
    def _qparams(d: dict) -> tuple[float, int]:
        scale, zp = d.get("quantization", (0.0, 0))
        return float(scale), int(zp)

    @property
    def io(self) -> dict:
        """Input/output dtypes and quantization, for the card."""
        def one(d):
            s, z = self._qparams(d)
            r = {"dtype": np.dtype(d["dtype"]).name, "shape": [int(v) for v in d["shape"]]}
            if s:
                r.update(scale=s, zero_point=z)
            return r
        return {"input": one(self.inp), "output": one(self.out),
                "layout": "NHWC" if self.nhwc else "NCHW"}

    def _quant_in(self, xb: np.ndarray) -> np.ndarray:
        dt = np.dtype(self.inp["dtype"])
        if self.nhwc:
            xb = xb.transpose(0, 2, 3, 1)
        if dt.kind in "iu":
            s, z = self._qparams(self.inp)
            info = np.iinfo(dt)
            return np.clip(np.round(xb / s) + z, info.min, info.max).astype(dt)
        return xb.astype(dt)

    def _dequant_out(self, y: np.ndarray) -> np.ndarray:
        if np.dtype(y.dtype).kind in "iu":
            s, z = self._qparams(self.out)
            return (y.astype(np.float32) - z) * s
        return y.astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        sample = tuple(x.shape[1:])
        if self.nhwc and len(sample) == 3:
            sample = (sample[1], sample[2], sample[0])
        check_input_shape(self.path, self.inp["name"], [int(v) for v in self.inp["shape"]],
                          sample, "NHWC" if self.nhwc else "NCHW")
        outs = []
        for i in range(0, len(x), self.batch):
            xb = np.ascontiguousarray(x[i:i + self.batch], np.float32)
            n = len(xb)
            if n < self.batch:
                xb = np.concatenate([xb, np.zeros((self.batch - n,) + xb.shape[1:], np.float32)])
            self.it.set_tensor(self.inp["index"], self._quant_in(xb))
            self.it.invoke()
            y = self._dequant_out(self.it.get_tensor(self.out["index"]))
            outs.append(y.reshape(self.batch, -1)[:n])
        return np.concatenate(outs)


class MnnRunner:
    """An MNN model (FP32 or INT8: MNN converts at its own boundaries, so both take and
    give float), fed one image at a time."""

    batch = 1

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.sess = runtime.mnn_session(path, threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(np.ascontiguousarray(x, np.float32))


class EtRunner:
    """An ExecuTorch program, run in the ExecuTorch venv (export.et_run): this process has
    no executorch (its dependencies conflict with the main venv's), so each call hands the
    batch over as .npy files."""

    # run_model hands over batch * 32 images per call: one subprocess per 2048 images
    batch = 64

    def __init__(self, path: str | Path, threads: int | None = None):
        from export import et_venv

        self.path = Path(path)
        self.python = et_venv.et_python()      # one line naming `make venv-executorch`
        self.threads = threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import subprocess
        import tempfile

        from export import et_venv

        with tempfile.TemporaryDirectory(prefix="armq-et-") as td:
            src, dst = Path(td) / "x.npy", Path(td) / "y.npy"
            np.save(src, np.ascontiguousarray(x, np.float32))
            argv = [self.python, "-m", "export.et_run", "--model", str(self.path), "--inputs",
                    str(src), "--outputs", str(dst), "--threads", str(self.threads or 0)]
            proc = subprocess.run(argv, env=et_venv.child_env(), capture_output=True, text=True)
            if proc.returncode != 0 or not dst.is_file():
                lines = [ln for ln in proc.stderr.strip().splitlines() if "error" in ln.lower()]
                why = (lines or proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise QuantError(f"{self.path.name}: the ExecuTorch run failed: {why[:300]}")
            return np.load(dst)


def open_runner(path: str | Path, arm: bool = True):
    p = Path(path)
    if not p.is_file():
        raise QuantError(f"model {p} does not exist")
    if p.name.lower().endswith(".pte"):
        return EtRunner(p)
    b = backend_for_path(p)
    if b is Backend.ORT:
        return OrtRunner(p, arm=arm)
    if b is Backend.TFLITE:
        return TfliteRunner(p)
    if b is Backend.MNN:
        return MnnRunner(p)
    raise QuantError(f"model {p}: expected a .onnx, .tflite, .mnn or .pte file")
