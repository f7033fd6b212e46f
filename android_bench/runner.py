#!/usr/bin/env python3
"""armq on-device benchmark runner: one model, one process, one JSON result.

Self-contained on purpose: it imports only the standard library, numpy and one
runtime (onnxruntime for .onnx; ai_edge_litert or tflite_runtime for .tflite;
MNN for .mnn), so it can be copied alone to a board, a phone (Termux) or a QEMU
sysroot. `.pte` programs run through executorch.runtime, which itself loads
libtorch (hosts with the ExecuTorch venv), or, with `--et-lib libarmq_et.so`, through
armq's C++ runner library over ExecuTorch's torch-free runtime (aarch64: the QEMU target
builds it, android_bench/et_runner/armq_et.cpp).

    python3 runner.py --model m.onnx [--card m.json] [--threads 1] [--warmup 10]
        [--runs 100] [--profile] [--json out.json|-] [--inputs x.npy]
        [--outputs-npy y.npy] [--markers] [--runtime auto|onnxruntime|ai_edge_litert|tflite_runtime|mnn]
        [--seed 0] [--et-lib libarmq_et.so]

Measures, in this order: runtime import + session/interpreter creation ("init"),
the first inference, `--warmup` untimed inferences, then `--runs` timed ones
(mean, median, p90, p99, min, max, std and a distribution-free 95% confidence
interval of the median from order statistics). Inputs are the `--inputs` array
(N preprocessed samples, NCHW float as the model card describes; cycled), else
seeded random data of the model's input shape and dtype.

Markers (`--markers`): every inference (first, warm-up and timed) is bracketed by
    posix_fadvise(fd, offset=0x41524D51 ("ARMQ"), len=1, POSIX_FADV_NORMAL)   begin
    posix_fadvise(fd, offset=0x41524D51, len=2, POSIX_FADV_NORMAL)            end
on a read-only fd of the model file: a harmless syscall (fadvise64, number 223 on
aarch64) with arguments nothing else uses, which the armq QEMU TCG plugin
(android_bench/qemu_plugin/armq_icount.c) watches to count guest instructions
per inference, excluding start-up. Region i is: 0 = first inference,
1..warmup = warm-up, then the timed runs.

Exit status: 0 ok, 2 user error, 3 runtime not installed, 1 internal error;
errors are one line on stderr ("runner: error: ..."; "python -m android_bench.runner:
error: ..." when run as a module on the host).
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback

import numpy as np

FORMAT = "armq-bench/1"
RUNNER_VERSION = 1
MARKER_OFFSET = 0x41524D51
MARKER_BEGIN, MARKER_END = 1, 2
EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_NO_RUNTIME = 0, 1, 2, 3


# Self-contained (copied alone to devices), so not zoo.clikit's parser, but the same
# contract: the armq prog when run with -m, plain "runner" where the targets run the
# file (they strip "runner: error: " from its last stderr line).
PROG = f"python -m {__spec__.name}" if __spec__ is not None else "runner"


class UserError(Exception):
    """Printed as one line, exit 2."""


class NoRuntime(Exception):
    """Printed as one line, exit 3."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- CPU and system -------------------------------------------------------------------

# Linux arch/arm64/include/uapi/asm/hwcap.h bit positions (AT_HWCAP, AT_HWCAP2).
_HWCAP = {"fp": 0, "asimd": 1, "aes": 3, "pmull": 4, "sha1": 5, "sha2": 6, "crc32": 7,
          "atomics": 8, "fphp": 9, "asimdhp": 10, "cpuid": 11, "asimdrdm": 12, "jscvt": 13,
          "fcma": 14, "lrcpc": 15, "dcpop": 16, "sha3": 17, "asimddp": 20, "sha512": 21,
          "sve": 22, "asimdfhm": 23}
_HWCAP2 = {"sve2": 1, "svei8mm": 9, "i8mm": 13, "bf16": 14, "sme": 23}
AT_HWCAP, AT_HWCAP2 = 16, 26
KEY_FEATURES = ("asimd", "dotprod", "i8mm", "sve", "sve2", "fphp", "bf16", "sme")
_ARM_PARTS = {0xd03: "Cortex-A53", 0xd04: "Cortex-A35", 0xd05: "Cortex-A55", 0xd07: "Cortex-A57",
              0xd08: "Cortex-A72", 0xd09: "Cortex-A73", 0xd0a: "Cortex-A75", 0xd0b: "Cortex-A76",
              0xd0c: "Neoverse-N1", 0xd0d: "Cortex-A77", 0xd40: "Neoverse-V1", 0xd41: "Cortex-A78",
              0xd44: "Cortex-X1", 0xd46: "Cortex-A510", 0xd47: "Cortex-A710", 0xd48: "Cortex-X2",
              0xd49: "Neoverse-N2", 0xd4d: "Cortex-A715", 0xd4e: "Cortex-X3", 0xd80: "Cortex-A520",
              0xd81: "Cortex-A720", 0xd82: "Cortex-X4"}


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _getauxval(kind: int) -> int | None:
    try:
        libc = ctypes.CDLL(None)
        fn = libc.getauxval
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_ulong
    fn.argtypes = [ctypes.c_ulong]
    return int(fn(kind))


