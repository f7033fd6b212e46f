"""Where a model comes from, for a model that is not the zoo's: the one home of that rule.

    file.py:fn | package.module:fn     a Python factory returning a torch.nn.Module
    model.pt2                          a torch.export program (torch.export.save)
    model.pt / .ts / .pth              a TorchScript file (torch.jit.save)
    model.onnx                         an ONNX graph: the start point, no torch export
    torchvision:NAME                   a torchvision classifier (needs an importable torchvision)

`parse_source` classifies a spec (by content for torch files: a .pt is either), `record`
is what the card keeps (kind, spec, sha256 of the file and of every local file a factory
imported: export/user_code.py), `confirm_record` checks the
`--source` a later stage is given against it (a card never picks code to run), and `load_torch_model` builds the torch module every stage rebuilds.
"""
from __future__ import annotations

import importlib
import inspect
import os
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from zoo.util import ArmqError

from .card import sha256_of
from .user_code import changed_local_file, factory_scope, import_file, import_plan, local_files

# What to tell a user whose model format a converter cannot take.
SAVE_INSTEAD = ("save torch.export.save(torch.export.export(model, (x,)), 'model.pt2') and pass "
                "the .pt2, or pass the factory file.py:fn")
TORCHVISION_MISSING = ("torchvision:{name}: torchvision does not import beside armq's CPU torch "
                       "2.13.0 (PyPI's torchvision 0.28.0 fails with 'operator torchvision::nms "
                       "does not exist'); write a factory file.py:fn that builds the network and "
                       "pass --source file.py:fn --weights state_dict.pt")


class SourceError(ArmqError):
    """A model source that cannot be read or cannot go where it was asked to (one line)."""


class SourceKind(str, Enum):
    FACTORY = "factory"
    EXPORTED_PROGRAM = "pt2"
    TORCHSCRIPT = "torchscript"
    ONNX = "onnx"
    TORCHVISION = "torchvision"

    @property
    def has_torch(self) -> bool:
        """A torch module can be built (export.tflite and the TFLite PTQ start from one)."""
        return self is not SourceKind.ONNX

    @property
    def traceable(self) -> bool:
        """torch.export can trace it (litert-torch, PT2E and the dynamo ONNX exporter)."""
        return self not in (SourceKind.ONNX, SourceKind.TORCHSCRIPT)


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    spec: str                   # as the user wrote it
    path: Path | None = None    # the file read (factory file, program, graph); None: a module
    attr: str | None = None     # factory function or torchvision model name

    @property
    def default_name(self) -> str:
        """The card name when --model does not give one."""
        if self.path is not None:
            return self.path.name.split(".")[0]
        return str(self.attr or "model")

    def sha256(self) -> str | None:
        return sha256_of(self.path) if self.path is not None and self.path.is_file() else None


def _torch_archive_kind(path: Path) -> SourceKind | None:
    """TorchScript and torch.export archives are zips with tell-tale members; a state dict
    (also a zip) has neither."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/archive_format") or "/models/" in n for n in names):
        return SourceKind.EXPORTED_PROGRAM
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return SourceKind.TORCHSCRIPT
    return None


def parse_source(spec: str) -> ModelSource:
    """A --source spec -> ModelSource; one-line SourceError on anything unreadable."""
    spec = spec.strip()
    if spec.startswith("torchvision:"):
        name = spec.partition(":")[2]
        if not name.isidentifier():
            raise SourceError(f"--source {spec}: expected torchvision:NAME, e.g. torchvision:mobilenet_v2")
        return ModelSource(SourceKind.TORCHVISION, spec, None, name)
    low = spec.lower()
    if low.endswith(".onnx"):
        path = Path(spec)
        if not path.is_file():
            raise SourceError(f"--source {spec}: {path} does not exist")
        return ModelSource(SourceKind.ONNX, spec, path)
    if low.endswith((".pt2", ".pt", ".pth", ".ts", ".jit", ".torchscript")):
        path = Path(spec)
        if not path.is_file():
            raise SourceError(f"--source {spec}: {path} does not exist")
        kind = _torch_archive_kind(path)
        if kind is None:
            raise SourceError(f"--source {spec}: not a torch.export program nor a TorchScript "
                              "file (a state dict? pass it as --weights beside --source file.py:fn)")
        return ModelSource(kind, spec, path)
    target, sep, fn = spec.rpartition(":")
    if not sep or not target or not fn.isidentifier():
        raise SourceError(f"--source {spec}: expected file.py:fn, module:fn, model.pt2, "
                          "model.onnx, a TorchScript file or torchvision:NAME")
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise SourceError(f"--source {spec}: {path} does not exist")
        return ModelSource(SourceKind.FACTORY, spec, path, fn)
    return ModelSource(SourceKind.FACTORY, spec, None, fn)


# ---- the card's record --------------------------------------------------------------------

def record(src: ModelSource) -> dict:
    """What the card's source keeps so that later stages rebuild the same model."""
    rec: dict[str, Any] = {"kind": src.kind.value, "spec": src.spec}
    if src.path is not None:
        rec["path"] = str(src.path.resolve())
        rec["sha256"] = src.sha256()
    if src.kind is SourceKind.FACTORY and src.path is not None:
        # the sibling files it imported (export/user_code.py); call after building the model
        rec["local_files"] = local_files(import_plan(src.path))
    return rec


