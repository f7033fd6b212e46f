"""The card checked against the real graph: a card that does not describe its model file
would give a wrong report, never an error. The input shape is checked where the samples
are fed (quant.runners.check_input_shape, one line naming the shapes); the class count,
which no runtime notices, is checked here, first, by every stage that loads a card and a
model file. Torch-free (onnx for ONNX files, the TFLite interpreter for .tflite)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo.util import ArmqError

from .card import ModelCard


class GraphMismatch(ArmqError):
    """The card and the model file disagree (one line, naming the fix)."""


@dataclass(frozen=True)
class GraphIO:
    size: tuple[int, int] | None   # (H, W) of the image input, None when symbolic
    channels: int | None
    classes: int | None            # last dimension of the output, None when symbolic


def _static(d) -> int | None:
    return int(d) if isinstance(d, (int,)) and d > 0 else None


def onnx_io(path: Path) -> GraphIO:
    import onnx

    try:
        g = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - unreadable: the runtime that opens it says so
        return GraphIO(None, None, None)
    inits = {i.name for i in g.initializer}
    ins = [i for i in g.input if i.name not in inits]

    def dims(v) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None
                for d in v.type.tensor_type.shape.dim]
    di = dims(ins[0]) if ins else []
    do = dims(g.output[0]) if g.output else []
    return GraphIO((di[2], di[3]) if len(di) == 4 and di[2] and di[3] else None,
                   di[1] if len(di) == 4 else None, do[-1] if do else None)


def tflite_io(path: Path) -> GraphIO:
    from .runtime import tflite_interpreter

    try:
        it = tflite_interpreter(path, threads=1, delegates=False)
    except ArmqError:
        return GraphIO(None, None, None)  # unreadable: the runtime that opens it says so
    si = [int(s) for s in it.get_input_details()[0]["shape"]]
    so = [int(s) for s in it.get_output_details()[0]["shape"]]
    if len(si) != 4:
        return GraphIO(None, None, _static(so[-1]) if so else None)
    nhwc = si[3] in (1, 3) and si[1] not in (1, 3)
    h, w, c = (si[1], si[2], si[3]) if nhwc else (si[2], si[3], si[1])
    return GraphIO((h, w), c, _static(so[-1]) if so else None)


def graph_io(path: Path) -> GraphIO:
    """The file's input/output shapes; all None for a format read by its own runtime only
    (MNN, ExecuTorch: their runner checks the input shape where the samples are fed)."""
    name = path.name.lower()
    if name.endswith(".tflite"):
        return tflite_io(path)
    return onnx_io(path) if name.endswith(".onnx") else GraphIO(None, None, None)


def check_card_graph(card: ModelCard, model_path: Path) -> None:
    """GraphMismatch when the card's class count is not the file's output size."""
    io = graph_io(Path(model_path))
    n = len(card.class_names)
    if io.classes is not None and io.classes != n:
        raise GraphMismatch(f"{card.name}: the card lists {n} classes but "
                            f"{Path(model_path).name} outputs {io.classes}; re-export the model "
                            "so its card matches")