# The one /proc/cpuinfo reader. Its home is this file because runner.py is the one
# module every side has: it is copied alone to boards, phones and the QEMU sysroot, so it
# cannot import a shared reader, while the host side (targets/remote.py, targets/local.py,
# targets/tflite_benchmark.py for a phone's text, deploy's host record) can import it.
def parse_cpuinfo(text: str) -> dict:
    """A /proc/cpuinfo text: the first Features (ARM) / flags (x86) line, the CPU model
    (model name, else Hardware, else a non-numeric processor line), the Hardware line,
    the ARM part numbers and implementer, and the number of processor entries."""
    flags: list[str] = []
    model, hardware, parts, implementer, n = "", "", [], "", 0
    for line in (text or "").splitlines():
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip()
        if k in ("features", "flags") and not flags:
            flags = v.split()
        elif k in ("model name", "hardware", "processor") and not model and not v.isdigit():
            model = v
        if k == "hardware" and not hardware:
            hardware = v
        elif k == "processor" and v.isdigit():
            n += 1
        elif k == "cpu part":
            parts.append(v)
        elif k == "cpu implementer" and not implementer:
            implementer = v
    return {"flags": flags, "model": model, "hardware": hardware, "parts": parts,
            "implementer": implementer, "n_processors": n}


def cpu_features(machine: str, flags) -> dict:
    """The features that decide INT8 speed, from a set of CPU flags (cpuinfo or HWCAP names)."""
    flags = set(flags)
    if machine in ("aarch64", "arm64", "armv7l", "armv8l"):
        return {"asimd": "asimd" in flags or "neon" in flags,
                "dotprod": "asimddp" in flags, "i8mm": "i8mm" in flags,
                "sve": "sve" in flags, "sve2": "sve2" in flags, "fphp": "fphp" in flags,
                "bf16": "bf16" in flags, "sme": "sme" in flags}
    return {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags,
            "amx_int8": "amx_int8" in flags}


def _part_names(parts: list, implementer: str) -> list:
    names = []
    for p in dict.fromkeys(parts):
        try:
            pn = int(p, 16)
        except ValueError:
            continue
        if implementer in ("0x41", ""):
            names.append(_ARM_PARTS.get(pn, f"part {p}"))
        elif implementer == "0x00" and pn == 0x051:
            names.append("QEMU max")
        else:
            names.append(f"implementer {implementer} part {p}")
    return names


def cpu_info() -> dict:
    """CPU model and the features that decide INT8 speed: from /proc/cpuinfo, and on
    aarch64 Linux from AT_HWCAP/AT_HWCAP2 (what the kernel - or QEMU - really offers)."""
    machine = platform.machine().lower()
    info = parse_cpuinfo(_read_text("/proc/cpuinfo"))
    flags, model = set(info["flags"]), info["model"]
    source = "/proc/cpuinfo" if flags else "none"
    hw = hw2 = None
    if machine in ("aarch64", "arm64") and sys.platform.startswith("linux"):
        hw, hw2 = _getauxval(AT_HWCAP), _getauxval(AT_HWCAP2)
        if hw:
            flags |= {n for n, b in _HWCAP.items() if hw >> b & 1}
            flags |= {n for n, b in _HWCAP2.items() if (hw2 or 0) >> b & 1}
            source = "AT_HWCAP" + ("+/proc/cpuinfo" if source != "none" else "")
    names = _part_names(info["parts"], info["implementer"])
    if names:
        model = " + ".join(names) if not model else f"{model} ({' + '.join(names)})"
    return {"machine": machine, "model": model or platform.processor() or "unknown",
            "features": cpu_features(machine, flags), "feature_source": source,
            "hwcap": None if hw is None else hex(hw), "hwcap2": None if hw2 is None else hex(hw2),
            "n_cpus": os.cpu_count()}


def system_info() -> dict:
    return {"os": platform.system(), "release": platform.release(),
            "python": platform.python_version(), "numpy": np.__version__,
            "android": "ANDROID_ROOT" in os.environ or hasattr(sys, "getandroidapilevel"),
            "cpu": cpu_info()}


def int8_warnings(cpu: dict, is_int8: bool) -> list[str]:
    w = []
    if not is_int8:
        return w
    if cpu["machine"] in ("aarch64", "arm64") and not cpu["features"].get("dotprod"):
        w.append("CPU has no dot-product instructions (asimddp): INT8 kernels fall back to "
                 "slower widening multiplies; do not expect a large INT8 speed-up")
    if cpu["machine"] in ("armv7l", "armv8l"):
        w.append("32-bit ARM userland: runtimes use 32-bit kernels; INT8 speed-ups are limited")
    return w


# ---- statistics -----------------------------------------------------------------------

