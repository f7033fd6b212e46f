"""Channel-shuffle graph forms head to head: TRANSPOSE vs GATHER (zoo.layers.ShuffleImpl).

    python -m export.bench_shuffle [--dataset imagenet] [--input-size 224] [--runs 60]
        [--threads 1] [--no-tflite] [--json]

For ShuffleNet V1 (g=3) and V2 (1x), each form is exported to ONNX and TFLite
(random weights with randomized BatchNorm, so no branch folds away; both forms
compute the same function and every export passes the parity check), then
timed on this CPU: onnxruntime (CPU provider) and LiteRT (default XNNPACK
delegate), batch 1. Runs of the two forms are interleaved so that load from
other processes hits both alike; the table shows the median wall time, its
inter-quartile range and the median CPU time of the calling thread in
milliseconds (with --threads 1 both runtimes compute in the calling thread,
so CPU time is the cost of the inference itself, not of the machine's other
tenants), and the Transpose/Gather op counts of each graph.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.clikit import make_parser
from zoo.util import cli_entry

PROG = "export.bench_shuffle"
CASES = (("shufflenet_v1", {"groups": 3}), ("shufflenet_v2", {}))
IMPLS = ("transpose", "gather")


def _prepared(model: str, params: dict, impl: str, dataset: str, input_size: int | None):
    import torch

    import zoo
    from zoo._registry import create_model, data_config_for, resolve_variant

    zoo._load_families()

    from . import build, common

    v = resolve_variant(model, dataset, input_size, None, shuffle=impl, **params)
    torch.manual_seed(common.RANDOM_SEED)
    m = create_model(v)
    common.randomize_norms(m)
    m.eval()
    return build.Prepared(m, v, data_config_for(v), dict(common.RANDOM_SOURCE))


def _time(fns: dict, runs: int, warmup: int = 5) -> dict:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():  # interleaved: drift and neighbours hit all forms alike
            c, t = time.thread_time(), time.perf_counter()
            fn()
            wall[k].append((time.perf_counter() - t) * 1e3)
            cpu[k].append((time.thread_time() - c) * 1e3)
    out = {}
    for k in fns:
        q1, med, q3 = np.percentile(wall[k], [25, 50, 75])
        out[k] = {"median_ms": float(med), "iqr_ms": float(q3 - q1),
                  "cpu_median_ms": float(np.median(cpu[k]))}
    return out


def bench(dataset: str = "imagenet", input_size: int | None = None, runs: int = 60,
          threads: int = 1, tflite: bool = True) -> list[dict]:
    from .audit import audit
    from .parity import parity_inputs
    from .runtime import ort_session, tflite_interpreter

    rows = []
    with tempfile.TemporaryDirectory(prefix="armq-bench-") as td:
        for model, params in CASES:
            ort_fns, tfl_fns, info = {}, {}, {}
            for impl in IMPLS:
                prep = _prepared(model, params, impl, dataset, input_size)
                x, data = parity_inputs(prep.data, None, 4, PROG)
                from .onnx import export_onnx

                path, det = export_onnx(prep, x, data, Path(td), threads=threads)
                sess = ort_session(path, threads)
                name = sess.get_inputs()[0].name
                x1 = x[:1]
                ort_fns[impl] = lambda s=sess, n=name, a=x1: s.run(None, {n: a})
                info[impl] = {"model": model, "params": params, "impl": impl,
                              "input_size": prep.input_size, "tag": prep.name,
                              "onnx_transpose": det["audit"]["transpose_count"],
                              "onnx_gather": det["ops"].get("Gather", 0),
                              "onnx_parity": det["parity"]["max_abs_diff"]}
                if tflite:
                    from .tflite import export_tflite

                    tpath, tdet = export_tflite(prep, x, data, Path(td), layout="nhwc",
                                                threads=threads)
                    it = tflite_interpreter(tpath, threads)
                    inp = it.get_input_details()[0]["index"]
                    out = it.get_output_details()[0]["index"]
                    xn = np.ascontiguousarray(x1.transpose(0, 2, 3, 1))

                    def run_tfl(it=it, inp=inp, out=out, xn=xn):
                        it.set_tensor(inp, xn)
                        it.invoke()
                        return it.get_tensor(out)

                    tfl_fns[impl] = run_tfl
                    rep = audit(tpath)
                    info[impl].update(tflite_transpose=rep["transpose_count"],
                                      tflite_gather=rep["ops"].get("GATHER", 0)
                                      + rep["ops"].get("GATHER_ND", 0),
                                      tflite_parity=tdet["parity"]["max_abs_diff"])
            for impl, t in _time(ort_fns, runs).items():
                info[impl]["onnxruntime"] = t
            if tflite:
                for impl, t in _time(tfl_fns, runs).items():
                    info[impl]["litert"] = t
            rows.extend(info[i] for i in IMPLS)
    return rows


def format_table(rows: list[dict], threads: int) -> str:
    head = (f"{'model':<22} {'impl':<10} {'ONNX Tr/Ga':>10} {'ORT ms (IQR) cpu':>22} "
            f"{'TFL Tr/Ga':>10} {'LiteRT ms (IQR) cpu':>23}")
    lines = [f"batch 1, {threads} thread(s), median of interleaved runs: wall (IQR) and "
             "thread CPU time", head, "-" * len(head)]
    for r in rows:
        name = r["model"] + "".join(f"_g{v}" for k, v in r["params"].items() if k == "groups")
        ort = r["onnxruntime"]
        line = (f"{name + ' @' + str(r['input_size']):<22} {r['impl']:<10} "
                f"{str(r['onnx_transpose']) + '/' + str(r['onnx_gather']):>10} "
                f"{ort['median_ms']:>8.2f} ({ort['iqr_ms']:>5.2f}) {ort['cpu_median_ms']:>6.2f}")
        if "litert" in r:
            tl = r["litert"]
            line += (f" {str(r['tflite_transpose']) + '/' + str(r['tflite_gather']):>10} "
                     f"{tl['median_ms']:>9.2f} ({tl['iqr_ms']:>5.2f}) {tl['cpu_median_ms']:>6.2f}")
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from .common import set_threads

    p = make_parser(PROG, __doc__)
    p.add_argument("--dataset", default="imagenet", choices=("imagenet", "cifar10"))
    p.add_argument("--input-size", type=int, help="default: the dataset's")
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    p.add_argument("--no-tflite", action="store_true", help="ONNX Runtime only")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    set_threads(args.threads)
    rows = bench(args.dataset, args.input_size, max(1, args.runs), args.threads, not args.no_tflite)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, args.threads))
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
