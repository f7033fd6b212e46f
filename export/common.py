"""What `export.onnx` and `export.tflite` share: the flags, the thread count, the
random-init recipe and writing the model card.

The model to export is built in export/build.py, its parity inputs and check are in
export/parity.py, and runtimes are opened in export/runtime.py.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from zoo.cli import add_model_args
from zoo.clikit import make_parser as cli_parser
from zoo.util import ArmqError, captured_native_output, declare_inputs

from .card import ModelCard, card_lock, load_card, norm_problem, save_card, CardError

if TYPE_CHECKING:  # build imports this module: the name is for annotations only
    from .build import Prepared

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


def norm_value(kind: str) -> Callable[[str], float]:
    """argparse type of one --mean / --std value: the card's rule (export.card.norm_problem)
    where the value enters, so no card is written that every later stage refuses."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        why = norm_problem(kind, [v]) if math.isfinite(v) else "must be a finite number"
        if why is not None:
            raise argparse.ArgumentTypeError(f"{text}: {why.replace('values must', 'must')}")
        return v
    parse.__name__ = kind   # argparse names the type in its own messages
    return parse


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = cli_parser(prog, description=description)
    add_model_args(p, required=False)
    # No default dataset: an unnamed one is taken from the weights (shipped or given).
    p.set_defaults(dataset=None)
    w = p.add_argument_group("weights and checks")
    w.add_argument("--weights", type=Path, help="armq checkpoint or bare state dict (default: "
                   "the shipped checkpoint of the variant in assets/weights, else random init)")
    w.add_argument("--random-weights", action="store_true",
                   help=f"ignore shipped weights and export random-init ones (seed {RANDOM_SEED})")
    w.add_argument("--source", "--model-py", dest="model_py", metavar="SPEC",
                   help="your own model instead of the zoo's: FILE.py:FN or MODULE:FN (a factory, "
                   "runs that code; it may take data=DataConfig, num_classes= and the variant "
                   "flags), a torch.export .pt2, a TorchScript file, an .onnx file or "
                   "torchvision:NAME; needs --input-size and --mean/--std, or --dataset")
    w.add_argument("--mean", type=norm_value("mean"), nargs=3, metavar=("R", "G", "B"),
                   help="--source models: input normalisation mean (0..1 pixel scale)")
    w.add_argument("--std", type=norm_value("std"), nargs=3, metavar=("R", "G", "B"),
                   help="--source models: input normalisation std (0..1 pixel scale)")
    w.add_argument("--images", type=Path, help="folder or .tar of real images for the parity "
                   "check (default: the dataset's sample/test images when present)")
    w.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                   help=f"images in the parity check (default {DEFAULT_NUM_IMAGES})")
    w.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                   help=f"largest allowed |exported - torch| logit difference (default {DEFAULT_ATOL:g})")
    w.add_argument("--rtol", type=float, default=0.0,
                   help="also allow rtol x the largest |torch logit| (default 0: --atol alone); "
                   "for nets whose logits reach the thousands (random or reparameterised weights)")
    w.add_argument("--min-agreement", type=float, default=0.0, metavar="FRACTION",
                   help="least share of parity images with the same top-1 class as torch "
                   "(default 0: not checked; 1.0 with --rtol is the usual pair)")
    w.add_argument("--threads", type=int, default=0,
                   help="CPU threads of torch and the parity runtime (default: $ARMQ_THREADS, "
                   "else up to 4)")
    w.add_argument("--out", type=Path, default=Path("artifacts"), help="output folder (default artifacts/)")
    return p


def command(module: str, variant_args: Sequence[str], out: Path, weights: Path | None = None,
            python: str = sys.executable) -> list[str]:
    """The command line of `python -m export.onnx` / `export.tflite` for a zoo variant
    (`zoo.cli.variant_argv`): given weights, else random-init ones (never a silent lookup)."""
    if module not in ("export.onnx", "export.tflite", "export.executorch"):
        raise ValueError(f"not an exporter: {module}")
    wargs = ["--weights", str(weights)] if weights is not None else ["--random-weights"]
    return [python, "-m", module, *variant_args, "--out", str(out), *wargs]