def median_ci(sorted_x: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free CI of the median: order statistics X(r) <= m <= X(n+1-r) with
    the number of samples below the median ~ Binomial(n, 1/2). Returns (lo, hi, coverage);
    for n < 6 the 95% level cannot be reached and (min, max) with its coverage is returned."""
    n = len(sorted_x)
    alpha = 1.0 - level
    # cdf[k] = P(B <= k), exact with integers up to a few thousand samples, normal beyond.
    if n <= 5000:
        total = 2 ** n
        acc, r = 0, 0
        for k in range(n // 2 + 1):
            acc += math.comb(n, k)            # P(B <= k) * 2^n
            if acc / total <= alpha / 2:
                r = k + 1                     # X(k+1) is still a valid lower bound
            else:
                break
        if r == 0:
            cov = 1.0 - 2.0 / total
            return sorted_x[0], sorted_x[-1], cov
        below = sum(math.comb(n, k) for k in range(r)) / total
        cov = 1.0 - 2.0 * below
    else:
        z = 1.959963984540054 if abs(level - 0.95) < 1e-9 else 1.959963984540054
        r = max(1, int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0)))
        cov = level
    return sorted_x[r - 1], sorted_x[n - r], cov


def summarize(times_ms: list[float]) -> dict:
    x = np.asarray(times_ms, dtype=np.float64)
    s = sorted(times_ms)
    lo, hi, cov = median_ci(s)
    return {"runs": len(s), "mean": float(x.mean()), "median": float(np.median(x)),
            "p90": float(np.percentile(x, 90)), "p99": float(np.percentile(x, 99)),
            "min": float(s[0]), "max": float(s[-1]),
            "std": float(x.std(ddof=1)) if len(s) > 1 else 0.0,
            "median_ci95": [float(lo), float(hi)], "median_ci_coverage": round(cov, 5)}


# ---- runtimes -------------------------------------------------------------------------

_NP_OF_ORT = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
              "tensor(bool)": np.bool_}


class Backend:
    name = "?"
    version = "?"
    inputs: list[dict]      # {"name", "shape", "dtype", "quantization": (scale, zp) | None}
    outputs: list[dict]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def profile(self, x: np.ndarray, n: int) -> dict:
        return {"available": False, "reason": f"no op profiler for {self.name}"}

    def details(self) -> dict:
        return {}

    def is_quantized(self) -> bool:
        return False


class OrtBackend(Backend):
    def __init__(self, model: str, threads: int):
        # onnxruntime >= 1.29 on Linux/Android starts telemetry threads (1DS uploads, a
        # SQLite queue, DNS look-ups) unless told not to: they would send data from the
        # benchmark and run beside the measured inferences. Opt out before the import.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise NoRuntime(f"onnxruntime is not installed for {sys.executable} "
                            f"(pip install onnxruntime): {e}") from None
        self.ort, self.model, self.threads = ort, model, threads
        self.name, self.version = "onnxruntime", ort.__version__
        try:
            ort.disable_telemetry_events()
        except Exception:  # noqa: BLE001 - older/newer builds without the call
            pass
        self.sess = self._session(profile_prefix=None)
        self.inputs = []
        for i in self.sess.get_inputs():
            if i.type not in _NP_OF_ORT:
                raise UserError(f"input '{i.name}' has unsupported type {i.type}")
            self.inputs.append({"name": i.name, "shape": list(i.shape),
                                "dtype": np.dtype(_NP_OF_ORT[i.type]).name, "quantization": None})
        self.outputs = [{"name": o.name, "shape": list(o.shape), "dtype": o.type}
                        for o in self.sess.get_outputs()]

    def _session(self, profile_prefix: str | None):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        try:
            return self.ort.InferenceSession(self.model, sess_options=so,
                                             providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise UserError(f"onnxruntime cannot load {self.model}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def run(self, x):
        return self.sess.run(None, {self.inputs[0]["name"]: x})

    def is_quantized(self):
        return _onnx_is_quant(self)

    def details(self):
        return {"providers": self.sess.get_providers(),
                "graph_optimization": "ORT_ENABLE_ALL", "inter_op_threads": 1,
                "telemetry": "disabled" if os.environ.get("ORT_DISABLE_TELEMETRY") == "1"
                else "default"}

    def profile(self, x, n):
        tmp = tempfile.mkdtemp(prefix="armq-ortprof-")
        sess = self._session(os.path.join(tmp, "prof"))
        name = self.inputs[0]["name"]
        for _ in range(2):
            sess.run(None, {name: x})
        for _ in range(n):
            sess.run(None, {name: x})
        path = sess.end_profiling()
        try:
            with open(path) as f:
                events = json.load(f)
        finally:
            for p in os.listdir(tmp):
                os.unlink(os.path.join(tmp, p))
            os.rmdir(tmp)
        # Kernel events of every run; keep the last n runs' worth (2 warm-ups first).
        per_node: dict[str, list[float]] = {}
        op_of: dict[str, str] = {}
        for ev in events if isinstance(events, list) else []:
            if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
                continue
            node = ev["name"][:-len("_kernel_time")]
            per_node.setdefault(node, []).append(float(ev.get("dur", 0)) / 1000.0)
            op_of[node] = ev.get("args", {}).get("op_name", "?")
        return _op_summary({k: v[-n:] for k, v in per_node.items()}, op_of, n,
                           source="onnxruntime profiler (kernel time)")


def _op_summary(per_node: dict[str, list[float]], op_of: dict[str, str], n: int,
                source: str) -> dict:
    by_type: dict[str, dict] = {}
    for node, ts in per_node.items():
        t = by_type.setdefault(op_of[node], {"op_type": op_of[node], "nodes": 0, "ms": 0.0})
        t["nodes"] += 1
        t["ms"] += sum(ts) / max(1, len(ts))
    total = sum(t["ms"] for t in by_type.values()) or 1.0
    ops = sorted(by_type.values(), key=lambda t: -t["ms"])
    for t in ops:
        t["ms"] = round(t["ms"], 6)
        t["pct"] = round(100.0 * t["ms"] / total, 2)
    top = sorted(((sum(v) / len(v), k) for k, v in per_node.items() if v), reverse=True)[:10]
    return {"available": True, "source": source, "runs": n, "total_ms": round(total, 6),
            "by_op_type": ops,
            "top_nodes": [{"node": k, "op_type": op_of[k], "ms": round(ms, 6)} for ms, k in top]}


class TfliteBackend(Backend):
    def __init__(self, model: str, threads: int, prefer: str):
        Interpreter, self.name, self.version = self._import(prefer)
        try:
            self.itp = Interpreter(model_path=model, num_threads=threads)
            self.itp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UserError(f"{self.name} cannot load {model}: {str(e).splitlines()[0]}") from None
        self.inputs = []
        for d in self.itp.get_input_details():
            scale, zp = d.get("quantization", (0.0, 0))
            self.inputs.append({"name": d["name"], "shape": [int(v) for v in d["shape"]],
                                "dtype": np.dtype(d["dtype"]).name, "index": d["index"],
                                "quantization": [float(scale), int(zp)] if scale else None})
        self.outputs = [{"name": d["name"], "shape": [int(v) for v in d["shape"]],
                         "dtype": np.dtype(d["dtype"]).name, "index": d["index"],
                         "quantization": list(d.get("quantization", (0.0, 0)))}
                        for d in self.itp.get_output_details()]

    @staticmethod
    def _import(prefer: str):
        order = ["ai_edge_litert", "tflite_runtime"] if prefer == "auto" else [prefer]
        errors = []
        for mod in order:
            try:
                if mod == "ai_edge_litert":
                    from ai_edge_litert import interpreter as m
                    import ai_edge_litert as pkg
                else:
                    from tflite_runtime import interpreter as m
                    import tflite_runtime as pkg
            except ImportError as e:
                errors.append(f"{mod}: {e}")
                continue
            ver = getattr(pkg, "__version__", None)
            if ver is None:
                try:
                    from importlib.metadata import version
                    ver = version(mod.replace("_", "-"))
                except Exception:  # noqa: BLE001
                    ver = "?"
            return m.Interpreter, mod, ver
        raise NoRuntime(f"no TFLite runtime for {sys.executable} (pip install ai-edge-litert "
                        f"or tflite-runtime): {'; '.join(errors)}")

    def run(self, x):
        self.itp.set_tensor(self.inputs[0]["index"], x)
        self.itp.invoke()
        return [self.itp.get_tensor(o["index"]) for o in self.outputs]

    def details(self):
        ops: dict[str, int] = {}
        try:
            for op in self.itp._get_ops_details():  # noqa: SLF001 - only way to list ops
                ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
        except Exception:  # noqa: BLE001
            pass
        return {"op_counts": ops, "delegated": any("DELEGATE" in k for k in ops)}

    def is_quantized(self):
        try:
            return any(np.dtype(t["dtype"]) == np.int8 and len(t.get("shape", ())) > 1
                       for t in self.itp.get_tensor_details())
        except Exception:  # noqa: BLE001
            return False

    def profile(self, x, n):
        return {"available": False,
                "reason": f"{self.name}'s Python API has no per-op profiler; run LiteRT's "
                          f"benchmark_model --enable_op_profiling=true on the device",
                "op_counts": self.details().get("op_counts", {})}


class MnnBackend(Backend):
    """MNN's CPU module (`MNN.nn.load_module_from_file`), the options export/runtime.py
    sets: CPU backend, `threads` threads. FP32 and INT8 files both take and give float.
    Only the MNN package is imported, never MNN.tools (its logging module pip-installs
    and sends telemetry)."""

    def __init__(self, model: str, threads: int):
        try:
            with _native_quiet():     # its import prints the CPU features on fd 1
                import MNN
        except ImportError as e:
            raise NoRuntime(f"MNN is not installed for {sys.executable} (pip install "
                            f"MNN==3.6.1): {e}") from None
        self.name, self.model, self.F = "mnn", model, MNN.expr
        try:
            from importlib.metadata import version
            self.version = version("MNN")
        except Exception:  # noqa: BLE001 - a sysroot copy without metadata
            self.version = str(getattr(MNN, "version", lambda: "?")())
        try:
            with _native_quiet():
                # export/runtime.py's settings: an explicit runtime manager, else MNN's
                # default executor keeps 4 worker threads whatever thread_num says.
                self.rm = MNN.nn.create_runtime_manager(({"backend": "CPU", "numThread": threads},))
                self.module = MNN.nn.load_module_from_file(model, [], [], runtime_manager=self.rm)
                info = self.module.get_info()
                graph = MNN.expr.load_as_dict(model)   # the declared input/output shapes
        except Exception:  # noqa: BLE001 - MNN reports a bad file as SystemError
            raise UserError(f"MNN cannot load {model}: not an MNN model") from None

        def spec(name: str) -> dict:
            v = graph.get(name)
            shape = [int(d) for d in v.shape] if v is not None else [-1]
            return {"name": name, "shape": shape, "dtype": "float32", "quantization": None}

        self.inputs = [spec(n) for n in info.get("inputNames") or []]
        self.outputs = [spec(n) for n in info.get("outputNames") or []]
        self.bizcode = info.get("bizCode")

    def run(self, x):
        y = self.module.forward(self.F.const(x, list(x.shape), self.F.NCHW))
        return [np.array(y.read(), dtype=np.float32)]

    def details(self):
        return {"bizcode": self.bizcode}

    def is_quantized(self):
        # MNN's Python API does not say whether a file holds int8 weights; armq names
        # its MNN INT8 files x.int8.mnn (export.card.artifact_key's rule).
        return ".int8." in os.path.basename(self.model).lower()


class _native_quiet:
    """fds 1 and 2 to /dev/null for a block (MNN prints from C++)."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = os.dup(1), os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc):
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])
        return False


