"""Export a zoo (or your own) model to an ExecuTorch program with the XNNPACK delegate.

    python -m export.executorch --model shufflenet_v1 --groups 3 [--weights ckpt.pt]
        [--images DIR|tar] [--out artifacts/]

Writes `<out>/<name>.pte` and adds `artifacts['pte']` to the model card `<out>/<name>.json`.
torch.export (with an NCHW-contiguous example: a channels-last one bakes that layout into
the program) -> to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()]) -> .pte,
then the ExecuTorch runtime against PyTorch on real images (parity, max |diff| <= --atol).
The card's audit counts the ops XNNPACK took and those left to the portable kernels
(e.g. AvgPool2d(3, 2, 1) is not delegated and splits the graph).

ExecuTorch lives in its own venv (`make venv-executorch`, export/et_venv.py): run from the
main venv, this command re-runs itself with that venv's Python.
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from zoo.util import ArmqError, atomic_path, check_writable_dir, cli_entry

from . import et_venv

if TYPE_CHECKING:  # for annotations; main imports parity after its ET-venv re-run
    from .parity import Tolerance

PROG = "export.executorch"
# ops that are plumbing around delegate calls, not computation left out of XNNPACK
_PLUMBING = {"getitem", "executorch_call_delegate", "alloc", "view_copy"}


def quiet_imports() -> None:
    """torchao / executorch import-time log noise off the terminal."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "executorch", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_example(example) -> None:
    """The silent-wrong-logits trap: a channels-last example input makes torch.export record
    that dim order, and the program then misreads the NCHW inputs every stage feeds it."""
    import torch

    if example.dim() == 4 and not example.is_contiguous():
        layout = "channels-last" if example.is_contiguous(memory_format=torch.channels_last) \
            else "non-contiguous"
        raise ArmqError(f"the example input is {layout}: ExecuTorch would bake that layout into "
                        "the program and misread NCHW inputs; export with an NCHW-contiguous "
                        "example (x.contiguous())")


def lower(exported) -> tuple[bytes, dict]:
    """An exported program (float or PT2E-quantized) -> .pte bytes and the delegation audit."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from .common import quiet_fds

    with warnings.catch_warnings(), quiet_fds():
        warnings.simplefilter("ignore")
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        audit = delegation_audit(edge.exported_program().graph)
        program = edge.to_executorch()
    return bytes(program.buffer), audit


def delegation_audit(graph) -> dict:
    """How many XNNPACK subgraphs the program holds and which ops stayed outside them."""
    calls, left = 0, Counter()
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        # edge ops print as "aten.avg_pool2d.default": keep the op name only
        full = str(getattr(n.target, "__name__", n.target))
        name = full.split(".")[1] if full.startswith("aten.") and "." in full[5:] else full
        if "call_delegate" in name:
            calls += 1
        elif name not in _PLUMBING:
            left[name] += 1
    return {"delegate": "XnnpackBackend", "delegated_subgraphs": calls,
            "undelegated_ops": dict(sorted(left.items())),
            "num_undelegated": int(sum(left.values()))}


def export_program(model, example_nchw: np.ndarray):
    """torch.export of `model` with a batch-1 NCHW-contiguous example (check_example)."""
    import torch

    sample = torch.from_numpy(np.ascontiguousarray(example_nchw[:1], np.float32))
    check_example(sample)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (sample,))


def export_pte(prep, x: np.ndarray, data: dict, out_dir: Path, *, atol: float | Tolerance,
               threads: int | None = None) -> tuple[Path, dict]:
    """Export, lower, check and write `<out_dir>/<name>.pte`; returns (path, card details)."""
    from .common import share_mode
    from .parity import compare, torch_reference
    from .runtime import et_method

    ref = torch_reference(prep.model, x)
    t0 = time.time()
    try:
        flat, audit = lower(export_program(prep.model, x))
    except ArmqError:
        raise
    except Exception as e:  # noqa: BLE001 - say which model failed, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ArmqError(f"{prep.name}: ExecuTorch export failed: {type(e).__name__}: "
                        f"{first[:200]}") from None
    got = et_method(flat, threads)(x)
    parity = compare(ref, got, atol, "executorch", data)
    dest = out_dir / f"{prep.name}.pte"
    with atomic_path(dest) as tmp:
        Path(tmp).write_bytes(flat)
        share_mode(Path(tmp))
    details = pte_details(audit, parity, "float32", time.time() - t0)
    return dest, details


def pte_details(audit: dict, parity: dict | None, precision: str, seconds: float) -> dict:
    from .common import versions

    num_ops = audit["delegated_subgraphs"] + audit["num_undelegated"]
    d = {"converter": "executorch " + versions("executorch").get("executorch", "?"),
         "delegate": "XNNPACK", "precision": precision, "layout": "NCHW",
         "ops": {"executorch_call_delegate": audit["delegated_subgraphs"],
                 **audit["undelegated_ops"]},
         "audit": {**audit, "num_ops": num_ops, "transpose_count":
                   sum(v for k, v in audit["undelegated_ops"].items() if "permute" in k)},
         "versions": versions("torch", "executorch", "torchao"),
         "seconds": round(seconds, 1)}
    if parity is not None:
        d["parity"] = {**parity, "runtime": "executorch.runtime", "delegates": "XNNPACK"}
    return d


def main(argv: Sequence[str] | None = None) -> int:
    from . import build, common
    from .parity import Tolerance, parity_inputs

    p = common.make_parser("python -m export.executorch", __doc__.split("\n\n")[0])
    args = common.parse(p, argv)
    out_dir = check_writable_dir(args.out)
    et_venv.reexec_in_venv("export.executorch", None if argv is None else list(argv))
    quiet_imports()
    threads = common.set_threads(args.threads)
    prep = build.prepare(build.ModelConfig.from_args(args), PROG)
    if prep.origin is not None:   # a user's own model: only what torch.export can take
        from .source import require_traceable
        require_traceable(prep.origin, "ExecuTorch (torch.export)", fmt="ExecuTorch")
    x, data = parity_inputs(prep.data, args.images, args.num_images, PROG)
    cost = common.cost_of(prep, PROG)
    path, details = export_pte(prep, x, data, out_dir, atol=Tolerance.of(args),
                                threads=threads)
    if details["audit"]["num_undelegated"]:
        common.warn(PROG, f"ops left outside XNNPACK (portable kernels, graph split): "
                    f"{details['audit']['undelegated_ops']}")
    return common.finish(prep, cost, out_dir, "pte", path, details, PROG, "permute",
                         f"{details['audit']['delegated_subgraphs']} XNNPACK subgraph(s)")


if __name__ == "__main__":
    cli_entry(main, PROG)
