"""What `export.onnx` and `export.tflite` share: flags, picking the weights,
building the model, the parity images and writing the model card."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zoo.cli import VARIANT_FLAGS, add_model_args
from zoo.config import DataConfig, default_data_config
from zoo.util import ArmqError, captured_native_output

from .card import ModelCard, load_card, save_card, CardError
from .weights import GRAPH_ONLY_PARAMS, LoadedCheckpoint, WeightsError, find_shipped, \
    load_pinned, matches

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ATOL = 1e-4      # FP32 parity: max |exported - torch| over the logits
DEFAULT_NUM_IMAGES = 16
RANDOM_SEED = 0          # random-init weights and random parity inputs


@contextlib.contextmanager
def quiet_fds():
    """Silence fds 1 and 2 (C++ and Python prints of converters) for a block."""
    with captured_native_output():
        yield


def warn(prog: str, msg: str) -> None:
    print(f"{prog}: warning: {msg}", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors go through cli_entry as one line."""

    def error(self, message: str):  # type: ignore[override]
        raise ArmqError(message)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=description)
    add_model_args(p, required=False)
    # No default dataset: an unnamed one is taken from the weights (shipped or given).
    p.set_defaults(dataset=None)
    w = p.add_argument_group("weights and checks")
    w.add_argument("--weights", type=Path, help="armq checkpoint or bare state dict (default: "
                   "the shipped checkpoint of the variant in assets/weights, else random init)")
    w.add_argument("--random-weights", action="store_true",
                   help=f"ignore shipped weights and export random-init ones (seed {RANDOM_SEED})")
    w.add_argument("--model-py", metavar="FILE.py:FN|MODULE:FN",
                   help="build the network with your own function instead of the zoo (runs that "
                   "code); it may take data=DataConfig, num_classes= and the variant flags")
    w.add_argument("--images", type=Path, help="folder or .tar of real images for the parity "
                   "check (default: the dataset's sample/test images when present)")
    w.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                   help=f"images in the parity check (default {DEFAULT_NUM_IMAGES})")
    w.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                   help=f"largest allowed |exported - torch| logit difference (default {DEFAULT_ATOL:g})")
    w.add_argument("--threads", type=int, default=0, help="CPU threads (default: up to 2)")
    w.add_argument("--out", type=Path, default=Path("artifacts"), help="output folder (default artifacts/)")
    return p


def check_common_args(args: argparse.Namespace) -> None:
    if not args.model and not args.weights and not args.model_py:
        raise ArmqError("--model is required (or --weights with an armq checkpoint)")
    if args.weights is not None and args.random_weights:
        raise ArmqError("--weights and --random-weights exclude each other")
    if args.num_images < 1:
        raise ArmqError("--num-images must be at least 1")
    if not args.atol > 0:
        raise ArmqError("--atol must be positive")
    if args.threads < 0:
        raise ArmqError("--threads must be >= 0")


# ---- the model -----------------------------------------------------------------------------

@dataclass
class Prepared:
    """A model ready to export, with everything the card says about it."""

    model: Any                 # torch.nn.Module in eval mode
    variant: Any               # zoo Variant
    data: DataConfig
    source: dict
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.variant.tag

    @property
    def input_size(self) -> int:
        return self.data.input_size


def _source_of(ck: LoadedCheckpoint, shipped: bool) -> dict:
    try:
        shown = str(ck.path.resolve().relative_to(REPO))
    except ValueError:
        shown = str(ck.path)
    src: dict[str, Any] = {"checkpoint": shown, "sha256": ck.sha256, "shipped": shipped}
    for k in ("metrics", "epochs_done", "pretrained", "recipe", "transport"):
        if k in ck.data:
            src[k] = ck.data[k]
    return src


def _user_flags(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in VARIANT_FLAGS if getattr(args, k, None) is not None}


def _effective_size(dataset: str, input_size: int | None) -> int | None:
    try:
        return default_data_config(dataset, input_size, 1).input_size
    except ValueError:
        return None