def source_for_card(spec: str | None, card_source: dict) -> ModelSource | None:
    """A later stage's `--source SPEC` (None: not given), parsed, for a card whose model was
    exported with --source; a zoo card has no use for one (one line, not ignored)."""
    if spec is None:
        return None
    if "model_source" not in card_source:
        raise SourceError(f"--source {spec}: give it with a card exported with --source (this "
                          "card's model is the zoo's)")
    return parse_source(spec)


def confirm_record(rec: Any, given: ModelSource | None, where: str) -> ModelSource:
    """The source a later stage rebuilds the torch model from: the `--source` the user gives
    again, checked against the card's `source.model_source`. A card is data: it may say which
    file the model came from, but never makes armq import, call or load that file (a card
    sent by someone else carries both the path and its sha256, so a hash check alone proves
    nothing). Refuses a missing --source, another kind, another function, a changed file."""
    if not isinstance(rec, dict) or not isinstance(rec.get("spec"), str):
        raise SourceError(f"{where}: the card's model_source is not a source record")
    spec = rec["spec"]
    if given is None:
        raise SourceError(f"{where}: the card's model came from --source {spec}; pass --source "
                          "again to rebuild it (armq never runs or loads a file a card names)")
    if rec.get("kind") != given.kind.value:
        raise SourceError(f"{where}: --source {given.spec} is a {given.kind.value}, but the card's "
                          f"model came from a {rec.get('kind')} ({spec})")
    if given.kind is SourceKind.FACTORY and given.attr != spec.rpartition(":")[2]:
        raise SourceError(f"{where}: --source {given.spec} names function '{given.attr}', the "
                          f"card's model came from '{spec.rpartition(':')[2]}' ({spec})")
    if given.path is None:   # package.module:fn or torchvision:NAME: the spec is all there is
        if given.spec != spec:
            raise SourceError(f"{where}: --source {given.spec} is not the card's {spec}")
        return given
    want = rec.get("sha256")
    got = given.sha256()
    if not want or got != want:
        raise SourceError(f"{where}: {given.path} is not the file the card's model was exported "
                          f"from (sha256 {str(got)[:12]} != card {str(want)[:12]}); changed since "
                          "export? re-export the model")
    if given.kind is SourceKind.FACTORY:
        why = changed_local_file(import_plan(given.path), rec.get("local_files"))
        if why is not None:
            raise SourceError(f"{where}: --source {given.spec}: {why}; re-export the model")
    return given


# ---- building the torch module --------------------------------------------------------------

def load_builder(spec: str):
    """`path/file.py:fn` or `package.module:fn` -> the callable."""
    src = parse_source(spec)
    if src.kind is not SourceKind.FACTORY:
        raise SourceError(f"--source {spec}: not a factory file.py:fn")
    target = spec.rpartition(":")[0]
    try:
        if src.path is not None:
            plan = import_plan(src.path)
            with factory_scope(plan):
                mod = import_file(plan, spec)
        else:
            mod = importlib.import_module(target)
    except ArmqError as e:
        raise SourceError(str(e)) from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - user code, sys.exit() in it too
        raise SourceError(f"--source {spec}: importing failed: {type(e).__name__}: {e}") from None
    fn = getattr(mod, str(src.attr), None)
    if not callable(fn):
        raise SourceError(f"--source {spec}: no function '{src.attr}' in {target}")
    return fn


