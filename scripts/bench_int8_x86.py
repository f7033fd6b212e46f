"""x86: is every default INT8 ONNX model faster than its FP32 model? S8S8 vs U8S8.

    python scripts/bench_int8_x86.py [--work DIR] [--runs 60] [--models shufflenet_v1_g3,...]

For each model: export it (python -m export.onnx), quantize it twice with quant.ptq
(--activations int8: S8S8; --for local: this host's recipe, U8S8 on x86, 7-bit weights
without VNNI), then time FP32,
S8S8 and U8S8 with onnxruntime on one thread, on the x86 graph ORT really builds here.
Time is the median *thread-CPU* time per inference (time.thread_time_ns around
session.run: with one intra-op thread ORT computes on the calling thread), so other
processes on a shared machine do not inflate it the way wall time would. The float
compute ops ORT leaves in the x86 graph (quant.onnx_ptq.runtime_audit, arm=False) are
printed beside each INT8 file. Speed-ups: android_bench.compare.measured_speedup.
A benchmark, not a test: figures depend on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from android_bench.compare import measured_speedup  # noqa: E402
from export.card import int8_filename  # noqa: E402
from quant.config import recipe_for_target  # noqa: E402
from export.runtime import ort_session  # noqa: E402

CIFAR_CALIB = REPO / "assets" / "data" / "cifar10_calib.tar.gz"
IMAGENET = REPO.parent.parent / "shared" / "data" / "imagenet-1k-samples.tar"


@dataclass(frozen=True)
class Case:
    key: str                 # --models name
    tag: str                 # the exported file stem
    export_args: tuple[str, ...]
    calib: Path


CASES = (
    Case("shufflenet_v1_g3", "shufflenet_v1_g3_w1_cifar10",
         ("--model", "shufflenet_v1", "--groups", "3", "--dataset", "cifar10",
          "--weights", str(REPO / "assets" / "weights" / "shufflenet_v1_g3_cifar10.pt")), CIFAR_CALIB),
    Case("mobilenet_v2", "mobilenet_v2_w1_imagenet",
         ("--model", "mobilenet_v2", "--dataset", "imagenet", "--random-weights"), IMAGENET),
    Case("efficientnet_lite0", "efficientnet_lite0_imagenet",
         ("--model", "efficientnet_lite0", "--dataset", "imagenet", "--random-weights"), IMAGENET),
)


def run(*argv: str) -> None:
    r = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_int8_x86: {' '.join(argv[:3])} failed: {r.stderr.strip().splitlines()[-1:]}")


def thread_ms(path: Path, runs: int, warmup: int = 5) -> float:
    sess = ort_session(path, threads=1)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feed = {inp.name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    ts = []
    for _ in range(runs):
        t0 = time.thread_time_ns()
        sess.run(None, feed)
        ts.append((time.thread_time_ns() - t0) / 1e6)
    return statistics.median(ts)


def float_ops(path: Path) -> str:
    from quant.onnx_ptq import runtime_audit
    a = runtime_audit(path, arm=False)
    return f"{a['int8_kernels']} int8 / {a['float_compute']} float"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "artifacts" / "bench_int8_x86")
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--num-calib", type=int, default=64)
    p.add_argument("--models", default=",".join(c.key for c in CASES))
    p.add_argument("--reuse", action="store_true", help="keep files already in --work")
    a = p.parse_args()
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        sys.exit("bench_int8_x86: error: this benchmark is for x86 hosts (--for local gives U8S8 "
                 f"there); this one is {platform.machine()}")
    want = [m.strip() for m in a.models.split(",") if m.strip()]
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in (c for c in CASES if c.key in want):
        fp = a.work / f"{c.tag}.onnx"
        s8 = a.work / int8_filename(c.tag, "onnx", "s8s8")
        u8 = a.work / int8_filename(c.tag, "onnx", recipe_for_target("local").tag)
        if not (a.reuse and fp.is_file()):
            run("-m", "export.onnx", *c.export_args, "--num-images", "2", "--out", str(a.work))
        for flags, f in ((("--activations", "int8"), s8), (("--for", "local"), u8)):
            if not (a.reuse and f.is_file()):
                run("-m", "quant.ptq", "--calib", str(c.calib), "--model", str(fp), "--backend",
                    "ort", "--num-calib", str(a.num_calib), *flags, "--out", str(a.work))
        t = {k: thread_ms(f, a.runs) for k, f in (("fp32", fp), ("s8s8", s8), ("u8s8", u8))}
        rows.append((c.key, t, float_ops(s8), float_ops(u8)))
        print(f"{c.key}: done", file=sys.stderr)
    print(f"x86, onnxruntime 1 thread, median thread-CPU ms of {a.runs} runs "
          "(speed-up = FP32 / INT8; x86 graph ops: int8 kernels / float compute)")
    print("| model | FP32 ms | S8S8 ms | S8S8 speed-up | S8S8 x86 graph | U8S8 ms | "
          "U8S8 speed-up | U8S8 x86 graph |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |")
    for key, t, g8, gu in rows:
        print(f"| {key} | {t['fp32']:.3f} | {t['s8s8']:.3f} | "
              f"{measured_speedup(t['fp32'], t['s8s8']):.2f}x | {g8} | {t['u8s8']:.3f} | "
              f"{measured_speedup(t['fp32'], t['u8s8']):.2f}x | {gu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
