"""The one home of runtime, model-format and precision names and their display labels.

Every package spells these through here: export's card (`FORMAT_EXTENSIONS`,
`RUNTIME_NAMES`), quant's backends (`quant.common.Backend`), deploy's `--runtimes`
(`deploy.settings.RUNTIMES`) and the report's labels (`deploy.analysis.runtime_name`,
`deploy.collect.fmt_prec`, plots, tables). A new runtime (ncnn) or precision (FP16) is
one member and one label here. In export, the lowest package that names a format.
"""
from __future__ import annotations

from enum import Enum


class Runtime(str, Enum):
    """A runtime a run can use (deploy --runtimes; quant's backends are its first three)."""

    ORT = "ort"
    TFLITE = "tflite"
    MNN = "mnn"
    EXECUTORCH = "executorch"

    @property
    def label(self) -> str:
        """Its name in reports: 'ONNX Runtime', 'TFLite', 'MNN', 'ExecuTorch'."""
        return _RUNTIME_LABELS[self]

    @property
    def short(self) -> str:
        """A short name for narrow plot legends: 'ORT', 'TFLite', ..."""
        return _RUNTIME_SHORT[self]

    @property
    def format(self) -> "Format":
        """The model format it runs."""
        return _RUNTIME_FORMAT[self]


class Format(str, Enum):
    """A model file format: the artifact key's stem (export.card) and its extension."""

    ONNX = "onnx"
    TFLITE = "tflite"
    MNN = "mnn"
    PTE = "pte"

    @property
    def extension(self) -> str:
        return "." + self.value

    @property
    def label(self) -> str:
        """The format's name: 'ONNX', 'TFLite', 'MNN', 'ExecuTorch' (for a .pte program)."""
        return _FORMAT_LABELS[self]

    @property
    def runtime(self) -> Runtime:
        return next(r for r, f in _RUNTIME_FORMAT.items() if f is self)


class Precision(str, Enum):
    FP32 = "fp32"
    INT8 = "int8"

    @property
    def label(self) -> str:
        return self.value.upper()


_RUNTIME_LABELS = {Runtime.ORT: "ONNX Runtime", Runtime.TFLITE: "TFLite", Runtime.MNN: "MNN",
                   Runtime.EXECUTORCH: "ExecuTorch"}
_RUNTIME_SHORT = {Runtime.ORT: "ORT", Runtime.TFLITE: "TFLite", Runtime.MNN: "MNN",
                  Runtime.EXECUTORCH: "ET"}
_RUNTIME_FORMAT = {Runtime.ORT: Format.ONNX, Runtime.TFLITE: Format.TFLITE,
                   Runtime.MNN: Format.MNN, Runtime.EXECUTORCH: Format.PTE}
_FORMAT_LABELS = {Format.ONNX: "ONNX", Format.TFLITE: "TFLite", Format.MNN: "MNN",
                  Format.PTE: "ExecuTorch"}


def format_label(fmt: str) -> str:
    """A format key's label; an unknown one (a newer card's) upper-cased, never a crash."""
    try:
        return Format(fmt).label
    except ValueError:
        return fmt.upper()


def runtime_label(fmt: str) -> str:
    """The label of the runtime that runs a format key; unknown ones upper-cased."""
    try:
        return Format(fmt).runtime.label
    except ValueError:
        return fmt.upper()