def factory_kwargs(fn, src: ModelSource, data, flags: dict) -> dict[str, Any]:
    """What a factory is called with: `data=` (the DataConfig) when it names `data`;
    `num_classes=` when it names it or takes **kwargs (the timm/torchvision convention:
    `ghostnet(**kwargs)` hands them on to the model class, which knows num_classes but not
    armq's data); the variant flags, each only where the factory takes it."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise SourceError(f"--source {src.spec}: cannot read the signature of "
                          f"{getattr(fn, '__name__', fn)}") from None
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    kwargs: dict[str, Any] = {}
    if "data" in sig.parameters:
        kwargs["data"] = data
    if ("num_classes" in sig.parameters or takes_any) and data is not None and data.num_classes:
        kwargs["num_classes"] = data.num_classes
    for k, v in flags.items():
        if k not in sig.parameters and not takes_any:
            raise SourceError(f"--source {src.spec}: {fn.__name__}() does not take --{k}")
        kwargs[k] = v
    return kwargs


def _call_factory(src: ModelSource, data, flags: dict):
    fn = load_builder(src.spec)
    kwargs = factory_kwargs(fn, src, data, flags)
    try:
        if src.path is None:
            return fn(**kwargs)
        with factory_scope(import_plan(src.path)):   # lazy sibling imports inside fn
            return fn(**kwargs)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - user code, sys.exit() in it too
        raise SourceError(f"--source {src.spec}: {fn.__name__}() failed: "
                          f"{type(e).__name__}: {e}") from None


def _torchvision(src: ModelSource, num_classes: int | None):
    try:
        import torchvision.models as tvm  # optional: not importable beside torch 2.13.0 CPU
    except Exception:  # noqa: BLE001 - any import failure means the same to the user
        raise SourceError(TORCHVISION_MISSING.format(name=src.attr)) from None
    kw = {"num_classes": num_classes} if num_classes else {}
    try:
        return tvm.get_model(str(src.attr), weights=None, **kw)
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"--source {src.spec}: {type(e).__name__}: {e}") from None


def _program_module(gm):
    """A torch.export program's module as a usual nn.Module: image by image when its batch
    was captured static (export's parity runs a batch), and no train/eval switch (the
    program refuses one: it was captured in the mode it was saved in)."""
    import torch

    class ExportedProgram(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.program = gm

        def train(self, mode: bool = True):
            self.training = mode
            return self

        def forward(self, x):
            if x.shape[0] == 1:
                return self.program(x)
            return torch.cat([self.program(x[i:i + 1]) for i in range(x.shape[0])])

    return ExportedProgram()


def load_torch_model(src: ModelSource, data=None, flags: dict | None = None):
    """The torch module of a source (eval mode not set: the caller loads weights first).
    `data` (zoo DataConfig) and `flags` go to a factory; ONNX has no torch module."""
    import torch

    if src.kind is SourceKind.ONNX:
        raise SourceError(f"{src.spec}: an ONNX file has no torch model to start from; "
                          "pass the factory file.py:fn or a .pt2 for this step")
    if src.kind is SourceKind.FACTORY:
        model = _call_factory(src, data, flags or {})
    elif src.kind is SourceKind.TORCHVISION:
        model = _torchvision(src, data.num_classes if data is not None else None)
    elif src.kind is SourceKind.EXPORTED_PROGRAM:
        try:
            model = _program_module(torch.export.load(str(src.path)).module())
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign archive
            raise SourceError(f"--source {src.spec}: torch.export.load failed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    else:
        try:
            model = torch.jit.load(str(src.path), map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"--source {src.spec}: torch.jit.load failed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    if not isinstance(model, torch.nn.Module):
        raise SourceError(f"--source {src.spec}: gave {type(model).__name__}, not a torch.nn.Module")
    return model


def eval_mode(model):
    """model.eval(), where the module allows it: a torch.export program's module refuses
    (it was captured in the mode it was saved in)."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def torch_rebuildable(card_source: dict) -> bool:
    """Whether the TFLite backend (torch.export) can rebuild a card's float torch model: a
    zoo or factory model with its checkpoint or random seed, or a .pt2 program."""
    rec = card_source.get("model_source")
    if isinstance(rec, dict):
        try:
            if not SourceKind(rec.get("kind")).traceable:
                return False
        except ValueError:
            return False
        if rec.get("kind") == SourceKind.EXPORTED_PROGRAM.value:
            return True
    return bool(card_source.get("checkpoint") or card_source.get("weights") == "random")


def require_traceable(src: ModelSource, what: str, fmt: str = "TFLite") -> None:
    """One line when `what` (litert-torch, PT2E, the dynamo exporter, ExecuTorch) cannot take
    the source; `fmt`: the format an ONNX file would have to be converted to."""
    if src.kind is SourceKind.TORCHSCRIPT:
        raise SourceError(f"{src.spec}: a TorchScript file cannot go through {what} (it needs "
                          f"torch.export); {SAVE_INSTEAD}")
    if src.kind is SourceKind.ONNX:
        raise SourceError(f"{src.spec}: {what} starts from a torch model and no maintained "
                          f"ONNX->{fmt} converter is installed; pass the factory file.py:fn "
                          "or a .pt2 instead of the .onnx")