def prepare(args: argparse.Namespace, prog: str) -> Prepared:
    """Resolve the variant and its weights (given, shipped or random) and build the model."""
    import torch

    import zoo
    from zoo._registry import create_model, data_config_for, get_entry, resolve_variant
    from zoo.checkpoint import load_weights

    zoo._load_families()
    flags = _user_flags(args)
    ck = load_pinned(args.weights) if args.weights is not None else None
    if args.model_py:
        return _prepare_model_py(args, prog, flags, ck)
    ckv = ck.variant if ck else None
    name = args.model or (ckv or {}).get("model")
    if not name:
        raise WeightsError(f"checkpoint {args.weights} has no model variant: pass --model")
    get_entry(name)  # unknown model -> one-line ZooError
    if ckv and ckv["model"] != name:
        raise WeightsError(f"checkpoint {args.weights} holds {ckv['model']} weights, not {name}")
    params = dict(flags)
    dataset, input_size, num_classes = args.dataset, args.input_size, args.num_classes
    shipped = False
    if ck is None and not args.random_weights:
        probe = resolve_variant(name, dataset or "imagenet", input_size, num_classes, **params)
        hit = find_shipped(name, probe.params, dataset, num_classes)
        if hit is not None:
            ck = load_pinned(hit.path)
            # The file may have been rewritten since it was listed: check what was loaded.
            if ck.variant and matches(ck.variant, name, probe.params, dataset, num_classes):
                ckv, shipped = ck.variant, True
            else:
                ck = None
    if ckv:
        # Unnamed knobs come from the weights' own variant (graph-only ones excepted).
        for k, v in dict(ckv.get("params", {})).items():
            if k not in GRAPH_ONLY_PARAMS:
                params.setdefault(k, v)
        dataset = dataset or ckv.get("dataset")
        input_size = input_size or ckv.get("input_size")
        num_classes = num_classes or ckv.get("num_classes")
    variant = resolve_variant(name, dataset or "imagenet", input_size, num_classes, **params)
    torch.manual_seed(RANDOM_SEED)
    model = create_model(variant)
    data = data_config_for(variant)
    notes: list[str] = []
    if ck is not None:
        load_weights(model, ck.data["state_dict"], f"checkpoint {ck.path}")
        source = _source_of(ck, shipped)
        if ckv:
            trained = _effective_size(str(ckv.get("dataset", "imagenet")), ckv.get("input_size"))
            if trained and trained != data.input_size:
                notes.append(f"weights were trained at {trained} px, exported at {data.input_size} px")
                source["trained_input_size"] = trained
    else:
        randomize_norms(model)
        source = dict(RANDOM_SOURCE)
        if not args.random_weights:
            notes.append(f"no shipped or given weights for {variant.tag}: exporting random-init "
                         "weights (accuracy is meaningless; pass --weights)")
    print(weights_line(source, variant.tag, data, args.random_weights), flush=True)
    for n in notes:
        warn(prog, n)
    model.eval()
    return Prepared(model, variant, data, source, notes)