def check_common_args(args: argparse.Namespace) -> None:
    if not args.model and not args.weights and not args.model_py:
        raise ArmqError("--model is required (or --weights with an armq checkpoint)")
    if (args.mean is not None or args.std is not None) and not args.model_py:
        raise ArmqError("--mean/--std are for --source models (a zoo model's normalisation "
                        "is its --dataset's)")
    if args.weights is not None and args.random_weights:
        raise ArmqError("--weights and --random-weights exclude each other")
    check_parity_args(args)


def check_parity_args(args: argparse.Namespace) -> None:
    """The parity-check flags every exporter shares (--num-images, --atol, --rtol,
    --min-agreement, --threads)."""
    if args.num_images < 1:
        raise ArmqError("--num-images must be at least 1")
    if not args.atol > 0:
        raise ArmqError("--atol must be positive")
    if not getattr(args, "rtol", 0.0) >= 0:
        raise ArmqError("--rtol must be 0 or more")
    if not 0 <= getattr(args, "min_agreement", 0.0) <= 1:
        raise ArmqError("--min-agreement must be a fraction from 0 to 1")
    if args.threads < 0:
        raise ArmqError("--threads must be >= 0")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    check_common_args(args)
    # The weights, --model-py file and parity images are read; the exported files and
    # cards in --out (named by the model) must never replace one of them.
    model_py = str(args.model_py).split(":")[0] if getattr(args, "model_py", None) else None
    declare_inputs(getattr(args, "weights", None), model_py, getattr(args, "images", None),
                   outputs=[getattr(args, "out", None)])
    return args


# ---- random-init weights -------------------------------------------------------------------

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


# ---- threads ------------------------------------------------------------------------------

def set_threads(n: int | None) -> int:
    """Resolve the thread count once (the rule of export.runtime: --threads, else
    ARMQ_THREADS, else up to 4) and give it to torch; callers pass the result on to
    the parity runtime so both run with the same count."""
    import torch

    from .runtime import resolve_threads

    n = resolve_threads(n)
    torch.set_num_threads(n)
    return n


# ---- the card ------------------------------------------------------------------------------

def cost_of(prep: Prepared, prog: str = "export") -> dict:
    from zoo.cost import measure

    if prep.model is None:
        return {}  # an ONNX start point: no torch module to count
    try:
        rep = measure(prep.model, prep.input_size, prep.variant.model, prep.variant.to_dict())
    except Exception as e:  # noqa: BLE001 - a foreign module (TorchScript, a .pt2 graph)
        if prep.origin is None:
            raise
        warn(prog, f"no MAC/parameter count for {prep.name} ({type(e).__name__}); the card "
             "leaves cost empty")
        return {}
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
    with card_lock(out_dir / f"{prep.name}.json"):     # other stages may update it meanwhile
        return _write_card_locked(prep, cost, out_dir, key, model_path, prog, **details)


def _write_card_locked(prep: Prepared, cost: dict, out_dir: Path, key: str, model_path: Path,
                       prog: str, **details: Any) -> Path:
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


def finish(prep: Prepared, cost: dict, out_dir: Path, key: str, path: Path, details: dict,
           prog: str, transpose_op: str, what: str) -> int:
    """`write_and_report`, as a CLI's exit status."""
    write_and_report(prep, cost, out_dir, key, path, details, prog, transpose_op, what)
    return 0


def write_and_report(prep: Prepared, cost: dict, out_dir: Path, key: str, path: Path,
                     details: dict, prog: str, transpose_op: str, what: str) -> Path:
    """Write the card and print the one-line summary every exporter ends with:
    op counts (`transpose_op`, as the format spells it), `what` it made, parity.
    Returns the card's path."""
    card = write_card(prep, cost, out_dir, key, path, prog, **details)
    par = details["parity"]
    checked = (f"parity on {par['n']} images ({par['data']}): max |diff| "
               f"{par['max_abs_diff']:.2e}, top-1 agreement {par['top1_agreement']:.3f}"
               if "max_abs_diff" in par else f"no parity check ({par.get('note')})")
    print(f"{path}: {details['audit']['num_ops']} ops ({details['audit']['transpose_count']} "
          f"{transpose_op}), {what}; {checked}; card {card}")
    return card


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