class ExecutorchBackend(Backend):
    """An ExecuTorch program (.pte, XNNPACK delegate) through executorch.runtime. Its Python
    runtime links libtorch: on hosts it runs in the ExecuTorch venv; on aarch64 boards
    without torch a C++ runner is needed instead (not this file)."""

    def __init__(self, model: str, threads: int):
        # The runner's own folder is sys.path[0]; beside it in the checkout, android_bench's
        # profile.py shadows the standard library's `profile`, which executorch imports.
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        try:
            from executorch.runtime import Runtime
        except ImportError as e:
            raise NoRuntime(f"executorch is not installed for {sys.executable} (armq: make "
                            f"venv-executorch): {e}") from None
        # executorch.runtime loads libtorch and takes torch tensors: the one runtime this file
        # runs that needs torch, hence host-only (aarch64 devices need a C++ runner)
        self.torch, self.name = sys.modules["torch"], "executorch"
        try:
            from importlib.metadata import version
            self.version = version("executorch")
        except Exception:  # noqa: BLE001
            self.version = "?"
        try:
            from executorch.extension.pybindings import portable_lib
            reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
            if reset is not None:
                reset(threads)
        except ImportError:
            pass
        try:
            prog = Runtime.get().load_program(model)
            self.method = prog.load_method("forward")
        except (ValueError, RuntimeError) as e:
            raise UserError(f"executorch cannot load {model}: {str(e).splitlines()[0]}") from None
        meta = self.method.metadata
        self.inputs = [{"name": f"input{i}", "shape": [int(v) for v in t.sizes()],
                        "dtype": "float32", "quantization": None}
                       for i in range(meta.num_inputs())
                       for t in [meta.input_tensor_meta(i)]]
        self.outputs = [{"name": f"output{i}", "shape": [int(v) for v in t.sizes()],
                         "dtype": "float32"}
                        for i in range(meta.num_outputs())
                        for t in [meta.output_tensor_meta(i)]]
        self.model = model

    def run(self, x):
        # NCHW-contiguous, the layout armq's exports are lowered for
        out = self.method.execute([self.torch.from_numpy(np.ascontiguousarray(x))])
        return [o.detach().numpy() for o in out]

    def is_quantized(self):
        return ".int8." in os.path.basename(self.model)

    def details(self):
        return {"delegate": "XNNPACK"}