def load_builder(spec: str):
    """`path/file.py:fn` or `package.module:fn` -> the callable."""
    target, sep, fn_name = spec.rpartition(":")
    if not sep or not target or not fn_name:
        raise ArmqError(f"--model-py {spec}: expected path/file.py:function or module:function")
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target)
            if not path.is_file():
                raise ArmqError(f"--model-py {spec}: {path} does not exist")
            mod_name = "armq_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            if mspec is None or mspec.loader is None:
                raise ArmqError(f"--model-py {spec}: cannot import {path}")
            mod = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = mod
            mspec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(target)
    except ArmqError:
        raise
    except Exception as e:  # noqa: BLE001 - user code: any failure is the user's to fix
        raise ArmqError(f"--model-py {spec}: importing failed: {type(e).__name__}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ArmqError(f"--model-py {spec}: no function '{fn_name}' in {target}")
    return fn


def _prepare_model_py(args, prog: str, flags: dict, ck: LoadedCheckpoint | None) -> Prepared:
    import torch

    from zoo._registry import Variant
    from zoo.checkpoint import load_weights

    fn = load_builder(args.model_py)
    ckv = ck.variant if ck else None
    dataset = args.dataset or (ckv or {}).get("dataset") or "imagenet"
    try:
        data = default_data_config(dataset, args.input_size, args.num_classes)
    except ValueError as e:
        raise ArmqError(str(e)) from None
    sig = inspect.signature(fn)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    kwargs: dict[str, Any] = {}
    if "data" in sig.parameters or takes_any:
        kwargs["data"] = data
    if "num_classes" in sig.parameters:
        kwargs["num_classes"] = data.num_classes
    for k, v in flags.items():
        if k not in sig.parameters and not takes_any:
            raise ArmqError(f"--model-py {args.model_py}: {fn.__name__}() does not take --{k}")
        kwargs[k] = v
    torch.manual_seed(RANDOM_SEED)
    try:
        model = fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - user code
        raise ArmqError(f"--model-py {args.model_py}: {fn.__name__}() failed: "
                        f"{type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise ArmqError(f"--model-py {args.model_py}: {fn.__name__}() returned "
                        f"{type(model).__name__}, not a torch.nn.Module")
    name = args.model or fn.__name__
    variant = Variant(name, data.dataset, args.input_size, args.num_classes, dict(flags))
    builder = {"model_py": args.model_py}
    path = Path(args.model_py.rpartition(":")[0])
    if path.is_file():
        builder["model_py_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    notes = []
    if ck is not None:
        load_weights(model, ck.data["state_dict"], f"checkpoint {ck.path}")
        source = {**_source_of(ck, False), **builder}
    else:
        randomize_norms(model)
        source = {**RANDOM_SOURCE, **builder}
        if not args.random_weights:
            notes.append(f"no --weights for {name}: exporting random-init weights")
    print(weights_line(source, variant.tag, data, args.random_weights), flush=True)
    for n in notes:
        warn(prog, n)
    model.eval()
    return Prepared(model, variant, data, source, notes)


def weights_line(source: dict, tag: str, data: DataConfig, asked_random: bool = False) -> str:
    """The first line an export prints: which weights and which config, so that a run
    where no checkpoint was found (e.g. outside the repository) cannot pass for a trained one."""
    if source.get("weights") == "random":
        why = "--random-weights" if asked_random else \
            "no shipped checkpoint for this variant; pass --weights"
        w = f"random init (seed {source.get('seed')}; {why})"
    else:
        kind = "shipped checkpoint" if source.get("shipped") else "checkpoint"
        top1 = (source.get("metrics") or {}).get("test_top1")
        acc = f", test top-1 {100 * top1:.2f} %" if isinstance(top1, (int, float)) else ""
        w = f"{source.get('checkpoint')} ({kind}{acc}, sha256 {str(source.get('sha256'))[:12]})"
    return (f"weights: {w}; config: {tag} ({data.dataset}, {data.input_size} px, "
            f"{data.num_classes} classes)")


def randomize_norms(model, seed: int = RANDOM_SEED) -> None:
    """Give every BatchNorm random affine params and running stats.

    Fresh zoo models zero-init some BN scales (residual branches start as
    identity) and have mean 0 / var 1 stats: converters then fold whole branches
    into constants, so the exported graph, its op counts and its speed would not be
    those of a trained model. Random-weight exports use this instead.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.num_features:
                n = m.num_features
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)


RANDOM_SOURCE = {"weights": "random", "seed": RANDOM_SEED,
                 "init": "zoo init, BatchNorm params and stats randomized"}


# ---- parity images -------------------------------------------------------------------------

def default_images(dataset: str) -> Path | None:
    """The real images a parity check uses when none are named: the shipped sample,
    else the shared data set of the model's dataset."""
    shared = Path(os.environ.get("ARMQ_SHARED_DATA", REPO.parent / "shared" / "data"))
    from armq import assets_dir  # the checkout's assets/, or the copy in an installed wheel

    assets = assets_dir() / "data"
    cands = [assets / f"{dataset}_test.tar.gz", assets / f"{dataset}_test.tar", assets / dataset]
    if dataset == "cifar10":
        cands += [shared / "cifar10" / "test.tar", shared / "cifar10" / "test"]
    elif dataset == "imagenet":
        cands += [shared / "imagenet-1k-samples.tar", shared / "imagenet-1k-samples"]
    for c in cands:
        if c.is_file() or (c.is_dir() and any(c.iterdir())):
            return c
    return None


_IMAGE_CACHE: dict = {}


def parity_inputs(data: DataConfig, images: Path | None, n: int, prog: str) -> tuple[np.ndarray, dict]:
    """float32 NCHW batch, preprocessed exactly as the card says, and where it came from."""
    from zoo.data import load_images, normalize

    src = images if images is not None else default_images(data.dataset)
    if src is None:
        warn(prog, f"no {data.dataset} images found: parity is checked on random inputs")
        rng = np.random.default_rng(RANDOM_SEED)
        x = rng.standard_normal((n, 3, data.input_size, data.input_size)).astype(np.float32)
        return x, {"data": "random", "n": n}
    import warnings

    st = Path(src).stat()
    key = (str(Path(src).resolve()), st.st_mtime_ns, st.st_size, data.resize, data.input_size,
           data.interpolation, tuple(data.class_names), n)
    li = _IMAGE_CACHE.get(key)
    if li is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            li = load_images(src, data.resize, data.input_size, data.interpolation,
                             class_names=tuple(data.class_names) or None, limit=n)
        while len(_IMAGE_CACHE) >= 4:  # a few configs: repeated exports in one process
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = li
    shown = str(src)
    for base in (REPO, REPO.parent):
        try:
            shown = str(Path(src).resolve().relative_to(base))
            break
        except ValueError:
            continue
    return normalize(li.images, data), {"data": shown, "n": int(len(li.images))}


def compare(ref: np.ndarray, got: np.ndarray, atol: float, what: str, data: dict) -> dict:
    """Parity record; raises when the exported model differs by more than atol."""
    if ref.shape != got.shape:
        raise ArmqError(f"{what} output shape {tuple(got.shape)} differs from PyTorch's {tuple(ref.shape)}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    rec = {**data,
           "max_abs_diff": float(diff.max()),
           "mean_abs_diff": float(diff.mean()),
           "max_abs_logit": float(np.abs(ref).max()),
           "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
           "atol": atol}
    rec["passed"] = bool(np.isfinite(diff).all() and rec["max_abs_diff"] <= atol)
    if not rec["passed"]:
        raise ArmqError(f"parity check failed: max |{what} - torch| = {rec['max_abs_diff']:.3g} > "
                        f"{atol:g} on {rec['n']} images (top-1 agreement "
                        f"{rec['top1_agreement']:.3f}); nothing written")
    return rec


def torch_reference(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).float().numpy()


# ---- the card ------------------------------------------------------------------------------

def cost_of(prep: Prepared) -> dict:
    from zoo.cost import measure

    rep = measure(prep.model, prep.input_size, prep.variant.model, prep.variant.to_dict())
    return {"macs": rep.macs, "params": rep.params, "memory_access": rep.memory_access,
            "input_size": rep.input_size,
            "dwconv": sum(1 for layer in rep.layers if layer.op == "dwconv")}


def new_card(prep: Prepared, cost: dict) -> ModelCard:
    d = prep.data
    pre = {k: v for k, v in d.to_dict().items() if k != "class_names"}
    pre["layout"] = "NCHW"
    names = list(d.class_names) or [str(i) for i in range(d.num_classes)]
    return ModelCard(
        name=prep.name, variant=prep.variant.to_dict(),
        input={"name": "input", "shape": [1, 3, d.input_size, d.input_size], "layout": "NCHW",
               "dtype": "float32"},
        output={"name": "logits", "shape": [1, d.num_classes]},
        preprocessing=pre, class_names=names, cost=cost, source=dict(prep.source))


def _same_weights(a: dict, b: dict) -> bool:
    if a.get("sha256") or b.get("sha256"):
        return a.get("sha256") == b.get("sha256")
    return a.get("weights") == b.get("weights") == "random" and a.get("seed") == b.get("seed")


def write_card(prep: Prepared, cost: dict, out_dir: Path, key: str, model_path: Path,
               prog: str, **details: Any) -> Path:
    """Create or update `<out>/<name>.json` with artifact `key`.

    The other artifacts of an existing card are kept when they come from the same
    weights and variant; otherwise they are stale and dropped (with a warning).
    """
    card_path = out_dir / f"{prep.name}.json"
    card = new_card(prep, cost)
    if card_path.exists():
        try:
            old = load_card(card_path)
        except CardError as e:
            warn(prog, f"replacing unreadable card: {e}")
            old = None
        if old is not None:
            if old.variant == card.variant and _same_weights(old.source, card.source):
                card.artifacts = {k: v for k, v in old.artifacts.items() if k != key}
                card.accuracy = {k: v for k, v in old.accuracy.items() if k != key}
                card.extra = dict(old.extra)
            elif old.artifacts.keys() - {key}:
                warn(prog, f"{card_path.name}: weights changed, dropping stale entries "
                     f"{', '.join(sorted(old.artifacts.keys() - {key}))}")
    card.record_artifact(card_path, key, model_path, **details)
    save_card(card, card_path)
    share_mode(card_path)
    return card_path


def share_mode(path: Path) -> None:
    """Temp-then-rename files are born 0600; give them the usual umask mode."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def versions(*dists: str) -> dict:
    from importlib import metadata

    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            pass
    return out


def set_threads(n: int) -> int:
    import torch

    from .runtime import default_threads

    n = n or default_threads()
    torch.set_num_threads(n)
    return n


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    check_common_args(args)
    return args
