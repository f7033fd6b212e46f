"""Where an ONNX model's time goes, per node, grouped into the categories the report plots.

    python -m android_bench.profile --model artifacts/x.onnx [artifacts/x.int8.onnx ...]
        [--runs 20] [--warmup 3] [--threads N] [--json out.json]

onnxruntime's profiler (kernel time of every node, median over --runs) on this
host, in the session every stage opens (export.runtime.ort_session: sequential, all
graph optimizations, its thread rule: --threads, else ARMQ_THREADS, else min(4, CPUs)).
deploy's opprofile stage passes --threads 1, the thread count of its local benchmark,
so the profile explains the runner's local latency.
Every node is classified with the help of the model file itself, since the
optimized graph renames and fuses nodes (FusedConv, QLinearConv, `*_nchwc`):

    conv        dense and grouped convolutions, Gemm/MatMul (float or integer)
    depthwise   convolutions with group == input channels
    shuffle/transpose   Transpose, Reshape, Gather, DepthToSpace, NCHWc reorders
    element-wise        Add, Mul, Relu, Clip, Sigmoid, QLinearAdd, ...
    quantize/dequantize QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear
    pool        Max/Average/GlobalAverage pools
    other       Concat, Flatten, Softmax, ...

Why not `android_bench --profile`: the runner's profile keeps the op-type totals
and the ten slowest nodes only; telling depthwise from dense convolutions needs
every node. The categories come from this module's `categorize` either way.
`python -m deploy` runs this as its opprofile stage (`command` builds the line).
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from zoo.clikit import make_parser
from zoo.util import ArmqError, atomic_output, cli_entry, declare_inputs

PROG = "android_bench.profile"
PROFILE_FORMAT = "armq-opprofile/1"
CATEGORIES = ("conv", "depthwise", "shuffle/transpose", "element-wise", "quantize/dequantize",
              "pool", "other")
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv",
            "QLinearConvTranspose", "ConvTranspose", "Gemm", "FusedGemm", "QGemm", "MatMul",
            "FusedMatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat", "CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"}
MOVE_OPS = {"Transpose", "Reshape", "Gather", "DepthToSpace", "SpaceToDepth", "ReorderInput",
            "ReorderOutput", "Squeeze", "Unsqueeze", "TRANSPOSE", "RESHAPE", "GATHER"}
ELTWISE_OPS = {"Add", "Sub", "Mul", "Div", "Sum", "Relu", "Clip", "Sigmoid", "HardSigmoid",
               "HardSwish", "LeakyRelu", "PRelu", "Tanh", "BatchNormalization", "QLinearAdd",
               "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QuickGelu", "Gelu",
               "ADD", "MUL", "RELU", "RELU6", "HARD_SWISH", "LOGISTIC"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QUANTIZE", "DEQUANTIZE"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "QLinearAveragePool",
            "QLinearGlobalAveragePool", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN"}
_SUFFIXES = re.compile(r"(_nchwc|_quant|_token_\d+|_output_\d+)+$")


def command(models: Sequence[Path | str], runs: int, json_path: Path,
            python: str = sys.executable, threads: int = 1) -> list[str]:
    """The command line that profiles `models` and writes {file: profile} to json_path
    (threads: 1, as android_bench benchmarks by default)."""
    return [python, "-m", "android_bench.profile", "--model", *map(str, models),
            "--runs", str(runs), "--threads", str(threads), "--json", str(json_path)]


def categorize(op_type: str, depthwise: bool = False) -> str:
    if op_type in CONV_OPS:
        return "depthwise" if depthwise or op_type == "DEPTHWISE_CONV_2D" else "conv"
    if op_type in MOVE_OPS:
        return "shuffle/transpose"
    if op_type in ELTWISE_OPS:
        return "element-wise"
    if op_type in QDQ_OPS:
        return "quantize/dequantize"
    if op_type in POOL_OPS:
        return "pool"
    return "other"


class GraphIndex:
    """Which convolutions of the model file are depthwise, findable by node or tensor name."""

    def __init__(self, path: Path):
        import onnx

        m = onnx.load(str(path), load_external_data=False)
        g = m.graph
        shapes = {i.name: list(i.dims) for i in g.initializer}
        producer = {}
        for n in g.node:
            for o in n.output:
                producer[o] = n
            if n.op_type == "DequantizeLinear" and n.input and n.input[0] in shapes:
                for o in n.output:
                    shapes[o] = shapes[n.input[0]]
        self.depthwise_nodes: set[str] = set()
        self.conv_nodes: set[str] = set()
        self.producer = producer
        for n in g.node:
            if n.op_type not in ("Conv", "QLinearConv", "ConvInteger"):
                continue
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            wname = n.input[3] if n.op_type == "QLinearConv" else (n.input[1] if len(n.input) > 1 else "")
            w = shapes.get(wname)
            self.conv_nodes.add(n.name)
            if group > 1 and w is not None and len(w) >= 2 and w[1] == 1:
                self.depthwise_nodes.add(n.name)
                for o in n.output:
                    self.depthwise_nodes.add(o)
        # tensors downstream of a depthwise conv through activations/Q (fused into it later)
        for n in g.node:
            if n.op_type in ("Relu", "Clip", "QuantizeLinear", "DequantizeLinear", "BatchNormalization") \
                    and n.input and n.input[0] in self.depthwise_nodes:
                self.depthwise_nodes.update(n.output)
        # a second pass catches Relu -> Q chains
        for n in g.node:
            if n.op_type in ("Relu", "Clip", "QuantizeLinear") and n.input and \
                    n.input[0] in self.depthwise_nodes:
                self.depthwise_nodes.update(n.output)

    def is_depthwise(self, node_name: str) -> bool:
        if node_name in self.depthwise_nodes:
            return True
        base = _SUFFIXES.sub("", node_name)
        for cand in (base, base + "_output_0", node_name.replace("_nchwc", "")):
            if cand in self.depthwise_nodes:
                return True
        # the optimizer may prefix/suffix the original name
        return any(base.startswith(d) or d.startswith(base) for d in self.depthwise_nodes
                   if len(d) > 8 and "/" in d and base.rsplit("/", 1)[0] == d.rsplit("/", 1)[0])


def profile_onnx(path: Path, runs: int = 20, warmup: int = 3, threads: int | None = None) -> dict:
    """threads: export.runtime's rule (None: ARMQ_THREADS, else min(4, CPUs))."""
    import numpy as np
    import onnxruntime as ort

    from export.runtime import ort_session, session_threads

    index = GraphIndex(path)
    tmp = tempfile.mkdtemp(prefix="armq-opprof-")
    try:
        sess = ort_session(path, threads, profile=os.path.join(tmp, "p"))
    except ArmqError:
        os.rmdir(tmp)
        raise
    threads = session_threads(sess)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {inp.name: x})
    wall_ms = (time.perf_counter() - t0) * 1e3 / runs
    prof = sess.end_profiling()
    try:
        events = json.loads(Path(prof).read_text())
    finally:
        for f in Path(tmp).iterdir():
            f.unlink()
        os.rmdir(tmp)
    per_node: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for ev in events if isinstance(events, list) else []:
        name = str(ev.get("name", ""))
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[:-len("_kernel_time")]
        per_node.setdefault(node, []).append(float(ev.get("dur", 0)) / 1000.0)
        op_of[node] = str((ev.get("args") or {}).get("op_name", "?"))
    nodes = []
    for node, ts in per_node.items():
        ts = sorted(ts[-runs:])  # the last `runs` calls: warm-up excluded
        op = op_of[node]
        dw = op in CONV_OPS and index.is_depthwise(node)
        # median per node: a preempted kernel inflates one run, not the profile
        med = ts[len(ts) // 2] if len(ts) % 2 else (ts[len(ts) // 2 - 1] + ts[len(ts) // 2]) / 2
        nodes.append({"name": node, "op_type": op, "ms": round(med, 6),
                      "category": categorize(op, dw)})
    nodes.sort(key=lambda n: -n["ms"])
    total = sum(n["ms"] for n in nodes) or 1.0
    cats = {c: {"ms": 0.0, "nodes": 0} for c in CATEGORIES}
    by_type: dict[str, dict] = {}
    for n in nodes:
        c = cats[n["category"]]
        c["ms"] += n["ms"]
        c["nodes"] += 1
        t = by_type.setdefault(n["op_type"], {"op_type": n["op_type"], "nodes": 0, "ms": 0.0})
        t["nodes"] += 1
        t["ms"] += n["ms"]
    for c in cats.values():
        c["ms"] = round(c["ms"], 6)
        c["pct"] = round(100.0 * c["ms"] / total, 2)
    for t in by_type.values():
        t["ms"] = round(t["ms"], 6)
        t["pct"] = round(100.0 * t["ms"] / total, 2)
    return {"available": True, "file": path.name, "source": "onnxruntime profiler on the host "
            "(kernel time per node)", "runtime": f"onnxruntime {ort.__version__}",
            "threads": threads, "runs": runs, "total_ms": round(total, 6),
            "wall_ms": round(wall_ms, 4), "categories": cats,
            "by_op_type": sorted(by_type.values(), key=lambda t: -t["ms"]),
            "transposes": {"nodes": by_type.get("Transpose", {}).get("nodes", 0),
                           "ms": by_type.get("Transpose", {}).get("ms", 0.0),
                           "pct": by_type.get("Transpose", {}).get("pct", 0.0)},
            "nodes": nodes}


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(PROG, __doc__)
    p.add_argument("--model", nargs="+", required=True, type=Path, help=".onnx files")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, help="intra-op threads (default: ARMQ_THREADS, else "
                   "min(4, CPUs); deploy passes 1, its local benchmark's count)")
    p.add_argument("--json", type=Path, help="write {file: profile} here (atomically)")
    a = p.parse_args(argv)
    declare_inputs(*a.model, outputs=[a.json])
    if a.runs < 1 or a.warmup < 0 or (a.threads is not None and a.threads < 1):
        raise ArmqError("--runs and --threads must be >= 1, --warmup >= 0")
    out: dict[str, dict] = {}
    errors = []
    for m in a.model:
        if not m.is_file():
            raise ArmqError(f"model {m} not found")
        if m.suffix != ".onnx":
            out[m.name] = {"available": False, "reason": "per-op profile for ONNX models only"}
            continue
        try:
            out[m.name] = profile_onnx(m, a.runs, a.warmup, a.threads)
        except ArmqError as e:
            out[m.name] = {"available": False, "reason": str(e)}
            errors.append(str(e))
            continue
        c = out[m.name]["categories"]
        print(f"{PROG}: {m.name}: " + ", ".join(f"{k} {v['pct']:.0f}%" for k, v in c.items()
                                                if v["pct"] >= 1), file=sys.stderr)
    doc = {"format": PROFILE_FORMAT, "models": out}
    if a.json:
        with atomic_output(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    else:
        print(json.dumps(doc, indent=1))
    if errors and len(errors) == len(a.model):
        raise ArmqError(errors[0])
    return 0


if __name__ == "__main__":
    cli_entry(main, PROG)