class EtLibBackend(ExecutorchBackend):
    """An ExecuTorch program through libarmq_et.so (ctypes): no torch, so it runs where the
    Python runtime cannot (aarch64 guests and boards). Same inputs and outputs as
    ExecutorchBackend; the counted region is the same `run` call."""

    def __init__(self, model: str, threads: int, lib_path: str):
        c = ctypes
        try:
            lib = c.CDLL(lib_path)
        except OSError as e:
            raise NoRuntime(f"cannot load the ExecuTorch runner library {lib_path}: {e}") from None
        lib.armq_et_open.restype = c.c_void_p
        lib.armq_et_open.argtypes = [c.c_char_p, c.c_int, c.c_char_p, c.c_size_t]
        lib.armq_et_shape.argtypes = [c.c_void_p, c.c_int, c.c_int, c.c_void_p, c.c_int]
        lib.armq_et_num_outputs.argtypes = [c.c_void_p]
        lib.armq_et_input_contiguous.argtypes = [c.c_void_p]
        lib.armq_et_run.argtypes = [c.c_void_p, c.c_void_p, c.c_void_p, c.c_void_p, c.c_int,
                                    c.c_char_p, c.c_size_t]
        lib.armq_et_close.argtypes = [c.c_void_p]
        self.lib, self.err = lib, c.create_string_buffer(512)
        self.handle = lib.armq_et_open(model.encode(), threads, self.err, len(self.err))
        if not self.handle:
            raise UserError(f"executorch cannot load {model}: {self.err.value.decode()}")
        if not lib.armq_et_input_contiguous(self.handle):
            # a channels-last example input bakes that dim order in: NCHW data would give
            # wrong logits without an error (README, ExecuTorch)
            raise UserError(f"{model}: its input dim order is not NCHW-contiguous; re-export "
                            f"it with an NCHW example input")
        self.name, self.version, self.model = "executorch", "1.5.1 (armq_et C++ runner)", model
        self.inputs = [{"name": "input0", "shape": self._shape(0, 0), "dtype": "float32",
                        "quantization": None}]
        self.outputs = [{"name": f"output{k}", "shape": self._shape(1, k), "dtype": "float32"}
                        for k in range(lib.armq_et_num_outputs(self.handle))]
        # output buffers made once: each run copies the program's outputs into them
        self._outs = [np.empty(o["shape"], np.float32) for o in self.outputs]
        self._out_ptrs = (c.c_void_p * len(self._outs))(*[o.ctypes.data for o in self._outs])
        self._counts = (c.c_int64 * len(self._outs))(*[o.size for o in self._outs])

    def _shape(self, output: int, index: int) -> list[int]:
        dims = (ctypes.c_int64 * 16)()
        n = self.lib.armq_et_shape(self.handle, output, index, dims, 16)
        if n < 0:
            raise UserError(f"{self.model}: cannot read the shape of "
                            f"{'output' if output else 'input'} {index}")
        return [int(d) for d in dims[:n]]

    def run(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.lib.armq_et_run(self.handle, x.ctypes.data, self._out_ptrs, self._counts,
                                len(self._outs), self.err, len(self.err)) != 0:
            raise RuntimeError(self.err.value.decode())
        return [o.copy() for o in self._outs]

    def details(self):
        return {"delegate": "XNNPACK", "runner": "armq_et (C++, ctypes)"}


def open_backend(model: str, threads: int, runtime: str, et_lib: str | None = None) -> Backend:
    ext = os.path.splitext(model)[1].lower()
    if ext == ".pte":
        if runtime not in ("auto", "executorch"):
            raise UserError(f"--runtime {runtime} cannot run a .pte program")
        if et_lib:
            return EtLibBackend(model, threads, et_lib)
        return ExecutorchBackend(model, threads)
    if ext == ".onnx":
        if runtime not in ("auto", "onnxruntime"):
            raise UserError(f"--runtime {runtime} cannot run an .onnx model")
        return OrtBackend(model, threads)
    if ext == ".tflite":
        if runtime not in ("auto", "ai_edge_litert", "tflite_runtime"):
            raise UserError(f"--runtime {runtime} cannot run a .tflite model")
        return TfliteBackend(model, threads, runtime)
    if ext == ".mnn":
        if runtime not in ("auto", "mnn"):
            raise UserError(f"--runtime {runtime} cannot run an .mnn model")
        return MnnBackend(model, threads)
    raise UserError(f"{model}: not an .onnx, .tflite, .mnn or .pte model")


# ---- inputs ---------------------------------------------------------------------------

def concrete_shape(shape: list, card: dict | None) -> list[int]:
    card_shape = (card or {}).get("input", {}).get("shape")
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif card_shape and i < len(card_shape) and isinstance(card_shape[i], int) and card_shape[i] > 0:
            out.append(card_shape[i])
        else:
            out.append(1)
    return out


def random_input(shape: list[int], dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(int(info.min), -128), min(int(info.max), 255)
        return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    raise UserError(f"cannot make random input of dtype {dtype}")


def fit_sample(x: np.ndarray, spec: dict, shape: list[int]) -> np.ndarray:
    """One preprocessed sample (NCHW float, batch 1 or none) -> the model's input tensor:
    NCHW->NHWC if the model wants it, quantized if the model input is integer."""
    if x.ndim == len(shape) - 1:
        x = x[None]
    if list(x.shape) != shape:
        if x.ndim == 4 and list(x.transpose(0, 2, 3, 1).shape) == shape:
            x = x.transpose(0, 2, 3, 1)
        elif x.ndim == 4 and list(x.transpose(0, 3, 1, 2).shape) == shape:
            x = x.transpose(0, 3, 1, 2)
        else:
            raise UserError(f"inputs sample shape {list(x.shape)} does not fit the model "
                            f"input {shape}")
    dt = np.dtype(spec["dtype"])
    if dt.kind in "iu" and x.dtype.kind == "f":
        q = spec.get("quantization")
        if not q:
            raise UserError(f"model input is {dt.name} without quantization parameters; "
                            f"--inputs must already be {dt.name}")
        info = np.iinfo(dt)
        x = np.clip(np.round(x / q[0]) + q[1], info.min, info.max)
    return np.ascontiguousarray(x.astype(dt, copy=False))


def load_inputs(path: str, spec: dict, shape: list[int]) -> list[np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read inputs {path}: {e}") from None
    if arr.ndim == len(shape) and arr.shape[0] != shape[0] or arr.ndim == len(shape) + 1:
        samples = [arr[i] for i in range(arr.shape[0])]
    else:
        samples = [arr]
    if not samples:
        raise UserError(f"inputs {path} holds no sample")
    return [fit_sample(s, spec, shape) for s in samples]


# ---- markers --------------------------------------------------------------------------

class Markers:
    """Begin/end markers around each inference for the QEMU instruction-count plugin."""

    def __init__(self, path: str, enabled: bool):
        self.fd = -1
        if not enabled:
            return
        if not hasattr(os, "posix_fadvise"):
            raise UserError("--markers needs os.posix_fadvise (Linux)")
        self.fd = os.open(path, os.O_RDONLY)
        self.count = 0

    def begin(self):
        if self.fd >= 0:
            os.posix_fadvise(self.fd, MARKER_OFFSET, MARKER_BEGIN, os.POSIX_FADV_NORMAL)

    def end(self):
        if self.fd >= 0:
            os.posix_fadvise(self.fd, MARKER_OFFSET, MARKER_END, os.POSIX_FADV_NORMAL)
            self.count += 1

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---- main -----------------------------------------------------------------------------

def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(doc: dict, path: str) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_npy(arr: np.ndarray, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".npy", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UserError(message)


def _version() -> str:
    try:
        from importlib.metadata import version
        return f"armq {version('armq')} (runner {RUNNER_VERSION})"
    except Exception:  # noqa: BLE001 - on a device armq is not installed
        return f"armq runner {RUNNER_VERSION}"


def parse_args(argv):
    p = _OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", action="store_true", help="show the traceback of an error "
                   "(also ARMQ_DEBUG=1)")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only (no result line)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="accepted for the "
                   "armq CLI contract; the runner has no more to say")
    p.add_argument("--model", required=True, help=".onnx, .tflite, .mnn or .pte file")
    p.add_argument("--card", help="model card JSON (input shape, cost); default: none")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--profile", action="store_true", help="per-op profile by op type")
    p.add_argument("--json", default="-", help="result file (written atomically); - = stdout")
    p.add_argument("--inputs", help=".npy of preprocessed samples (N x C x H x W float)")
    p.add_argument("--outputs-npy", help="save the first output for each input sample here")
    p.add_argument("--markers", action="store_true", help="instruction-count markers (QEMU)")
    p.add_argument("--runtime", default="auto",
                   choices=["auto", "onnxruntime", "ai_edge_litert", "tflite_runtime", "mnn",
                            "executorch"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--et-lib", help=".pte through this libarmq_et.so (no torch) instead of "
                   "executorch.runtime")
    a = p.parse_args(argv)
    if a.threads < 1 or a.warmup < 0 or a.runs < 1:
        raise UserError("need --threads >= 1, --warmup >= 0, --runs >= 1")
    return a


def read_card(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read model card {path}: {e}") from None


def make_samples(a: argparse.Namespace, spec: dict, shape: list) -> tuple[list, dict]:
    """The inputs fed in turn (--inputs, else one seeded random sample) and their record."""
    if a.inputs:
        samples = load_inputs(a.inputs, spec, shape)
        return samples, {"kind": "file", "path": os.path.basename(a.inputs), "n": len(samples)}
    return [random_input(shape, spec["dtype"], a.seed)], {
        "kind": "random", "seed": a.seed, "n": 1,
        "distribution": "standard normal" if np.dtype(spec["dtype"]).kind == "f"
        else "uniform integers"}


def result_doc(a: argparse.Namespace, be: "Backend", card: dict | None, sysinfo: dict,
               spec: dict, shape: list, input_source: dict, outputs_first: list, times: list,
               timing: dict, profile: dict | None, n_markers: int) -> dict:
    """The one JSON result of a run (FORMAT)."""
    out0 = outputs_first[0]
    is_int8 = be.is_quantized()
    doc = {
        "format": FORMAT, "runner_version": RUNNER_VERSION,
        "model": {"file": os.path.basename(a.model), "format": os.path.splitext(a.model)[1][1:],
                  "sha256": sha256_file(a.model), "size_bytes": os.path.getsize(a.model),
                  "int8": is_int8,
                  "card_name": (card or {}).get("name"), "cost": (card or {}).get("cost")},
        "runtime": {"name": be.name, "version": be.version, "threads": a.threads, **be.details()},
        "input": {"name": spec["name"], "shape": shape, "dtype": spec["dtype"],
                  "quantization": spec.get("quantization"), "source": input_source},
        "outputs": [{"name": o["name"], "shape": list(o["shape"]), "dtype": str(o["dtype"]),
                     **({"quantization": o["quantization"]} if o.get("quantization")
                        and o["quantization"][0] else {})}
                    for o in be.outputs],
        "output_check": {"argmax": [int(np.argmax(o[0] if o.ndim > 1 else o)) for o in outputs_first],
                         "first_values": [float(v) for v in out0.reshape(-1)[:5]]},
        "timing_ms": timing,
        "samples_ms": [round(v, 6) for v in times],
        "system": sysinfo,
        "config": {"threads": a.threads, "warmup": a.warmup, "runs": a.runs,
                   "profile": a.profile, "markers": a.markers, "seed": a.seed},
        "markers": ({"regions": n_markers, "first": 0, "warmup": [1, a.warmup],
                     "timed": [1 + a.warmup, a.runs], "extra_after_timed": n_markers - 1 - a.warmup - a.runs}
                    if a.markers else None),
        "profile": profile,
        "warnings": int8_warnings(sysinfo["cpu"], is_int8),
    }
    return doc


def time_inferences(be: "Backend", samples: list, warmup: int, runs: int, markers: "Markers"
                    ) -> tuple[float, float, list[float], list]:
    """The first inference, `warmup` more, then `runs` timed ones (ms), cycling over the
    samples; every sample's first output is kept (for --outputs-npy)."""
    outputs_first: list[np.ndarray | None] = [None] * len(samples)

    def infer(i: int) -> float:
        x = samples[i % len(samples)]
        t = time.perf_counter()
        markers.begin()
        out = be.run(x)
        markers.end()
        dt = (time.perf_counter() - t) * 1e3
        if outputs_first[i % len(samples)] is None:
            outputs_first[i % len(samples)] = np.array(out[0], copy=True)
        return dt

    try:
        first_ms = infer(0)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"inference failed: {str(e).splitlines()[0] if str(e) else e}") from None
    t = time.perf_counter()
    for i in range(warmup):
        infer(1 + i)
    warm_ms = (time.perf_counter() - t) * 1e3
    times = [infer(1 + warmup + i) for i in range(runs)]
    # Make sure every sample's output is known for --outputs-npy.
    for i, o in enumerate(outputs_first):
        if o is None:
            infer(i)
    markers.close()
    return first_ms, warm_ms, times, outputs_first


def main(argv=None) -> int:
    a = parse_args(argv)
    if not os.path.isfile(a.model):
        raise UserError(f"model file {a.model} not found")
    card = read_card(a.card)
    sysinfo = system_info()

    t0 = time.perf_counter()
    be = open_backend(a.model, a.threads, a.runtime, a.et_lib)
    init_ms = (time.perf_counter() - t0) * 1e3
    spec = be.inputs[0]
    if len(be.inputs) != 1:
        raise UserError(f"model has {len(be.inputs)} inputs; the runner feeds exactly one")
    shape = concrete_shape(spec["shape"], card)
    samples, input_source = make_samples(a, spec, shape)

    markers = Markers(a.model, a.markers)
    first_ms, warm_ms, times, outputs_first = time_inferences(be, samples, a.warmup, a.runs,
                                                              markers)
    timing = {"clock": "wall", "init": init_ms, "first": first_ms, "warmup_total": warm_ms,
              "warmup_runs": a.warmup, **summarize(times)}
    profile = be.profile(samples[0], min(a.runs, 20)) if a.profile else None

    doc = result_doc(a, be, card, sysinfo, spec, shape, input_source, outputs_first, times,
                     timing, profile, markers.count if a.markers else 0)
    if a.outputs_npy:
        save_npy(np.stack(outputs_first), a.outputs_npy)
        doc["outputs_npy"] = os.path.basename(a.outputs_npy)
    write_json(doc, a.json)
    if a.quiet:
        return EXIT_OK
    log(f"runner: {os.path.basename(a.model)} [{be.name} {be.version}, {a.threads} thread(s)] "
        f"median {timing['median']:.3f} ms (95% CI {timing['median_ci95'][0]:.3f}-"
        f"{timing['median_ci95'][1]:.3f}), init {init_ms:.1f} ms, first {first_ms:.3f} ms")
    for w in doc["warnings"]:
        log(f"runner: warning: {w}")
    return EXIT_OK


def _onnx_is_quant(be: Backend) -> bool:
    """Does an ORT session hold quantized ops? (QDQ / QLinear / integer weights)"""
    if not isinstance(be, OrtBackend):
        return False
    try:
        meta = be.sess.get_modelmeta()
        if "quant" in (meta.custom_metadata_map or {}).get("armq", "").lower():
            return True
    except Exception:  # noqa: BLE001
        pass
    try:
        with open(be.model, "rb") as f:
            blob = f.read()
        return any(k in blob for k in (b"QuantizeLinear", b"QLinearConv", b"ConvInteger",
                                       b"MatMulInteger"))
    except OSError:
        return False


def cli(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("ARMQ_DEBUG") == "1" or "--debug" in argv
    try:
        rc = main(argv)
    except UserError as e:
        log(f"{PROG}: error: {e}")
        sys.exit(EXIT_USER)
    except NoRuntime as e:
        log(f"{PROG}: error: {e}")
        sys.exit(EXIT_NO_RUNTIME)
    except KeyboardInterrupt:
        log(f"{PROG}: error: interrupted")
        sys.exit(130)
    except (OSError, MemoryError) as e:
        if debug:
            traceback.print_exc()
        log(f"{PROG}: error: {type(e).__name__}: {e}")
        sys.exit(EXIT_USER if isinstance(e, OSError) else EXIT_INTERNAL)
    except Exception as e:  # noqa: BLE001
        if debug:
            traceback.print_exc()
        msg = str(e).splitlines()[0] if str(e) else ""
        log(f"{PROG}: error: internal error: {type(e).__name__}: {msg}")
        sys.exit(EXIT_INTERNAL)
    sys.exit(rc)


if __name__ == "__main__":
    cli()
